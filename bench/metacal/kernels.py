"""Reconvolution kernels (target PSFs) of metacal, as ngmix master builds them.

* ``dilate``: the PSF with the pixel deconvolved, dilated by ``D = 1 + 2|step|``,
  reconvolved with the pixel, with the lanczos15 interpolant (built on the lattice in
  :func:`bench.metacal.lattice.plan`: ``T(k) = P(D k) u(D k) Pix(k) / Pix(D k)``).
* The Gaussian kernels are round, ``flux exp(-|D k|^2 sigma^2 / 2)``, no pixel; they
  differ in how sigma is chosen from the PSF (each function below returns sigma in pixels):

  - ``gauss`` (:func:`gauss_target_sigma`): on ngmix's k lattice (spacing stepk / 4, with its
    half-cell offset) the smallest |k|^2 where Re PSF(k) < 1e-2 flux is where the Gaussian
    reaches 3e-3. Pixel-wise, so not noise robust.
  - ``azgauss`` (:func:`azgauss_target_sigma`): the same lattice averaged in annuli of width
    stepk / 4; the crossing of 3e-2 flux is interpolated in log between annuli, and the
    Gaussian is pinned to 9e-3 there.
  - ``fitgauss`` (:func:`fitgauss_target_sigma`): adaptive moments of the PSF image, made
    round with the larger eigenvalue (ngmix's ellipticity dilation, capped at 1.1). The fit
    includes the pixel, so the kernel is not reconvolved with it (nor is any Gaussian kernel).

References
----------
ngmix ``metacal/metacal.py``, ``metacal/azgauss_target_psf.py``, ``metacal/fitgauss_target_psf.py``
(E. Sheldon et al.); adaptive moments: Bernstein & Jarvis 2002, AJ 123, 583.
"""

from __future__ import annotations

import math

import numpy as np

from ..arrays import device_of, namespace, to_numpy
from ..errors import unknown_name
from ..fourier import lanczos_ft
from .lattice import fold, fold_positions

AZGAUSS_SMALL_KVAL = 3e-2        # where the PSF's annular profile is cut
AZGAUSS_SMALLER_KVAL = 9e-3      # what the target Gaussian is pinned to there
FITGAUSS_MAX_DILATION = 1.1


def target_sigma(kernel: str, psf, pixel_scale: float) -> np.ndarray:
    """Width (pixels, before the ``1 + 2|step|`` dilation) of Gaussian *kernel* for each PSF (N, n, n)."""
    if kernel == "gauss":
        return gauss_target_sigma(psf)
    if kernel == "azgauss":
        return azgauss_target_sigma(psf)
    if kernel == "fitgauss":
        return fitgauss_target_sigma(psf)
    raise unknown_name("Gaussian kernel", kernel, ("gauss", "azgauss", "fitgauss"))


def _stepk_dk(xp, psf, flux) -> np.ndarray:
    """ngmix's k spacing, stepk / 4 (rad / pixel), of GalSim's InterpolatedImage of each PSF.

    stepk = pi / R with R the box radius enclosing 99.5% of the flux around the pixel at
    index n // 2, in quadrature with the lanczos15 range.
    """
    n = psf.shape[-1]
    i0 = n // 2
    dmax = (n - 1) // 2
    # the box of half-width d about pixel i0 holds the pixels at Chebyshev distance <= d: one
    # matrix product gives every box sum of every PSF
    idx = np.arange(n) - i0
    cheb = np.maximum(np.abs(idx)[:, None], np.abs(idx)[None, :]).ravel()
    inside = (cheb[:, None] <= np.arange(1, dmax + 1)[None, :]).astype(np.float64)     # (n * n, dmax)
    boxes = xp.reshape(psf, (psf.shape[0], -1)) @ xp.asarray(inside, device=device_of(psf), dtype=psf.dtype)
    enclosed = to_numpy(boxes >= 0.995 * flux[:, None])
    first = np.where(enclosed.any(axis=1), enclosed.argmax(axis=1) + 1.5, dmax + 1.5)
    return np.pi / np.hypot(first, 15.0) / 4.0


