"""GPU self-check: ``python -m bench.doctor [--dataset ci] [--n 5000] [--json FILE]``.

On a machine with an NVIDIA GPU it exercises every GPU path of the harness and compares each
with the CPU on the same stamps, then prints one table (check, status, detail, GPU time per
5000, the project's speed goal for an H100 where it sets one, met or missed, and peak GPU
memory) and exits 1 if any check failed (a missed speed goal is reported, not failed):

* the dataset loaded once onto the GPU (CuPy), and the DLPack hand-over to torch and JAX
  without a copy (the same device pointer);
* exact metacal with the noise correction on CuPy and on torch CUDA tensors: e within 1e-5
  of the CPU engine for every type;
* the second placement's five metacal images drawn on CuPy and on torch CUDA, and their pixel
  moments: images within float32 tolerance and e within 1e-5 of the CPU;
* ``wiener-cupy`` and ``richardson-lucy-cupy`` against their CPU twins (float32 tolerance);
* ``dwdn`` on CUDA and ``resnet-jax`` on the GPU against themselves on the CPU;
* metacal shards on a dask-cuda ``LocalCUDACluster``, equal to one process.

Without a GPU it says so in one line and exits 0. ``--cpu-dry-run`` runs the same checks with
the CPU standing in for the GPU (CuPy and dask-cuda checks are then skipped): it tests this
command's own logic anywhere. ``tox -e gpu`` runs it and the ``gpu``-marked tests.
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np

from .cli import make_parser, run_cli
from .devices import cuda_unavailable_reason, module_missing
from .errors import BenchValueError

#: the project's speed goals for an H100 (s per 5000 single-band stamps): shown beside the
#: measured time, never a failure (the checks fail on wrong results only)
GOALS_S = {"metacal on CuPy": 0.020, "metacal on torch": 0.020, "wiener-cupy": 0.010}

E_TOL = 1e-5            # metacal e, GPU against CPU
IMAGE_RTOL = 1e-4       # classical images, relative to the stamp's peak (float32 FFTs differ in rounding)
NET_RTOL = 2e-3         # networks: cuDNN/XLA kernels differ from the CPU's in float32


class Skip(Exception):
    """A check that cannot run here (missing framework): reported, not failed."""


def _median_time(fn, rounds: int = 3) -> float:
    fn()                                    # warm-up: plans, compilation, allocator pools
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()                                # each check's fn waits for the device before returning
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _need(*modules):
    missing = [m for m in modules if module_missing(m)]
    if missing:
        raise Skip(f"not installed: {', '.join(missing)}")


class Context:
    """The stamps every check uses: the first *n* samples of the dataset, r band for metacal."""

    def __init__(self, dataset: str, n: int, device: str):
        from .dataset import load_dataset
        from .pipeline import paired_noise

        self.device = device
        self.ds = load_dataset(dataset, progress=False)
        self.n = min(n, len(self.ds))
        b = self.ds.spec.bands.index("r") if "r" in self.ds.spec.bands else 0
        sl = slice(0, self.n)
        self.img, self.psf = self.ds["image"][sl, b], self.ds["psf"][sl, b]
        self.sig = self.ds["noise_sigma"][sl, b]
        self.row, self.col = self.ds["row"][sl], self.ds["col"][sl]
        self.noise = paired_noise(self.ds["quad_id"][sl], self.ds["rotation"][sl], self.ds["noise_sigma"][sl, b:b + 1],
                                  (1,) + self.img.shape[1:], pairing=self.ds.spec.noise_pairing)[:, 0]
        self.multi = [self.ds[k][sl] for k in ("image", "psf", "noise_sigma")]

    def per5000(self, seconds: float, count: int) -> float:
        return seconds * 5000 / count


def check_dataset_dlpack(ctx: Context):
    """The dataset on the GPU once, seen by torch and JAX through DLPack at the same address."""
    if ctx.device != "cuda":
        raise Skip("the dataset stays a NumPy array on the CPU (see tests/test_dataset.py)")
    _need("cupy")
    from .dataset import load_dataset
    ds = load_dataset(ctx.ds.spec, device="cuda", progress=False, keys=("image",))
    ptr = int(ds["image"].data.ptr)
    notes = [f"{ds['image'].nbytes / 2 ** 20:.0f} MiB on the GPU"]
    if not module_missing("torch"):
        t = ds.as_framework("image", "torch")
        if int(t.data_ptr()) != ptr:
            return "FAIL", f"torch copy: {t.data_ptr():#x} != {ptr:#x}", {}
        notes.append("torch same pointer")
    if not module_missing("jax"):
        j = ds.as_framework("image", "jax")
        jp = int(j.unsafe_buffer_pointer())
        if jp != ptr:
            return "FAIL", f"JAX copy: {jp:#x} != {ptr:#x}", {}
        notes.append("JAX same pointer")
    return "ok", "; ".join(notes), {}


def _metacal_check(ctx: Context, framework: str):
    from .arrays import method_inputs
    from .metacal import metacal

    kw = dict(pixel_scale=ctx.ds.spec.pixel_scale, row=ctx.row, col=ctx.col)
    cpu = metacal(ctx.img, ctx.psf, noise=ctx.noise, **kw)
    # the correction's fields go to the device with the stamps, as in the benchmark: a copy from
    # the host inside the timed call would count the bus, not the engine
    img, psf, noise = method_inputs([ctx.img, ctx.psf, ctx.noise], framework, ctx.device)
    dev = metacal(img, psf, noise=noise, **kw)
    de = _max_de(dev, cpu)
    status = "ok" if de <= E_TOL else "FAIL"
    return status, f"max |de| {de:.1e} (limit {E_TOL:g}), {ctx.n} r-band stamps", _cost(
        ctx, lambda: metacal(img, psf, noise=noise, **kw), framework)


def _max_de(dev, cpu) -> float:
    """Largest |e| difference of a device result from the CPU's, over every type and component."""
    from .arrays import to_numpy
    from .metacal import TYPES

    return max(float(np.nanmax(np.abs(to_numpy(dev[f"{t}_e{i}"]) - cpu[f"{t}_e{i}"]))) for t in TYPES for i in (1, 2))


