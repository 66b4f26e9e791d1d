#!/usr/bin/env bash
# The benchmark suite against the peers (bench/suite.py): set up .venv, then run it.
# Arguments go to bench/suite.py (--rounds 3 --duration 5 --workers 1 --cases ... --no-peers).
# Peers are installed into .bench/venvs/ from the package registry the first time.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
venv="${MTANGO_VENV:-$root/.venv}"
exec "$venv/bin/python" "$root/bench/suite.py" "$@"
