#!/usr/bin/env bash
# Installs what the test suite needs besides the Python packages, on a Debian machine: Chromium
# (the report's tests open it in a real browser) and a C++ compiler (the header and bench deploy
# tests compile C++; nvcc needs it as its host compiler). Anything already on PATH is kept.
# Used by the README's test command and so by .ci/run; see docs/testing.md.
set -euo pipefail

packages=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
    || packages+=(chromium)
command -v g++ >/dev/null 2>&1 || command -v c++ >/dev/null 2>&1 \
    || command -v clang++ >/dev/null 2>&1 || packages+=(g++)
[ ${#packages[@]} -eq 0 ] && exit 0

fail() {
    echo "tests/prepare-machine.sh: cannot install ${packages[*]} ($1); install them and run it again" >&2
    exit 1
}
command -v apt-get >/dev/null 2>&1 || fail "no apt-get: not a Debian machine"
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    fail "not root and no sudo"
fi
echo "tests/prepare-machine.sh: installing ${packages[*]} with apt-get"
log=$(mktemp)
"${as_root[@]}" apt-get update >"$log" 2>&1 || { tail -5 "$log" >&2; fail "apt-get update failed"; }
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${packages[@]}" >"$log" 2>&1 \
    || { tail -5 "$log" >&2; fail "apt-get install failed"; }
rm -f "$log"
