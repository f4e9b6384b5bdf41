"""Typed errors raised by needle.

Each error subclasses the builtin a caller would naturally catch, so
``except ValueError`` keeps working, while needle-aware code can catch the
precise type.  Messages name the operation, the values involved and what
would have been valid.
"""

__all__ = [
    "NeedleError",
    "ShapeError",
    "DeviceMismatchError",
    "UnsupportedDTypeError",
    "BackendUnavailableError",
    "ProtocolVersionError",
    "DataFormatError",
    "ChecksumError",
    "StateDictError",
    "ArgumentError",
    "HyperParameterError",
    "DistributedError",
    "DistributedTimeoutError",
    "DistributedConfigError",
    "JitError",
    "ArgumentTypeError",
    "OutOfBoundsError",
    "SizeOverflowError",
    "EmptyDatasetError",
    "DownloadError",
]


class NeedleError(Exception):
    """Base class of every error needle raises on purpose."""


class ShapeError(NeedleError, ValueError):
    """Shapes that do not fit the operation (element-wise, matmul, reshape...)."""


class DeviceMismatchError(NeedleError, ValueError):
    """Operands live on different devices."""


class UnsupportedDTypeError(NeedleError, TypeError):
    """A dtype that the operation or the backend does not support."""


class BackendUnavailableError(NeedleError, RuntimeError):
    """A backend or device that is unknown, or known but unusable here."""


class ProtocolVersionError(BackendUnavailableError):
    """A plugin built for an array-protocol version this needle cannot use."""


class DataFormatError(NeedleError, ValueError):
    """A data file that is truncated, malformed or not of the expected format."""


class ChecksumError(DataFormatError):
    """A downloaded file whose SHA-256 differs from the expected one."""


class StateDictError(NeedleError, ValueError):
    """A state dict whose keys or shapes do not fit the module loading it."""


class ArgumentError(NeedleError, ValueError):
    """An argument outside the domain its function accepts."""


class HyperParameterError(ArgumentError):
    """A layer, optimizer, scheduler or loader setting outside its domain
    (lr < 0, p outside [0, 1], negative features...); bounds follow PyTorch."""


class ArgumentTypeError(NeedleError, TypeError):
    """An argument of a type the function cannot use (a Tensor from a dict...)."""


class OutOfBoundsError(NeedleError, IndexError):
    """An index outside the axis or the dataset it indexes."""


class SizeOverflowError(ShapeError, OverflowError):
    """A shape whose element count or byte size does not fit in memory
    addresses (also a ValueError, as NumPy reports it)."""


class EmptyDatasetError(ArgumentError):
    """An operation that needs at least one sample got an empty dataset."""


class DownloadError(NeedleError, ConnectionError):
    """A download that failed or was cut short (HTTP error, unreachable host,
    fewer bytes than the server declared); nothing is kept."""


# -- needle.distributed ---------------------------------------------------------


class DistributedError(NeedleError, RuntimeError):
    """A collective used wrongly: before ``init_process_group``, with ranks that
    disagree (shapes, dtypes), or a rank that failed."""


class DistributedTimeoutError(DistributedError, TimeoutError):
    """A collective that some rank did not reach within the group's timeout."""


class DistributedConfigError(DistributedError, ValueError):
    """A bad argument to a distributed API: a sampler rank outside the world,
    a world size below one, more processes than allowed."""


# -- needle.jit -------------------------------------------------------------------


class JitError(NeedleError, RuntimeError):
    """A function ``needle.jit`` cannot capture and replay faithfully: a host
    read (``.numpy()``, ``float(t)``) inside it, a non-Tensor result, arrays on
    two devices, or a Tensor from outside the function whose data changed
    between calls.  The message names the op and the user's line."""
