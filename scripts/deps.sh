#!/bin/sh
# Install the Debian packages eddy needs to build and test, when any is missing,
# and those named as arguments (make fuzz adds clang and libFuzzer's runtime).
# Idempotent and silent when everything is already present. Needs root (or sudo)
# only when something has to be installed.
set -eu

PKGS="gcc make cmake pkg-config git python3 libuv1-dev libjansson-dev libsqlite3-dev \
libboost-context-dev libpython3.11-dev libcmocka-dev clang-format valgrind $*"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

echo "eddy: installing missing Debian packages:$missing" >&2
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "eddy: not root and no sudo; install these packages first:$missing" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >&2
