#!/usr/bin/env bash
# The core crate's unit tests compiled to 32-bit wasm and run under Node with
# wasm-bindgen-test, since the filter itself runs as 32-bit wasm (usize is 32 bits there).
# Installs the wasm32-unknown-unknown target and the wasm-bindgen test runner matching
# Cargo.lock when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
want=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
have=$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $2}' || true)
if [[ "$have" != "$want" ]]; then
  # Not --locked: the registry mirror lacks some of the CLI's locked dependency versions.
  cargo install wasm-bindgen-cli --version "$want"
fi
command -v node >/dev/null || { echo "unit-wasm32: Node.js is required" >&2; exit 1; }
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
  cargo test -p persist-core --target wasm32-unknown-unknown
