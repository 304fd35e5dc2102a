"""Cached datasets: simulate once, keep in HDF5, load onto a device once.

The cache file is ``datasets/cache/{name}-{key}.h5`` where *key* hashes the spec,
the GalSim version and the file-format version. The environment variable
``DECONVBENCH_DATASET_CACHE`` names another folder (read at each call, so a command and
the processes it starts agree); a ``cache_dir`` argument overrides both. A file whose key,
completeness flag or checksums do not match is regenerated, never silently used. Files are
written to a temporary name and renamed, so an interrupted run leaves no half-written
cache behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .arrays import FRAMEWORKS, to_framework  # noqa: F401  (to_framework: part of the API)
from .errors import BenchValueError, unknown_name
from .spec import DATASETS_DIR, DatasetSpec, load_spec

FORMAT_VERSION = 1
CACHE_DIR = DATASETS_DIR / "cache"
#: environment variable naming the cache folder instead of :data:`CACHE_DIR`
CACHE_ENV = "DECONVBENCH_DATASET_CACHE"
DEVICES = ("cpu", "cuda")


def cache_key(spec: DatasetSpec) -> str:
    import galsim
    return spec.digest(extra=f"galsim={galsim.__version__};format={FORMAT_VERSION}")


def _hash_rows(h, d, stop: int | None = None, rows: int = 1024):
    """Feed samples [0, *stop*) of the HDF5 dataset *d* to the hash *h*, *rows* at a time (the
    memory of one slice, not of the array); returns *h*."""
    stop = d.shape[0] if stop is None else stop
    for a in range(0, stop, rows):
        h.update(np.ascontiguousarray(d[a:min(a + rows, stop)]).view(np.uint8))
    return h


def default_cache_dir() -> Path:
    """``$DECONVBENCH_DATASET_CACHE`` when set and not empty, else :data:`CACHE_DIR` (``datasets/cache``)."""
    return Path(os.environ.get(CACHE_ENV) or CACHE_DIR)


def cache_path(spec: DatasetSpec, cache_dir: Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / f"{spec.name}-{cache_key(spec)}.h5"


#: the dtype kind each cached array must have: stamps float32, integer labels, float64 otherwise
_INTEGER_ARRAYS = ("quad_id", "rotation", "shear_sign", "snr_bin")


def expected_layout(spec: DatasetSpec) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shape and dtype of every array of *spec*'s cache, from the spec alone."""
    from .simulate import ARRAYS

    dims = {"B": len(spec.bands), "n": spec.stamp_size}
    out = {}
    for k, axes in ARRAYS.items():
        shape = (spec.n_samples,) + tuple(dims[a] for a in axes.split())
        dtype = "<f4" if axes == "B n n" else "<i4" if k in _INTEGER_ARRAYS else "<f8"
        out[k] = (shape, dtype)
    return out


def _valid_cache(path: Path, key: str, verify: bool, layout: dict | None = None) -> bool:
    import h5py
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("key") != key or not f.attrs.get("complete", False):
                return False
            sums = json.loads(f.attrs["checksums"])
            if set(sums) - set(f.keys()):
                return False
            # the checksums cover bytes only: the same bytes under another dtype or shape must not pass
            for k, (shape, dtype) in (layout or {}).items():
                if k not in f or f[k].shape != shape or f[k].dtype.str != dtype:
                    return False
            if verify:
                return all(_hash_rows(hashlib.sha256(), f[k]).hexdigest() == v for k, v in sums.items())
            return True
    except (OSError, KeyError, ValueError):
        return False


