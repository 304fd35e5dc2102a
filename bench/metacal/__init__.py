"""Exact batched metacalibration (the engine): ``metacal(image, psf, *, pixel_scale, kernel=...)``.

Modules: :mod:`~bench.metacal.config` (settings, types, flags), :mod:`~bench.metacal.lattice`
(q lattices and transforms), :mod:`~bench.metacal.kernels` (reconvolution kernels),
:mod:`~bench.metacal.noise` (noise correction), :mod:`~bench.metacal.validate` (input checks),
:mod:`~bench.metacal.engine` (:func:`metacal`), :mod:`~bench.metacal.admom` (ngmix's adaptive
moments, :func:`adaptive_moments`, a pixel-space shear estimator). The command line is ``python -m bench.metacal``
(:mod:`bench.metacal.__main__`), which sits above the engine and may run methods and Dask.
"""

from .config import (DTYPES, FLAG_BAD_MOMENTS, FLAG_NONFINITE, FLAG_NOT_POSITIVE, FLAG_PSF_OFFCENTRE,
                     FLAG_PSF_VANISHES, FLAG_PSF_ZERO, FWHM_TO_SIGMA, KERNELS, TYPES, MetacalConfig, shear_matrix, shears)
from .admom import adaptive_moments
from .engine import metacal
from .kernels import azgauss_target_sigma, fitgauss_target_sigma, gauss_target_sigma, target_sigma
from .noise import draw_fields

__all__ = ["DTYPES", "FLAG_BAD_MOMENTS", "FLAG_NONFINITE", "FLAG_NOT_POSITIVE", "FLAG_PSF_OFFCENTRE", "FLAG_PSF_VANISHES",
           "FLAG_PSF_ZERO", "FWHM_TO_SIGMA", "KERNELS", "TYPES", "MetacalConfig", "adaptive_moments",
           "azgauss_target_sigma",
           "draw_fields", "fitgauss_target_sigma", "gauss_target_sigma", "metacal", "shear_matrix", "shears",
           "target_sigma"]
