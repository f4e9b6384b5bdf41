"""pytest plugin for scripts/mutation.sh: run only the tests that execute the mutated line.

A mutmut 2 mutant changes one line of one source file, and a test that never
executes that line behaves exactly as on the unmutated tree, so it cannot
kill the mutant; running it only costs time.  With ``MUTATION_COVMAP=FILE``,
``MUTATION_SOURCE`` (the file being mutated, in the scratch copy) and
``MUTATION_ORIGINAL`` (its unmutated copy):

* ``MUTATION_RECORD=1`` (once per source file, on the unmutated tree, with
  fastest_first's durations): measure which lines of the source each test
  executes (coverage.py's dynamic contexts, one per test, setup and teardown
  included) and write ``{line: [test ids]}`` to FILE; lines that run outside
  any test -- at import: module and class bodies, ``def`` lines, default
  arguments, and whatever they call -- are recorded as ``"*"`` (run
  everything): a mutant there changes what every test sees;
* otherwise: compare the source with its original; when exactly one line
  differs and the map names the tests that execute it, deselect the others.
  Anything else (a line no test runs, an import-time line, a changed line
  count, no map) runs the whole selection, as before.

The kill decision is the same as running every test (up to tests that
depend on what an earlier test left behind); only the time changes.
Loaded with ``-p covered_only`` before ``-p fastest_first``.
"""

from __future__ import annotations

import json
import os

import pytest

def _env(name):
    return os.environ.get(name)


def _start():
    """The measuring Coverage: the one ``coverage run`` started (mutation.sh
    records under ``python -m coverage run -m pytest``, so that lines run
    while needle's pytest11 plugin imports needle -- before any -p plugin
    loads -- are measured too), else one started here."""
    if _env("MUTATION_RECORD") == "1" and _env("MUTATION_COVMAP") and _env("MUTATION_SOURCE"):
        import coverage
        cov = coverage.Coverage.current()
        if cov is None:
            cov = coverage.Coverage(data_file=None, include=[os.path.abspath(_env("MUTATION_SOURCE"))],
                                    config_file=False)
            cov.start()
        return cov
    return None


_cov = _start()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if _cov is not None:
        _cov.switch_context(item.nodeid)
    yield
    if _cov is not None:
        _cov.switch_context("")


def pytest_sessionfinish(session, exitstatus):
    if _cov is None:
        return
    _cov.stop()
    data = _cov.get_data()
    target = os.path.realpath(_env("MUTATION_SOURCE"))
    lines: dict = {}
    for measured in data.measured_files():
        if os.path.realpath(measured) != target:
            continue
        for lineno, contexts in data.contexts_by_lineno(measured).items():
            tests = sorted(c for c in contexts if c)
            lines[str(lineno)] = "*" if "" in contexts or not tests else tests
    with open(_env("MUTATION_COVMAP"), "w", encoding="utf-8") as f:
        json.dump(lines, f, indent=0, sort_keys=True)


def _mutated_line():
    """The one line (1-based) where the source differs from its original, or None."""
    try:
        with open(_env("MUTATION_SOURCE"), encoding="utf-8") as f:
            now = f.read().split("\n")
        with open(_env("MUTATION_ORIGINAL"), encoding="utf-8") as f:
            orig = f.read().split("\n")
    except (OSError, TypeError):
        return None
    if len(now) != len(orig):
        return None
    changed = [i + 1 for i, (a, b) in enumerate(zip(now, orig)) if a != b]
    return changed[0] if len(changed) == 1 else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    if _env("MUTATION_RECORD") == "1" or not _env("MUTATION_COVMAP") or not os.path.exists(_env("MUTATION_COVMAP")):
        return
    line = _mutated_line()
    if line is None:
        return
    with open(_env("MUTATION_COVMAP"), encoding="utf-8") as f:
        tests = json.load(f).get(str(line))
    if not tests or tests == "*":
        return
    wanted = set(tests)
    keep = [it for it in items if it.nodeid in wanted]
    if not keep:
        return
    config.hook.pytest_deselected(items=[it for it in items if it.nodeid not in wanted])
    items[:] = keep
