"""FFT back-ends for the classical methods: pyFFTW, scipy.fft and CuPy behind one interface.

A back-end has ``xp`` (the array module, NumPy or CuPy) and batched 2-D real
transforms over the last two axes, ``rfft2(x)`` and ``irfft2(X, n)``. The
methods are written once against this interface (``wiener-fftw`` and
``wiener-cupy`` are the same code on different back-ends).

pyFFTW plans are built once per (shape, dtype) through ``pyfftw.builders`` and
kept for the life of the back-end; FFTW wisdom is loaded from and saved to
``$DECONVBENCH_CACHE/fftw_wisdom.json`` (default ``~/.cache/deconvbench``), so
later runs skip the planning measurements. The file holds FFTW's own wisdom text (JSON,
never a pickle): whoever can write it can at most slow the planning down, and a file
that is not wisdom is ignored.

Threads (default: the core count) work on separate chunks of stamps, each FFT being
single-threaded: 48 x 48 transforms are memory-bound and thread poorly inside one
transform, and FFTW's own threads are process-global state that GalSim's FFTW (in
forked simulation workers) would inherit and deadlock on.
"""

from __future__ import annotations

import json
import os
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np

from bench.devices import module_missing
from bench.errors import MethodUnavailableError, unknown_name

BACKENDS = ("pyfftw", "scipy", "cupy")


def cache_dir() -> Path:
    return Path(os.environ.get("DECONVBENCH_CACHE", Path.home() / ".cache" / "deconvbench"))


_POOLED: "weakref.WeakSet" = weakref.WeakSet()


def _forget_pools_after_fork():
    # a forked child has none of the parent's threads: start a new pool if it needs one
    for be in list(_POOLED):
        be._pool = None


os.register_at_fork(after_in_child=_forget_pools_after_fork)


class _CPUBackend:
    """Shared by the CPU back-ends: chunks run on a persistent pool of threads, each with its
    own single-threaded copy of the back-end, so a chunk's arrays stay in that core's cache
    (FFTs of 48 x 48 stamps are memory-bound, and small batched FFTs thread poorly)."""

    xp = np

    def map_chunks(self, total: int, chunk: int, fn) -> None:
        """Call ``fn(slice, backend)`` for consecutive chunks of ``range(total)``."""
        slices = [slice(s, min(s + chunk, total)) for s in range(0, total, chunk)]
        if self.threads == 1 or len(slices) == 1:
            for sl in slices:
                fn(sl, self)
            return
        if getattr(self, "_pool", None) is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=f"fft-{self.name}")
            self._local = threading.local()
            _POOLED.add(self)

        def work(sl):
            be = getattr(self._local, "backend", None)
            if be is None:
                be = self._local.backend = type(self)(threads=1)
            fn(sl, be)

        for f in [self._pool.submit(work, sl) for sl in slices]:
            f.result()


class ScipyFFT(_CPUBackend):
    """``scipy.fft`` (the fallback when pyFFTW is missing)."""

    name = "scipy"

    def __init__(self, threads: int | None = None):
        self.threads = threads or os.cpu_count() or 1

    def rfft2(self, x):
        import scipy.fft
        return scipy.fft.rfft2(x, axes=(-2, -1), workers=1)

    def irfft2(self, X, n: int):
        import scipy.fft
        return scipy.fft.irfft2(X, s=(n, n), axes=(-2, -1), workers=1, overwrite_x=True)


WISDOM_FILE = "fftw_wisdom.json"
WISDOM_FORMAT = "deconvbench-fftw-wisdom-1"


def read_wisdom(path) -> tuple[bytes, bytes, bytes] | None:
    """FFTW wisdom (double, single, long double) from *path*, or None if absent or not wisdom."""
    try:
        data = json.loads(Path(path).read_text(encoding="ascii"))
        text = data["wisdom"]
        if data.get("format") != WISDOM_FORMAT or len(text) != 3:
            return None
        if not all(isinstance(t, str) and (t == "" or t.startswith("(fftw")) for t in text):
            return None
        return tuple(t.encode("ascii") for t in text)
    except (OSError, ValueError, KeyError, TypeError, UnicodeError):
        return None        # no or unreadable wisdom: plan from scratch