def _by_spacing(psf, group):
    """Apply ``group(xp, dev, psf_subset, flux_subset, dk, pos)`` to the PSFs sharing each k spacing."""
    xp = namespace(psf)
    dev = device_of(psf)
    N, n, _ = psf.shape
    flux = xp.sum(psf, axis=(1, 2))
    dk = _stepk_dk(xp, psf, flux)
    pos = np.arange(n) - (n - 1) / 2.0
    out = np.empty(N)
    for dkv in np.unique(dk):
        sel = np.nonzero(dk == dkv)[0]
        idx = xp.asarray(sel, device=dev)
        out[sel] = group(xp, dev, xp.take(psf, idx, axis=0), xp.take(flux, idx, axis=0), float(dkv), pos)
    return out


def gauss_target_sigma(psf) -> np.ndarray:
    """ngmix's ``gauss`` target width (pixels) for each PSF image in *psf* (N, n, n).

    Accepts any supported array type; returns a host NumPy array.
    """
    return _by_spacing(psf, _gauss_sigma_group)


def fold_psf(xp, p):
    """The parts of the PSFs *p* (M, n, n) that Re PSF(k) needs, laid out for two matrix products.

    Re PSF(k) = sum p[y, x] (cos kx x cos ky y - sin kx x sin ky y) needs only the part of p
    even in both axes and the part odd in both (:func:`bench.metacal.lattice.fold`). Each is
    returned as (half_y, M * half_x), so the contraction over y is one matrix product for the
    whole batch and the one over x another (a stacked product per PSF is several times slower).
    """
    ye, yo = fold(xp, p, 1)
    ee, _ = fold(xp, ye, 2)
    _, oo = fold(xp, yo, 2)
    return tuple(xp.reshape(xp.permute_dims(a, (1, 0, 2)), (a.shape[1], -1)) for a in (ee, oo))


def take_psfs(xp, folded, idx, M: int):
    """The PSFs *idx* (an index array on the PSFs' device) of the M in :func:`fold_psf`'s output."""
    def one(a):
        a3 = xp.take(xp.reshape(a, (a.shape[0], M, -1)), idx, axis=1)
        return xp.reshape(a3, (a3.shape[0], -1))
    return tuple(one(a) for a in folded)


def re_psf_half_planes(xp, dev, folded, ix, iy, dk, pos):
    """Re PSF(k) times the lanczos15 transform on the lattice (+-ix, iy) dk, ix, iy >= 0.

    folded: :func:`fold_psf` of the PSFs. Returns (values at +ix, values at -ix), each
    (M, len(iy), len(ix)) (views of arrays laid out (len(iy), M, len(ix))).
    """
    kx, ky = ix * dk, iy * dk
    pos_e, pos_o = fold_positions(pos)

    # the lanczos15 factor is separable: it rides on the two matrices
    uy, ux = lanczos_ft(ky)[:, None], lanczos_ft(kx)[None, :]

    def part(P, trig, py, px):
        A = xp.asarray(uy * trig(np.outer(ky, py)), device=dev, dtype=P.dtype) @ P           # (Qy, M * half_x)
        A = xp.reshape(A, (-1, len(px))) @ xp.asarray(trig(np.outer(px, kx)) * ux, device=dev, dtype=P.dtype)
        return xp.reshape(A, (len(ky), -1, len(kx)))                                          # (Qy, M, Qx)

    CC = part(folded[0], np.cos, pos_e, pos_e)
    SS = part(folded[1], np.sin, pos_o, pos_o)
    return xp.permute_dims(CC - SS, (1, 0, 2)), xp.permute_dims(CC + SS, (1, 0, 2))


