"""pluggy hook specifications: how plugins talk to needle.

A plugin is a module named by an entry point in the group ``needle.backends``
(``name = "package.module"``).  It implements one or more of the hooks below,
decorated with :data:`hookimpl` (also exported by :mod:`needle.protocol`).
Importing the module must be cheap and must not touch hardware: availability
is asked later, through :meth:`needle.protocol.Backend.is_available`.
"""

from __future__ import annotations

import pluggy

PROJECT = "needle"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def needle_backends():
    """Return a list of :class:`needle.protocol.Backend` instances."""


@hookspec
def needle_register_ops(register):
    """Register third-party ops.

    ``register(name, op_class, function=None)`` adds ``op_class`` (a
    ``needle.autograd.TensorOp`` subclass) to the op registry under ``name``;
    ``function`` is the lowercase helper exposed as ``needle.ops.<name>``.
    """
