"""Peak memory of one call: the GPU allocator's peak on a GPU, the increase in resident memory on the CPU.

* torch on CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
* CuPy: the default memory pool's ``total_bytes`` after ``free_all_blocks`` (the pool
  keeps every block it hands out, so its size after the call is the call's peak).
* JAX on a GPU: ``peak_bytes_in_use`` of the device's ``memory_stats()``. JAX keeps that
  peak for the process's lifetime, so it is the run's peak so far, not only the call's;
  ``bench`` sets ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` so it means anything at all.
* CPU, any framework: the kernel's high-water mark of the resident set (``VmHWM`` in
  ``/proc/self/status``, reset just before the call through ``/proc/self/clear_refs``), minus
  the resident set just before. That is exact whatever the load: a sampling thread can miss a
  short peak when the call holds the GIL or the machine is busy, and does so only where the
  kernel refuses the reset (then the resident set is sampled every millisecond during the
  call, ``/proc/self/statm``). Free heap memory is first
  handed back to the system (``gc.collect`` and glibc's ``malloc_trim(0)``), so memory
  that earlier calls left in malloc's free lists is counted again, as a first call
  would need it; caches that frameworks keep themselves (FFT plans, compiled code)
  are not.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import threading
import time

#: what ``peak_memory_bytes`` measured, by kind
KINDS = {"gpu-allocator": "peak of the framework's GPU allocator during the call",
         "host-rss-increase": "peak resident memory during the call minus resident memory before it"}


def _gpu_peak(framework: str, device: str):
    """Reset and return a reader of the GPU allocator's peak, or None when not on a GPU."""
    if device != "cuda":
        return None
    if framework == "cupy":
        import cupy
        pool = cupy.get_default_memory_pool()
        pool.free_all_blocks()
        return pool.total_bytes
    if framework == "torch":
        import torch
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.max_memory_allocated
    if framework == "jax":
        import jax
        dev = next((d for d in jax.devices() if d.platform == "gpu"), None)
        if dev is not None:
            return lambda: (dev.memory_stats() or {}).get("peak_bytes_in_use")
    return None


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _release_free_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):    # not glibc: the figure may then miss reused memory
        pass


_PROCESS_PEAK = [0]     # the high-water marks seen before each reset: the process's peak survives them


def process_peak_rss() -> int | None:
    """The peak resident memory of this process so far (bytes), across the resets made here."""
    now = _high_water_mark()
    return None if now is None else max(now, _PROCESS_PEAK[0])


def _reset_high_water_mark() -> bool:
    """Set the kernel's resident-set high-water mark to the current resident set (Linux >= 4.0)."""
    _PROCESS_PEAK[0] = max(_PROCESS_PEAK[0], _high_water_mark() or 0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _high_water_mark() is not None
    except OSError:
        return False


def _high_water_mark() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_increase(fn, *, interval: float = 1e-3):
    """(result of fn(), peak resident bytes during the call minus those before); None if unreadable."""
    _release_free_memory()
    before = _rss_bytes()
    if before is None:
        return fn(), None
    if _reset_high_water_mark():
        out = fn()
        return out, max((_high_water_mark() or before) - before, 0)
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            r = _rss_bytes()
            if r is not None and r > peak[0]:
                peak[0] = r
            time.sleep(interval)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        out = fn()
    finally:
        done.set()
        t.join()
    after = _rss_bytes()
    return out, max(peak[0], after or 0) - before


def measure_peak(fn, framework: str, device: str):
    """(peak bytes, kind) of one call of *fn* (see the module docstring); (None, why) if not measurable."""
    reader = _gpu_peak(framework, device)
    if reader is not None:
        fn()
        peak = reader()
        return (int(peak), "gpu-allocator") if peak is not None else (None, "not reported by the allocator")
    _, inc = peak_rss_increase(fn)
    return (int(inc), "host-rss-increase") if inc is not None else (None, "not measured: no /proc/self/statm")
