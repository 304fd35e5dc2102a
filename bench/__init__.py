"""deconvbench: a benchmarking harness for PSF deconvolution inside batched metacalibration.

Importing ``bench`` is cheap: the names below load their modules on first use, and GalSim,
h5py and the deep-learning frameworks are imported only by the functions that need them.

>>> import bench
>>> ds = bench.load_dataset("smoke")                                    # doctest: +SKIP
>>> out = bench.metacal(ds["image"], ds["psf"], pixel_scale=0.2, noise_sigma=ds["noise_sigma"])  # doctest: +SKIP
"""

import importlib
import os

__version__ = "0.1.0"

# JAX would otherwise claim 75% of a GPU when first used: the other frameworks would starve
# and its memory figures would mean nothing. Set before any JAX import; a user's own
# setting wins.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

#: public name -> the module that defines it (loaded lazily, PEP 562)
_EXPORTS = {
    "load_dataset": "bench.dataset", "load_spec": "bench.spec", "DatasetSpec": "bench.spec",
    "metacal": "bench.metacal", "MetacalConfig": "bench.metacal", "KERNELS": "bench.metacal",
    "shear_bias": "bench.shear", "ShearBiasMetric": "bench.shear", "combine_bands": "bench.shear",
    "psnr": "bench.metrics", "ssim": "bench.metrics", "ImageQualityMetric": "bench.metrics",
    "Metric": "bench.metrics", "Column": "bench.metrics", "register_metric": "bench.metrics",
    "ShearEstimator": "bench.metacal", "register_estimator": "bench.metacal", "adaptive_moments": "bench.metacal",
    "run_method": "bench.pipeline", "PLACEMENTS": "bench.pipeline", "metacal_images": "bench.metacal.render",
    "measure_dataset": "bench.pipeline",
    "BenchError": "bench.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name])
        return getattr(module, "run" if name == "run_method" else name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
