"""Metacal and the benchmark's measurement step over shards on ``dask.distributed``.

The samples are cut into **shards** of whole quads (``shard_size`` samples, a multiple
of 4). Every shard is one Dask task that reads its own slice of a chunked HDF5 file
(the dataset cache, or the input converted once by :func:`write_h5`), optionally runs
a deconvolution method, runs metacal and writes its result to ``DIR/shard-START-STOP.npz``
atomically (temporary name, then rename). The driver then reads the shards in order
and feeds them to the same accumulating metrics as a single process
(:class:`bench.shear.ShearBiasMetric`, :class:`bench.metrics.ImageQualityMetric`).

* **Exactly the single-process numbers.** Metacal handles objects in chunks of
  ``MetacalConfig.chunk``; with ``shard_size * bands`` a multiple of it, each shard
  does the same arithmetic on the same sub-batches as one process would, and the
  metrics add the same per-quad sums in the same order (tested on a ``LocalCluster``).
* **Nothing finished is lost.** A shard file that exists is complete and is never
  recomputed; tasks of a worker that dies are rescheduled by Dask (``retries`` more
  times for errors), and a run interrupted as a whole continues where it stopped
  when started again with the same ``work_dir``. A ``manifest.json`` there records
  what the shards were made from; a different input or setting starts afresh.
* **Where the workers come from.** :func:`connect` joins a running scheduler
  (``tcp://HOST:PORT``; start one on a cluster with ``dask scheduler`` and
  ``dask worker``, or through dask-jobqueue) or starts a ``LocalCluster`` of N worker
  processes, one thread each; on ``cuda`` it starts one worker per GPU through
  dask-cuda's ``LocalCUDACluster``.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import numpy as np

from .errors import BenchValueError

#: samples per shard unless told: a multiple of 4 (whole quads) and, times 1 or 3 bands,
#: of metacal's default chunk of 1024 objects
SHARD_SIZE = 4096


def check_cluster(scheduler: str | None = None, workers: int | None = None) -> None:
    """Refuse a scheduler address or a worker count :func:`connect` could not use (before any work)."""
    if scheduler and (not isinstance(scheduler, str) or "://" not in scheduler):
        raise BenchValueError(f"scheduler must be an address like tcp://HOST:PORT, got {scheduler!r}")
    if workers is not None and not (isinstance(workers, int) and workers >= 1):
        raise BenchValueError(f"workers must be a positive integer, got {workers!r}")


def connect(scheduler: str | None = None, workers: int | None = None, *, device: str = "cpu"):
    """A ``dask.distributed.Client``: to *scheduler*, or to a new local cluster of *workers* processes.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler, e.g. ``tcp://10.0.0.5:8786``. [default: None]
    workers : int, optional
        Worker processes of a local cluster (ignored with *scheduler*); on ``cuda``
        one per GPU. [default: all cores, one thread each]
    device : {"cpu", "cuda"}
        [default: "cpu"]
    """
    check_cluster(scheduler, workers)
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise BenchValueError("dask.distributed is not installed (pip install '.[dask]')") from None
    if scheduler:
        try:
            return Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as err:
            raise BenchValueError(f"cannot reach the Dask scheduler at {scheduler!r}: {err}") from None
    if device == "cuda":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            raise BenchValueError("one worker per GPU needs dask-cuda (pip install dask-cuda)") from None
        return Client(LocalCUDACluster())
    # worker processes start with SIGINT ignored (an ignored signal stays ignored in a child), so
    # Ctrl-C at a terminal, which signals the whole process group, reaches only this process,
    # which cancels the work and closes the cluster itself
    import logging
    import signal
    import threading
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        # workers log errors only: a cancelled task is not news to whoever pressed Ctrl-C
        cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                               processes=True, dashboard_address=":0",    # any free port: runs may overlap
                               silence_logs=logging.ERROR)
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    return Client(cluster)


def quiet() -> None:
    """Silence the loggers that report tasks abandoned when a run is interrupted."""
    import logging
    for name in ("asyncio", "distributed", "tornado"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def close(client) -> None:
    """Close *client* and, when :func:`connect` started it, its local cluster: closing the client
    alone leaves the worker processes running."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def shard_bounds(n_samples: int, shard_size: int = SHARD_SIZE) -> list[tuple[int, int]]:
    """[(start, stop), ...] covering ``range(n_samples)``; every shard holds whole quads."""
    if not (isinstance(shard_size, int) and shard_size >= 4 and shard_size % 4 == 0):
        raise BenchValueError(f"shard_size must be a positive multiple of 4 (whole quads), got {shard_size!r}")
    return [(s, min(s + shard_size, n_samples)) for s in range(0, n_samples, shard_size)]


