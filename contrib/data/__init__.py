"""needle.data: datasets, loaders and transforms (course API §6, docs/design.md)."""

from .data_basic import *  # noqa: F401,F403
from .data_transforms import *  # noqa: F401,F403
from .datasets import *  # noqa: F401,F403
from .download import download  # noqa: F401