def _cost(ctx: Context, fn, framework: str) -> dict:
    """GPU time per 5000 (median after a warm-up) and peak memory of *fn* on ctx's stamps."""
    from .memory import measure_peak

    secs = _median_time(fn)
    peak, _ = measure_peak(fn, framework, ctx.device)
    return dict(time_per_5000_s=ctx.per5000(secs, ctx.n), peak_memory_bytes=peak)


def check_metacal_cupy(ctx: Context):
    if ctx.device != "cuda":
        raise Skip("CuPy needs a GPU")
    _need("cupy")
    return _metacal_check(ctx, "cupy")


def check_metacal_torch(ctx: Context):
    _need("torch")
    return _metacal_check(ctx, "torch")


def _render_check(ctx: Context, framework: str):
    """The second placement's engine: the five metacal images drawn on the device, and their
    moments, against the same on the CPU (images to float32 rounding, e within E_TOL)."""
    from .arrays import method_inputs, to_numpy
    from .metacal import TYPES
    from .metacal.render import measure, metacal_images

    kw = dict(pixel_scale=ctx.ds.spec.pixel_scale, row=ctx.row, col=ctx.col, noise_sigma=ctx.sig)

    def draw_and_measure(img, psf, noise):
        mc = metacal_images(img, psf, noise=noise, **kw)
        return mc, measure(mc["images"], pixel_scale=kw["pixel_scale"], row=ctx.row, col=ctx.col, flags=mc["flags"])

    cpu_mc, cpu = draw_and_measure(ctx.img, ctx.psf, ctx.noise)
    img, psf, noise = method_inputs([ctx.img, ctx.psf, ctx.noise], framework, ctx.device)
    dev_mc, dev = draw_and_measure(img, psf, noise)
    scale = np.abs(cpu_mc["images"]["noshear"]).max(axis=(-2, -1), keepdims=True)
    scale = np.where(scale > 0, scale, 1.0)
    dimg = max(float(np.max(np.abs(to_numpy(dev_mc["images"][t]) - cpu_mc["images"][t]) / scale)) for t in TYPES)
    de = _max_de(dev, cpu)
    status = "ok" if de <= E_TOL and dimg <= IMAGE_RTOL else "FAIL"
    return status, (f"images max |diff| / peak {dimg:.1e} (limit {IMAGE_RTOL:g}), max |de| {de:.1e} "
                    f"(limit {E_TOL:g}), {ctx.n} r-band stamps"), _cost(
        ctx, lambda: draw_and_measure(img, psf, noise), framework)


def check_render_cupy(ctx: Context):
    if ctx.device != "cuda":
        raise Skip("CuPy needs a GPU")
    _need("cupy")
    return _render_check(ctx, "cupy")


def check_render_torch(ctx: Context):
    _need("torch")
    return _render_check(ctx, "torch")


