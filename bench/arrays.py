"""Array plumbing shared by every floor: the array namespace, the device, host copies and
DLPack hand-over between frameworks. Imports nothing of the project but its errors."""

from __future__ import annotations

import numpy as np

from .errors import unknown_name

FRAMEWORKS = ("numpy", "torch", "jax", "cupy")


def namespace(*arrays):
    """The array namespace of *arrays*: NumPy itself, or array-api-compat's wrapper for others.

    NumPy input never imports array-api-compat, so the NumPy path needs only NumPy and SciPy.
    """
    if all(isinstance(a, np.ndarray) for a in arrays):
        return np
    from array_api_compat import array_namespace
    return array_namespace(*arrays)


def device_of(x):
    """The device of array *x* (None for NumPy)."""
    if isinstance(x, np.ndarray):
        return None
    from array_api_compat import device
    return device(x)


def engine_array(x):
    """*x* in a framework the metacal engine runs on (NumPy, CuPy or torch).

    A JAX array is handed over without a copy where DLPack allows: to NumPy on the CPU, to torch
    (else CuPy) on a GPU. JAX's eager mode would compile every operation of the engine for every
    shape it meets and keep what it compiled (4 GB and minutes for 5000 stamps on a CPU). Other
    arrays and None pass unchanged.
    """
    if x is None or isinstance(x, np.ndarray) or not type(x).__module__.startswith(("jax", "jaxlib")):
        return x
    if all(d.platform == "cpu" for d in x.devices()):
        return np.asarray(x)
    try:
        import torch
        return torch.from_dlpack(x)
    except ImportError:
        import cupy
        return cupy.from_dlpack(x)


def to_numpy(x) -> np.ndarray:
    """Copy an array of any supported framework (NumPy, CuPy, torch, JAX) to host NumPy."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "get"):                      # CuPy
        return x.get()
    if hasattr(x, "detach"):                   # torch
        return x.detach().cpu().numpy()
    return np.asarray(x)


def synchronize(x):
    """Wait until the device has finished computing *x* (any framework) and return *x*.

    GPU frameworks return before their kernels finish, so a timer must wait for them; copying
    the result to the host would wait too, but would also time the bus (5000 x 3 stamps of
    48 x 48 float32 are 138 MB). Host arrays return at once.
    """
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "block_until_ready"):        # JAX
        x.block_until_ready()
        return x
    top = type(x).__module__.split(".")[0]
    if top == "cupy":
        import cupy
        cupy.cuda.get_current_stream().synchronize()
    elif top == "torch" and x.is_cuda:
        import torch
        torch.cuda.synchronize(x.device)
    return x


def to_framework(arr, framework: str):
    """Hand *arr* to *framework* through DLPack (no copy where the framework allows)."""
    if framework == "numpy":
        return np.from_dlpack(arr) if not isinstance(arr, np.ndarray) else arr
    if framework == "torch":
        import torch
        return torch.from_dlpack(arr)
    if framework == "jax":
        import jax.numpy as jnp
        return jnp.from_dlpack(arr)
    if framework == "cupy":
        import cupy
        return cupy.from_dlpack(arr)
    raise unknown_name("framework", framework, FRAMEWORKS)


def method_inputs(arrays, framework: str, device: str = "cpu") -> list:
    """NumPy *arrays* as *framework* arrays on *device* (DLPack on the CPU: no copy)."""
    if framework == "cupy":
        import cupy
        return [cupy.asarray(a) for a in arrays]
    if framework == "torch":
        return [to_framework(a, "torch").to(device) for a in arrays]
    if framework == "jax":
        import jax
        dev = jax.devices("gpu")[0] if device == "cuda" else jax.devices("cpu")[0]
        return [jax.device_put(to_framework(a, "jax"), dev) for a in arrays]
    return list(arrays)


__all__ = ["FRAMEWORKS", "device_of", "method_inputs", "namespace", "synchronize", "to_framework", "to_numpy"]
