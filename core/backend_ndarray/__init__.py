"""``needle.backend_ndarray`` (course name ``nd``): NDArray and devices."""

from . import ndarray
from .device import (BackendDevice, Device, all_devices, cpu, cpu_numpy, cuda, default_device,
                     device, set_default_device)
from .ndarray import (AxisError, NDArray, array, broadcast_to, empty, exp, flip, full, log,
                      matmul, max, maximum, pad, prod, reshape, sum, tanh)

__all__ = ["NDArray", "BackendDevice", "Device", "AxisError", "array", "empty", "full",
           "broadcast_to", "reshape", "maximum", "log", "exp", "tanh", "sum", "max", "flip", "pad",
           "matmul", "prod", "cpu", "cuda", "cpu_numpy", "default_device", "all_devices", "device", "set_default_device",
           "ndarray"]
