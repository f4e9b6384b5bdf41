"""needle.testing's conformance suite, run in the repo over every bundled
backend (numpy, cpu when built, cuda when a GPU exists; the rest skip with
the reason).  The suite's tests are imported from the package so that the
repo and a plugin author's ``pytest --pyargs needle.testing --needle-backend
NAME`` run the very same code; tests/conftest.py parameterizes the
``conformance_device`` fixture they use.

Run with ``--needle-report`` to print the per-kernel report.
"""

from needle.testing.test_kernels import *  # noqa: F401,F403
from needle.testing.test_ndarray_api import *  # noqa: F401,F403
from needle.testing.test_ops import *  # noqa: F401,F403
from needle.testing.test_properties import *  # noqa: F401,F403
from needle.testing.test_special_values import *  # noqa: F401,F403
