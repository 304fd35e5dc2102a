"""Metacal's five images as pixels, and Gaussian-weighted moments measured on pixels.

The engine (:mod:`bench.metacal.engine`) never draws a metacal image: it measures the
moments in Fourier space. A method that sits *after* the shear ("shear, then deconvolve",
:mod:`bench.pipeline`) needs the images themselves, so this module draws them, with the
same operator::

    O_t(k) = I(S_t k) / P(S_t k) * T(k)

evaluated on the grid k = 2 pi (p, q) / L with L = n rounded up to odd (no Nyquist term,
and one guard row and column), then transformed back to the n x n pixels. I and P are
DTFTs of the stamps about the true centre ``(n - 1) / 2``: separable matrix products for
the noshear, 1p and 1m types (S diagonal on the pixel axes), a dense product for 2p and
2m. The image is therefore the L-periodic, band-limited metacal image; what wraps around
is the outermost pixel's worth of noise, where the moment weight is ~1e-40.

With the noise correction on, the 90-degree-rotated noise field is drawn through the same
operator with the object's PSF, rotated back (``rot90``, k=3) and added: ngmix's recipe,
in pixels. The target PSF T is drawn on the stamp the same way, centred like the PSF.

:func:`pixel_moments` measures (M0, Mxx, Myy, Mxy) with the Gaussian weight at each
object's (row, col), as ngmix's ``GaussMom`` does; on these images it reproduces the
engine's moments (``tests/test_placement.py``).
"""

from __future__ import annotations

import numpy as np

from ..arrays import device_of, engine_array, namespace, to_numpy
from ..fourier import lanczos_ft, pixel_ft
from .config import FLAG_BAD_MOMENTS, FLAG_PSF_VANISHES, TYPES, MetacalConfig, shear_matrix, shears
from .kernels import target_sigma
from .moments import pixel_moments  # noqa: F401  (re-exported: its home before the moments module)
from .validate import check_arrays, check_centres, flag_inputs, noise_fields


def grid_size(n: int) -> int:
    """The period L of the drawn images: n, or n + 1 for even n (odd L has no Nyquist term)."""
    return n | 1


def _grid(n: int):
    """Positions X (n,), kx >= 0 (P,), ky (Q,) and the half-plane weights (P,)."""
    L = grid_size(n)
    X = np.arange(n) - (n - 1) / 2.0
    h = (L - 1) // 2
    kx = 2 * np.pi * np.arange(0, h + 1) / L
    ky = 2 * np.pi * np.arange(-h, h + 1) / L
    w = np.where(np.arange(h + 1) > 0, 2.0, 1.0)
    return L, X, kx, ky, w


def _mm(xp, A, B):
    """(M, r, s) @ (s, t) as one 2-d product (NumPy loops over stacked small products)."""
    M, r, s_ = A.shape
    return xp.reshape(xp.reshape(A, (M * r, s_)) @ B, (M, r, B.shape[1]))


def _lm(xp, C, A):
    """(t, r) @ (M, r, s) -> (M, t, s), as one 2-d product."""
    M, r, s_ = A.shape
    At = xp.reshape(xp.permute_dims(A, (0, 2, 1)), (M * s_, r))
    return xp.permute_dims(xp.reshape(At @ xp.permute_dims(C, (1, 0)), (M, s_, C.shape[0])), (0, 2, 1))


