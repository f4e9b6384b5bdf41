"""mutation.sh's test runner: ``python -m pytest ARGS``, exiting 1 on any failure.

mutmut 2 counts a mutant as killed only when the runner exits with status 1
(``tests_pass`` is ``returncode != 1``), so a mutant that breaks an import
(pytest exits 2 or 3: collection error, or the needle pytest plugin failing
to load) would count as *survived*.  Here every non-zero status becomes 1.
pytest runs in this process (not a child), so mutmut's timeout still ends it.
"""

import os
import sys

import pytest

if __name__ == "__main__":
    sys.path[0] = os.getcwd()  # what `python -m pytest` puts first, not this script's folder
    sys.exit(0 if pytest.main(sys.argv[1:]) == 0 else 1)