def _gauss_sigma_group(xp, dev, p, flux, dk, pos):
    thresh = (1e-2 * flux)[:, None, None]
    folded = fold_psf(xp, p)
    M = p.shape[0]
    # coarse pass (every 4th lattice point) bounds each crossing radius from above
    kmax = 3.2
    ix = iy = np.arange(0, int(math.ceil(kmax / dk)) + 1, 4)
    rp, rm = re_psf_half_planes(xp, dev, folded, ix, iy, dk, pos)
    below = to_numpy((rp < thresh) | (rm < thresh))
    r2 = (ix[None, :] ** 2 + iy[:, None] ** 2) * dk * dk
    rc = np.sqrt(np.where(below, r2[None], np.inf).min(axis=(1, 2)))
    rc = np.where(np.isfinite(rc), rc, kmax)
    # the fine pass covers each PSF's own bound, in groups of similar bounds (one slow PSF
    # would otherwise widen the lattice of all)
    size = 4 * np.ceil((np.ceil(rc / dk) + 3) / 4).astype(int)
    out = np.empty(M)
    for Mf in np.unique(size):
        sel = np.nonzero(size == Mf)[0]
        idx = xp.asarray(sel, device=dev)
        sub = folded if len(sel) == M else take_psfs(xp, folded, idx, M)
        ii = np.arange(0, Mf + 1)
        rp, rm = re_psf_half_planes(xp, dev, sub, ii, ii, dk, pos)
        # ngmix labels lattice point (ix, iy) with ((ix - 1/2)^2 + (iy - 1/2)^2) dk^2 (its meshgrid is
        # offset by half a cell on odd-sized k images); Re PSF is even, so (-ix, -iy) has the same value
        X, Y = ii[None, :], ii[:, None]
        lab_p = np.minimum((X - 0.5) ** 2 + (Y - 0.5) ** 2, (X + 0.5) ** 2 + (Y + 0.5) ** 2) * dk * dk
        lab_m = np.minimum((X + 0.5) ** 2 + (Y - 0.5) ** 2, (X - 0.5) ** 2 + (Y + 0.5) ** 2) * dk * dk
        t = xp.take(thresh, idx, axis=0) if len(sel) < M else thresh
        out[sel] = np.minimum(np.where(to_numpy(rp < t), lab_p[None], np.inf).min(axis=(1, 2)),
                              np.where(to_numpy(rm < t), lab_m[None], np.inf).min(axis=(1, 2)))
    return np.sqrt(-2.0 * math.log(3e-3) / out)



# --------------------------------------------------------------------------- azgauss
def azgauss_target_sigma(psf) -> np.ndarray:
    """ngmix's ``azgauss`` target width (pixels) for each PSF image in *psf* (N, n, n)."""
    return _by_spacing(psf, _azgauss_sigma_group)


def _full_plane(xp, rp, rm):
    """Re PSF on the whole lattice (a, b) in [-M, M]^2, from the half planes of :func:`re_psf_half_planes`.

    rp holds (a, b) = (ix, iy) and rm (-ix, iy) for ix, iy >= 0; Re PSF is even, so
    (a, b) with b < 0 is the value at (-a, -b).
    """
    top = xp.concat([xp.flip(rm[:, :, 1:], axis=2), rp], axis=2)          # b >= 0, a = -M..M
    bottom = xp.flip(xp.flip(top[:, 1:], axis=1), axis=2)                  # b = -M..-1
    return xp.concat([bottom, top], axis=1)