def _dtft(xp, f, X, qx, qy, dev, ftype):
    """DTFT (Re, Im), each (M, Q, P), of real stamps f (M, n, n) at q = (qx, qy).

    qx, qy are (Q, P); when qx depends on the column only and qy on the row only (a
    diagonal shear) the transform is two small matrix products, otherwise a dense one
    over half the pixels: positions are symmetric about the centre, so cos needs only
    the part of f even under a half turn and sin the odd part.
    """
    M, n = f.shape[0], f.shape[-1]

    def arr(a):
        return xp.asarray(np.ascontiguousarray(a), device=dev, dtype=ftype)

    if np.allclose(qx, qx[:1]) and np.allclose(qy, qy[:, :1]):
        ax, by = qx[0], qy[:, 0]
        cx, sx = arr(np.cos(np.outer(X, ax))), arr(np.sin(np.outer(X, ax)))        # (n, P)
        cy, sy = arr(np.cos(np.outer(by, X))), arr(np.sin(np.outer(by, X)))        # (Q, n)
        ar, ai = _mm(xp, f, cx), -_mm(xp, f, sx)                                     # (M, n, P)
        return _lm(xp, cy, ar) + _lm(xp, sy, ai), _lm(xp, cy, ai) - _lm(xp, sy, ar)
    Y2, X2 = np.meshgrid(X, X, indexing="ij")
    h = n * n // 2
    flat = xp.reshape(f, (M, n * n))
    turned = xp.flip(flat, axis=1)                       # the half turn, flattened
    even, odd = flat[:, :h] + turned[:, :h], flat[:, :h] - turned[:, :h]
    xs, ys = X2.ravel()[:h], Y2.ravel()[:h]
    if n % 2:                                            # the centre pixel is its own image
        even = xp.concat([even, flat[:, h:h + 1]], axis=1)
        xs, ys = np.append(xs, 0.0), np.append(ys, 0.0)
    Q, P = qx.shape
    phase_e = np.outer(xs, qx.ravel()) + np.outer(ys, qy.ravel())
    phase_o = phase_e[:h]
    return (xp.reshape(even @ arr(np.cos(phase_e)), (M, Q, P)),
            xp.reshape(-(odd @ arr(np.sin(phase_o))), (M, Q, P)))


def _inverse(xp, Or, Oi, X, kx, ky, w, L, dev, ftype):
    """The n x n pixels of the real image whose half-plane transform is (Or, Oi) (M, Q, P)."""
    def arr(a):
        return xp.asarray(np.ascontiguousarray(a), device=dev, dtype=ftype)

    cx, sx = arr(w[:, None] * np.cos(np.outer(kx, X))), arr(w[:, None] * np.sin(np.outer(kx, X)))  # (P, n)
    br, bi = _mm(xp, Or, cx) - _mm(xp, Oi, sx), _mm(xp, Or, sx) + _mm(xp, Oi, cx)    # (M, Q, n)
    cy, sy = arr(np.cos(np.outer(X, ky))), arr(np.sin(np.outer(X, ky)))               # (n, Q)
    return (_lm(xp, cy, br) - _lm(xp, sy, bi)) / (L * L)


def _target(xp, psf, cfg: MetacalConfig, scale: float, X, kx, ky, dev, ftype):
    """T(k) (Re, Im) on the grid for each PSF, and which objects' kernel width was not found."""
    D = 1.0 + 2.0 * abs(cfg.step)
    KX, KY = np.meshgrid(kx, ky)
    if cfg.kernel == "dilate":
        Tr, Ti = _dtft(xp, psf, X, D * KX, D * KY, dev, ftype)
        fac = (lanczos_ft(D * KX) * lanczos_ft(D * KY) * pixel_ft(KX) * pixel_ft(KY)
               / (pixel_ft(D * KX) * pixel_ft(D * KY)))
        fac = xp.asarray(fac, device=dev, dtype=ftype)
        return Tr * fac, Ti * fac, np.zeros(psf.shape[0], bool)
    sig = target_sigma(cfg.kernel, xp.astype(psf, xp.float64), scale)
    bad = ~np.isfinite(sig)
    sig = xp.asarray(np.where(bad, 1.0, sig), device=dev, dtype=ftype)
    flux = xp.sum(psf, axis=(1, 2))
    ksq = xp.asarray(KX * KX + KY * KY, device=dev, dtype=ftype)
    Tr = flux[:, None, None] * xp.exp(-0.5 * (D * sig[:, None, None]) ** 2 * ksq)
    return Tr, xp.zeros_like(Tr), bad


