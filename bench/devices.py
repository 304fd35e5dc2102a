"""What hardware and frameworks are here, found without importing the frameworks."""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
from functools import lru_cache


def module_missing(name: str) -> bool:
    return importlib.util.find_spec(name) is None


@lru_cache(maxsize=1)
def cuda_unavailable_reason() -> str:
    """'' when an NVIDIA GPU and driver are present, else why not (no framework imported)."""
    if not (os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0")):
        return "no NVIDIA GPU or driver on this machine"
    if ctypes.util.find_library("cuda") is None and not os.path.exists("/dev/nvidiactl"):
        return "the CUDA driver library (libcuda) is not installed"
    return ""
