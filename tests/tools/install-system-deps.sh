#!/usr/bin/env bash
# Installs the system packages the tests and the demo need that PyPI does not ship:
# redis-server (Debian package). Go is expected on the machine (it builds the local
# Kubernetes control plane; see build-k8s-binaries.sh).
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "error: missing ${missing[*]}; install them (e.g. apt-get install ${missing[*]}) and retry" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "installing ${missing[*]} from Debian packages"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
