#!/usr/bin/env bash
# Mutation testing with mutmut 2 (not part of CI; see docs/testing.md).
#
#   bash scripts/mutation.sh                       # every path in scripts/mutation/paths.txt
#   bash scripts/mutation.sh contrib/optim core/ops/ops_logarithmic.py
#
# Each mutant runs only the fast tests mapped to its file
# (scripts/mutation/mutmut_config.py).  The run happens in a scratch copy of
# the tree (MUTATION_DIR, default .mutation/), imported through a folder of
# symlinks that mirrors setup.py's package_dir, so an interrupted run never
# leaves a mutant in the working tree; results are cached there, and a rerun
# only tests what is new.  The score (killed / (total - documented
# equivalent)) is printed at the end by scripts/mutation/score.py.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
[ -x .venv/bin/python ] || bash scripts/bootstrap.sh
.venv/bin/python -c "import mutmut" 2>/dev/null || .venv/bin/python -m pip install -q "mutmut==2.5.1"
.venv/bin/python -c "import coverage" 2>/dev/null || .venv/bin/python -m pip install -q "coverage>=7.10"  # covered_only.py
MUTMUT=$ROOT/.venv/bin/mutmut
PY=$ROOT/.venv/bin/python

if [ "$#" -gt 0 ]; then PATHS=("$@"); else mapfile -t PATHS < <(grep -v '^#' scripts/mutation/paths.txt | grep .); fi

DIR=${MUTATION_DIR:-$ROOT/.mutation}
mkdir -p "$DIR"
# the tree as git sees it (tracked + new, not ignored) plus the built extension
git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -C "$DIR" -xf -
cp plugins/cpu/_ext*.so "$DIR/plugins/cpu/"
cp scripts/mutation/mutmut_config.py "$DIR/"

# import names -> source folders, as setup.py's ROOTS (needle.nn lives in contrib/nn, ...)
IMP=$DIR/.imp
rm -rf "$IMP" && mkdir -p "$IMP/needle"
for f in "$DIR"/core/*; do ln -s "$f" "$IMP/needle/$(basename "$f")"; done
for sub in nn optim data models; do ln -s "$DIR/contrib/$sub" "$IMP/needle/$sub"; done
ln -s "$DIR/plugins/numpy" "$IMP/needle_numpy"
ln -s "$DIR/plugins/cpu" "$IMP/needle_cpu"
ln -s "$DIR/plugins/cuda" "$IMP/needle_cuda"
cp "$ROOT/scripts/mutation/fastest_first.py" "$ROOT/scripts/mutation/covered_only.py" \
   "$ROOT/scripts/mutation/pytest_exit.py" "$IMP/"  # the runner and its plugins

export PYTHONPATH=$IMP PYTHONDONTWRITEBYTECODE=1 NEEDLE_DISABLE_PLUGINS=cuda HYPOTHESIS_PROFILE=ci
cd "$DIR"
"$PY" -c "import needle, sys; assert needle.__file__.startswith('$IMP'), needle.__file__" \
  || { echo "mutation.sh: needle is not imported from the scratch copy" >&2; exit 2; }
# one mutmut run per file, each with its own test selection (its baseline too)
FILES=()
for p in "${PATHS[@]}"; do
  if [ -d "$p" ]; then mapfile -t -O "${#FILES[@]}" FILES < <(find "$p" -name '*.py' ! -name '__init__.py' | sort)
  else FILES+=("$p"); fi
done
mkdir -p .durations .covmap .orig
: > .covmap/rc  # covered_only's recording: an empty coverage config, not pyproject's [tool.coverage] (the whole package, parallel files)
for f in "${FILES[@]}"; do
  TESTS=$("$PY" mutmut_config.py "$f")
  echo "==> mutating $f  (tests: $TESTS)"
  # on the unmutated tree (again when a test file is newer): each test's
  # duration, so that every mutant runs its tests fastest first
  # (fastest_first.py), and the lines of $f each test executes, so that a
  # mutant runs only the tests that execute its line (covered_only.py)
  key=${f//\//_}
  export MUTATION_DURATIONS=$DIR/.durations/$key.json MUTATION_COVMAP=$DIR/.covmap/$key.json
  export MUTATION_SOURCE=$DIR/$f MUTATION_ORIGINAL=$DIR/.orig/$key
  cp "$ROOT/$f" "$MUTATION_ORIGINAL"
  # (again too when the file's test selection changed: a map recorded under
  # another selection names tests the runner no longer collects, and a
  # mutant whose line maps only to those would run no test and "survive")
  if [ ! -s "$MUTATION_DURATIONS" ] || [ ! -s "$MUTATION_COVMAP" ] || \
     [ "$(cat "$MUTATION_DURATIONS.tests" 2>/dev/null)" != "$TESTS" ] || \
     [ -n "$(eval "find ${TESTS//-k*/} -newer '$MUTATION_DURATIONS'" 2>/dev/null | head -1)" ]; then
    eval "MUTATION_RECORD=1 COVERAGE_FILE=.covmap/.coverage nice '$PY' -m coverage run --rcfile=.covmap/rc \
      --include='$DIR/$f' -m pytest -q -p no:cacheprovider -p covered_only -p fastest_first $TESTS" > /dev/null \
      || echo "mutation.sh: the tests of $f fail on the unmutated tree" >&2
    printf '%s' "$TESTS" > "$MUTATION_DURATIONS.tests"
  fi
  # pytest_exit.py: any failing status counts (mutmut 2 counts only status 1 as a kill)
  RUNNER="$PY $IMP/pytest_exit.py -x -q -p no:cacheprovider -p covered_only -p fastest_first $TESTS"
  # strings are messages and keys: a mutated message is no bug (docs/testing.md).
  # MUTATION_SURVIVORS_ONLY=1 skips this full pass (which, after a test change,
  # retests every mutant not killed, hangs and timeouts included) and only
  # retests the survivors below: the quick check of tests written for them
  if [ "${MUTATION_SURVIVORS_ONLY:-0}" != 1 ]; then
    nice "$MUTMUT" run --paths-to-mutate "$f" --tests-dir tests --simple-output --runner "$RUNNER" \
      --disable-mutation-types string,fstring --no-progress || true
  fi
  # mutmut 2 skips a file it has seen unless the file changed: retest its
  # survivors one by one, so that tests added since then get their chance
  for id in $("$PY" "$ROOT/scripts/mutation/score.py" --cache .mutmut-cache --survivor-ids "$f" \
               --equivalent "$ROOT/scripts/mutation/equivalent.txt"); do
    nice "$MUTMUT" run "$id" --paths-to-mutate "$f" --tests-dir tests --simple-output \
      --runner "$RUNNER" --no-progress > /dev/null || true
  done
done
"$PY" "$ROOT/scripts/mutation/score.py" --cache "$DIR/.mutmut-cache" \
  --equivalent "$ROOT/scripts/mutation/equivalent.txt" "${PATHS[@]}"
