"""Adaptive moments of a batch of stamps, as ngmix's ``AdmomFitter`` measures them.

The weight is an elliptical Gaussian that is iterated until it matches the object: at each
step the weight is moved to the weighted centroid, the weighted second moments are measured,
and the weight's covariance is replaced by the one whose product with the weight would have
those moments ("deweighting"). For a Gaussian object the weight converges to the object itself,
so e1, e2 and T are the object's own (unweighted) ellipticity and size.

The arithmetic follows ngmix (``ngmix/admom/admom_nb.py``) step by step, with every stamp of the
batch advanced at once and a stamp left out of the iteration once it has converged or failed.
The only deliberate difference is the start: ngmix draws its starting weight at random (centre
within half a pixel, shear within 0.3, T within 10% of the guess); here it is round, of the
guessed T, on the given centre, so results are reproducible. Both stop near the same fixed
point, within the convergence tolerance: on ngmix's reference stamps e agrees to a median
1e-6 to 6e-6 (max 5e-5), as close as two ngmix runs on one image agree with each other.
"""

from __future__ import annotations

import numpy as np

from ..errors import BenchValueError

# flag bits, with ngmix's values and meanings (ngmix/flags.py)
CEN_SHIFT = 2 ** 1         # the centroid moved further than shiftmax from the start
NONPOS_FLUX = 2 ** 2       # the weighted flux is <= 0
NONPOS_SIZE = 2 ** 3       # the weighted T is <= 0
LOW_DET = 2 ** 4           # a covariance (weight, measured, or their difference) is not positive definite
MAXITER = 2 ** 5           # no convergence in maxiter iterations
GMIX_RANGE_ERROR = 2 ** 7  # the updated weight has a positive determinant but T <= 0

FLAG_NAMES = {
    CEN_SHIFT: "center shifted too far",
    NONPOS_FLUX: "flux <= 0",
    NONPOS_SIZE: "T <= 0",
    LOW_DET: "determinant near zero",
    MAXITER: "max iterations reached",
    GMIX_RANGE_ERROR: "weight T <= 0 (ngmix's GMixRangeError)",
}

# ngmix's floor on determinants and T (gmix_nb.GMIX_LOW_DETVAL)
LOW_DETVAL = 1.0e-200
# ngmix evaluates the weight to chi^2 = 25 and rolls it off smoothly to zero from chi^2 = 20
MAX_CHI2 = 25.0
APOD_CHI2 = 20.0

DEFAULT_MAXITER = 200
DEFAULT_SHIFTMAX = 5.0
DEFAULT_ETOL = 1.0e-5
DEFAULT_TTOL = 1.0e-3

# objects per block: bounds the (block, n, n) temporaries to a few tens of MB
_BLOCK = 4096
# objects evaluated together, sorted by size: each chunk is cropped to its largest weight
_CHUNK = 64


