#!/usr/bin/env bash
# Installs what `make bench` needs and is missing, from Debian packages:
#   nginx-light (the three backends), wrk (the load), binaryen (wasm-opt, for the optimized
#   module size). Runs apt-get update first when anything is to be installed.
set -euo pipefail
need=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v wasm-opt >/dev/null 2>&1 || need+=(binaryen)
((${#need[@]})) || exit 0
echo "bench: installing ${need[*]}" >&2
sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
