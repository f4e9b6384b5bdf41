"""needle.nn: modules (API.md section 4)."""

from .nn_basic import *  # noqa: F401,F403
from .nn_conv import *  # noqa: F401,F403
from .nn_sequence import *  # noqa: F401,F403
from .nn_transformer import *  # noqa: F401,F403
from . import parallel  # noqa: F401,E402 -- needle.nn.parallel.DistributedDataParallel