def adaptive_moments(images, weight=None, *, pixel_scale: float, row=None, col=None, guess=0.5,
          maxiter: int = DEFAULT_MAXITER, shiftmax: float = DEFAULT_SHIFTMAX,
          etol: float = DEFAULT_ETOL, Ttol: float = DEFAULT_TTOL) -> dict:
    """Adaptive moments (e1, e2, T) of each stamp, as ngmix's ``AdmomFitter().go(obs, guess)``.

    Coordinates are ngmix's for a ``DiagonalJacobian`` of scale *pixel_scale* centred on the
    object: u = (col' - col) * pixel_scale along columns, v = (row' - row) * pixel_scale along
    rows (arcsec), for pixel (row', col').

    Each iteration (per object, all objects at once):

    1. the weight W (a Gaussian of covariance [[Wvv, Wuv], [Wuv, Wuu]]) is evaluated at its
       current centre and the centre is moved to the W-weighted centroid of the image;
    2. with W at the new centre, the weighted moments M = sum(W I d d^T) / sum(W I) are measured
       (d = pixel position minus centre), e1 = (Muu - Mvv) / T, e2 = 2 Muv / T, T = Muu + Mvv;
    3. if e1 and e2 changed by less than *etol* and T by less than *Ttol* (relative) since the
       previous iteration, the fit has converged and the result is W's own ellipticity and size:
       e1 = (Wuu - Wvv) / (Wuu + Wvv), e2 = 2 Wuv / (Wuu + Wvv), T = Wuu + Wvv;
    4. otherwise W is replaced by the deweighted moments, inv(inv(M) - inv(W)): the Gaussian whose
       product with W has covariance M. For a Gaussian object this is a fixed point at W = the
       object's covariance (where M = W / 2).

    The weight is ngmix's: exp(-chi^2 / 2), rolled off smoothly (a quintic smoothstep) to zero
    between chi^2 = 20 and 25 and zero beyond.

    Parameters
    ----------
    images : array_like, shape (N, n, n)
        Stamps (host arrays; any float dtype, computed in float64).
    weight : array_like, shape (N, n, n), optional
        Per-pixel inverse variance. As in ngmix, it does not weight the moments: pixels with
        weight 0 are left out, the others count equally. Must be finite and >= 0.
        [default: 1 everywhere]
    pixel_scale : float
        Arcsec per pixel (> 0).
    row, col : array_like, shape (N,), optional
        Each object's centre in pixels (0-based), where the fit starts and the Jacobian is
        centred. [default: the stamp centre (n - 1) / 2]
    guess : float or array_like of shape (N,), optional
        Starting T of the weight, arcsec^2 (> 0); the starting weight is round. [default: 0.5]
    maxiter : int, optional
        Iterations before giving up with flag ``MAXITER`` (>= 1). As in ngmix, an object that
        stops (converged or not) at iteration *maxiter* is flagged. [default: 200]
    shiftmax : float, optional
        Largest allowed move of the centroid from the start, in each of u and v, arcsec (> 0).
        [default: 5.0]
    etol : float, optional
        Absolute tolerance on the change of e1 and of e2 between iterations (> 0).
        [default: 1e-5]
    Ttol : float, optional
        Relative tolerance on the change of T between iterations (> 0). [default: 1e-3]

    Returns
    -------
    dict of numpy.ndarray, each shape (N,)
        ``e1``, ``e2``: ellipticity of the converged weight; ``T``: its Wuu + Wvv, arcsec^2;
        ``row``, ``col``: its centre, pixels (as in ngmix, convergence is judged on e and T
        only, so the centre may still be moving by ~1e-3 pixel); ``n_iter``: iterations run (0 for
        ``GMIX_RANGE_ERROR``, where ngmix's kernel stops with an exception before counting);
        ``flags`` (int32): 0 on success, else one of ngmix's bits

        ============  =====  ==========================================================
        name          value  meaning
        ============  =====  ==========================================================
        CEN_SHIFT         2  the centroid moved more than *shiftmax* from the start
        NONPOS_FLUX       4  the weighted flux sum(W I) <= 0 (e.g. every pixel masked)
        NONPOS_SIZE       8  the measured T <= 0
        LOW_DET          16  the weight's, the measured or the deweighted covariance has
                             determinant <= 1e-200
        MAXITER          32  stopped at iteration *maxiter*
        GMIX_RANGE_ERROR 128 the deweighted covariance is negative definite
        ============  =====  ==========================================================

        A flagged object gets NaN in e1, e2, T (as ngmix's result does), and its row, col are
        where the weight was when it stopped. Failures never raise.

    Raises
    ------
    BenchValueError
        Wrong shapes, non-finite pixels (where the weight is > 0), weights non-finite or
        negative, or options out of range.

    References
    ----------
    E. Sheldon, ngmix: ``ngmix.admom.AdmomFitter`` (https://github.com/esheldon/ngmix).
    G. Bernstein & M. Jarvis 2002, AJ 123, 583 (adaptive moments).
    C. Hirata & U. Seljak 2003, MNRAS 343, 459 (adaptive moments and their PSF correction).
    """
    img, wmap, r0, c0, Tg = _check(images, weight, pixel_scale, row, col, guess,
                                   maxiter, shiftmax, etol, Ttol)
    N = img.shape[0]
    out = {k: np.full(N, np.nan) for k in ("e1", "e2", "T", "row", "col")}
    out["flags"] = np.zeros(N, np.int32)
    out["n_iter"] = np.zeros(N, np.int32)
    for a in range(0, N, _BLOCK):
        b = min(a + _BLOCK, N)
        # ngmix leaves zero-weight pixels out of the sums; the others are not weighted
        im = img[a:b] if wmap is None else np.where(wmap[a:b] > 0, img[a:b], 0.0)
        res = _fit(im, r0[a:b], c0[a:b], Tg[a:b], float(pixel_scale), int(maxiter),
                   float(shiftmax), float(etol), float(Ttol))
        for k, v in res.items():
            out[k][a:b] = v
    return out