def write_h5(path, arrays, *, chunk: int = 256, keys=None) -> Path:
    """Write *arrays* (first axis: objects) to a chunked HDF5 file that workers read in slices.

    *arrays* is a dict of NumPy arrays, or a reader with ``shapes``, ``dtypes``, ``whole(key)``
    and ``rows(key, start, stop)`` (:class:`bench.metacal.npz.NpzRows`), copied *chunk* objects
    at a time so that memory stays that of a chunk; *keys* picks the members. [default: all]
    """
    import h5py

    if isinstance(arrays, dict):
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        shapes = {k: v.shape for k, v in arrays.items()}
        dtypes = {k: v.dtype for k, v in arrays.items()}

        def read(k, a, b):
            return arrays[k] if a is None else arrays[k][a:b]
    else:
        shapes, dtypes = arrays.shapes, arrays.dtypes
        reader = arrays

        def read(k, a, b):
            return reader.whole(k) if a is None else reader.rows(k, a, b)
    path = Path(path)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with h5py.File(tmp, "w") as f:
        for k in [k for k in shapes if keys is None or k in keys]:
            if len(shapes[k]) == 0:
                f.attrs[k] = np.asarray(read(k, None, None)).item()
                continue
            n = shapes[k][0]
            d = f.create_dataset(k, shape=shapes[k], dtype=dtypes[k], chunks=(max(1, min(chunk, n)),) + shapes[k][1:])
            step = max(chunk, 1024)                 # copied in pieces of whole HDF5 chunks
            for a in range(0, n, step):
                d[a:a + step] = read(k, a, min(a + step, n))
    os.replace(tmp, path)
    return path


def _shard_path(work_dir: Path, start: int, stop: int) -> Path:
    return work_dir / f"shard-{start:010d}-{stop:010d}.npz"


def _save_atomic(path: Path, arrays: dict) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _remove_temporaries(work_dir: Path) -> None:
    """Delete the half-written shards (``shard-*.npz.tmpPID.npz``) of workers that died while
    writing: called when no task of this run is running, so none of them is still being written."""
    for f in work_dir.glob("shard-*.npz.tmp*.npz"):
        f.unlink(missing_ok=True)


_METHODS: dict = {}     # per worker process: methods built once (weights, plans, compiled code)


def dataset_params(spec) -> dict:
    """What a shard of a dataset cache takes from the driver's spec, not from the file: the
    driver's spec is the one source of truth, in-process and on Dask alike."""
    return {"pixel_scale": float(spec.pixel_scale), "noise_pairing": spec.noise_pairing}


def process_shard(source: str, start: int, stop: int, work_dir: str, *, metacal_kwargs: dict,
                  method: str | None = None, device: str = "cpu", quality: bool = False,
                  placement: str = "deconvolve-then-shear", dataset: dict | None = None,
                  validate: bool = False) -> str:
    """One task: :func:`run_slice`, its result written to ``shard-START-STOP.npz`` in *work_dir*.

    Returns the file's path; an existing file is returned as is.
    """
    out = _shard_path(Path(work_dir), start, stop)
    if out.exists():
        return str(out)
    res = run_slice(source, start, stop, metacal_kwargs=metacal_kwargs, method=method, device=device,
                    quality=quality, placement=placement, dataset=dataset, validate=validate)
    _save_atomic(out, res)
    return str(out)


