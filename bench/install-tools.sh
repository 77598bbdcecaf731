#!/usr/bin/env bash
# Installs what `make bench` needs and is missing, from Debian packages:
#   nginx-light (the three backends), wrk (the load), binaryen (wasm-opt, for the optimized
#   module size).
exec "$(dirname "$0")/../scripts/apt-need.sh" nginx=nginx-light wrk=wrk wasm-opt=binaryen