def _fit(im, r0, c0, Tg, scale, maxiter, shiftmax, etol, Ttol):
    """Iterate one block of objects; arrays (M, n, n) and (M,). See :func:`adaptive_moments`."""
    M, n = im.shape[0], im.shape[-1]
    pix = np.arange(n, dtype=np.float64)
    v = (pix[None, :] - r0[:, None]) * scale          # (M, n): v of each row
    u = (pix[None, :] - c0[:, None]) * scale          # (M, n): u of each column
    # the weight: centre (vc, uc) relative to the object's row, col; covariance W
    vc, uc = np.zeros(M), np.zeros(M)
    Wvv, Wuu, Wuv = Tg / 2.0, Tg / 2.0, np.zeros(M)
    e1o, e2o, To = np.full(M, np.nan), np.full(M, np.nan), np.full(M, np.nan)
    flags = np.zeros(M, np.int32)
    n_iter = np.zeros(M, np.int32)
    e1r, e2r, Tr = np.full(M, np.nan), np.full(M, np.nan), np.full(M, np.nan)
    act = np.arange(M)
    for it in range(1, maxiter + 1):
        if act.size == 0:
            break
        stop = np.zeros(act.size, bool)

        def end(mask, flag, count=it):
            # objects in mask (over act, still running) stop here with flag
            m = mask & ~stop
            flags[act[m]] = flag
            n_iter[act[m]] = count
            stop[m] = True

        wvv, wuu, wuv = Wvv[act], Wuu[act], Wuv[act]
        det = wvv * wuu - wuv * wuv
        end(det < LOW_DETVAL, LOW_DET)
        # ngmix's normalisation raises here; its kernel then never records the iteration count
        end(wuu + wvv <= LOW_DETVAL, GMIX_RANGE_ERROR, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            idet = 1.0 / det
            # chi^2 coefficients: inv(W) = [[Wuu, -Wuv], [-Wuv, Wvv]] / det in (v, u)
            cvv, cuu, cuv = wuu * idet, wvv * idet, -2.0 * wuv * idet
        live = ~stop
        # a box around each weight holds every pixel with chi^2 < MAX_CHI2: half-widths, pixels
        hv = np.sqrt(MAX_CHI2 * np.abs(wvv)) / scale
        hu = np.sqrt(MAX_CHI2 * np.abs(wuu)) / scale

        # 1. centroid, with the weight at its current centre
        S, Sv, Su = _sums(im, v, u, act, live, vc[act], uc[act], cvv, cuu, cuv, hv, hu, scale, False)
        end(~(S > 0), NONPOS_FLUX)
        with np.errstate(divide="ignore", invalid="ignore"):
            nvc, nuc = Sv / S, Su / S
        live = ~stop
        vc[act[live]], uc[act[live]] = nvc[live], nuc[live]
        # the start is the Jacobian centre (v = u = 0)
        end((np.abs(nvc) > shiftmax) | (np.abs(nuc) > shiftmax), CEN_SHIFT)

        # 2. moments, with the weight at the new centre
        live = ~stop
        S, Svv, Suu, Suv = _sums(im, v, u, act, live, vc[act], uc[act], cvv, cuu, cuv, hv, hu, scale, True)
        end(~(S > 0), NONPOS_FLUX)
        with np.errstate(divide="ignore", invalid="ignore"):
            iS = 1.0 / S
            Mvv, Muu, Muv = Svv * iS, Suu * iS, Suv * iS
            # ngmix forms T and M1 = Muu - Mvv from its sums, then Irr, Icc from them
            T = Muu + Mvv
            M1 = Muu - Mvv
            Irr, Icc, Irc = 0.5 * (T - M1), 0.5 * (T + M1), Muv
            end(~(T > 0), NONPOS_SIZE)
            e1, e2 = (Icc - Irr) / T, 2.0 * Irc / T

            # 3. convergence: the measured moments stopped moving; the answer is the weight
            conv = ((np.abs(e1 - e1o[act]) < etol) & (np.abs(e2 - e2o[act]) < etol)
                    & (np.abs(T / To[act] - 1.0) < Ttol)) & ~stop
            Tw = wuu + wvv
            c = act[conv]
            e1r[c], e2r[c], Tr[c] = (wuu - wvv)[conv] / Tw[conv], 2.0 * wuv[conv] / Tw[conv], Tw[conv]
            end(conv, 0)

            # 4. deweight: inv(inv(M) - inv(W)), each determinant checked as ngmix does
            detm = Irr * Icc - Irc * Irc
            end(~(detm > LOW_DETVAL), LOW_DET)
            end(~(det > LOW_DETVAL), LOW_DET)
            idm = 1.0 / detm
            # inverse covariances in ngmix's (row, col) = (v, u) order
            Nrr = Icc * idm - wuu * idet
            Ncc = Irr * idm - wvv * idet
            Nrc = -Irc * idm + wuv * idet
            detn = Nrr * Ncc - Nrc * Nrc
            end(~(detn > LOW_DETVAL), LOW_DET)
            idn = 1.0 / detn
        live = ~stop
        a = act[live]
        Wvv[a], Wuu[a], Wuv[a] = (Ncc * idn)[live], (Nrr * idn)[live], (-Nrc * idn)[live]
        e1o[a], e2o[a], To[a] = e1[live], e2[live], T[live]
        act = a
    # ngmix flags whatever stopped at (or ran through) the last iteration
    n_iter[act] = maxiter
    flags[n_iter == maxiter] = MAXITER
    bad = flags != 0
    e1r[bad] = e2r[bad] = Tr[bad] = np.nan
    return {"e1": e1r, "e2": e2r, "T": Tr, "row": r0 + vc / scale, "col": c0 + uc / scale,
            "flags": flags, "n_iter": n_iter}


def _sums(im, v, u, act, live, vc, uc, cvv, cuu, cuv, hv, hu, scale, second):
    """Weighted sums over the pixels of objects ``act[live]``, weight centred on (vc, uc).

    Returns S = sum(W I) and either (sum(W I v), sum(W I u)) or, with *second*, the second
    moments about the centre (sum(W I dv^2), sum(W I du^2), sum(W I dv du)); 0 for objects not
    live. Objects go in chunks of similar size, each cropped to the box outside which the
    weight is exactly zero, which saves most of the work on small objects.
    """
    K, n = act.size, im.shape[-1]
    out = [np.zeros(K) for _ in range(4 if second else 3)]
    idx = np.nonzero(live)[0]
    idx = idx[np.argsort(np.maximum(hv[idx], hu[idx]), kind="stable")]
    for a in range(0, idx.size, _CHUNK):
        k = idx[a:a + _CHUNK]
        o = act[k]
        # the weight's centre in pixels (v[:, 0] is the v of row 0)
        vpix = (vc[k] - v[o, 0]) / scale
        upix = (uc[k] - u[o, 0]) / scale
        r0 = max(int(np.floor((vpix - hv[k]).min())), 0)
        r1 = min(int(np.ceil((vpix + hv[k]).max())) + 1, n)
        c0 = max(int(np.floor((upix - hu[k]).min())), 0)
        c1 = min(int(np.ceil((upix + hu[k]).max())) + 1, n)
        if r1 <= r0 or c1 <= c0:
            continue
        dv = v[o, r0:r1] - vc[k, None]
        du = u[o, c0:c1] - uc[k, None]
        chi2 = (cvv[k, None] * dv * dv)[:, :, None] + (cuu[k, None] * du * du)[:, None, :]
        chi2 += (cuv[k, None] * dv)[:, :, None] * du[:, None, :]
        # ngmix's roll-off: 1 below APOD_CHI2, a quintic smoothstep to 0 at MAX_CHI2, 0 beyond
        s = chi2 * (-1.0 / (MAX_CHI2 - APOD_CHI2))
        s += MAX_CHI2 / (MAX_CHI2 - APOD_CHI2)
        np.clip(s, 0.0, 1.0, out=s)
        win = s * 6.0
        win -= 15.0
        win *= s
        win += 10.0
        win *= s
        win *= s
        win *= s
        chi2 *= -0.5
        np.exp(chi2, out=chi2)
        chi2 *= win
        chi2 *= im[o, r0:r1, c0:c1]
        rows, cols = chi2.sum(axis=2), chi2.sum(axis=1)
        out[0][k] = rows.sum(axis=1)
        if second:
            out[1][k] = (rows * dv * dv).sum(axis=1)
            out[2][k] = (cols * du * du).sum(axis=1)
            out[3][k] = (np.matmul(chi2, du[:, :, None])[:, :, 0] * dv).sum(axis=1)
        else:
            out[1][k] = (rows * v[o, r0:r1]).sum(axis=1)
            out[2][k] = (cols * u[o, c0:c1]).sum(axis=1)
    return out


def _check(images, weight, pixel_scale, row, col, guess, maxiter, shiftmax, etol, Ttol):
    """Validate the inputs of :func:`adaptive_moments`; returns float64 arrays (img, wmap or None, row, col, guess)."""
    img = np.asarray(images)
    if img.ndim != 3 or img.shape[1] != img.shape[2] or img.shape[0] == 0 or img.shape[1] < 2:
        raise BenchValueError(f"images must have shape (N, n, n) with N >= 1 and n >= 2; got {img.shape}")
    if not np.issubdtype(img.dtype, np.number) or np.iscomplexobj(img):
        raise BenchValueError(f"images must be real numbers; got dtype {img.dtype}")
    img = img.astype(np.float64, copy=False)
    N, n = img.shape[0], img.shape[1]
    wmap = None
    if weight is not None:
        wmap = np.asarray(weight, dtype=np.float64)
        if wmap.shape != img.shape:
            raise BenchValueError(f"weight must have the images' shape {img.shape}; got {wmap.shape}")
        if not np.isfinite(wmap).all() or (wmap < 0).any():
            raise BenchValueError("weight must be finite and >= 0 everywhere (0 masks a pixel); "
                                  f"got min {float(np.nanmin(wmap))!r}, non-finite {int((~np.isfinite(wmap)).sum())} pixels")
    used = np.isfinite(img) if wmap is None else (np.isfinite(img) | (wmap == 0))
    if not used.all():
        bad = np.argwhere(~used)[0]
        raise BenchValueError(f"images must be finite where the weight is > 0; got {float(img[tuple(bad)])!r} "
                              f"at (object, row, col) = {tuple(int(i) for i in bad)}")
    try:
        scale = float(pixel_scale)
    except (TypeError, ValueError):
        raise BenchValueError(f"pixel_scale must be a positive number (arcsec); got {pixel_scale!r}") from None
    if not (np.isfinite(scale) and scale > 0):
        raise BenchValueError(f"pixel_scale must be a positive number (arcsec); got {pixel_scale!r}")
    c = (n - 1) / 2.0
    cen = []
    for name, x in (("row", row), ("col", col)):
        a = np.full(N, c) if x is None else np.asarray(x, dtype=np.float64)
        if a.ndim == 0:
            a = np.full(N, float(a))
        if a.shape != (N,):
            raise BenchValueError(f"{name} must be a scalar or have shape ({N},); got {a.shape}")
        if not np.isfinite(a).all():
            raise BenchValueError(f"{name} must be finite (pixels, 0-based); got {float(a[~np.isfinite(a)][0])!r}")
        cen.append(a)
    Tg = np.asarray(guess, dtype=np.float64) if np.ndim(guess) else np.full(N, guess, dtype=np.float64)
    if Tg.shape != (N,):
        raise BenchValueError(f"guess must be a scalar or have shape ({N},); got {Tg.shape}")
    if not (np.isfinite(Tg).all() and (Tg > 0).all()):
        raise BenchValueError(f"guess (starting T, arcsec^2) must be finite and > 0; got {float(Tg[~(np.isfinite(Tg) & (Tg > 0))][0])!r}")
    if isinstance(maxiter, bool) or not isinstance(maxiter, (int, np.integer)) or maxiter < 1:
        raise BenchValueError(f"maxiter must be an integer >= 1; got {maxiter!r}")
    for name, x in (("shiftmax", shiftmax), ("etol", etol), ("Ttol", Ttol)):
        if not (isinstance(x, (int, float, np.number)) and np.isfinite(x) and x > 0):
            raise BenchValueError(f"{name} must be a finite number > 0; got {x!r}")
    return img, wmap, cen[0], cen[1], Tg


__all__ = ["adaptive_moments", "CEN_SHIFT", "NONPOS_FLUX", "NONPOS_SIZE", "LOW_DET", "MAXITER", "GMIX_RANGE_ERROR",
           "FLAG_NAMES"]
