"""Course compatibility: ``needle.backend_selection`` names the array API in use.

needle always computes on NDArray; ``NEEDLE_BACKEND=np`` (set by course
notebooks) only makes the NumPy backend the default device."""

from . import backend_ndarray as array_api
from .backend_ndarray import (BackendDevice, NDArray, all_devices, cpu, cpu_numpy, cuda,
                              default_device)

Device = BackendDevice
BACKEND = "nd"

__all__ = ["array_api", "NDArray", "BackendDevice", "Device", "cpu", "cuda", "cpu_numpy",
           "default_device", "all_devices", "BACKEND"]
