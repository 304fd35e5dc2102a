"""Batched metacalibration with Gaussian-weighted moments, reproducing ngmix exactly.

Method (exact in Fourier space, no image is ever resampled)
------------------------------------------------------------
ngmix's metacal image of type t is, in Fourier space,
``O_t(k) = I(S_t k) / P(S_t k) * T(k)``: the observed image I over the PSF P,
both evaluated at the sheared wavevector (S_t is GalSim's shear matrix, det 1),
times the target PSF T (the reconvolution kernel, :mod:`bench.metacal.kernels`).
Weighted moments are linear in the image, so by Parseval each is
``(1/4 pi^2) \\int K*(k) O_t(k) dk`` with K the transform of the weight kernel
(Gaussian times 1, u^2, v^2 or uv), which is analytic. Substituting ``q = S_t k``
moves the shear onto the smooth, analytic factors::

    M_K(t) = (1/4 pi^2) \\int K*(S_t^-1 q) T(S_t^-1 q) I(q) / P(q) dq

and the integral is a Riemann sum over a lattice of q with spacing ``2 pi / L``
(:mod:`bench.metacal.lattice`); its error is the weighted image aliased from a distance
L, negligible for L >= n. I(q) and P(q) are discrete-time Fourier transforms of the
stamps, computed as small matrix products in a frame where S_t is diagonal.

With the noise correction on (:mod:`bench.metacal.noise`) the rotated noise field rides
along as a second batch of stamps through the same transforms and PSF lattices.

Conventions follow ngmix (``tests/data/README.md``): the weight (FWHM 1.2 arcsec by
default) is centred on each object's (row, col); shears are about the stamp's true
centre ``(n - 1) / 2``.

Flags (bit values in the ``flags`` output)
------------------------------------------
1  non-finite pixel in the image, PSF or noise field (object skipped)
2  PSF sums to zero or less
4  PSF transform vanishes where the weight needs it, or the kernel's width could not be
   found (deconvolution undefined)
8  weighted flux or T not positive in some type (moments undefined; e and T are NaN)
16 |e| >= 1 in some type: no positive image has such weighted moments, so the weighted
   stamp is dominated by noise. Values are kept. Shear estimators drop the whole quad of
   a flagged object, +g and -g alike, so the cut selects galaxies without favouring
   either shear sign.
32 the PSF's centroid is more than 0.5 pixel from the stamp's true centre: the engine
   divides by a PSF centred there, so the deconvolved galaxy is shifted away from the
   weight. Values are kept; shear estimators drop the quad, as for 16.
"""

from __future__ import annotations

import time

import numpy as np

from ..arrays import device_of, engine_array, namespace, to_numpy
from ..errors import BenchTypeError
from .config import FLAG_BAD_MOMENTS, FLAG_PSF_VANISHES, TYPES, MetacalConfig
from .kernels import target_sigma
from .lattice import dtfts, plan, split
from .moments import shape_from_moments
from .noise import rotate_back, rotated_centres
from .validate import check_arrays, check_centres, flag_inputs, noise_fields


