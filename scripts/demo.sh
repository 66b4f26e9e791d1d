#!/usr/bin/env bash
# Set everything up, then run the bridge. Without TANGO_HOST it serves the embedded demo control
# system (a Tango database and a TangoTest-like device on 127.0.0.1). Extra arguments go to main.py,
# e.g. scripts/demo.sh --port 8080 --workers 4
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
cd "$root"
exec "${MTANGO_VENV:-$root/.venv}/bin/python" main.py "$@"
