"""The one-object-at-a-time GalSim metacal loop that batched metacal is timed against.

It does what ngmix 2.4.2 does per object: interpolate image and PSF with
``InterpolatedImage`` (lanczos15), deconvolve the PSF, shear, reconvolve with the
target PSF, ``drawImage(method='no_pixel')``, and measure Gaussian-weighted moments
(weight on the object's centre). It exists as the speed reference of the benchmark
suite (``bench/test_suite/test_bench_core.py``); :func:`bench.metacal.metacal` is the tool.
"""

from __future__ import annotations

import numpy as np

from .metacal import FWHM_TO_SIGMA, TYPES, shears


def weighted_moments(image: np.ndarray, row: float, col: float, scale: float, weight_fwhm: float = 1.2):
    """e1, e2, T (arcsec^2) of *image* with a round Gaussian weight centred on (row, col)."""
    n = image.shape[0]
    rr, cc = np.mgrid[:n, :n]
    v, u = (rr - row) * scale, (cc - col) * scale
    s = weight_fwhm * FWHM_TO_SIGMA
    wI = np.exp(-(u * u + v * v) / (2 * s * s)) * image
    f = wI.sum()
    muu, mvv, muv = (wI * u * u).sum() / f, (wI * v * v).sum() / f, (wI * u * v).sum() / f
    T = muu + mvv
    return (muu - mvv) / T, 2 * muv / T, T


def galsim_metacal_one(image, psf, *, pixel_scale: float, row: float, col: float,
                       kernel: str = "dilate", step: float = 0.01, weight_fwhm: float = 1.2) -> dict:
    """Metacal of one stamp through GalSim objects, as ngmix does; returns {type: (e1, e2, T)}."""
    import galsim

    n = image.shape[-1]
    gs_image = galsim.Image(np.ascontiguousarray(image, dtype=np.float64), scale=pixel_scale)
    gs_psf = galsim.Image(np.ascontiguousarray(psf, dtype=np.float64), scale=pixel_scale)
    gal = galsim.InterpolatedImage(gs_image, x_interpolant="lanczos15")
    psf_int = galsim.InterpolatedImage(gs_psf, x_interpolant="lanczos15")
    gal_nopsf = galsim.Convolve(gal, galsim.Deconvolve(psf_int))
    dilation = 1.0 + 2.0 * abs(step)
    if kernel == "dilate":
        pixel = galsim.Pixel(pixel_scale)
        target = galsim.Convolve(galsim.Convolve(psf_int, galsim.Deconvolve(pixel)).dilate(dilation), pixel)
    else:
        from .metacal import target_sigma
        sigma = target_sigma(kernel, np.asarray(psf, dtype=np.float64)[None], pixel_scale)[0] * pixel_scale
        target = galsim.Gaussian(sigma=sigma * dilation)
    out = {}
    for t in TYPES:
        g1, g2 = shears(step)[t]
        obj = galsim.Convolve(gal_nopsf.shear(g1=g1, g2=g2), target)
        drawn = obj.drawImage(nx=n, ny=n, scale=pixel_scale, method="no_pixel").array
        out[t] = weighted_moments(drawn, row, col, pixel_scale, weight_fwhm)
    return out


def galsim_metacal_loop(images, psfs, *, pixel_scale: float, rows=None, cols=None, **kwargs) -> dict:
    """:func:`galsim_metacal_one` over a batch; returns arrays keyed like :func:`bench.metacal.metacal`."""
    N, n = len(images), images.shape[-1]
    c = (n - 1) / 2.0
    rows = np.full(N, c) if rows is None else rows
    cols = np.full(N, c) if cols is None else cols
    res = {f"{t}_{q}": np.empty(N) for t in TYPES for q in ("e1", "e2", "T")}
    for i in range(N):
        one = galsim_metacal_one(images[i], psfs[i], pixel_scale=pixel_scale, row=float(rows[i]),
                                 col=float(cols[i]), **kwargs)
        for t, (e1, e2, T) in one.items():
            res[f"{t}_e1"][i], res[f"{t}_e2"][i], res[f"{t}_T"][i] = e1, e2, T
    step = kwargs.get("step", 0.01)
    res["R11"] = (res["1p_e1"] - res["1m_e1"]) / (2 * step)
    res["R22"] = (res["2p_e2"] - res["2m_e2"]) / (2 * step)
    return res

