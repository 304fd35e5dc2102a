"""Exact batched metacalibration (the engine): ``metacal(image, psf, *, pixel_scale, kernel=...)``.

Modules: :mod:`~bench.metacal.config` (settings, types, flags), :mod:`~bench.metacal.lattice`
(q lattices and transforms), :mod:`~bench.metacal.kernels` (reconvolution kernels),
:mod:`~bench.metacal.noise` (noise correction), :mod:`~bench.metacal.validate` (input checks),
:mod:`~bench.metacal.engine` (:func:`metacal`), :mod:`~bench.metacal.moments` (weighted moments
and the flag bits), :mod:`~bench.metacal.admom` (ngmix's adaptive moments, :func:`adaptive_moments`),
:mod:`~bench.metacal.estimators` (the shear estimators, ``gaussmom`` and ``admom``, and
:func:`register_estimator` for new ones), :mod:`~bench.metacal.render` (the metacal images drawn,
and measured by an estimator). The command line is ``python -m bench.metacal``
(:mod:`bench.metacal.__main__`), which sits above the engine and may run methods and Dask.
"""

from .config import (DTYPES, FLAG_BAD_MOMENTS, FLAG_NONFINITE, FLAG_NOT_POSITIVE, FLAG_PSF_OFFCENTRE,
                     FLAG_PSF_VANISHES, FLAG_PSF_ZERO, FWHM_TO_SIGMA, KERNELS, TYPES, MetacalConfig, shear_matrix, shears)
from .admom import adaptive_moments
from .engine import metacal
from .estimators import ShearEstimator, get_estimator, list_estimators, register_estimator
from .kernels import azgauss_target_sigma, fitgauss_target_sigma, gauss_target_sigma, target_sigma
from .noise import draw_fields

__all__ = ["DTYPES", "FLAG_BAD_MOMENTS", "FLAG_NONFINITE", "FLAG_NOT_POSITIVE", "FLAG_PSF_OFFCENTRE", "FLAG_PSF_VANISHES",
           "FLAG_PSF_ZERO", "FWHM_TO_SIGMA", "KERNELS", "TYPES", "MetacalConfig", "ShearEstimator", "adaptive_moments",
           "azgauss_target_sigma",
           "draw_fields", "fitgauss_target_sigma", "gauss_target_sigma", "get_estimator", "list_estimators", "metacal",
           "register_estimator", "shear_matrix", "shears",
           "target_sigma"]