def _moments_chunk(xp, dev, frames, srcs, psf, x0, y0, cfg: MetacalConfig, scale: float, deconvolved: bool):
    """Moments (M0, Mxx, Myy, Mxy) of the five metacal images of the stamps in *srcs*.

    *srcs* holds G = 1 or 2 batches of M stamps: the chunk's images and, with the noise
    correction, their rotated noise fields, which share their object's PSF transforms;
    *psf* has the M PSFs and (x0, y0) the G * M weight centres. Arrays on a lattice are laid
    out (Qb, G, M, Qa), so per-object factors broadcast over G. Returns {type: (G * M, 4)
    array} and the kernel-width failures.
    """
    dilate = cfg.kernel == "dilate"
    D = 1.0 + 2.0 * abs(cfg.step)
    ftype = srcs[0].dtype
    G, M = len(srcs), psf.shape[0]

    def per_object(a):          # (M,) host or device values -> (1, 1, M, 1) on the device
        return xp.reshape(xp.asarray(a, device=dev, dtype=ftype), (1, 1, M, 1))

    bad_kernel = np.zeros(M, bool)
    if not dilate:
        flux = per_object(xp.sum(psf, axis=(1, 2)))
        sig_host = target_sigma(cfg.kernel, xp.astype(psf, xp.float64), scale)
        bad_kernel = ~np.isfinite(sig_host)
        gsig2 = per_object((D * np.where(bad_kernel, 1.0, sig_host)) ** 2)
    offset = bool(np.any(x0 != 0) or np.any(y0 != 0))
    moments = {}
    for fr in frames:
        def mats(sa=1.0, sb=1.0):
            return [tuple(xp.asarray(m, device=dev, dtype=ftype) for m in part) for part in fr.matrices(sa, sb)]

        def lattice(a, g):           # (Qb, g * M, Qa) -> (Qb, g, M, Qa)
            return xp.reshape(a, (a.shape[0], g, M, a.shape[2]))

        base = mats()
        Ir, Ii = (lattice(a, G) for a in dtfts(xp, split(xp, srcs, fr, dev), [base])[0])
        lattices = [] if deconvolved else [base]
        if dilate:
            lattices += [mats(*fr.scales[t]) for t in fr.types]
        Ps = [[lattice(a, 1) for a in pair] for pair in dtfts(xp, split(xp, [psf], fr, dev), lattices)] \
            if lattices else []
        if not deconvolved:
            Pr, Pi = Ps.pop(0)
            den = Pr * Pr + Pi * Pi
            Ir, Ii = (Ir * Pr + Ii * Pi) / den, (Ii * Pr - Ir * Pi) / den      # I / P
        for t in fr.types:
            if dilate:
                Tr, Ti = Ps.pop(0)
                Vr, Vi = Ir * Tr - Ii * Ti, Ir * Ti + Ii * Tr
            else:
                Vr, Vi = Ir, Ii
            if offset:
                # the weight sits at the object: phase exp(+i q . S^-1 x0), separable in the frame
                X0 = fr.Sinv[t] @ np.vstack([x0, y0])
                a0, b0 = (np.reshape(c, (1, G, M, 1)) for c in fr.rotate_in(X0[0], X0[1]))
                pa = xp.asarray(a0 * fr.qa[None, None, None, :], device=dev, dtype=ftype)
                pb = xp.asarray(b0 * fr.qb[:, None, None, None], device=dev, dtype=ftype)
                ca, sa, cb, sb = xp.cos(pa), xp.sin(pa), xp.cos(pb), xp.sin(pb)
                Vr = Vr * (ca * cb - sa * sb) - Vi * (sa * cb + ca * sb)
            if not dilate:
                ksq = xp.asarray(fr.ksq[t][:, None, None, :], device=dev, dtype=ftype)
                Vr = Vr * (flux * xp.exp(-0.5 * gsig2 * ksq))
            W = xp.asarray(fr.W[t].reshape(len(fr.qb), len(fr.qa), 4), device=dev, dtype=ftype)
            Vr = xp.reshape(Vr, (Vr.shape[0], G * M, Vr.shape[3]))
            moments[t] = to_numpy(xp.sum(Vr @ W, axis=0))                      # (G * M, 4)
    return moments, bad_kernel


def _shapes(moments: dict, N: int, scale: float):
    """e1, e2, T per type and the flags, from the summed moments."""
    res = {}
    flags = np.zeros(N, np.int32)
    for t in TYPES:
        r = shape_from_moments(moments[t], scale)
        flags |= r.pop("flags")
        res.update({f"{t}_{k}": v for k, v in r.items()})
    res["flags"] = flags
    return res


