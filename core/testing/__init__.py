"""needle's backend conformance suite, shipped as a pytest plugin.

A backend author checks a plugin with one command::

    pytest --pyargs needle.testing --needle-backend NAME     # or: needle check-backend NAME

The suite runs every protocol kernel of :mod:`needle.protocol` (required and
optional) on backend ``NAME`` against NumPy, exercises ``NDArray`` through
it, checks the main ops' forward results and gradients, and runs
property-based tests (hypothesis) of the view logic.  At the end it prints a
per-kernel report: whether the backend implements each kernel natively or
inherits the protocol's composition, and whether its tests passed.

``--needle-quick`` shrinks sizes and example counts (for slow, pure-Python
backends).  The plugin itself (:mod:`needle.testing.plugin`) is loaded by
every pytest run through the ``pytest11`` entry point, and does nothing
unless ``--needle-backend`` is given.
"""


def run_suite(backend: str, pytest_args=()) -> int:
    """Run the conformance suite on ``backend`` in this process; the exit
    code of pytest (``needle check-backend NAME`` calls this, so that core
    outside ``needle.testing`` never imports pytest)."""
    import pytest
    return int(pytest.main(["--pyargs", "needle.testing", "--needle-backend", backend, "-q",
                            *pytest_args]))
