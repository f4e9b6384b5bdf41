"""pytest plugin for scripts/mutation.sh: run a mutant's tests fastest first.

Each mutant runs its file's test selection under ``pytest -x``, so the run
stops at the first failure; most mutants are killed by some fast NumPy-oracle
test, but in file order they may wait for a slow one (a training loop, a
torch import) first.  With ``MUTATION_DURATIONS=FILE``:

* ``MUTATION_RECORD=1`` (once per source file, on the unmutated tree):
  write each test's duration (setup + call + teardown) to FILE as JSON;
* otherwise: sort the collected tests by the recorded durations (a test not
  recorded counts as slow, so it keeps its place after the known ones).

Only the order changes: the same tests run, so a surviving mutant has passed
exactly the tests it would have passed in file order.  Loaded with
``-p fastest_first`` (scripts/mutation/ is on PYTHONPATH).
"""

from __future__ import annotations

import json
import os

_durations: dict = {}


def _path():
    return os.environ.get("MUTATION_DURATIONS")


def _recording() -> bool:
    return os.environ.get("MUTATION_RECORD") == "1"


def pytest_collection_modifyitems(session, config, items):
    path = _path()
    if not path or _recording() or not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        known = json.load(f)
    slow = max(known.values(), default=0.0) + 1.0
    # sorted() is stable: equal durations keep the file order
    items[:] = sorted(items, key=lambda it: known.get(it.nodeid, slow))


def pytest_runtest_logreport(report):
    if _recording():
        _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session, exitstatus):
    path = _path()
    if path and _recording():
        with open(path, "w", encoding="utf-8") as f:
            json.dump(_durations, f, indent=0, sort_keys=True)
