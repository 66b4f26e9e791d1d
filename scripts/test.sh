#!/usr/bin/env bash
# Set everything up, lint, then run the whole test suite against a real Tango stack on loopback.
# Extra arguments go to pytest, e.g. scripts/test.sh -k attributes
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
cd "$root"
py="${MTANGO_VENV:-$root/.venv}/bin/python"
"$py" -m ruff check .
exec "$py" -m pytest -n "${MTANGO_TEST_PROCESSES:-2}" "$@"
