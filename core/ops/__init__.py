"""``needle.ops``: every op of course API §2 (docs/design.md) as a class and a lowercase
function, plus extras used by ``needle.nn`` (sigmoid, max, pooling).

The names exported here come from the op registry (:mod:`.registry`);
third-party ops added with :func:`register_op` (or the pluggy hook
``needle_register_ops``) appear here too.
"""

from . import registry
from .registry import REGISTRY, get_op, op_names, register_op
from .ops_mathematic import *  # noqa: F401,F403
from .ops_mathematic import ReLUGrad, kept_dims_shape, normalize_axes, unbroadcast  # noqa: F401
from .ops_logarithmic import *  # noqa: F401,F403
from .ops_tuple import *  # noqa: F401,F403
from .ops_conv import *  # noqa: F401,F403
from .ops_pooling import *  # noqa: F401,F403
from .ops_norm import *  # noqa: F401,F403
from .ops_loss import *  # noqa: F401,F403  (issue 14 fused softmax cross-entropy)
from .ops_optim import multi_tensor_adam_step, multi_tensor_sgd_step  # noqa: F401  (issue 14)
from .ops_rows import *  # noqa: F401,F403  [i14f2 fused softmax/layer_norm]
from .ops_lstm import *  # noqa: F401,F403  [i14f2 fused LSTM gates]
from .ops_tensor_api import *  # noqa: F401,F403
from .ops_tensor_api import ComparisonResult, MinMaxResult  # noqa: F401
from .. import autograd as _autograd


#: op functions reachable as ``ops.<name>`` but kept out of ``__all__`` (and so
#: out of ``needle``'s namespace) because ``from needle.ops import *`` would
#: shadow a Python builtin
NOT_STAR_EXPORTED = {"max", "min", "abs"}


def _exported_names():
    names = []
    for entry in REGISTRY.values():
        for n in (entry.name, entry.cls.__name__):
            if n not in names and n not in NOT_STAR_EXPORTED:
                names.append(n)
    return names


# every registered op's function and class (the lead's core/__init__ star-imports these)
__all__ = _exported_names()
for _entry in REGISTRY.values():
    globals()[_entry.name] = _entry.function
    globals()[_entry.cls.__name__] = _entry.cls
del _entry

# Tensor's operators (``a + b`` -> ``add(a, b)``) call the functions of this
# module: hand it to autograd, which sits below the ops and cannot import it
import sys as _sys  # noqa: E402

_autograd.use_ops(_sys.modules[__name__])
