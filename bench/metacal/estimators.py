"""Shear estimators: what measures e1, e2 and T on each metacal image.

Metacal calibrates whatever measures the shapes, as long as the same estimator measures all
five images (Sheldon & Huff 2017). An estimator is a :class:`ShearEstimator` registered under a
name; ``MetacalConfig(estimator=NAME)`` (``--estimator NAME`` on the command lines and in the
benchmark suite) picks it.

* ``gaussmom`` [default]: Gaussian-weighted moments with a fixed round weight of FWHM
  ``weight_fwhm`` (1.2 arcsec), ngmix's ``GaussMom``. Exact in Fourier space in the first
  placement (:func:`bench.metacal.metacal` never draws the images); on pixels
  (:func:`bench.metacal.render.pixel_moments`) where images are drawn.
* ``admom``: ngmix's adaptive moments (``AdmomFitter``, :func:`bench.metacal.admom.adaptive_moments`),
  on the drawn metacal images in either placement.

Adding one: subclass :class:`ShearEstimator`, implement :meth:`~ShearEstimator.measure` on a
batch of images, and decorate the class with :func:`register_estimator`::

    @register_estimator("my-moments")
    class MyMoments(ShearEstimator):
        def measure(self, images, *, pixel_scale, row, col, config):
            ...
            return {"e1": e1, "e2": e2, "T": T, "flags": flags}

An estimator made of a network (ShearNet's) registers the same way; it gets host arrays.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..registry import Registry
from .admom import adaptive_moments
from .moments import pixel_moments, shape_from_moments

class ShearEstimator(ABC):
    """Measures e1, e2 and T of images; one method to implement.

    ``fourier_exact``: True for an estimator the engine evaluates exactly in Fourier space
    without drawing images (``gaussmom`` alone); its flags are the engine's own bits.
    ``device_arrays``: True when :meth:`measure` takes NumPy, CuPy and torch arrays alike (it
    then measures where the images are); otherwise it gets host arrays.
    """

    name: str = ""
    fourier_exact: bool = False
    device_arrays: bool = False

    @abstractmethod
    def measure(self, images, *, pixel_scale: float, row, col, config) -> dict:
        """Shapes of a batch of images.

        Parameters
        ----------
        images : array, shape (M, n, n)
            Metacal images (noise correction included), float32 or float64: NumPy, or the
            images' own framework where ``device_arrays``.
        pixel_scale : float
            Arcsec per pixel.
        row, col : numpy.ndarray, shape (M,)
            Each object's centre, pixels (0-based).
        config : MetacalConfig
            The run's settings (``weight_fwhm`` and so on).

        Returns
        -------
        dict of numpy.ndarray, each (M,)
            ``e1``, ``e2``, ``T`` (arcsec^2; NaN where the estimator failed) and ``flags``
            (int, 0 on success; the estimator's own bits).
        """


_REGISTRY = Registry("shear estimator", ShearEstimator)
#: class decorator registering a :class:`ShearEstimator` subclass under a name
register_estimator = _REGISTRY.register
unregister_estimator = _REGISTRY.unregister


def list_estimators() -> list[str]:
    """The registered estimators' names, sorted."""
    return sorted(_REGISTRY.names())


def get_estimator(name: str) -> "ShearEstimator":
    """An instance of the estimator registered as *name* (an unknown name suggests the closest)."""
    return _REGISTRY.get(name)()


@register_estimator("gaussmom")
class GaussMom(ShearEstimator):
    """Gaussian-weighted moments of fixed FWHM ``config.weight_fwhm`` (ngmix's ``GaussMom``)."""

    fourier_exact = True
    device_arrays = True

    def measure(self, images, *, pixel_scale, row, col, config):
        m = pixel_moments(images, row, col, pixel_scale=pixel_scale, weight_fwhm=config.weight_fwhm)
        return shape_from_moments(m, float(pixel_scale))


@register_estimator("admom")
class AdMom(ShearEstimator):
    """ngmix's adaptive moments (``AdmomFitter().go(obs, guess=0.5)``, unit weight map).

    Its flags are ngmix's (:mod:`bench.metacal.admom`); a flagged object is flagged 8 (moments
    undefined) in the metacal output.
    """

    guess = 0.5       # arcsec^2, as the reference ngmix run

    def measure(self, images, *, pixel_scale, row, col, config):
        r = adaptive_moments(np.asarray(images), pixel_scale=pixel_scale, row=row, col=col, guess=self.guess)
        return {k: r[k] for k in ("e1", "e2", "T", "flags")}


__all__ = ["AdMom", "GaussMom", "ShearEstimator", "get_estimator", "list_estimators", "register_estimator",
           "unregister_estimator"]