def run_slice(source: str, start: int, stop: int, *, metacal_kwargs: dict, method: str | None = None,
              device: str = "cpu", quality: bool = False, placement: str = "deconvolve-then-shear",
              dataset: dict | None = None, validate: bool = False) -> dict:
    """Samples [start, stop) of the HDF5 file *source* through *method* (if any) and metacal.

    *placement* says where the method sits (:data:`bench.pipeline.PLACEMENTS`). *dataset*
    (:func:`dataset_params` of the driver's spec) gives the pixel scale and noise pairing of
    a dataset cache; a cache whose own ``spec`` attribute disagrees is refused. Without it
    (an input file of ``python -m bench.metacal``) they come from the file's attributes.

    Returns the metacal outputs and, with *quality*, every registered metric's per-object values
    (PSNR and SSIM against ``truth``, ...) (band means; NaN where the method's output is not finite). With *validate*
    the slice's values are checked first, errors naming the object's index in the file.
    """
    import h5py

    with h5py.File(source, "r") as f:
        data = {k: f[k][start:stop] for k in ("image", "psf", "noise_sigma", "row", "col", "truth", "noise",
                                                "quad_id", "rotation")
                if k in f and (k != "truth" or quality)}
        spec = json.loads(f.attrs["spec"]) if "spec" in f.attrs else {}
        pixel_scale = float(f.attrs["pixel_scale"]) if "pixel_scale" in f.attrs else spec.get("pixel_scale")
    if dataset is not None:
        for key in ("pixel_scale", "noise_pairing"):
            if key in spec and spec[key] != dataset[key]:
                raise BenchValueError(f"{source}: the cache's spec says {key} = {spec[key]!r}, the run's spec "
                                      f"{dataset[key]!r}: the file was changed; delete it to rebuild it")
        pixel_scale = dataset["pixel_scale"]
        spec = {**spec, "noise_pairing": dataset["noise_pairing"]}
    if pixel_scale is None:
        raise BenchValueError(f"{source}: no pixel_scale attribute")
    return run_arrays(data, start, stop, pixel_scale=pixel_scale, spec=spec, metacal_kwargs=metacal_kwargs,
                      method=method, device=device, quality=quality, placement=placement, validate=validate)


def run_arrays(data: dict, start: int, stop: int, *, pixel_scale: float, metacal_kwargs: dict, spec: dict | None = None,
               method: str | None = None, device: str = "cpu", quality: bool = False,
               placement: str = "deconvolve-then-shear", validate: bool = False) -> dict:
    """Objects [start, stop) of an input, already read into *data* (arrays by key), through
    *method* and metacal: what :func:`run_slice` does once it has read its slice. *spec* is
    a dataset cache's spec (its noise pairing), if the input is one. [default: None]"""
    from . import pipeline
    from .metacal import MetacalConfig

    cfg = MetacalConfig(**metacal_kwargs)
    m = None
    if method is not None:
        from methods import get_method, get_method_class

        if get_method_class(method).produces_image or placement == "shear-then-deconvolve":
            if (method, device) not in _METHODS:
                _METHODS[(method, device)] = get_method(method, device=device)
            m = _METHODS[(method, device)]
    return pipeline.measure_chunk(data, pixel_scale=pixel_scale, config=cfg, method=m, device=device,
                                  placement=placement, noise_pairing=(spec or {}).get("noise_pairing", "independent"),
                                  start=start, quality=quality, validate=validate)


def _manifest(work_dir: Path, identity: dict) -> None:
    """Keep finished shards only if they were made from the same input and settings.

    Shards without a manifest, or with another one, are removed: only this module's own
    files (``shard-*.npz``, their temporaries, ``manifest.json``), never anything else.
    """
    path = work_dir / "manifest.json"
    text = json.dumps(identity, sort_keys=True, default=str)
    work_dir.mkdir(parents=True, exist_ok=True)
    old = path.read_text() if path.exists() else None
    if old != text:
        for f in work_dir.glob("shard-*.npz"):
            f.unlink()
        path.write_text(text)


