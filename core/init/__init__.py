"""``needle.init``: tensor constructors and parameter initializers (course
API §3, docs/design.md).  Every random draw is exactly one ``np.random.rand(*shape)`` or
``np.random.randn(*shape)`` call on NumPy's global RNG, so seeded results
match the course's golden values."""

from .init_basic import (constant, one_hot, ones, ones_like, rand, randb, randn, zeros,
                         zeros_like)
from .init_initializers import (kaiming_normal, kaiming_uniform, xavier_normal,
                                xavier_uniform)

__all__ = ["rand", "randn", "constant", "ones", "zeros", "randb", "one_hot", "zeros_like",
           "ones_like", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal"]
