#!/usr/bin/env bash
# Run asv on this checkout without a first-time prompt:
#   bash scripts/asv.sh                       # = asv run --python=same --quick --show-stderr
#   bash scripts/asv.sh run --python=same     # any asv command line
# asv keeps a per-user machine file (~/.asv-machine.json) and asks for it
# interactively on first use (and fails without a terminal); this creates it
# with asv's detected defaults (`asv machine --yes`) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ASV=${ASV:-asv}
if [ -x .venv/bin/asv ] && [ "$ASV" = asv ]; then ASV=.venv/bin/asv; fi
MACHINE_FILE="$HOME/.asv-machine.json"
if [ "${1:-}" != machine ] && { [ ! -f "$MACHINE_FILE" ] || ! grep -q "\"$(uname -n)\"" "$MACHINE_FILE"; }; then
  "$ASV" machine --yes
fi
if [ $# -eq 0 ]; then
  set -- run --python=same --quick --show-stderr
fi
exec "$ASV" "$@"
