"""needle.data: datasets, loaders and transforms (API.md section 6)."""

from .data_basic import *  # noqa: F401,F403
from .samplers import *  # noqa: F401,F403
from .data_transforms import *  # noqa: F401,F403
from .datasets import *  # noqa: F401,F403
from .download import download  # noqa: F401
