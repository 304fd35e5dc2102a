"""Benchmarks of every registered method on the shared dataset.

Two rows per method, each with the ``extra_info`` schema the report and the gate read
(``method``, ``framework``, ``device``, ``n_samples``, ``time_per_5000_s``,
``peak_memory_bytes``, ``warmup_s``, ``by_snr``):

* ``test_method[NAME]``: ``deconvolve`` on all bands of the first (up to) 5000 samples;
* ``test_method_in_metacal[NAME]``: the full loop, ``deconvolve`` then metacal of all bands
  (for ``fourier``, the exact metacal alone).

``by_snr`` lists, per SNR bin, PSNR and SSIM against the truth (null for ``fourier``,
which has no image of its own) and m, c from metacal with bands averaged. Methods that
cannot run here are skipped with the reason; times are medians over rounds after a
warm-up call, synchronised with the device (results are copied to the host).
"""

import time
import tracemalloc

import numpy as np
import pytest

from bench.dataset import to_framework
from bench.metacal import metacal, to_numpy
from bench.metrics import ImageQualityMetric
from bench.shear import ShearBiasMetric, combine_bands
from methods import get_method, get_method_class, list_methods

N_REF = 5000
_RESULTS: dict = {}          # per method: deconvolved images and the by_snr table, shared by both rows


def _inputs(dataset, framework, n):
    arrays = [dataset["image"][:n], dataset["psf"][:n], dataset["noise_sigma"][:n]]
    if framework == "cupy":
        import cupy
        return [cupy.asarray(a) for a in arrays]
    if framework in ("torch", "jax"):
        return [to_framework(a, framework) for a in arrays]
    return arrays


def _method_or_skip(name):
    cls = get_method_class(name)
    device = cls.devices[0]
    why = cls.unavailable_reason(device)
    if why:
        pytest.skip(f"{name} unavailable: {why}")
    return cls, device, get_method(name, device=device)


def _gpu_peak(framework):
    """Reset and return a reader of the GPU allocator's peak, or None on the CPU."""
    if framework == "cupy":
        import cupy
        pool = cupy.get_default_memory_pool()
        pool.free_all_blocks()
        return lambda: pool.total_bytes()      # the pool keeps every block: its size is the peak
    if framework == "torch":
        import torch
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.max_memory_allocated
    if framework == "jax":
        import jax
        dev = jax.devices()[0]
        if dev.platform == "gpu":
            return lambda: dev.memory_stats().get("peak_bytes_in_use")
    return None


def _measure_peak(fn, framework):
    """Peak memory of one call: the GPU allocator's peak, or NumPy's traced peak on the CPU."""
    gpu = _gpu_peak(framework)
    if gpu is not None:
        fn()
        return int(gpu()), "gpu-allocator"
    if framework != "numpy":
        return None, "not measured: tracemalloc does not see torch's or JAX's CPU allocator"
    tracemalloc.start()
    try:
        fn()
        return int(tracemalloc.get_traced_memory()[1]), "host-traced"
    finally:
        tracemalloc.stop()


def _by_snr(dataset, n, dec):
    """PSNR/SSIM (if dec) and m, c per SNR bin; runs metacal once per method."""
    if dec is not None:
        quality = ImageQualityMetric()
        quality.update(dec, dataset["truth"][:n], dataset["snr_bin"][:n])
        q = quality.compute()
    res = metacal(dataset["image"][:n], dataset["psf"][:n], pixel_scale=dataset.spec.pixel_scale,
                  row=dataset["row"][:n], col=dataset["col"][:n], deconvolved=dec)
    shear = ShearBiasMetric(dataset.spec.shear)
    shear.update(combine_bands(res), quad_id=dataset["quad_id"][:n], shear_sign=dataset["shear_sign"][:n],
                 snr_bin=dataset["snr_bin"][:n])
    s = shear.compute()
    edges = dataset.spec.snr_bins
    rows = []
    for label in list(range(len(edges) - 1)) + ["all"]:
        lo, hi = (edges[0], edges[-1]) if label == "all" else (edges[label], edges[label + 1])
        row = {"snr_bin": label, "snr_lo": lo, "snr_hi": hi, "n": 0, "psnr_db": None, "ssim": None,
               "m": None, "m_err": None, "c": None, "c_err": None, "c2": None, "c2_err": None}
        if dec is not None and label in q.index:
            row.update(n=int(q.loc[label, "n"]), psnr_db=float(q.loc[label, "psnr_mean"]),
                       ssim=float(q.loc[label, "ssim_mean"]))
        if label in s.index:
            b = s.loc[label]
            row.update(m=float(b.m), m_err=float(b.m_err), c=float(b.c1), c_err=float(b.c1_err),
                       c2=float(b.c2), c2_err=float(b.c2_err), n_quads=int(b.n_quads))
            row["n"] = row["n"] or 4 * int(b.n_quads)
        rows.append(row)
    return rows, int(np.count_nonzero(res["flags"]))


def _common(cls, device, dataset, n):
    return dict(framework=cls.framework, device=device, n_samples=n, n_bands=len(dataset.spec.bands),
                dataset=dataset.spec.name)


