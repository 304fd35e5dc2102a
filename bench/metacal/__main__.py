"""``python -m bench.metacal INPUT.npz --out OUT.npz``: metacal of the stamps in a file.

A driver: it may run a registered method (through :mod:`bench.pipeline`) and Dask
(:mod:`bench.distributed`); the engine below it knows neither.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from ..cli import make_parser, run_cli
from ..errors import BenchFileError, BenchValueError, unknown_name
from .config import KERNELS, MetacalConfig
from .validate import H5_SUFFIXES, PER_OBJECT_KEYS, open_h5_input, open_npz_input


def parser():
    p = make_parser("python -m bench.metacal", "Batched metacalibration of stamps in an npz or HDF5 file.")
    p.add_argument("input", help="npz with image, psf, noise_sigma, pixel_scale [, row, col, noise]; or an "
                                 "HDF5 file (.h5, .hdf5) with those datasets and a pixel_scale attribute, "
                                 "a dataset cache included; either is read in chunks of --shard-size")
    p.add_argument("--out", required=True, help="output npz")
    p.add_argument("--method", default="fourier", help="registered deconvolution method [fourier]")
    p.add_argument("--psf", "--kernel", dest="psf", default=MetacalConfig.kernel, metavar="KERNEL",
                   help=f"reconvolution kernel: {', '.join(KERNELS)} [{MetacalConfig.kernel}]")
    p.add_argument("--step", type=float, default=0.01, help="shear step [0.01]")
    p.add_argument("--weight-fwhm", type=float, default=1.2, help="moment weight FWHM, arcsec [1.2]")
    p.add_argument("--estimator", default=MetacalConfig.estimator,
                   help="shear estimator measuring the five images: gaussmom (Gaussian-weighted moments of "
                        "--weight-fwhm, exact in Fourier space) or admom (ngmix's adaptive moments, on the "
                        "drawn images) [gaussmom]")
    p.add_argument("--no-noise-correction", action="store_true",
                   help="turn off ngmix's noise correction (fixnoise) [on]")
    p.add_argument("--noise-seed", type=int, default=0,
                   help="seed of the correction's noise fields when the input has no 'noise' array [0]")
    p.add_argument("--placement", default="deconvolve-then-shear", metavar="PLACEMENT",
                   help="where --method sits: deconvolve-then-shear (it replaces metacal's deconvolution) or "
                        "shear-then-deconvolve (it deconvolves each of the five metacal images, and the "
                        "moments are measured on its output) [deconvolve-then-shear]")
    p.add_argument("--device", default="cpu", help="cpu or cuda [cpu]")
    p.add_argument("--workers", type=int, default=None,
                   help="run on a local Dask cluster of this many worker processes [one process, no Dask]")
    p.add_argument("--scheduler", default=None, help="run on the Dask scheduler at tcp://HOST:PORT")
    p.add_argument("--shard-size", type=int, default=None,
                   help="samples per Dask task, or per chunk read from the input, a multiple of 4 [4096]")
    p.add_argument("--work-dir", default=None,
                   help="where Dask shards are kept until the output is written; an interrupted run "
                        "started again with the same input and options continues there [OUT.parts]")
    return p


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    from methods import get_method_class

    cfg = MetacalConfig(kernel=a.psf, step=a.step, weight_fwhm=a.weight_fwhm,
                        noise_correction=not a.no_noise_correction, noise_seed=a.noise_seed, estimator=a.estimator)
    if a.device not in ("cpu", "cuda"):
        raise unknown_name("device", a.device, ("cpu", "cuda"))
    cls = get_method_class(a.method)
    from ..pipeline import check_placement
    check_placement(cls, a.placement)
    runs_method = cls.produces_image or a.placement == "shear-then-deconvolve"
    if a.device == "cuda":
        from ..devices import cuda_unavailable_reason, module_missing
        why = cuda_unavailable_reason() or ("CuPy is not installed (pip install '.[gpu]')"
                                            if module_missing("cupy") else "")
        if why:
            raise BenchValueError(f"--device cuda is unavailable here: {why}")
    if os.path.exists(a.out) and os.path.samefile(a.out, a.input):
        raise BenchFileError(f"--out {a.out!r} is the input file; give another path")
    # either kind of input is checked, then read and checked chunk by chunk: memory stays a chunk's
    if a.input.lower().endswith(H5_SUFFIXES):
        reader, (n_objects, scale) = None, open_h5_input(a.input)
    else:
        reader, n_objects, scale = open_npz_input(a.input)
    try:
        if a.workers is not None or a.scheduler:
            return _main_distributed(a, reader, cfg, n_objects)
        if a.work_dir is not None:
            raise BenchValueError("--work-dir needs --workers or --scheduler")
        return _main_chunked(a, cfg, n_objects, runs_method, reader, scale)
    finally:
        if reader is not None:
            reader.close()


def _write_output(a, out) -> None:
    nflag = int(np.count_nonzero(out["flags"]))
    out["estimator"] = np.str_(a.estimator)
    tmp = a.out + f".tmp{os.getpid()}.npz"
    try:
        np.savez(tmp, **out)
        os.replace(tmp, a.out)
    finally:
        if os.path.exists(tmp):          # a full disk or a killed write leaves no partial file
            os.unlink(tmp)
    corr = "noise correction on" if bool(out.get("noise_correction", False)) else "no noise correction"
    print(f"metacal ({a.method}, {a.placement}, {a.psf}, {a.estimator}, {corr}): {out['flags'].size} objects, {nflag} flagged, "
          f"{float(out['time_s']):.3f} s -> {a.out}")


def _main_chunked(a, cfg, n_objects: int, runs_method: bool, reader=None, scale: float | None = None) -> int:
    """The input in one process, one chunk of --shard-size samples at a time (an HDF5 file, or
    the npz *reader* with its pixel *scale*); the output is written only once every chunk has
    been checked and measured."""
    from dataclasses import asdict

    from ..distributed import SHARD_SIZE, gather_outputs, run_arrays, run_slice, shard_bounds

    bounds = shard_bounds(n_objects, SHARD_SIZE if a.shard_size is None else a.shard_size)
    kw = dict(metacal_kwargs={k: v for k, v in asdict(cfg).items() if k != "chunk"},
              method=a.method if runs_method else None, device=a.device, placement=a.placement, validate=True)
    if reader is None:
        parts = [run_slice(a.input, start, stop, **kw) for start, stop in bounds]
    else:
        keys = [k for k in PER_OBJECT_KEYS if k in reader]
        parts = [run_arrays({k: reader.rows(k, start, stop) for k in keys}, start, stop, pixel_scale=scale, **kw)
                 for start, stop in bounds]
    _write_output(a, gather_outputs(parts))
    return 0


def _main_distributed(a, reader, cfg, n_objects: int) -> int:
    """The same computation as shards on Dask: an npz input (*reader*) is copied chunk by chunk
    into an HDF5 file the workers read; an HDF5 input is read as it is (*reader* is None)."""
    from dataclasses import asdict
    from pathlib import Path

    from ..distributed import (SHARD_SIZE, check_cluster, close, connect, file_identity, gather_outputs, remove_shards, run_shards,
                               shard_bounds, write_h5)

    if a.workers is not None and a.scheduler:
        raise BenchValueError("give --workers or --scheduler, not both")
    shard = SHARD_SIZE if a.shard_size is None else a.shard_size
    shard_bounds(n_objects, shard)                                # validates the size before any work
    check_cluster(a.scheduler, a.workers)                         # before the work directory is made
    work = Path(a.work_dir or a.out + ".parts")
    # a directory this command made carries a marker, so that the run that finishes an
    # interrupted one removes it too; a directory the user made is never removed
    marker = work / ".made-by-bench-metacal"
    made_dir = not work.exists() or marker.exists()
    work.mkdir(parents=True, exist_ok=True)
    if made_dir:
        marker.touch()
    source, stamp = work / "input.h5", work / "input.json"
    # the copy is trusted only if this command made it from this very input file
    input_id = json.dumps({"input": os.path.abspath(a.input), "id": file_identity(a.input)})
    ours = stamp.exists() and stamp.read_text() == input_id
    if reader is None:
        source = Path(a.input)
    elif source.exists() and not stamp.exists():
        raise BenchFileError(f"--work-dir {str(work)!r} holds an input.h5 this command did not write; "
                             f"choose another --work-dir")
    if reader is not None and not (source.exists() and ours):
        stamp.unlink(missing_ok=True)
        tmp = work / f"input.h5.tmp{os.getpid()}"
        write_h5(tmp, reader, keys=PER_OBJECT_KEYS + ("pixel_scale",))
        os.replace(tmp, source)
        stamp.write_text(input_id)
    kwargs = {k: v for k, v in asdict(cfg).items() if k != "chunk"}
    identity = {"input": input_id, "weights": _weights_identity(a.method)}
    client = connect(a.scheduler, a.workers, device=a.device)
    try:
        paths = run_shards(client, source, n_objects, work / "shards", shard_size=shard, identity=identity,
                           metacal_kwargs=kwargs, method=a.method, device=a.device, placement=a.placement,
                           validate=True)                   # each shard's values, as it is read
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"finished shards kept in {str(work)!r}: the same command continues from them") \
            from None
    finally:
        close(client)
    _write_output(a, gather_outputs(paths))
    # remove what this command made, and the directory only if it made it and nothing else is there
    remove_shards(work / "shards")
    if reader is not None:                                        # never the user's own input
        source.unlink(missing_ok=True)
        stamp.unlink(missing_ok=True)
    if made_dir:
        marker.unlink(missing_ok=True)
        try:
            work.rmdir()
        except OSError:
            pass
    return 0


def _weights_identity(name: str) -> str | None:
    """Fingerprint of the weights a registered method loads by default (None for methods without)."""
    from methods import get_method_class

    cls = get_method_class(name)
    path = cls.default_checkpoint() if hasattr(cls, "default_checkpoint") else None
    from ..distributed import file_identity
    return f"{path}:{file_identity(path)}" if path and os.path.exists(path) else None


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="python -m bench.metacal"))