def _method_check(ctx: Context, gpu_name: str, cpu_name: str, rtol: float, count: int | None = None):
    from methods import get_method, get_method_class

    from .memory import measure_peak
    from .pipeline import deconvolve_numpy

    cls = get_method_class(gpu_name)
    device = ctx.device if ctx.device in cls.devices else "cpu"
    if ctx.device == "cuda" and device != "cuda":
        raise Skip(f"{gpu_name} does not run on cuda")
    why = cls.unavailable_reason(device)
    if why:
        raise Skip(why)
    k = min(count or ctx.n, ctx.n)
    img, psf, sig = (a[:k] for a in ctx.multi)
    gpu = get_method(gpu_name, device=device)
    out = deconvolve_numpy(gpu, img, psf, sig, device=device)
    ref = deconvolve_numpy(get_method(cpu_name, device="cpu"), img, psf, sig, device="cpu")
    scale = np.abs(ref).max(axis=(-2, -1), keepdims=True)
    err = float(np.max(np.abs(out - ref) / scale))
    from .arrays import method_inputs, synchronize
    # the inputs on the device first and no copy back: the time is the method's, not the bus's
    args = method_inputs([img, psf, sig], cls.framework, device)
    secs = _median_time(lambda: synchronize(gpu.deconvolve(*args)))
    peak, _ = measure_peak(lambda: gpu.deconvolve(*args), cls.framework, device)
    status = "ok" if err <= rtol else "FAIL"
    bands = img.shape[1]
    return status, (f"max |diff| / peak {err:.1e} (limit {rtol:g}) against {cpu_name} on the CPU, {k} samples "
                    f"x {bands} bands"), dict(time_per_5000_s=ctx.per5000(secs, k), peak_memory_bytes=peak,
                                              bands=bands)


def check_wiener_cupy(ctx: Context):
    if ctx.device != "cuda":
        raise Skip("CuPy needs a GPU")
    return _method_check(ctx, "wiener-cupy", "wiener-fftw", IMAGE_RTOL)


def check_richardson_lucy_cupy(ctx: Context):
    if ctx.device != "cuda":
        raise Skip("CuPy needs a GPU")
    return _method_check(ctx, "richardson-lucy-cupy", "richardson-lucy", IMAGE_RTOL)


def check_dwdn(ctx: Context):
    _need("torch")
    return _method_check(ctx, "dwdn", "dwdn", NET_RTOL, count=256)


def check_resnet_jax(ctx: Context):
    _need("jax", "flax")
    return _method_check(ctx, "resnet-jax", "resnet-jax", NET_RTOL, count=256)


def check_dask_cuda(ctx: Context):
    if ctx.device != "cuda":
        raise Skip("dask-cuda needs a GPU")
    _need("dask_cuda", "cupy")
    import tempfile

    from .distributed import close, connect, dataset_params, gather_outputs, run_shards
    from .metacal import metacal

    from .pipeline import paired_noise

    k = min(len(ctx.ds), 2048)
    client = connect(None, None, device="cuda")
    try:
        workers = len(client.scheduler_info().get("workers", {}))
        with tempfile.TemporaryDirectory() as work:
            paths = run_shards(client, ctx.ds.path, k, work, shard_size=1024, metacal_kwargs={"chunk": 1024},
                               device="cuda", dataset=dataset_params(ctx.ds.spec))
            dist = gather_outputs(paths)
    finally:
        close(client)
    d = ctx.ds
    # the shards key the correction's fields by quad, as the dataset keys its noise
    noise = paired_noise(d["quad_id"][:k], d["rotation"][:k], d["noise_sigma"][:k], d["image"].shape[1:],
                         pairing=d.spec.noise_pairing)
    single = metacal(d["image"][:k], d["psf"][:k], pixel_scale=d.spec.pixel_scale, row=d["row"][:k],
                     col=d["col"][:k], noise=noise, chunk=1024)
    diff = float(np.nanmax(np.abs(dist["noshear_e1"] - single["noshear_e1"])))
    return ("ok" if diff <= E_TOL else "FAIL"), f"{k} samples on {workers} GPU worker(s), max |de| {diff:.1e}", {}


CHECKS = [("dataset on the GPU, DLPack to torch and JAX", check_dataset_dlpack),
          ("metacal on CuPy", check_metacal_cupy),
          ("metacal on torch", check_metacal_torch),
          ("metacal images (shear, then deconvolve) on CuPy", check_render_cupy),
          ("metacal images (shear, then deconvolve) on torch", check_render_torch),
          ("wiener-cupy", check_wiener_cupy),
          ("richardson-lucy-cupy", check_richardson_lucy_cupy),
          ("dwdn", check_dwdn),
          ("resnet-jax", check_resnet_jax),
          ("dask-cuda", check_dask_cuda)]