@pytest.mark.parametrize("name", list_methods())
def test_method(benchmark, dataset, name):
    """``deconvolve`` alone, all bands."""
    cls, device, method = _method_or_skip(name)
    n = min(len(dataset), N_REF)
    info = dict(method=name, **_common(cls, device, dataset, n))
    if not cls.produces_image:
        benchmark.pedantic(lambda: None, rounds=1, iterations=1)
        info.update(time_per_5000_s=None, peak_memory_bytes=None, warmup_s=None,
                    note="no stand-alone image: see test_method_in_metacal")
        rows, _ = _by_snr(dataset, n, None)
        _RESULTS[name] = dict(dec=None, by_snr=rows)
        info["by_snr"] = rows
        benchmark.extra_info.update(info)
        return
    img, psf, sig = _inputs(dataset, cls.framework, n)
    t0 = time.perf_counter()
    to_numpy(method.deconvolve(img, psf, sig))          # warm-up: compilation, FFT plans, caches
    info["warmup_s"] = time.perf_counter() - t0

    def run():
        return to_numpy(method.deconvolve(img, psf, sig))   # the copy to the host synchronises

    rounds = 1 if info["warmup_s"] > 3 else 3
    dec = benchmark.pedantic(run, rounds=rounds, iterations=1)
    info["time_per_5000_s"] = benchmark.stats.stats.median * N_REF / n
    info["peak_memory_bytes"], info["peak_memory_kind"] = _measure_peak(run, cls.framework)
    rows, nflag = _by_snr(dataset, n, dec)
    _RESULTS[name] = dict(dec=dec, by_snr=rows)
    info.update(by_snr=rows, n_flagged=nflag)
    benchmark.extra_info.update(info)


@pytest.mark.parametrize("name", list_methods())
def test_method_in_metacal(benchmark, dataset, name):
    """The full loop: ``deconvolve`` (if the method makes an image) then metacal of every band."""
    cls, device, method = _method_or_skip(name)
    n = min(len(dataset), N_REF)
    img, psf, sig = _inputs(dataset, cls.framework, n)
    kw = dict(pixel_scale=dataset.spec.pixel_scale, row=dataset["row"][:n], col=dataset["col"][:n])

    def run():
        dec = method.deconvolve(img, psf, sig) if cls.produces_image else None
        return metacal(img, psf, deconvolved=dec, **kw)

    t0 = time.perf_counter()
    run()
    warm = time.perf_counter() - t0
    benchmark.pedantic(run, rounds=1 if warm > 3 else 3, iterations=1)
    info = dict(method=f"{name}+metacal", base_method=name, **_common(cls, device, dataset, n),
                warmup_s=warm, time_per_5000_s=benchmark.stats.stats.median * N_REF / n)
    info["peak_memory_bytes"], info["peak_memory_kind"] = _measure_peak(run, cls.framework)
    if name not in _RESULTS:
        dec = to_numpy(method.deconvolve(img, psf, sig)) if cls.produces_image else None
        _RESULTS[name] = dict(dec=dec, by_snr=_by_snr(dataset, n, dec)[0])
    info["by_snr"] = _RESULTS[name]["by_snr"]
    benchmark.extra_info.update(info)


def test_ngmix_metacal(benchmark, dataset):
    """ngmix's own metacal on the same stamps, when ngmix is importable (never required)."""
    ngmix = pytest.importorskip("ngmix", reason="ngmix is not installed (conda-forge only)")
    from ngmix.metacal import get_all_metacal

    k = 8
    b = dataset.spec.bands.index("r") if "r" in dataset.spec.bands else 0
    scale = dataset.spec.pixel_scale

    def run():
        for i in range(k):
            jac = ngmix.DiagonalJacobian(row=dataset["row"][i], col=dataset["col"][i], scale=scale)
            pjac = ngmix.DiagonalJacobian(row=(dataset.spec.stamp_size - 1) / 2,
                                          col=(dataset.spec.stamp_size - 1) / 2, scale=scale)
            psf_obs = ngmix.Observation(dataset["psf"][i, b].astype("f8"), jacobian=pjac)
            obs = ngmix.Observation(dataset["image"][i, b].astype("f8"), jacobian=jac, psf=psf_obs,
                                    weight=np.full((dataset.spec.stamp_size,) * 2,
                                                   1 / dataset["noise_sigma"][i, b] ** 2))
            mobs = get_all_metacal(obs, psf="dilate", step=0.01, fixnoise=False)
            for o in mobs.values():
                ngmix.gaussmom.GaussMom(1.2).go(o)

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(method="ngmix-metacal", framework="ngmix", device="cpu", n_samples=k,
                                time_per_5000_s=benchmark.stats.stats.median * N_REF / k,
                                peak_memory_bytes=None, by_snr=[])


def test_wiener_pyfftw_vs_scipy(benchmark, dataset):
    """The pyFFTW and scipy.fft back-ends of the same Wiener code, timed in the same run."""
    import statistics

    from bench.devices import module_missing
    from methods.wiener import wiener

    if module_missing("pyfftw"):
        pytest.skip("pyFFTW is not installed")
    n = min(len(dataset), N_REF)
    img, psf, sig = dataset["image"][:n], dataset["psf"][:n], dataset["noise_sigma"][:n]
    wiener(img, psf, sig, backend="scipy")
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        wiener(img, psf, sig, backend="scipy")
        times.append(time.perf_counter() - t0)
    benchmark.pedantic(wiener, args=(img, psf, sig), kwargs={"backend": "pyfftw"}, rounds=5,
                       iterations=1, warmup_rounds=1)
    fftw, sp = benchmark.stats.stats.median, statistics.median(times)
    benchmark.extra_info.update(method="wiener-fftw[pyfftw-vs-scipy]", framework="numpy", device="cpu",
                                n_samples=n, time_per_5000_s=fftw * N_REF / n,
                                scipy_time_per_5000_s=sp * N_REF / n, pyfftw_over_scipy=fftw / sp)
