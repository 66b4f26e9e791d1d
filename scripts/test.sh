#!/usr/bin/env bash
# Set everything up, lint, type-check, then run the whole test suite against a real Tango stack on
# loopback.
# Extra arguments go to pytest, e.g. scripts/test.sh -k attributes
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
cd "$root"
py="${MTANGO_VENV:-$root/.venv}/bin/python"
"$py" -m ruff check .
"$py" -m mypy  # what it checks and how strictly: [tool.mypy] in pyproject.toml
exec "$py" -m pytest -n "${MTANGO_TEST_PROCESSES:-2}" "$@"
