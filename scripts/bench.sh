#!/usr/bin/env bash
# The benchmark suite against the peers (bench/suite.py): set up .venv (and wrk), then run it.
# Arguments go to bench/suite.py (--rounds 3 --duration 5 --workers 1 --cases ... --no-peers).
# Peers are installed into .bench/venvs/ from the package registry the first time.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
# wrk, the load generator of the figures in the README: Debian's package, installed when missing
# and this runs as root (as the tests install Chromium); without it the suite says so and loads
# with its aiohttp generator (bench/loadgen.py), whose figures are lower.
if ! command -v wrk >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bench.sh: installing wrk (apt-get)" >&2
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk \
        || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
             --no-install-recommends wrk; }; } >/dev/null 2>&1 \
        || echo "bench.sh: wrk could not be installed; the aiohttp load generator is used" >&2
fi
venv="${MTANGO_VENV:-$root/.venv}"
exec "$venv/bin/python" "$root/bench/suite.py" "$@"