class PyFFTW(_CPUBackend):
    """pyFFTW builders, one plan per (direction, shape, dtype), wisdom kept between runs."""

    name = "pyfftw"

    def __init__(self, threads: int | None = None, planner_effort: str = "FFTW_MEASURE"):
        import pyfftw
        self._pyfftw = pyfftw
        self.threads = threads or os.cpu_count() or 1
        self.planner_effort = planner_effort
        self._plans: dict = {}
        self._wisdom_file = cache_dir() / WISDOM_FILE
        wisdom = read_wisdom(self._wisdom_file)
        if wisdom is not None:
            pyfftw.import_wisdom(wisdom)     # FFTW parses the text itself; bad text is refused

    def _plan(self, kind: str, shape: tuple, dtype, n: int | None = None):
        key = (kind, shape, np.dtype(dtype).str, n)
        plan = self._plans.get(key)
        if plan is None:
            b = self._pyfftw.builders
            a = self._pyfftw.empty_aligned(shape, dtype=dtype)
            kw = dict(axes=(-2, -1), threads=1, planner_effort=self.planner_effort)
            plan = b.rfft2(a, **kw) if kind == "r" else b.irfft2(a, s=(n, n), **kw)
            self._plans[key] = plan
            self._save_wisdom()
        return plan

    def _save_wisdom(self):
        try:
            self._wisdom_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._wisdom_file.with_suffix(f".tmp{os.getpid()}")
            text = [w.decode("ascii") for w in self._pyfftw.export_wisdom()]
            tmp.write_text(json.dumps({"format": WISDOM_FORMAT, "wisdom": text}))
            os.replace(tmp, self._wisdom_file)
        except OSError:
            pass      # a read-only home only costs planning time

    def _run(self, plan, x):
        out = self._pyfftw.empty_aligned(plan.output_shape, dtype=plan.output_dtype)
        return plan(x, out)

    def rfft2(self, x):
        return self._run(self._plan("r", x.shape, x.dtype), x)

    def irfft2(self, X, n: int):
        return self._run(self._plan("c", X.shape, X.dtype, n), X)


class CupyFFT:
    """``cupyx.scipy.fft`` on the current GPU (cuFFT plans are cached by CuPy)."""

    name = "cupy"

    def __init__(self, threads: int | None = None):
        import cupy
        import cupyx.scipy.fft
        self.xp = cupy
        self._fft = cupyx.scipy.fft

    def rfft2(self, x):
        return self._fft.rfft2(x, axes=(-2, -1))

    def irfft2(self, X, n: int):
        return self._fft.irfft2(X, s=(n, n), axes=(-2, -1))

    def map_chunks(self, total: int, chunk: int, fn) -> None:
        for s in range(0, total, chunk):
            fn(slice(s, min(s + chunk, total)), self)


@lru_cache(maxsize=None)
def get_backend(name: str, threads: int | None = None):
    """The FFT back-end *name* (``pyfftw``, ``scipy`` or ``cupy``), built once per process."""
    if name not in BACKENDS:
        raise unknown_name("FFT back-end", name, BACKENDS)
    if name == "pyfftw":
        if module_missing("pyfftw"):
            raise MethodUnavailableError("pyFFTW is not installed (pip install '.[fftw]')")
        return PyFFTW(threads)
    if name == "cupy":
        return CupyFFT(threads)
    return ScipyFFT(threads)


def default_cpu_backend() -> str:
    """pyfftw when installed, else scipy."""
    return "scipy" if module_missing("pyfftw") else "pyfftw"


def centred_transfer(psf, backend, size: int | None = None):
    """rFFT of *psf* (..., n, n) on a circular size x size grid, phase-referenced to (n - 1) / 2.

    ``size`` defaults to n (circular convolution at the stamp size); a larger size, such as
    :func:`bench.fourier.padded_size`, gives linear convolution. The convention is that of
    :func:`bench.fourier.centered_psf_ft`, on the back-end's array module.
    """
    from bench.fourier import centring_phase

    xp = backend.xp
    n = psf.shape[-1]
    m = size or n
    H = backend.rfft2(zero_pad(psf, m, xp))
    return H * xp.asarray(centring_phase(n, m).astype(H.dtype))


def zero_pad(x, m: int, xp):
    """x (..., n, n) in the corner of a zero (..., m, m) array (x itself when m == n)."""
    n = x.shape[-1]
    if m == n:
        return x
    out = xp.zeros(x.shape[:-2] + (m, m), dtype=x.dtype)
    out[..., :n, :n] = x
    return out


def prepare_batch(image, psf, noise_sigma, backend: str | None):
    """The FFT back-end and a validated (N, B, n, n) batch as (N*B, n, n) stamps.

    Returns ``(backend, xp, shape, dtype, img, psf, sigma)``: the input's float dtype
    (float64 for other dtypes) is kept, so outputs can be returned in it.
    """
    from .registry import check_batch

    be = get_backend(backend or default_cpu_backend())
    xp = be.xp
    check_batch(image, psf, noise_sigma, xp=xp)
    N, B, n, _ = image.shape
    dtype = image.dtype if image.dtype in (xp.float32, xp.float64) else xp.float64
    img = image.reshape(N * B, n, n).astype(dtype, copy=False)
    ps = psf.reshape(N * B, n, n).astype(dtype, copy=False)
    sig = noise_sigma.reshape(N * B).astype(dtype, copy=False)
    return be, xp, (N, B, n), dtype, img, ps, sig