def build_cache(spec: DatasetSpec, *, cache_dir: Path | None = None, workers: int | None = None,
                progress: bool = True) -> Path:
    """Simulate *spec* into its HDF5 cache file (chunked, one chunk per 256 samples).

    The build writes ``NAME-KEY.partial.h5`` and renames it when complete. An interrupted build
    (Ctrl-C, a killed process) keeps it: the next build checks it (same key, the layout of the
    spec, the samples it claims readable) and simulates only the quads still missing, with the
    same numbers as a build in one go. A build that fails otherwise removes it. A lock file
    keeps two processes from building the same cache at once (the second waits, then uses it).
    """
    path = cache_path(spec, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    partial = path.with_suffix(".partial.h5")
    with _build_lock(path):
        if path.exists() and _valid_cache(path, cache_key(spec), True, expected_layout(spec)):
            return path                  # another process built it while this one waited
        try:
            _write_cache(partial, spec, progress=progress, workers=workers)
        except KeyboardInterrupt:
            raise                        # kept: the next build continues from it
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        os.replace(partial, path)
    return path


class _build_lock:
    """An exclusive lock on ``NAME-KEY.lock`` (POSIX ``flock``; no lock where there is none)."""

    def __init__(self, path: Path):
        self.path = path.with_suffix(".lock")

    def __enter__(self):
        self.f = open(self.path, "a")
        try:
            import fcntl
            fcntl.flock(self.f, fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass
        return self

    def __exit__(self, *exc):
        self.f.close()                   # closing releases the lock
        return False


def _remove_orphans(path: Path) -> None:
    """Delete temporaries of this cache file left by builds whose process no longer exists."""
    for tmp in path.parent.glob(path.stem + ".tmp*"):
        pid = tmp.suffix.removeprefix(".tmp")
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:
            pass                          # alive, someone else's


def _resumable(partial: Path, spec: DatasetSpec) -> int:
    """Quads already written to *partial* by an interrupted build of *spec* (0: start afresh)."""
    import h5py
    if not partial.exists():
        return 0
    try:
        with h5py.File(partial, "r") as f:
            if f.attrs.get("key") != cache_key(spec) or f.attrs.get("complete", False):
                raise ValueError("not a build of this spec")
            done = int(f.attrs.get("done_quads", 0))
            if not done:
                return 0
            for k, (shape, dtype) in expected_layout(spec).items():
                if k not in f or f[k].shape != shape or f[k].dtype.str != dtype:
                    raise ValueError(f"array {k} does not match the spec")
                f[k][4 * done - 1]                   # the claimed samples must read back
            return done
    except (OSError, ValueError, KeyError, TypeError):
        partial.unlink(missing_ok=True)              # unreadable or someone else's: start afresh
        return 0


def _write_cache(partial: Path, spec: DatasetSpec, *, progress: bool, workers: int | None) -> None:
    import galsim
    import h5py
    from .simulate import ARRAYS, simulate

    N, n = spec.n_samples, spec.stamp_size
    hashes = {k: hashlib.sha256() for k in ARRAYS}
    done = _resumable(partial, spec)
    with h5py.File(partial, "a" if done else "w") as f:
        f.attrs["key"] = cache_key(spec)
        dsets = {k: f[k] for k in f.keys()} if done else {}
        for k, d in dsets.items():                   # the checksums run over the samples kept
            _hash_rows(hashes[k], d, 4 * done)

        def sink(start, res):
            for k, arr in res.items():
                if k not in dsets:
                    shape = (N,) + arr.shape[1:]
                    chunks = (min(256, N),) + arr.shape[1:]
                    dsets[k] = f.create_dataset(k, shape=shape, dtype=arr.dtype, chunks=chunks)
                dsets[k][start:start + len(arr)] = arr
                hashes[k].update(np.ascontiguousarray(arr).view(np.uint8))
            f.attrs["done_quads"] = (start + len(res["snr"])) // 4
            f.flush()                                # what a resumed build may rely on

        simulate(spec, workers=workers, progress=progress, sink=sink, start_quad=done)
        f.attrs["spec"] = json.dumps(spec.to_dict(), default=list)
        f.attrs["galsim_version"] = galsim.__version__
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["checksums"] = json.dumps({k: h.hexdigest() for k, h in hashes.items()})
        f.attrs["layout"] = f"samples x bands({','.join(spec.bands)}) x {n} x {n}"
        f.attrs["complete"] = True


class StreamedArray:
    """A stamp array left on disk: indexing reads just the samples asked for from the HDF5 cache.

    Supports what the harness does with a dataset array: ``a[start:stop]``, ``a[:n, band]``,
    ``a[index_array, band]`` (any order; read sorted, then put back in order), ``shape``,
    ``dtype``, ``ndim`` and ``len``. ``numpy.asarray(a)`` reads it all.
    """

    def __init__(self, dset):
        self._d = dset
        self.shape, self.dtype, self.ndim = dset.shape, dset.dtype, dset.ndim

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        first = key[0]
        if isinstance(first, (list, np.ndarray)):
            idx = np.asarray(first)
            if idx.dtype == bool:
                idx = np.nonzero(idx)[0]
            idx = np.where(idx < 0, idx + self.shape[0], idx)
            order, inverse = np.unique(idx, return_inverse=True)       # h5py wants increasing indices
            return self._d[(order,) + key[1:]][inverse]
        return self._d[key]

    def __array__(self, dtype=None, copy=None):
        a = self._d[...]
        return a if dtype is None else a.astype(dtype)


@dataclass
class Dataset:
    """A loaded dataset: arrays on one device, handed to frameworks without copies.

    Attributes
    ----------
    spec : DatasetSpec
    arrays : dict of str to array
        NumPy arrays on ``cpu``; CuPy arrays on ``cuda``.
    device : str
    path : Path or None
    """

    spec: DatasetSpec
    arrays: dict
    device: str = "cpu"
    path: Path | None = None
    _views: dict = field(default_factory=dict, repr=False)
    _file: object = field(default=None, repr=False)        # the open cache file of a streamed dataset

    def __getitem__(self, key):
        return self.arrays[key]

    @property
    def streamed(self) -> bool:
        """Whether the stamp arrays stay on disk (:class:`StreamedArray`) and are read per slice."""
        return any(isinstance(v, StreamedArray) for v in self.arrays.values())

    def close(self) -> None:
        """Close the cache file a streamed dataset reads from (arrays in memory stay usable)."""
        f = getattr(self, "_file", None)
        if f is not None:
            f.close()
            self._file = None

    def __len__(self) -> int:
        return self.spec.n_samples

    def as_framework(self, key: str, framework: str):
        """Array *key* as a *framework* array on this dataset's device, sharing memory (DLPack)."""
        if framework not in FRAMEWORKS:
            raise unknown_name("framework", framework, FRAMEWORKS)
        cache_key_ = (key, framework)
        if cache_key_ not in self._views:
            self._views[cache_key_] = to_framework(self.arrays[key], framework)
        return self._views[cache_key_]

    def snr_bin_edges(self) -> tuple[float, ...]:
        return self.spec.snr_bins


#: stream the stamps (``stream="auto"``) when they would take more than this much memory
STREAM_ABOVE_BYTES = 2 * 2 ** 30


def load_dataset(spec: DatasetSpec | str, *, device: str = "cpu", cache_dir: Path | None = None,
                 verify: bool = True, workers: int | None = None, progress: bool = True,
                 keys: tuple[str, ...] | None = None, stream: bool | str = False) -> Dataset:
    """Load (simulating and caching first if needed) a dataset onto *device*.

    Parameters
    ----------
    spec : DatasetSpec or str
        A spec, or the name of one in ``datasets/``, or a TOML path.
    device : {"cpu", "cuda"}
        Where the arrays live; ``cuda`` puts them on the GPU once through CuPy. [default: "cpu"]
    cache_dir : Path, optional
        [default: ``$DECONVBENCH_DATASET_CACHE``, else ``datasets/cache``]
    verify : bool
        Check the stored checksums before use. [default: True]
    workers, progress
        Passed to the simulation when the cache must be (re)built.
    keys : tuple of str, optional
        Arrays to load. [default: all]
    stream : bool or "auto"
        Leave the stamp arrays (image, psf, truth, noiseless) in the cache file and read them
        per slice (:class:`StreamedArray`), so memory stays that of a slice whatever the
        dataset's size; labels and per-sample numbers are loaded. ``"auto"`` streams when the
        stamps exceed :data:`STREAM_ABOVE_BYTES` (2 GiB). CPU only. [default: False]
    """
    import h5py

    if device not in DEVICES:
        raise unknown_name("device", device, DEVICES)
    if isinstance(spec, (str, os.PathLike)):
        spec = load_spec(spec)
    path = cache_path(spec, cache_dir)
    if not (path.exists() and _valid_cache(path, cache_key(spec), verify, expected_layout(spec))):
        build_cache(spec, cache_dir=cache_dir, workers=workers, progress=progress)
    if stream not in (True, False, "auto"):
        raise BenchValueError(f"stream must be True, False or 'auto', got {stream!r}")
    layout = expected_layout(spec)
    stamps = [k for k, (shape, _) in layout.items() if len(shape) == 4]
    if stream == "auto":
        stream = device == "cpu" and sum(int(np.prod(layout[k][0])) * 4 for k in stamps) > STREAM_ABOVE_BYTES
    if stream and device != "cpu":
        raise BenchValueError(f"stream=True reads stamps from disk on the CPU; device {device!r} holds them in "
                              f"its own memory")
    f = h5py.File(path, "r")
    try:
        names = keys or tuple(k for k in f.keys())
        for k in names:
            if k not in f:
                raise unknown_name("dataset array", k, list(f.keys()))
        arrays = {k: StreamedArray(f[k]) if (stream and k in stamps) else f[k][...] for k in names}
    except BaseException:
        f.close()
        raise
    if not stream:
        f.close()
    if device == "cuda":
        from .devices import cuda_unavailable_reason
        why = cuda_unavailable_reason()
        if why:
            raise BenchValueError(f"device 'cuda' requested but {why}")
        import cupy
        arrays = {k: cupy.asarray(v) for k, v in arrays.items()}
    return Dataset(spec=spec, arrays=arrays, device=device, path=path, _file=f if stream else None)


def main(argv=None) -> int:
    """``python -m bench.dataset SPEC``: simulate (or verify) a dataset's cache."""
    from .cli import make_parser

    p = make_parser("python -m bench.dataset", "Simulate a named dataset spec into its HDF5 cache.")
    p.add_argument("spec", help="spec name in datasets/ or a TOML path")
    p.add_argument("--workers", type=int, default=None, help="processes [all cores]")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    spec = load_spec(a.spec)
    if a.workers is not None and a.workers < 1:
        raise BenchValueError(f"--workers must be a positive integer, got {a.workers!r}")
    try:
        ds = load_dataset(spec, workers=a.workers, progress=not a.no_progress, keys=("snr",))
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"what was simulated is kept in "
                                f"{str(cache_path(spec).with_suffix('.partial.h5'))!r}: the same command "
                                f"continues from it") from None
    print(f"{spec.name}: {spec.n_samples} samples x {len(spec.bands)} bands -> {ds.path}")
    return 0


if __name__ == "__main__":
    import sys

    from .cli import run_cli

    sys.exit(run_cli(main, prog="python -m bench.dataset"))
