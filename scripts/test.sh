#!/usr/bin/env bash
# Runs every Herald test on a fresh machine, after installing what the interop tests
# need besides Rust: the npm packages of tests/interop, a Python virtualenv with the
# `pusher` SDK, and Debian's Chromium. Each install is skipped when it is already up
# to date, so a second run goes straight to `cargo test`.
#
#   scripts/test.sh                    # everything
#   scripts/test.sh --test it interop  # arguments go to `cargo test`
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
interop="$root/tests/interop"
chromium=/usr/bin/chromium

say() { printf 'test.sh: %s\n' "$*"; }
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

for tool in cargo node npm python3; do
    command -v "$tool" >/dev/null || die "$tool is required but not installed"
done

# A stamp file holds the checksum of the files an install was made from; the install
# is redone only when they change (or the stamp, inside what was installed, is gone).
up_to_date() {
    local stamp=$1
    shift
    [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$(cat "$@" | sha256sum)" ]]
}
record() {
    local stamp=$1
    shift
    cat "$@" | sha256sum >"$stamp"
}

# npm packages: pusher-js, pusher, laravel-echo, standardwebhooks, playwright-core.
# playwright-core drives the system Chromium and never downloads a browser; the
# variable makes sure.
npm_stamp="$interop/node_modules/.herald-installed"
if up_to_date "$npm_stamp" "$interop/package.json" "$interop/package-lock.json" 2>/dev/null; then
    say "npm packages up to date"
else
    say "installing npm packages in tests/interop"
    if [[ -f "$interop/package-lock.json" ]]; then
        (cd "$interop" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund)
    else
        (cd "$interop" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund)
    fi
    record "$npm_stamp" "$interop/package.json" "$interop/package-lock.json"
fi

# Python: the official `pusher` SDK, pinned in requirements.txt, in its own venv.
venv="$interop/.venv"
pip_stamp="$venv/.herald-installed"
if up_to_date "$pip_stamp" "$interop/requirements.txt" 2>/dev/null && [[ -x "$venv/bin/python" ]]; then
    say "python virtualenv up to date"
else
    say "creating tests/interop/.venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$interop/requirements.txt"
    record "$pip_stamp" "$interop/requirements.txt"
fi

# Chromium, for the demo page test. Only root can install it; anyone else is told how.
if [[ -x "$chromium" ]]; then
    say "chromium present"
elif [[ "$(id -u)" == 0 ]]; then
    say "installing Debian's chromium"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
else
    say "$chromium is missing, so the demo page test will fail; install it with:"
    say "    sudo apt-get install -y chromium"
fi

cd "$root"
say "cargo test --locked $*"
exec cargo test --locked "$@"