def metacal(image, psf, *, pixel_scale: float, row=None, col=None, config: MetacalConfig | None = None,
            deconvolved=None, noise=None, noise_sigma=None, noise_keys=None, deconvolved_noise=None,
            **settings) -> dict[str, np.ndarray]:
    """Metacalibration of a batch of stamps.

    The same code runs on NumPy, CuPy and torch arrays (through the array API; JAX arrays are
    handed to NumPy or torch through DLPack, :func:`bench.arrays.engine_array`); the
    arithmetic happens on the input's device and only the per-object results come back.

    Parameters
    ----------
    image : array, shape (N, n, n) or (N, B, n, n)
        Observed stamps (NumPy, CuPy or torch).
    psf : array, same shape, framework and device as *image*
        PSF images (pixel-convolved), centred on the stamp's true centre.
    pixel_scale : float
        Arcsec per pixel.
    row, col : array_like, shape (N,), optional
        Object centres in pixels (0-based). [default: the stamp centre (n - 1) / 2]
    config : MetacalConfig, optional
        Settings; keyword *settings* (``kernel``, ``step``, ``noise_correction``,
        ``estimator``, ...) build one instead. With an estimator other than ``gaussmom`` the
        five images are drawn and measured on pixels. [default: MetacalConfig()]
    deconvolved : array, optional
        A method's deconvolved (pre-PSF) images, same shape as *image*. When given, metacal
        shears and reconvolves these instead of dividing by the PSF. [default: None]
    noise : array, optional
        With the noise correction: the noise field of each stamp (same shape as *image*,
        already at the stamp's noise level), as ngmix's ``use_noise_image``. [default: drawn]
    noise_sigma : array_like, shape (N,) or (N, B), optional
        Per-pixel noise sigma, to scale drawn fields. Needed with the correction on and no
        *noise*. [default: None]
    noise_keys : array_like of int, shape (N,), optional
        Key of each object's drawn field (:func:`bench.metacal.noise.draw_fields`); bands
        of one object get independent fields. [default: the object's index]
    deconvolved_noise : array, optional
        With *deconvolved* and the correction: the method's deconvolution of
        ``rot90(noise, k=1)`` with the same PSF. [default: None]

    Returns
    -------
    dict of numpy.ndarray
        ``{type}_e1``, ``{type}_e2``, ``{type}_T`` (arcsec^2) for the five types, ``R11``, ``R22``,
        ``flags`` (see the module docstring), each (N,) or (N, B) for multi-band input, on
        the host; ``time_s``, ``noise_correction`` and ``noise_seed`` (scalars). Objects
        flagged 1, 2, 4 or 8 hold NaN.

    References
    ----------
    Huff & Mandelbaum 2017, arXiv:1702.02600; Sheldon & Huff 2017, ApJ 841, 24.
    """
    if "psf_mode" in settings:           # the name before 0.2, kept for existing scripts
        import warnings
        warnings.warn("metacal(psf_mode=...) is deprecated; use kernel=...", DeprecationWarning, stacklevel=2)
        settings["kernel"] = settings.pop("psf_mode")
    if config is None:
        config = MetacalConfig(**settings)
    elif settings:
        raise BenchTypeError(f"give either config or keyword settings, not both: {sorted(settings)}")
    elif not isinstance(config, MetacalConfig):
        raise BenchTypeError(f"config must be a MetacalConfig, got {type(config).__name__}")
    image, psf, deconvolved, deconvolved_noise, noise = (engine_array(a) for a in
                                                         (image, psf, deconvolved, deconvolved_noise, noise))
    if config.estimator != "gaussmom":
        return _metacal_on_pixels(image, psf, pixel_scale=pixel_scale, row=row, col=col, config=config,
                                  deconvolved=deconvolved, noise=noise, noise_sigma=noise_sigma,
                                  noise_keys=noise_keys, deconvolved_noise=deconvolved_noise)
    image, psf = check_arrays(image, psf, pixel_scale, deconvolved=deconvolved)
    xp = namespace(image, psf)
    dev = device_of(image)
    t0 = time.perf_counter()
    N, n = image.shape[0], image.shape[-1]
    B = image.shape[1] if image.ndim == 4 else 1
    ftype = getattr(xp, config.dtype)

    def flat(a):
        return xp.astype(xp.reshape(a, (N * B, n, n)), ftype)

    img, ps = flat(image), flat(psf)
    dec = None if deconvolved is None else flat(deconvolved)
    x0, y0 = check_centres(row, col, N, n, B)
    nse = None
    if config.noise_correction:
        nse = noise_fields(xp, dev, image, config, noise=noise, noise_sigma=noise_sigma, keys=noise_keys,
                           deconvolved=deconvolved, deconvolved_noise=deconvolved_noise)
        nse = flat(nse)
    flags, good = flag_inputs(xp, img, ps, dec, nse)

    frames = plan(n, float(pixel_scale), config)
    out = {f"{t}_{q}": np.full(N * B, np.nan) for t in TYPES for q in ("e1", "e2", "T")}
    for s in range(0, len(good), config.chunk):
        idx = good[s:s + config.chunk]
        sel = xp.asarray(idx, device=dev)
        srcs = [xp.take(img if dec is None else dec, sel, axis=0)]
        cx, cy = x0[idx], y0[idx]
        if nse is not None:
            srcs.append(xp.take(nse, sel, axis=0))
            rx, ry = rotated_centres(cx, cy)
            cx, cy = np.concatenate([cx, rx]), np.concatenate([cy, ry])
        mom, bad_kernel = _moments_chunk(xp, dev, frames, srcs, xp.take(ps, sel, axis=0), cx, cy, config,
                                         float(pixel_scale), dec is not None)
        if nse is not None:
            mom = {t: m[:len(idx)] + rotate_back(m[len(idx):]) for t, m in mom.items()}
        r = _shapes(mom, len(idx), float(pixel_scale))
        r["flags"][bad_kernel] |= FLAG_PSF_VANISHES
        void = bad_kernel | ((r["flags"] & FLAG_BAD_MOMENTS) != 0)      # no moments in some type: all NaN
        for k, v in r.items():
            if k == "flags":
                flags[idx] |= v
            else:
                out[k][idx] = np.where(void, np.nan, v)
    step2 = 2 * config.step
    out["R11"] = (out["1p_e1"] - out["1m_e1"]) / step2
    out["R22"] = (out["2p_e2"] - out["2m_e2"]) / step2
    out["flags"] = flags
    shape = (N, B) if image.ndim == 4 else (N,)
    out = {k: v.reshape(shape) for k, v in out.items()}
    out["time_s"] = np.float64(time.perf_counter() - t0)
    out["noise_correction"] = np.bool_(config.noise_correction)
    out["noise_seed"] = np.int64(config.noise_seed if config.noise_correction and noise is None else -1)
    return out


def _metacal_on_pixels(image, psf, *, pixel_scale, row, col, config, deconvolved, noise, noise_sigma, noise_keys,
                       deconvolved_noise):
    """Metacal measured by an estimator that needs pixels: the five images drawn (sheared about each
    object's centre, :func:`bench.metacal.render.metacal_images`), then measured."""
    from .render import measure, metacal_images

    t0 = time.perf_counter()
    mc = metacal_images(image, psf, pixel_scale=pixel_scale, config=config, noise=noise, noise_sigma=noise_sigma,
                        noise_keys=noise_keys, row=row, col=col, deconvolved=deconvolved,
                        deconvolved_noise=deconvolved_noise)
    out = measure(mc["images"], pixel_scale=pixel_scale, row=row, col=col, config=config, flags=mc["flags"])
    out["time_s"] = np.float64(time.perf_counter() - t0)
    out["noise_correction"] = np.bool_(config.noise_correction)
    out["noise_seed"] = np.int64(config.noise_seed if config.noise_correction and noise is None else -1)
    return out


__all__ = ["metacal"]