def _azgauss_sigma_group(xp, dev, p, flux, dk, pos):
    folded = fold_psf(xp, p)
    thresh = AZGAUSS_SMALL_KVAL * to_numpy(flux)
    # the annular mean crosses no earlier than some pixel does: a cheap pixel-wise coarse
    # pass gives the starting radius, and the lattice grows until every profile has crossed
    kmax = math.pi
    ix = np.arange(0, int(math.ceil(kmax / dk)) + 1, 4)
    rp, rm = re_psf_half_planes(xp, dev, folded, ix, ix, dk, pos)
    t = xp.asarray(thresh[:, None, None], device=dev, dtype=rp.dtype)
    below = to_numpy((rp < t) | (rm < t))
    r2 = (ix[None, :] ** 2 + ix[:, None] ** 2) * dk * dk
    rc = np.sqrt(np.where(below, r2[None], np.inf).min(axis=(1, 2)))
    M = int(math.ceil(1.5 * float(np.nanmin(np.where(np.isfinite(rc), rc, kmax))) / dk)) + 4
    out = np.full(p.shape[0], np.nan)
    todo = np.arange(p.shape[0])
    while len(todo):
        idx = xp.asarray(todo, device=dev)
        ii = np.arange(0, M + 1)
        rp, rm = re_psf_half_planes(xp, dev, take_psfs(xp, folded, idx, p.shape[0]), ii, ii, dk, pos)
        full = to_numpy(_full_plane(xp, rp, rm)).reshape(len(todo), -1)
        # ngmix labels lattice point (a, b) with (a - 1/2, b - 1/2) dk: its meshgrid is offset by
        # half a cell on GalSim's odd-sized k images
        a = np.arange(-M, M + 1) - 0.5
        ring = np.rint(np.hypot(a[None, :], a[:, None])).astype(int).ravel()
        nring = M                       # annuli 0..M-1 lie wholly inside the lattice
        onehot = (ring[:, None] == np.arange(nring)[None, :]).astype(np.float64)
        count = onehot.sum(axis=0)
        # empty annuli (ring 0 under the half-cell labels) can never be a crossing, as in ngmix
        prof = np.where(count > 0, (full @ onehot) / np.maximum(count, 1), np.inf)
        done = []
        for j, obj in enumerate(todo):
            kc = _interpolated_crossing(prof[j], thresh[obj], dk)
            if kc is not None:
                out[obj] = math.sqrt(-2.0 * math.log(AZGAUSS_SMALLER_KVAL)) / kc if kc > 0 else np.inf
                done.append(j)
        todo = np.delete(todo, done)
        if M * dk >= kmax:
            break                       # no crossing below the Nyquist frequency: sigma stays NaN
        M = min(2 * M, int(math.ceil(kmax / dk)))
    return out


def _interpolated_crossing(prof, thresh, dk):
    """k where *prof* first drops below *thresh*, interpolated in log between annuli (None: never)."""
    below = np.nonzero(prof < thresh)[0]
    if not len(below):
        return None
    i = int(below[0])
    if i == 0:
        return 0.0
    p0, p1 = prof[i - 1], prof[i]
    if p0 > 0 and p1 > 0:
        frac = (math.log(thresh) - math.log(p0)) / (math.log(p1) - math.log(p0))
    else:
        frac = (thresh - p0) / (p1 - p0)
    return (i - 1 + frac) * dk


