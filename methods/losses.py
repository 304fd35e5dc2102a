"""Training losses shared by the neural methods (torch and JAX alike, through the array API).

The astronomical loss of Wang et al. compares, per stamp and band, what shear
measurement cares about: the flux, the centroid and the second moments (as an
ellipticity and a size) of the prediction and of the truth. Moments use a round
Gaussian weight at the stamp centre (``sigma`` pixels) so noise far from the galaxy
does not dominate. Written once against the array API (``array-api-compat``), so the
PyTorch DWDN and the JAX network use the same code.

References
----------
Wang, Lin, Slosar, Sreejith, Ramachandra & Yoo, "Deconvolution of astronomical images
with deep neural networks" (the astronomical fine-tuning loss).
"""

from __future__ import annotations


def _xp(x):
    from array_api_compat import array_namespace
    return array_namespace(x)


def _device(x):
    from array_api_compat import device
    return device(x)


def weighted_moments(images, sigma: float = 4.0):
    """Flux, centroid (x, y) and second moments (xx, yy, xy) of images (..., n, n), each (...,).

    The weight is a round Gaussian of width *sigma* pixels at the stamp centre (n - 1) / 2.
    """
    xp = _xp(images)
    n = images.shape[-1]
    c = (n - 1) / 2.0
    pos = xp.arange(n, dtype=images.dtype, device=_device(images)) - c
    y, x = pos[:, None], pos[None, :]
    w = xp.exp(-(x * x + y * y) / (2 * sigma * sigma))
    wi = images * w
    flux = xp.sum(wi, axis=(-2, -1))
    safe = xp.where(xp.abs(flux) > 1e-12, flux, xp.ones_like(flux))
    mx = xp.sum(wi * x, axis=(-2, -1)) / safe
    my = xp.sum(wi * y, axis=(-2, -1)) / safe
    mxx = xp.sum(wi * x * x, axis=(-2, -1)) / safe
    myy = xp.sum(wi * y * y, axis=(-2, -1)) / safe
    mxy = xp.sum(wi * x * y, axis=(-2, -1)) / safe
    return flux, mx, my, mxx, myy, mxy


def astro_loss(pred, truth, *, sigma: float = 4.0, weights=(1.0, 1.0, 1.0)):
    """Mean over stamps of flux, centroid and shape differences (pred vs truth), (..., n, n) -> scalar.

    Terms: relative flux error |dF| / (|F_true| + eps); centroid error in pixels |dx| + |dy|;
    shape error |de1| + |de2| + |dT| / T_true with e1 = (xx - yy) / T, e2 = 2 xy / T,
    T = xx + yy. *weights* multiply the three terms. [default: (1, 1, 1)]
    """
    xp = _xp(pred)
    fp, xp_, yp, xxp, yyp, xyp = weighted_moments(pred, sigma)
    ft, xt, yt, xxt, yyt, xyt = weighted_moments(truth, sigma)
    eps = 1e-6
    flux = xp.abs(fp - ft) / (xp.abs(ft) + eps)
    cen = xp.abs(xp_ - xt) + xp.abs(yp - yt)
    Tp, Tt = xxp + yyp, xxt + yyt
    Tp_safe = xp.where(xp.abs(Tp) > eps, Tp, xp.full_like(Tp, eps))
    Tt_safe = xp.where(xp.abs(Tt) > eps, Tt, xp.full_like(Tt, eps))
    shape = (xp.abs((xxp - yyp) / Tp_safe - (xxt - yyt) / Tt_safe)
             + xp.abs(2 * xyp / Tp_safe - 2 * xyt / Tt_safe) + xp.abs(Tp - Tt) / xp.abs(Tt_safe))
    a, b, c = weights
    return xp.mean(a * flux + b * cen + c * shape)


def l1_loss(pred, truth):
    xp = _xp(pred)
    return xp.mean(xp.abs(pred - truth))


__all__ = ["astro_loss", "l1_loss", "weighted_moments"]
