"""Moments and the shapes made of them: Gaussian-weighted moments on pixels, and e1, e2, T with
their flag bits from weighted moments (the engine's, in Fourier space, and the pixel estimators').

The metacal flag bits live here, the lowest module of the engine, so that every module above
(config, estimators, engine, render) reads them from one place.
"""

from __future__ import annotations

import math

import numpy as np

from ..arrays import device_of, namespace, to_numpy

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))

FLAG_NONFINITE = 1
FLAG_PSF_ZERO = 2
FLAG_PSF_VANISHES = 4
FLAG_BAD_MOMENTS = 8
FLAG_NOT_POSITIVE = 16
FLAG_PSF_OFFCENTRE = 32


def pixel_moments(images, row=None, col=None, *, pixel_scale: float, weight_fwhm: float = 1.2) -> np.ndarray:
    """Gaussian-weighted moments (M0, Mxx, Myy, Mxy) of images (M, n, n), on the host: (M, 4).

    The weight, of FWHM *weight_fwhm* arcsec, and the moments are centred on each image's
    (row, col) (pixels, 0-based; x along columns) [default: the stamp centre]; as ngmix's
    ``GaussMom``, up to a common normalisation that cancels in e and T.
    """
    xp, dev = namespace(images), device_of(images)
    M, n = images.shape[0], images.shape[-1]
    c = (n - 1) / 2.0
    row = np.full(M, c) if row is None else np.asarray(row, np.float64)
    col = np.full(M, c) if col is None else np.asarray(col, np.float64)
    sig = weight_fwhm * FWHM_TO_SIGMA / pixel_scale
    j = np.arange(n, dtype=np.float64)
    dy, dx = j[None, :] - row[:, None], j[None, :] - col[:, None]                  # (M, n)
    gy, gx = np.exp(-0.5 * dy * dy / sig ** 2), np.exp(-0.5 * dx * dx / sig ** 2)
    # the weight is separable: sum_y gy(y) a(y) sum_x gx(x) b(x) I(y, x) for a, b in {1, d, d^2}
    f = xp.astype(images, xp.float64)

    def arr(a):
        return xp.asarray(a, device=dev, dtype=xp.float64)

    def proj(ay, bx):
        t = xp.sum(f * arr(bx)[:, None, :], axis=2)                                  # (M, n) over x
        return to_numpy(xp.sum(t * arr(ay), axis=1))

    m0 = proj(gy, gx)
    mxx = proj(gy, gx * dx * dx)
    myy = proj(gy * dy * dy, gx)
    mxy = proj(gy * dy, gx * dx)
    return np.stack([m0, mxx, myy, mxy], axis=1) / (2 * math.pi * sig * sig)


def shape_from_moments(m, scale: float) -> dict:
    """e1, e2, T (arcsec^2) and flags from weighted moments (M0, Mxx, Myy, Mxy) of shape (M, 4).

    Flags: 4 for non-finite moments, 8 for M0 <= 0 or T <= 0 (e, T NaN), 16 for |e| >= 1.
    """
    m = np.asarray(m, dtype=np.float64)
    flags = np.zeros(len(m), np.int32)
    bad = ~np.isfinite(m).all(axis=1)
    flags[bad] |= FLAG_PSF_VANISHES
    m0, mxx, myy, mxy = m.T
    T = mxx + myy
    okm = ~bad & (m0 > 0) & (T > 0)
    flags[~bad & ~okm] |= FLAG_BAD_MOMENTS
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = np.where(okm, (mxx - myy) / T, np.nan)
        e2 = np.where(okm, 2 * mxy / T, np.nan)
        T = np.where(okm, T / m0 * scale * scale, np.nan)
    flags[okm & (np.hypot(e1, e2) >= 1)] |= FLAG_NOT_POSITIVE
    return {"e1": e1, "e2": e2, "T": T, "flags": flags}


__all__ = ["FWHM_TO_SIGMA", "pixel_moments", "shape_from_moments"]