def remove_shards(work_dir) -> None:
    """Delete what :func:`run_shards` wrote in *work_dir*, and the directory if that leaves it empty."""
    work_dir = Path(work_dir)
    for f in list(work_dir.glob("shard-*.npz")) + [work_dir / "manifest.json"]:
        f.unlink(missing_ok=True)
    try:
        work_dir.rmdir()
    except OSError:
        pass          # something else lives there: it stays


def file_identity(path) -> str:
    """A cheap fingerprint of a file (size, modification time, first MiB)."""
    st = os.stat(path)
    with open(path, "rb") as f:
        head = hashlib.sha256(f.read(2 ** 20)).hexdigest()[:16]
    return f"{st.st_size}-{st.st_mtime_ns}-{head}"


def run_shards(client, source, n_samples: int, work_dir, *, shard_size: int = SHARD_SIZE,
               retries: int = 3, identity: dict | None = None, **task_kwargs) -> list[Path]:
    """Process every shard of *source* on *client*; returns the shard files in sample order.

    Parameters
    ----------
    client : dask.distributed.Client
    source : path
        Chunked HDF5 file with ``image``, ``psf``, ``noise_sigma`` [, ``row``, ``col``,
        ``truth``] and ``pixel_scale`` (an attribute, or inside the dataset cache's ``spec``).
    n_samples : int
        Number of samples in *source*.
    work_dir : path
        Where shard files go; finished ones are reused (see the module docstring).
    shard_size : int
        Samples per shard (whole quads). [default: SHARD_SIZE]
    retries : int
        Extra attempts for a shard whose task raised. [default: 3]
    identity : dict, optional
        What else the shards depend on (the user's input file, the method's weights), added
        to the manifest, so that finished shards are reused only for the same. [default: None]
    **task_kwargs
        ``metacal_kwargs``, ``method``, ``device``, ``quality``, ``placement``, ``dataset``,
        ``validate``: see :func:`run_slice`.
    """
    work_dir = Path(work_dir)
    bounds = shard_bounds(n_samples, shard_size)
    _manifest(work_dir, {"source": str(source), "source_id": file_identity(source), "n": n_samples,
                         "shard_size": shard_size, **(identity or {}), **task_kwargs})
    _remove_temporaries(work_dir)      # left by an earlier run whose worker was killed mid-write
    todo = [(a, b) for a, b in bounds if not _shard_path(work_dir, a, b).exists()]
    run_id = uuid.uuid4().hex[:8]      # keys unique per call: Dask must not hand back an earlier result
    futures = [client.submit(process_shard, str(source), a, b, str(work_dir), pure=False, retries=retries,
                             key=f"shard-{a}-{b}-{run_id}", **task_kwargs)
               for a, b in todo]
    try:
        client.gather(futures)
    except KeyboardInterrupt:
        # Ctrl-C: stop the work, and keep Dask's own messages about the abandoned tasks off the
        # terminal (the command prints one line); finished shards stay for a rerun to reuse
        quiet()
        client.cancel(futures)
        raise
    # a worker killed while writing leaves its temporary; its task was rerun elsewhere
    _remove_temporaries(work_dir)
    return [_shard_path(work_dir, a, b) for a, b in bounds]


def gather_outputs(paths) -> dict[str, np.ndarray]:
    """Concatenate shard files (or outputs, dicts) in the given order into one dict like a single metacal call."""
    parts = [p if isinstance(p, dict) else dict(np.load(p)) for p in paths]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if np.ndim(parts[0][k]) > 0}
    out["time_s"] = np.float64(sum(float(p["time_s"]) for p in parts))
    for k in ("noise_correction", "noise_seed", "placement"):   # settings: the same in every shard
        if k in parts[0]:
            out[k] = parts[0][k]
    return out


__all__ = ["SHARD_SIZE", "check_cluster", "close", "connect", "dataset_params", "file_identity", "gather_outputs", "process_shard", "remove_shards",
           "run_arrays", "run_shards", "run_slice", "shard_bounds", "write_h5"]
