#!/usr/bin/env bash
# The test command: set up .venv (scripts/bootstrap.sh) and run the suite.
# Extra arguments go to pytest, e.g.  bash scripts/test.sh tests/core -x
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/needle backends
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
# line coverage of core/ and contrib/ ([tool.coverage] in pyproject.toml), printed at the end
rm -f .coverage .coverage.*
export COVERAGE_PROCESS_START="$PWD/pyproject.toml" COVERAGE_FILE="$PWD/.coverage"
rc=0
log=$(mktemp)
.venv/bin/python -m pytest -n 2 -q tests 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
unset COVERAGE_PROCESS_START
if ! { .venv/bin/python -m coverage combine -q && .venv/bin/python -m coverage report; }; then
  [ "$rc" -ne 0 ] || rc=1
fi
# pytest's summary again as the last line, below the coverage table
grep -E "^[=]* ?[0-9]+ (passed|failed)|^[=]* ?no tests ran" "$log" | tail -n 1
rm -f "$log"
exit $rc