def rotate_out(xp, x):
    """``np.rot90(x, k=3)`` over the last two axes: undoes :func:`bench.metacal.noise.rotate_in`."""
    axes = tuple(range(x.ndim - 2)) + (x.ndim - 1, x.ndim - 2)
    return xp.permute_dims(xp.flip(x, axis=-2), axes)


def _offsets(row, col, shape) -> np.ndarray | None:
    """(N B, 2) offsets (dx, dy) of each stamp's shear centre from the stamp centre, or None."""
    if row is None and col is None:
        return None
    N, n = shape[0], shape[-1]
    B = shape[1] if len(shape) == 4 else 1
    x0, y0 = check_centres(row, col, N, n, B)              # offsets from (n - 1) / 2, per stamp
    return np.stack([x0, y0], axis=1)


def _about(xp, Fr, Fi, S, kx, ky, d, dev, ftype, sign=1.0):
    """(Fr, Fi) times exp(sign i q . d) per stamp, q = S k: moves the transform's origin to d.

    q . d = kx (S^T d)_x + ky (S^T d)_y, so the phase factor is the outer product of one
    (P,) and one (Q,) factor per stamp: two small cosines and sines instead of one per
    Fourier point (which cost as much as the transforms themselves).
    """
    a = sign * (S[0, 0] * d[:, 0] + S[1, 0] * d[:, 1])
    b = sign * (S[0, 1] * d[:, 0] + S[1, 1] * d[:, 1])
    cx, sx = (xp.asarray(f(np.outer(a, kx))[:, None, :], device=dev, dtype=ftype) for f in (np.cos, np.sin))
    cy, sy = (xp.asarray(f(np.outer(b, ky))[:, :, None], device=dev, dtype=ftype) for f in (np.cos, np.sin))
    c, s = cx * cy - sx * sy, sx * cy + cx * sy
    return Fr * c - Fi * s, Fr * s + Fi * c