def run_checks(dataset: str = "ci", n: int = 5000, device: str = "cuda") -> list[dict]:
    """Run every check; each row: check, status (ok, FAIL, skip), detail, time_per_5000_s,
    peak_memory_mib, and goal_s with goal (met, missed, or None) where :data:`GOALS_S` sets one."""
    ctx = Context(dataset, n, device)
    rows = []
    for name, fn in CHECKS:
        row = {"check": name, "status": "", "detail": "", "time_per_5000_s": None, "peak_memory_mib": None,
               "goal_s": GOALS_S.get(name), "goal": None}
        try:
            status, detail, extra = fn(ctx)
            row.update(status=status, detail=detail)
            if extra.get("time_per_5000_s") is not None:
                row["time_per_5000_s"] = round(extra["time_per_5000_s"], 4)
            if extra.get("peak_memory_bytes") is not None:
                row["peak_memory_mib"] = round(extra["peak_memory_bytes"] / 2 ** 20, 1)
            # the goals are per 5000 single-band stamps; a method's check runs every band
            row["bands"] = extra.get("bands", 1)
            # a goal is the GPU's: with the CPU standing in it is shown, not judged
            if device == "cuda" and row["goal_s"] is not None and row["time_per_5000_s"] is not None \
                    and row["status"] == "ok":
                row["goal"] = "met" if extra["time_per_5000_s"] / row["bands"] <= row["goal_s"] else "missed"
        except Skip as why:
            row.update(status="skip", detail=str(why))
        except Exception as err:         # a broken path is the finding: report it and go on
            row.update(status="FAIL", detail=f"{type(err).__name__}: {err}"[:300])
        rows.append(row)
    return rows


def _goal_cell(r: dict) -> str:
    if r.get("goal_s") is None:
        return "-"
    per = " per band" if r.get("bands", 1) > 1 else ""       # the time column is per 5000 samples of every band
    return f"<= {r['goal_s']:g}{per}" + (f": {r['goal']}" if r.get("goal") else "")


def table(rows: list[dict]) -> str:
    head = ("check", "status", "time/5000 s", "goal (H100)", "peak MiB", "detail")
    cells = [head] + [(r["check"], r["status"], "-" if r["time_per_5000_s"] is None else f"{r['time_per_5000_s']:.3g}",
                       _goal_cell(r), "-" if r["peak_memory_mib"] is None else f"{r['peak_memory_mib']:.0f}",
                       r["detail"]) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(5)]
    lines = []
    for i, c in enumerate(cells):
        lines.append("  ".join(v.ljust(w) for v, w in zip(c[:5], widths)) + "  " + c[5])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ------")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = make_parser("python -m bench.doctor", "Exercise every GPU path and compare it with the CPU.")
    p.add_argument("--dataset", default="ci", help="dataset spec whose first --n samples are used [ci]")
    p.add_argument("--n", type=int, default=5000, help="samples (r band for metacal) [5000]")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="run the checks with the CPU standing in for the GPU (tests this command)")
    a = p.parse_args(argv)
    if not (isinstance(a.n, int) and a.n >= 4):
        raise BenchValueError(f"--n must be an integer >= 4, got {a.n!r}")
    why = cuda_unavailable_reason()
    if why and not a.cpu_dry_run:
        print(f"no GPU here ({why}): nothing to check")
        return 0
    device = "cpu" if a.cpu_dry_run else "cuda"
    t0 = time.perf_counter()
    rows = run_checks(a.dataset, a.n, device)
    gpu = None
    if device == "cuda":
        import subprocess
        try:
            gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            gpu = None
    print(f"device: {gpu or device}; dataset {a.dataset}, {a.n} samples; {time.perf_counter() - t0:.0f} s")
    print(table(rows))
    if a.json:
        from pathlib import Path
        tmp = Path(a.json).with_suffix(".tmp")
        tmp.write_text(json.dumps({"device": gpu or device, "dataset": a.dataset, "n": a.n, "rows": rows},
                                  indent=1, default=lambda v: None if isinstance(v, float) and not math.isfinite(v)
                                  else str(v)))
        tmp.replace(a.json)
    return 1 if any(r["status"] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="python -m bench.doctor"))
