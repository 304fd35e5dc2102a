"""Benchmarks of the core: dataset generation, batched metacal and its GalSim reference loop.

Times are medians over rounds (pytest-benchmark), reported per 5000 samples in
``extra_info["time_per_5000_s"]``. The metacal benchmark also times the
one-object GalSim loop in the same run and records the ratio
(``speedup_vs_galsim_loop``), and the peak host memory of one call.
"""

import statistics
import time

import numpy as np
import pytest

from bench.devices import cuda_unavailable_reason, module_missing
from bench.memory import measure_peak
from bench.metacal import KERNELS, metacal
from bench.reference_loop import galsim_metacal_loop
from bench.simulate import simulate
from bench.spec import load_spec

N_REF = 5000
N_LOOP = 8            # objects per round of the GalSim loop (about 20-80 ms each)


def _per_5000(benchmark, n):
    med = benchmark.stats.stats.median
    benchmark.extra_info["time_per_5000_s"] = med * N_REF / n
    benchmark.extra_info["n_samples"] = n
    return med * N_REF / n


def _r_band(dataset, n):
    b = dataset.spec.bands.index("r") if "r" in dataset.spec.bands else 0
    return (dataset["image"][:n, b], dataset["psf"][:n, b], dataset["row"][:n], dataset["col"][:n])


def _loop_per_5000(dataset, mode, rounds=3):
    img, psf, row, col = _r_band(dataset, N_LOOP)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        galsim_metacal_loop(img, psf, pixel_scale=dataset.spec.pixel_scale, rows=row, cols=col, kernel=mode)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * N_REF / N_LOOP


def _reference_workload():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((384, 384))
    x = rng.standard_normal((2048, 48, 48)).astype(np.float32)
    for _ in range(12):
        a = a @ a.T / 384
    for _ in range(3):
        np.fft.irfft2(np.fft.rfft2(x), s=(48, 48))
    return float(a[0, 0])


def test_reference_workload(benchmark):
    """A fixed NumPy workload (matrix products and stamp-sized FFTs, ~0.2 s): bench.compare divides
    every time by it, so runs on different machines compare. Its fastest round is used: the
    minimum is the most stable estimate of what the machine can do."""
    benchmark.pedantic(_reference_workload, rounds=9, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(method="reference-workload", framework="numpy", device="cpu",
                                n_samples=N_REF, time_per_5000_s=benchmark.stats.stats.min,
                                peak_memory_bytes=None, by_snr=[])


def test_generate_dataset(benchmark):
    """Simulation throughput, g/r/i 48x48, both cores (goal: 5000 samples in under 60 s)."""
    spec = load_spec("default").with_overrides(n_quads=50)
    benchmark.pedantic(simulate, args=(spec,), kwargs={"progress": False}, rounds=2, iterations=1)
    benchmark.extra_info.update(method="simulation", framework="galsim", device="cpu",
                                peak_memory_bytes=None, by_snr=[])
    _per_5000(benchmark, spec.n_samples)


@pytest.mark.parametrize("mode", ["dilate", "gauss"])
def test_galsim_reference_loop(benchmark, dataset, mode):
    """ngmix's way: one object at a time through GalSim (InterpolatedImage, Deconvolve, ...)."""
    img, psf, row, col = _r_band(dataset, N_LOOP)
    kwargs = dict(pixel_scale=dataset.spec.pixel_scale, rows=row, cols=col, kernel=mode)
    benchmark.pedantic(galsim_metacal_loop, args=(img, psf), kwargs=kwargs, rounds=3, iterations=1)
    peak, kind = measure_peak(lambda: galsim_metacal_loop(img, psf, **kwargs), "galsim", "cpu")
    benchmark.extra_info.update(method=f"galsim-loop[{mode}]", framework="galsim", device="cpu", psf=mode,
                                peak_memory_bytes=peak, peak_memory_kind=kind, by_snr=[])
    _per_5000(benchmark, N_LOOP)


def _r_band_noise(dataset, n, seed=0):
    """The correction's fields for the r band of the first *n* samples, paired like the dataset's noise."""
    from bench.pipeline import paired_noise

    b = dataset.spec.bands.index("r") if "r" in dataset.spec.bands else 0
    z = paired_noise(dataset["quad_id"][:n], dataset["rotation"][:n], dataset["noise_sigma"][:n, b:b + 1],
                     (1,) + dataset["image"].shape[2:], seed=seed, pairing=dataset.spec.noise_pairing)
    return z[:, 0]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("mode", list(KERNELS))
def test_metacal_fourier(benchmark, dataset, mode, device):
    """The exact `fourier` metacal, r band, all five images and moments, up to 5000 samples, with the
    noise correction (the field given, as a dataset or ngmix's use_noise_image would); the same
    call without the correction is timed in the same test for the ratio."""
    n = min(len(dataset), N_REF)
    img, psf, row, col = _r_band(dataset, n)
    noise = _r_band_noise(dataset, n)
    if device == "cuda":
        why = cuda_unavailable_reason() or ("CuPy is not installed" if module_missing("cupy") else "")
        if why:
            pytest.skip(f"cuda unavailable: {why}")
        import cupy
        img, psf, noise = cupy.asarray(img), cupy.asarray(psf), cupy.asarray(noise)
    kwargs = dict(pixel_scale=dataset.spec.pixel_scale, row=row, col=col, kernel=mode)
    out = benchmark.pedantic(metacal, args=(img, psf), kwargs=dict(kwargs, noise=noise), rounds=3, iterations=1,
                             warmup_rounds=1)
    assert np.isfinite(out["R11"]).mean() > 0.99
    per_5000 = _per_5000(benchmark, n)
    plain = []
    for _ in range(3):
        t0 = time.perf_counter()
        metacal(img, psf, noise_correction=False, **kwargs)
        plain.append(time.perf_counter() - t0)
    plain_per_5000 = statistics.median(plain) * N_REF / n
    info = dict(method=f"metacal[{mode}]", framework="cupy" if device == "cuda" else "numpy",
                device=device, psf=mode, kernel=mode, noise_correction=True, by_snr=[],
                uncorrected_time_per_5000_s=plain_per_5000, correction_time_ratio=per_5000 / plain_per_5000)
    info["peak_memory_bytes"], info["peak_memory_kind"] = measure_peak(
        lambda: metacal(img, psf, noise=noise, **kwargs), info["framework"], device)
    loop = _loop_per_5000(dataset, mode)
    info.update(galsim_loop_per_5000_s=loop, speedup_vs_galsim_loop=loop / per_5000)
    benchmark.extra_info.update(info)   # the report and README quote the ratios; no timed assertion