# --------------------------------------------------------------------------- fitgauss
def fitgauss_target_sigma(psf, *, max_iter: int = 100, tol: float = 1e-7, half_width: int = 16) -> np.ndarray:
    """ngmix's ``fitgauss`` target width (pixels) for each PSF image in *psf* (N, n, n).

    Adaptive moments (the fixed point of Gaussian-weighted moments whose weight has twice
    the measured covariance, with the centre free), then ngmix's round-up: with ``e`` the
    fitted ellipticity, T is multiplied by ``min(1 + 2 (sqrt(1 + |e|) - 1), 1.1)`` and
    ``sigma = sqrt(T / 2)``. Iterates in float64 on the host until T and e change by less
    than *tol* (ngmix stops at 1e-5 in e and 1e-3 in T, from a random start; the fixed point
    is the same); a PSF that does not converge in *max_iter* steps gets NaN. The fit runs on
    the central ``2 half_width`` pixels; PSFs whose weight reaches past 5 sigma of it are fitted
    again on the whole stamp.
    """
    p = to_numpy(psf).astype(np.float64)
    n = p.shape[-1]
    h = min(half_width, n // 2)
    if h < n // 2:
        lo = n // 2 - h
        crop = p[:, lo:n - lo, lo:n - lo]
        sigma, wmax = _admom_sigma(crop, max_iter, tol)
        wide = ~(5 * np.sqrt(wmax) < (crop.shape[-1] - 1) / 2)
        if wide.any():
            sigma[wide] = _admom_sigma(p[wide], max_iter, tol)[0]
        return sigma
    return _admom_sigma(p, max_iter, tol)[0]


def _admom_sigma(p, max_iter, tol):
    """(sigma of the rounded target, largest variance of the adaptive weight) per stamp of *p*."""
    N, n, _ = p.shape
    pos = np.arange(n) - (n - 1) / 2.0
    Y, X = np.meshgrid(pos, pos, indexing="ij")
    flat = p.reshape(N, -1)
    x, y = X.ravel()[None], Y.ravel()[None]
    cxx, cyy, cxy = np.full(N, 4.0), np.full(N, 4.0), np.zeros(N)        # a round start, 2 px
    x0, y0 = np.zeros(N), np.zeros(N)
    T_old, e1_old, e2_old = np.full(N, np.nan), np.full(N, np.nan), np.full(N, np.nan)
    done = np.zeros(N, bool)
    for _ in range(max_iter):
        act = np.nonzero(~done)[0]
        det = cxx[act] * cyy[act] - cxy[act] ** 2
        dx, dy = x - x0[act, None], y - y0[act, None]
        w = np.exp(-0.5 * (cyy[act, None] * dx * dx + cxx[act, None] * dy * dy
                           - 2 * cxy[act, None] * dx * dy) / det[:, None]) * flat[act]
        s = w.sum(axis=1)
        # one weight per step for the centre and the moments: the fixed point is ngmix's
        x0[act], y0[act] = (w * x).sum(axis=1) / s, (w * y).sum(axis=1) / s
        dx, dy = x - x0[act, None], y - y0[act, None]
        mxx, myy, mxy = (w * dx * dx).sum(1) / s, (w * dy * dy).sum(1) / s, (w * dx * dy).sum(1) / s
        T = mxx + myy
        e1, e2 = (mxx - myy) / T, 2 * mxy / T
        conv = ((np.abs(e1 - e1_old[act]) < tol) & (np.abs(e2 - e2_old[act]) < tol)
                & (np.abs(T / T_old[act] - 1) < tol))
        done[act[conv]] = True
        T_old[act], e1_old[act], e2_old[act] = T, e1, e2
        # deweight: the Gaussian whose product with the weight has the measured covariance
        upd = ~conv
        a, dm = act[upd], (mxx * myy - mxy * mxy)[upd]
        nxx = myy[upd] / dm - cyy[a] / det[upd]
        nyy = mxx[upd] / dm - cxx[a] / det[upd]
        nxy = -mxy[upd] / dm + cxy[a] / det[upd]
        dn = nxx * nyy - nxy * nxy
        cxx[a], cyy[a], cxy[a] = nyy / dn, nxx / dn, -nxy / dn
        if done.all():
            break
    Tw = cxx + cyy
    e = np.hypot(cxx - cyy, 2 * cxy) / Tw
    dilation = np.minimum(1.0 + 2.0 * (np.sqrt(1.0 + e) - 1.0), FITGAUSS_MAX_DILATION)
    sigma = np.sqrt(Tw * dilation / 2.0)
    wmax = 0.5 * (Tw + np.hypot(cxx - cyy, 2 * cxy))
    return np.where(done & np.isfinite(sigma), sigma, np.nan), np.where(np.isfinite(wmax), wmax, np.inf)
