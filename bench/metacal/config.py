"""Metacal settings, shear types and flag bits."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import BenchValueError, unknown_name

TYPES = ("noshear", "1p", "1m", "2p", "2m")
#: reconvolution kernels (target PSFs), as ngmix master names them
KERNELS = ("dilate", "gauss", "azgauss", "fitgauss")
DTYPES = ("float32", "float64")
from .moments import (FLAG_BAD_MOMENTS, FLAG_NONFINITE, FLAG_NOT_POSITIVE, FLAG_PSF_OFFCENTRE,  # noqa: F401
                      FLAG_PSF_VANISHES, FLAG_PSF_ZERO, FWHM_TO_SIGMA)
#: how far (pixels) a PSF's centroid may sit from the stamp's true centre before flag 32
PSF_CENTRE_TOLERANCE = 0.5


@dataclass(frozen=True)
class MetacalConfig:
    """Settings of :func:`bench.metacal.metacal`.

    Parameters
    ----------
    kernel : {"dilate", "gauss", "azgauss", "fitgauss"}
        Reconvolution kernel (target PSF), as in ngmix's ``psf=`` argument; the default has the
        least mean |m| over the SNR bins of ``default`` with the noise correction on
        (``python -m bench.kernel_study``; all four agree within their errors). [default: "gauss"]
    step : float
        Shear step. [default: 0.01]
    weight_fwhm : float
        FWHM of the Gaussian moment weight, arcsec. [default: 1.2]
    lattice : int
        The q lattice spacing is 2 pi / max(lattice, n) rad/pixel for n x n stamps; a lattice
        smaller than the stamp would alias the image. [default: 48]
    tol : float
        Relative size of the weight's transform at the lattice edge. [default: 1e-6]
    chunk : int
        Objects processed at a time (bounds memory). [default: 1024]
    dtype : {"float32", "float64"}
        Precision of the transforms and moments. float32 is twice as fast and agrees with
        float64 to ~1e-7 in e on the ngmix reference; the target width of the Gaussian
        kernels is always found in float64, since it is a threshold decision. [default: "float32"]
    noise_correction : bool
        Add a 90-degree-rotated, metacalibrated noise field to every metacal image, ngmix's
        ``fixnoise``: removes the correlated-noise bias of the response and doubles the
        noise (see :mod:`bench.metacal.noise`). [default: True]
    noise_seed : int
        Seed of the drawn noise fields; object *i*'s field depends on this seed and the
        object's key alone. Ignored where a noise field is given. [default: 0]
    estimator : str
        The shear estimator that measures the five images (:mod:`bench.metacal.estimators`):
        ``"gaussmom"``, Gaussian-weighted moments of FWHM *weight_fwhm*, exact in Fourier
        space; ``"admom"``, ngmix's adaptive moments on the drawn images; or any registered
        name. [default: "gaussmom"]
    """

    kernel: str = "gauss"
    step: float = 0.01
    weight_fwhm: float = 1.2
    lattice: int = 48
    tol: float = 1e-6
    chunk: int = 1024
    dtype: str = "float32"
    noise_correction: bool = True
    noise_seed: int = 0
    estimator: str = "gaussmom"

    def __post_init__(self):
        if self.kernel not in KERNELS:
            raise unknown_name("metacal kernel", self.kernel, KERNELS)
        if not (isinstance(self.step, (int, float)) and math.isfinite(self.step) and 1e-4 <= self.step < 0.2):
            # below 1e-4 the finite difference of e drowns in float32 rounding (R would read 0)
            raise BenchValueError(f"step must be in [1e-4, 0.2), got {self.step!r}")
        if not (isinstance(self.weight_fwhm, (int, float)) and math.isfinite(self.weight_fwhm)
                and self.weight_fwhm > 0):
            raise BenchValueError(f"weight_fwhm must be > 0, got {self.weight_fwhm!r}")
        if not (isinstance(self.tol, (int, float)) and 0 < self.tol < 1e-3):
            raise BenchValueError(f"tol must be in (0, 1e-3), got {self.tol!r}")
        if self.dtype not in DTYPES:
            raise unknown_name("dtype", self.dtype, DTYPES)
        if not (isinstance(self.chunk, int) and self.chunk >= 1):
            raise BenchValueError(f"chunk must be an integer >= 1, got {self.chunk!r}")
        if not isinstance(self.noise_correction, bool):
            raise BenchValueError(f"noise_correction must be True or False, got {self.noise_correction!r}")
        if not (isinstance(self.noise_seed, (int, np.integer)) and 0 <= self.noise_seed < 2 ** 63):
            raise BenchValueError(f"noise_seed must be an integer in [0, 2**63), got {self.noise_seed!r}")
        from .estimators import list_estimators
        if self.estimator not in list_estimators():
            raise unknown_name("shear estimator", self.estimator, list_estimators())


def shear_matrix(g1: float, g2: float) -> np.ndarray:
    """GalSim's shear matrix for reduced shear (g1, g2): stretches along +x for g1 > 0."""
    return np.array([[1 + g1, g2], [g2, 1 - g1]]) / math.sqrt(1 - g1 * g1 - g2 * g2)


def shears(step: float) -> dict[str, tuple[float, float]]:
    """The (g1, g2) of each metacal type for shear *step*."""
    return {"noshear": (0.0, 0.0), "1p": (step, 0.0), "1m": (-step, 0.0),
            "2p": (0.0, step), "2m": (0.0, -step)}
