#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment from its own files.
# Used by scripts/demo.sh, scripts/test.sh, .ci/run and the Dockerfile: one install recipe.
#   MTANGO_VENV     where the environment lives (default: .venv in the project)
#   MTANGO_EXTRAS   pip extras to install (default: test; empty for a runtime-only install)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MTANGO_VENV:-$root/.venv}"
extras="${MTANGO_EXTRAS-test}"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "setup: Python 3.10 or newer is needed as '$python' (set PYTHON=...)" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating virtual environment in $venv" >&2
  "$python" -m venv "$venv"
fi
spec="$root"
[ -n "$extras" ] && spec="$root[$extras]"
# Reinstall only when the dependency list changed (the project itself is installed editable).
stamp="$venv/.mtango-installed"
want="$(cat "$root/pyproject.toml" | sha256sum | cut -d' ' -f1) extras=$extras"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing mtango-bridge and its dependencies" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
  echo "$want" > "$stamp"
fi
