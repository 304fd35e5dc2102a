"""Benchmarks of every registered method on the shared dataset.

For each method (on its device): the median time of ``deconvolve`` over all bands,
reported per 5000 samples; PSNR and SSIM against the truth per SNR bin; and shear
bias m, c per SNR bin through metacal (the real-space path, bands combined with
equal weights). ``fourier`` has no image of its own, so it gets the exact metacal
path and no PSNR/SSIM. Methods that cannot run here are skipped with the reason.
"""

import statistics
import time

import numpy as np
import pytest

from bench.dataset import to_framework
from bench.devices import module_missing
from bench.metacal import metacal, to_numpy
from bench.metrics import ImageQualityMetric
from bench.shear import ShearBiasMetric, combine_bands
from methods import get_method, get_method_class, list_methods

N_REF = 5000


def _inputs(dataset, framework, n):
    arrays = [dataset["image"][:n], dataset["psf"][:n], dataset["noise_sigma"][:n]]
    if framework == "cupy":
        import cupy
        return [cupy.asarray(a) for a in arrays]
    if framework in ("torch", "jax"):
        return [to_framework(a, framework) for a in arrays]
    return arrays


def _table_to_info(table):
    return {str(k): {c: (None if v != v else v) for c, v in row.items()} for k, row in table.iterrows()}


@pytest.mark.parametrize("name", list_methods())
def test_method(benchmark, dataset, name):
    cls = get_method_class(name)
    device = cls.devices[0]
    why = cls.unavailable_reason(device)
    if why:
        pytest.skip(f"{name} unavailable: {why}")
    method = get_method(name, device=device)
    n = min(len(dataset), N_REF)
    img, psf, sig = _inputs(dataset, cls.framework, n)
    info = dict(method=name, framework=cls.framework, device=device, n_samples=n,
                n_bands=len(dataset.spec.bands))
    if cls.produces_image:
        rounds = 1 if name.startswith("richardson-lucy") else 3
        out = benchmark.pedantic(method.deconvolve, args=(img, psf, sig), rounds=rounds, iterations=1,
                                 warmup_rounds=0 if rounds == 1 else 1)
        info["time_per_5000_s"] = benchmark.stats.stats.median * N_REF / n
        dec = to_numpy(out)
        quality = ImageQualityMetric()
        quality.update(dec, dataset["truth"][:n], dataset["snr_bin"][:n])
        info["quality"] = _table_to_info(quality.compute())
    else:
        benchmark.pedantic(lambda: None, rounds=1, iterations=1)
        info["time_per_5000_s"] = None        # no stand-alone image; see the metacal benchmark
        dec = None
    res = metacal(dataset["image"][:n], dataset["psf"][:n], pixel_scale=dataset.spec.pixel_scale,
                  row=dataset["row"][:n], col=dataset["col"][:n], deconvolved=dec)
    shear = ShearBiasMetric(dataset.spec.shear)
    shear.update(combine_bands(res), quad_id=dataset["quad_id"][:n], shear_sign=dataset["shear_sign"][:n],
                 snr_bin=dataset["snr_bin"][:n])
    info["shear"] = _table_to_info(shear.compute())
    info["n_flagged"] = int(np.count_nonzero(res["flags"]))
    benchmark.extra_info.update(info)


@pytest.mark.skipif(module_missing("pyfftw"), reason="pyFFTW is not installed")
def test_wiener_pyfftw_vs_scipy(benchmark, dataset):
    """pyFFTW and scipy.fft back-ends of the same Wiener code, timed in the same run."""
    from methods.wiener import wiener
    n = min(len(dataset), N_REF)
    img, psf, sig = dataset["image"][:n], dataset["psf"][:n], dataset["noise_sigma"][:n]
    wiener(img, psf, sig, backend="scipy")               # warm-up (and FFTW planning below)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        wiener(img, psf, sig, backend="scipy")
        times.append(time.perf_counter() - t0)
    benchmark.pedantic(wiener, args=(img, psf, sig), kwargs={"backend": "pyfftw"}, rounds=5,
                       iterations=1, warmup_rounds=1)
    fftw = benchmark.stats.stats.median
    scipy_median = statistics.median(times)
    benchmark.extra_info.update(method="wiener-fftw", framework="numpy", device="cpu", n_samples=n,
                                time_per_5000_s=fftw * N_REF / n,
                                scipy_time_per_5000_s=scipy_median * N_REF / n,
                                pyfftw_over_scipy=fftw / scipy_median)
