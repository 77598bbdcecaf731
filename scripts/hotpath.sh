#!/usr/bin/env bash
# Module-internal costs of the request path (crates/persist-core/examples/hotpath.rs), built
# for wasm32-wasip1 and run under Node's V8: the engine Envoy runs the filter in.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --target wasm32-wasip1 -p persist-core --example hotpath
node --no-warnings -e '
const { WASI } = require("node:wasi");
const fs = require("node:fs");
const wasi = new WASI({ version: "preview1", args: ["hotpath"] });
WebAssembly.instantiate(fs.readFileSync(process.argv[1]), wasi.getImportObject())
  .then(({ instance }) => wasi.start(instance));
' target/wasm32-wasip1/release/examples/hotpath.wasm
