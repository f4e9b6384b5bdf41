"""needle.nn: modules (course API §4, docs/design.md)."""

from .nn_basic import *  # noqa: F401,F403
from .nn_conv import *  # noqa: F401,F403
from .nn_sequence import *  # noqa: F401,F403
from .nn_transformer import *  # noqa: F401,F403
from .nn_containers import *  # noqa: F401,F403
from .nn_losses import *  # noqa: F401,F403
from .nn_activations import *  # noqa: F401,F403
from . import utils  # noqa: F401  (nn.utils.clip_grad_norm_)
from . import parallel  # noqa: F401,E402 -- needle.nn.parallel.DistributedDataParallel