def metacal_images(image, psf, *, pixel_scale: float, config: MetacalConfig | None = None, noise=None,
                   noise_sigma=None, noise_keys=None, row=None, col=None, deconvolved=None,
                   deconvolved_noise=None) -> dict:
    """Draw the five metacal images of each stamp, with the noise correction added.

    Parameters
    ----------
    image, psf : array, shape (N, n, n) or (N, B, n, n)
        Observed stamps and their PSFs (NumPy, CuPy or torch), as for :func:`bench.metacal.metacal`.
    pixel_scale : float
        Arcsec per pixel.
    config : MetacalConfig, optional
        Kernel, step, noise correction and its seed, precision. [default: MetacalConfig()]
    noise : array, optional
        The correction's noise fields, same shape as *image*. [default: drawn per object key]
    noise_sigma : array_like, shape (N,) or (N, B), optional
        Per-pixel noise sigma of the stamps: scales drawn fields and the returned noise level.
    noise_keys : array_like of int, shape (N,), optional
        Keys of the drawn fields. [default: the object's index]
    row, col : array_like, shape (N,), optional
        The objects' centres (pixels, 0-based). When given, the shears are about each
        object's centre, as ngmix's with the observation's jacobian there, and as the real
        shear of a simulated galaxy is; the object then stays where its moments are
        measured. About the stamp centre instead, metacal also moves the object by
        ``(S - 1)(x0 - c)``, up to 0.005 pixel, which the real shear does not: nothing for
        an exact linear measurement, but a bias for a method whose output depends on the
        sub-pixel position (a network: ``tests/test_placement.py``). [default: the stamp
        centre, as the engine]
    deconvolved : array, optional
        A method's deconvolved images (first placement): sheared and reconvolved instead of
        image / PSF, as :func:`bench.metacal.metacal` does with them. [default: None]
    deconvolved_noise : array, optional
        With *deconvolved* and the correction: the method's deconvolution of
        ``rot90(noise, k=1)``. [default: None]

    Returns
    -------
    dict
        ``images``: {type: array like *image*} for the five types; ``target_psf``: the
        reconvolution PSF drawn on the stamp (like *psf*); ``noise_sigma``: the per-pixel
        noise sigma of the noshear image, (N,) or (N, B) on the host (NaN without
        *noise_sigma*), counting the added field; ``flags``: (N,) or (N, B) int32
        (bits 1, 2 and 4 as in the engine). Flagged objects hold zeros.
    """
    config = config or MetacalConfig()
    image, psf, deconvolved, deconvolved_noise, noise = (engine_array(a) for a in
                                                         (image, psf, deconvolved, deconvolved_noise, noise))
    image, psf = check_arrays(image, psf, pixel_scale, deconvolved=deconvolved)
    xp, dev = namespace(image, psf), device_of(image)
    shape = tuple(image.shape)
    N, n = shape[0], shape[-1]
    ftype = getattr(xp, config.dtype)
    img, ps = (xp.astype(xp.reshape(a, (-1, n, n)), ftype) for a in (image, psf))
    dec = None if deconvolved is None else xp.astype(xp.reshape(deconvolved, (-1, n, n)), ftype)
    nse = None
    if config.noise_correction:
        turned = noise_fields(xp, dev, image, config, noise=noise, noise_sigma=noise_sigma, keys=noise_keys,
                              deconvolved=deconvolved, deconvolved_noise=deconvolved_noise)
        nse = xp.astype(xp.reshape(turned, (-1, n, n)), ftype)
    flags, good = flag_inputs(xp, img, ps, dec, nse)
    offsets = _offsets(row, col, shape)
    L, X, kx, ky, w = _grid(n)
    KX, KY = np.meshgrid(kx, ky)
    out = {t: xp.zeros((img.shape[0], n, n), dtype=ftype, device=dev) for t in TYPES}
    tpsf = xp.zeros((img.shape[0], n, n), dtype=ftype, device=dev)
    gain = np.full(img.shape[0], np.nan)                    # sum |T / P|^2 / L^2 of noshear
    for s in range(0, len(good), config.chunk):
        idx = good[s:s + config.chunk]
        m = len(idx)
        sel = xp.asarray(idx, device=dev)
        p = xp.take(ps, sel, axis=0)
        src = xp.take(img if dec is None else dec, sel, axis=0)
        if nse is not None:
            src = xp.concat([src, xp.take(nse, sel, axis=0)], axis=0)
        Tr, Ti, bad = _target(xp, p, config, float(pixel_scale), X, kx, ky, dev, ftype)
        flags[idx[bad]] |= FLAG_PSF_VANISHES
        tpsf = _put(xp, tpsf, sel, _inverse(xp, Tr, Ti, X, kx, ky, w, L, dev, ftype))
        if nse is not None:
            Tr, Ti = xp.concat([Tr, Tr], axis=0), xp.concat([Ti, Ti], axis=0)
        for t in TYPES:
            S = shear_matrix(*shears(config.step)[t])
            qx, qy = S[0, 0] * KX + S[0, 1] * KY, S[1, 0] * KX + S[1, 1] * KY
            # one transform (one set of matrices) for the stamps, their fields and their PSFs
            Fr, Fi = _dtft(xp, xp.concat([src, p], axis=0), X, qx, qy, dev, ftype)
            k = src.shape[0]
            Ir, Ii, Pr, Pi = Fr[:k], Fi[:k], Fr[k:], Fi[k:]
            if nse is not None:
                Pr, Pi = xp.concat([Pr, Pr], axis=0), xp.concat([Pi, Pi], axis=0)
            den = Pr * Pr + Pi * Pi
            if dec is None:
                Dr, Di = (Ir * Pr + Ii * Pi) / den, (Ii * Pr - Ir * Pi) / den         # I / P
            else:
                Dr, Di = Ir, Ii                      # the method's deconvolution, sheared
            Or, Oi = Dr * Tr - Di * Ti, Dr * Ti + Di * Tr
            if offsets is not None:
                # the image's transform about its object's centre, and back to the stamp centre's
                # origin after the reconvolution: exp(i q.d) exp(-i k.d), one factor (per-point phases
                # commute with dividing by P and multiplying by T); the fields move with their image
                d = offsets[idx] if nse is None else np.concatenate([offsets[idx]] * 2)
                Or, Oi = _about(xp, Or, Oi, S - np.eye(2), kx, ky, d, dev, ftype)
            o = _inverse(xp, Or, Oi, X, kx, ky, w, L, dev, ftype)
            if nse is not None:
                o = o[:m] + rotate_out(xp, o[m:])
            finite = to_numpy(xp.all(xp.isfinite(xp.reshape(o, (m, -1))), axis=1))
            flags[idx[~finite]] |= FLAG_PSF_VANISHES
            out[t] = _put(xp, out[t], sel, xp.where(xp.isfinite(o), o, xp.zeros_like(o)))
            if t == "noshear":
                hsq = to_numpy(xp.sum((Tr[:m] ** 2 + Ti[:m] ** 2) / den[:m] * xp.asarray(w, device=dev, dtype=ftype),
                                      axis=(1, 2)))
                gain[idx] = hsq / (L * L)
    sig = np.full(img.shape[0], np.nan) if noise_sigma is None else np.broadcast_to(
        np.asarray(to_numpy(noise_sigma), np.float64).reshape(N, -1), (N, img.shape[0] // N)).ravel()
    sig_out = sig * np.sqrt(gain * (2.0 if config.noise_correction else 1.0))
    lead = shape[:-2]
    zero = flags != 0
    return {"images": {t: xp.reshape(_zero(xp, o, zero, dev), shape) for t, o in out.items()},
            "target_psf": xp.reshape(_zero(xp, tpsf, zero, dev), shape),
            "noise_sigma": sig_out.reshape(lead), "flags": flags.reshape(lead)}


def sheared_stamps(stamps, *, step: float = 0.01, row=None, col=None, chunk: int = 1024) -> dict:
    """Metacal's five shears applied to band-limited stamps, with no PSF removed or added.

    What a method after the shear should recover from each metacal image: the noiseless
    metacal image of type t is ``T * S_t(truth)``, so its deconvolution by T is
    ``S_t(truth)``, this function of a dataset's ``truth`` (training targets,
    :func:`methods.train.common.metacal_pairs`). Same grid and transforms as
    :func:`metacal_images`.

    Parameters
    ----------
    stamps : ndarray, shape (N, n, n) or (N, B, n, n)
        Band-limited stamps centred like the dataset's (true centre ``(n - 1) / 2``).
    step : float
        The shear step. [default: 0.01]
    row, col : array_like, shape (N,), optional
        Shear about these centres, as :func:`metacal_images`. [default: the stamp centre]
    chunk : int
        Stamps per transform. [default: 1024]

    Returns
    -------
    dict
        {type: float32 ndarray shaped like *stamps*} for the five types.
    """
    a = np.asarray(stamps)
    if a.ndim not in (3, 4) or a.shape[-1] != a.shape[-2]:
        from ..errors import BenchValueError
        raise BenchValueError(f"stamps must be (N, n, n) or (N, B, n, n) with square stamps, got shape {a.shape}")
    n = a.shape[-1]
    flat = np.ascontiguousarray(a.reshape(-1, n, n), dtype=np.float32)
    offsets = _offsets(row, col, a.shape)
    L, X, kx, ky, w = _grid(n)
    KX, KY = np.meshgrid(kx, ky)
    out = {}
    for t in TYPES:
        S = shear_matrix(*shears(step)[t])
        qx, qy = S[0, 0] * KX + S[0, 1] * KY, S[1, 0] * KX + S[1, 1] * KY
        parts = []
        for s in range(0, len(flat), chunk):
            Fr, Fi = _dtft(np, flat[s:s + chunk], X, qx, qy, None, np.float32)
            if offsets is not None:
                d = offsets[s:s + chunk]
                Fr, Fi = _about(np, Fr, Fi, S - np.eye(2), kx, ky, d, None, np.float32)
            parts.append(_inverse(np, Fr, Fi, X, kx, ky, w, L, None, np.float32))
        out[t] = np.concatenate(parts).reshape(a.shape)
    return out


def _put(xp, dest, sel, values):
    """dest with rows *sel* replaced (NumPy, CuPy and torch alike, without in-place indexing rules)."""
    if hasattr(dest, "index_copy"):                         # torch
        return dest.index_copy(0, sel, values)
    dest[sel] = values
    return dest


def _zero(xp, a, rows: np.ndarray, dev):
    if not rows.any():
        return a
    keep = xp.asarray(~rows, device=dev)
    return a * xp.astype(keep, a.dtype)[:, None, None]


def measure(images: dict, *, pixel_scale: float, row=None, col=None, config: MetacalConfig | None = None,
            flags=None) -> dict:
    """e1, e2, T of each type, R11, R22 and flags from five images per object, as the engine returns them.

    The shapes are measured by ``config.estimator`` (:mod:`bench.metacal.estimators`); an object
    the estimator flags in any type gets flag 8 (moments undefined) and NaN, and the
    estimator's own bits, OR-ed over the types, are returned as ``estimator_flags``.

    Parameters
    ----------
    images : dict of array, shape (N, n, n) or (N, B, n, n)
        One batch per type in :data:`bench.metacal.TYPES` (any framework; measured on the host).
    pixel_scale : float
    row, col : array_like, shape (N,), optional
        Object centres, pixels. [default: the stamp centre]
    config : MetacalConfig, optional
        Its ``estimator``, ``weight_fwhm`` and ``step`` are used. [default: MetacalConfig()]
    flags : array_like of int, shape (N,) or (N, B), optional
        Flags already set (e.g. by :func:`metacal_images`); objects with bits 1, 2 or 4 get NaN.
    """
    from .estimators import get_estimator

    config = config or MetacalConfig()
    estimator = get_estimator(config.estimator)
    first = images[TYPES[0]]
    shape = tuple(first.shape)
    N, n = shape[0], shape[-1]
    B = shape[1] if len(shape) == 4 else 1
    x0, y0 = check_centres(row, col, N, n, B)
    c = (n - 1) / 2.0
    res = {}
    flags_out = np.zeros(N * B, np.int32)
    own = np.zeros(N * B, np.int64)
    for t in TYPES:
        batch = xp_reshape(images[t], (N * B, n, n))
        r = estimator.measure(batch if estimator.device_arrays else to_numpy(batch), pixel_scale=float(pixel_scale),
                              row=y0 + c, col=x0 + c, config=config)
        f = np.asarray(r["flags"]).astype(np.int64)
        if estimator.fourier_exact:        # the engine's own flag bits
            flags_out |= f.astype(np.int32)
        else:
            own |= f
            flags_out[f != 0] |= FLAG_BAD_MOMENTS
        res.update({f"{t}_{k}": np.asarray(r[k], dtype=np.float64) for k in ("e1", "e2", "T")})
    old = np.zeros(N * B, np.int32) if flags is None else np.asarray(flags, np.int32).ravel()
    res["flags"] = flags_out | old
    void = ((old & 7) != 0) | ((flags_out & FLAG_BAD_MOMENTS) != 0)
    for k, v in res.items():
        if k != "flags":
            v[void] = np.nan
    step2 = 2 * config.step
    res["R11"] = (res["1p_e1"] - res["1m_e1"]) / step2
    res["R22"] = (res["2p_e2"] - res["2m_e2"]) / step2
    if not estimator.fourier_exact:
        res["estimator_flags"] = own
    lead = (N, B) if len(shape) == 4 else (N,)
    return {k: v.reshape(lead) for k, v in res.items()}


def xp_reshape(a, shape):
    """Reshape any framework's array."""
    return namespace(a).reshape(a, shape)

__all__ = ["grid_size", "measure", "metacal_images", "pixel_moments", "rotate_out", "sheared_stamps"]
