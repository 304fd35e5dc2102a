"""The few stamps a benchmark run keeps for the report's gallery, stored inside its JSON.

The benchmark picks the first sample of each SNR bin, keeps the r band (or the first) of
the observation, the truth and every image-returning method's output, and writes them
as base64 float32 with their shape under ``deconvbench.gallery``. The report decodes them
(:func:`decode`) and so never imports a method, a framework or the simulator.
"""

from __future__ import annotations

import base64

import numpy as np

from .errors import BenchValueError

_STAMPS: dict = {}          # filled by the benchmark session: name -> (k, n, n) float32


def indices(snr_bin) -> np.ndarray:
    """The first sample of each SNR bin, in bin order."""
    bins = np.asarray(snr_bin)
    return np.array([int(np.flatnonzero(bins == k)[0]) for k in np.unique(bins)], dtype=np.int64)


def band_index(bands) -> int:
    return list(bands).index("r") if "r" in bands else 0


def encode(arr) -> dict:
    a = np.ascontiguousarray(np.asarray(arr, dtype="<f4"))
    return {"dtype": "float32", "shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii")}


def decode(d) -> np.ndarray:
    """An array written by :func:`encode`; raises naming what is wrong with a malformed entry."""
    try:
        shape = tuple(int(v) for v in d["shape"])
        raw = base64.b64decode(d["data"], validate=True)
    except (KeyError, TypeError, ValueError) as err:
        raise BenchValueError(f"gallery entry is malformed ({type(err).__name__}: {err})") from None
    if d.get("dtype") != "float32" or len(raw) != 4 * int(np.prod(shape)):
        raise BenchValueError(f"gallery entry has {len(raw)} bytes, not float32 of shape {shape}")
    return np.frombuffer(raw, dtype="<f4").reshape(shape)


def add(name: str, stamps, *, snr=None) -> None:
    """Keep *stamps* (k, n, n) under *name* for this session's JSON."""
    _STAMPS[name] = np.asarray(stamps, dtype=np.float32)
    if snr is not None:
        _STAMPS["_snr"] = np.asarray(snr, dtype=np.float32)


def payload() -> dict | None:
    """What the benchmark writes under ``deconvbench.gallery`` (None when nothing was kept)."""
    if not _STAMPS:
        return None
    out = {"stamps": {k: encode(v) for k, v in _STAMPS.items() if not k.startswith("_")}}
    if "_snr" in _STAMPS:
        out["snr"] = [float(v) for v in _STAMPS["_snr"]]
    return out
