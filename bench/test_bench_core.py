"""Benchmarks of the foundation: dataset generation and the exact metacal loop.

Times are medians over rounds (pytest-benchmark), reported per 5000 samples in
``extra_info["time_per_5000_s"]``.
"""

import numpy as np
import pytest

from bench.metacal import metacal
from bench.simulate import simulate
from bench.spec import load_spec

N_REF = 5000


def _per_5000(benchmark, n):
    med = benchmark.stats.stats.median
    benchmark.extra_info["time_per_5000_s"] = med * N_REF / n
    benchmark.extra_info["n_samples"] = n


def test_generate_dataset(benchmark):
    """Simulation throughput, g/r/i 48x48, both cores (goal: 5000 samples in under 60 s)."""
    spec = load_spec("default").with_overrides(n_quads=50)
    benchmark.pedantic(simulate, args=(spec,), kwargs={"progress": False}, rounds=2, iterations=1)
    benchmark.extra_info.update(method="galsim-simulation", framework="numpy", device="cpu")
    _per_5000(benchmark, spec.n_samples)


@pytest.mark.parametrize("mode", ["dilate", "gauss"])
def test_metacal_fourier(benchmark, dataset, mode):
    """The exact `fourier` metacal, r band, all five images and moments."""
    n = min(len(dataset), 1000)
    img = dataset["image"][:n, 1]
    psf = dataset["psf"][:n, 1]
    out = benchmark.pedantic(metacal, args=(img, psf), kwargs=dict(
        pixel_scale=dataset.spec.pixel_scale, row=dataset["row"][:n], col=dataset["col"][:n],
        psf_mode=mode), rounds=3, iterations=1, warmup_rounds=1)
    assert np.isfinite(out["R11"]).mean() > 0.99
    benchmark.extra_info.update(method="fourier", framework="numpy", device="cpu", psf=mode)
    _per_5000(benchmark, n)
