#!/usr/bin/env bash
# Installs the Debian packages whose command is missing: apt-need.sh COMMAND=PACKAGE ...
# (e.g. wrk=wrk etcd=etcd-server). Runs apt-get update first when anything is to be
# installed; uses sudo when not root. Used by `make e2e` (wrk, etcd) and `make bench`.
set -euo pipefail
need=()
for pair in "$@"; do
  cmd=${pair%%=*} pkg=${pair#*=}
  command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd ]] || need+=("$pkg")
done
((${#need[@]})) || exit 0
echo "installing ${need[*]}" >&2
sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
