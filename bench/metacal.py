"""Batched metacalibration with Gaussian-weighted moments, reproducing ngmix exactly.

Method (exact in Fourier space, no image is ever resampled)
------------------------------------------------------------
ngmix's metacal image of type t is, in Fourier space,
``O_t(k) = I(S_t k) / P(S_t k) * T(k)``: the observed image I over the PSF P,
both evaluated at the sheared wavevector (S_t is GalSim's shear matrix, det 1),
times the target PSF T. Weighted moments are linear in the image, so by
Parseval each is ``(1/4 pi^2) \\int K*(k) O_t(k) dk`` with K the transform of
the weight kernel (Gaussian times 1, u^2, v^2 or uv), which is analytic.
Substituting ``q = S_t k`` moves the shear onto the smooth, analytic factors::

    M_K(t) = (1/4 pi^2) \\int K*(S_t^-1 q) T(S_t^-1 q) I(q) / P(q) dq

and the integral is an exact Riemann sum over a lattice of q whose spacing
``2 pi / L`` resolves the stamp (L >= n). I(q) and P(q) are discrete-time Fourier
transforms of the stamps, computed as two small matrix products per stamp in a
frame where S_t is diagonal (pixel axes for 1p/1m, axes rotated by 45 degrees
for 2p/2m, where the stamp is embedded on the rotated lattice). Only |k| below
the weight's cut-off (set by ``tol``) is needed, so the lattice is small.

Target PSFs, as ngmix 2.4.2 builds them (checked against its outputs):

* ``dilate``: the PSF with the pixel deconvolved, dilated by ``1 + 2|step|``,
  reconvolved with the pixel, with the lanczos15 interpolant:
  ``T(k) = P(D k) u(D k) Pix(k) / Pix(D k)``.
* ``gauss``: a round Gaussian ``exp(-|D k|^2 sigma^2 / 2)`` (no pixel), sigma
  chosen from the interpolated PSF's k-space image as in ngmix
  ``_get_gauss_target_psf``: on a lattice of spacing stepk / 4 (with ngmix's
  half-cell offset), the smallest |k|^2 where Re PSF(k) < 1e-2 flux is where the
  Gaussian reaches 3e-3.

Conventions follow ``../shared/reference/README.md``: the weight (FWHM 1.2
arcsec by default) is centred on each object's (row, col); shears are about the
stamp's true centre ``(n - 1) / 2``.

Flags (bit values in the ``flags`` output)
------------------------------------------
1  non-finite pixel in the image or PSF (object skipped)
2  PSF sums to zero or less
4  PSF transform vanishes where the weight needs it (deconvolution undefined)
8  weighted flux or T not positive in some type (moments undefined)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy.special import sici

from .errors import BenchTypeError, BenchValueError, unknown_name

TYPES = ("noshear", "1p", "1m", "2p", "2m")
PSF_MODES = ("dilate", "gauss")
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))

FLAG_NONFINITE = 1
FLAG_PSF_ZERO = 2
FLAG_PSF_VANISHES = 4
FLAG_BAD_MOMENTS = 8


@dataclass(frozen=True)
class MetacalConfig:
    """Settings of :func:`metacal`.

    Parameters
    ----------
    psf : {"dilate", "gauss"}
        Target PSF mode. [default: "dilate"]
    step : float
        Shear step. [default: 0.01]
    weight_fwhm : float
        FWHM of the Gaussian moment weight, arcsec. [default: 1.2]
    lattice : int
        The q lattice spacing is 2 pi / lattice (rad/pixel); must be >= the stamp size. [default: 64]
    tol : float
        Relative size of the weight's transform at the lattice edge. [default: 1e-10]
    chunk : int
        Objects processed at a time (bounds memory). [default: 512]
    """

    psf: str = "dilate"
    step: float = 0.01
    weight_fwhm: float = 1.2
    lattice: int = 64
    tol: float = 1e-10
    chunk: int = 512

    def __post_init__(self):
        if self.psf not in PSF_MODES:
            raise unknown_name("PSF mode", self.psf, PSF_MODES)
        if not (math.isfinite(self.step) and 0 < self.step < 0.2):
            raise BenchValueError(f"step must be in (0, 0.2), got {self.step!r}")
        if not (math.isfinite(self.weight_fwhm) and self.weight_fwhm > 0):
            raise BenchValueError(f"weight_fwhm must be > 0, got {self.weight_fwhm!r}")
        if not (0 < self.tol < 1e-3):
            raise BenchValueError(f"tol must be in (0, 1e-3), got {self.tol!r}")
        if self.chunk < 1:
            raise BenchValueError(f"chunk must be >= 1, got {self.chunk!r}")


def shear_matrix(g1: float, g2: float) -> np.ndarray:
    """GalSim's shear matrix for reduced shear (g1, g2): stretches along +x for g1 > 0."""
    return np.array([[1 + g1, g2], [g2, 1 - g1]]) / math.sqrt(1 - g1 * g1 - g2 * g2)


def shears(step: float) -> dict[str, tuple[float, float]]:
    return {"noshear": (0.0, 0.0), "1p": (step, 0.0), "1m": (-step, 0.0),
            "2p": (0.0, step), "2m": (0.0, -step)}


def lanczos_ft(k: np.ndarray, n: int = 15) -> np.ndarray:
    """Fourier transform of the Lanczos-n kernel (GalSim's formula), k in rad/pixel."""
    u = np.asarray(k) / (2 * np.pi)
    vp, vm = n * (2 * u + 1), n * (2 * u - 1)

    def si(z):
        return sici(np.pi * z)[0]

    return ((vm - 1) * si(vm - 1) - (vm + 1) * si(vm + 1)
            - (vp - 1) * si(vp - 1) + (vp + 1) * si(vp + 1)) / (2 * np.pi)


def pixel_ft(k: np.ndarray) -> np.ndarray:
    """Fourier transform of a unit pixel, sin(k/2) / (k/2)."""
    return np.sinc(np.asarray(k) / (2 * np.pi))


# --------------------------------------------------------------------------- lattices
class _Frame:
    """A frame where some shears are diagonal, with its lattice and the stamp embedding.

    Frame "A" uses pixel axes (a = x, b = y); frame "B" is rotated by 45 degrees
    (a = (x + y)/sqrt 2, b = (y - x)/sqrt 2) and embeds the n x n stamp on a
    (2n - 1)^2 lattice indexed by (y - x, x + y).
    """

    def __init__(self, kind: str, n: int, qa: np.ndarray, qb: np.ndarray):
        self.kind = kind
        self.n = n
        self.qa, self.qb = qa, qb
        c = (n - 1) / 2.0
        if kind == "A":
            self.pa = np.arange(n) - c
            self.pb = np.arange(n) - c
        else:
            j = np.arange(n)
            self.s_idx = (j[None, :] + j[:, None]).ravel()
            self.d_idx = (j[:, None] - j[None, :] + n - 1).ravel()
            pos = (np.arange(2 * n - 1) - (n - 1)) / math.sqrt(2.0)
            self.pa = pos
            self.pb = pos

    def embed(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "A":
            return x
        N, n = x.shape[0], self.n
        out = np.zeros((N, 2 * n - 1, 2 * n - 1), dtype=x.dtype)
        out[:, self.d_idx, self.s_idx] = x.reshape(N, n * n)
        return out

    def to_pixel_axes(self, ka, kb):
        if self.kind == "A":
            return ka, kb
        r = 1 / math.sqrt(2.0)
        return (ka - kb) * r, (ka + kb) * r

    def from_pixel_axes(self, x, y):
        if self.kind == "A":
            return x, y
        r = 1 / math.sqrt(2.0)
        return (x + y) * r, (y - x) * r

    def dtft(self, X: np.ndarray, sa: float = 1.0, sb: float = 1.0) -> np.ndarray:
        """sum X[b, a] exp(-i (sa qa pa + sb qb pb)) for X (N, nb, na) -> (N, len qb, len qa)."""
        Eb = np.exp(-1j * np.outer(sb * self.qb, self.pb))        # (Qb, nb)
        Ea = np.exp(-1j * np.outer(sa * self.qa, self.pa))        # (Qa, na)
        N, nb, na = X.shape
        # contract b first (the half axis is the shorter): one large GEMM per stage
        Y = (X.transpose(0, 2, 1).reshape(N * na, nb) @ Eb.T)     # (N*na, Qb)
        Y = Y.reshape(N, na, -1).transpose(0, 2, 1).reshape(-1, na)
        return (Y @ Ea.T).reshape(N, len(self.qb), len(self.qa))


def gauss_target_sigma(psf: np.ndarray) -> np.ndarray:
    """ngmix's round-Gaussian target width (pixels) for each PSF image in *psf* (N, n, n)."""
    N, n, _ = psf.shape
    flux = psf.sum(axis=(1, 2))
    # stepk of GalSim's InterpolatedImage: box radius enclosing 99.5% of the flux around the
    # pixel at index n // 2, in quadrature with the lanczos15 range
    i0 = n // 2
    dmax = (n - 1) // 2
    R = np.full(N, dmax + 1.5)
    done = np.zeros(N, bool)
    for d in range(1, dmax + 1):
        box = psf[:, i0 - d:i0 + d + 1, i0 - d:i0 + d + 1].sum(axis=(1, 2))
        hit = ~done & (box >= 0.995 * flux)
        R[hit] = d + 0.5
        done |= hit
    dk = np.pi / np.hypot(R, 15.0) / 4.0          # rad / pixel
    c = (n - 1) / 2.0
    pos = np.arange(n) - c
    out = np.empty(N)
    for dkv in np.unique(dk):
        sel = np.nonzero(dk == dkv)[0]
        out[sel] = _gauss_sigma_group(psf[sel], flux[sel], dkv, pos)
    return out


def _re_psf_on_lattice(p, ix, iy, dk, pos):
    kx, ky = ix * dk, iy * dk
    cx, sx = np.cos(np.outer(kx, pos)), np.sin(np.outer(kx, pos))
    cy, sy = np.cos(np.outer(ky, pos)), np.sin(np.outer(ky, pos))
    # Re sum p[y, x] exp(-i(kx x + ky y)) = cy p cx^T - sy p sx^T
    re = cy @ p @ cx.T - sy @ p @ sx.T
    u = lanczos_ft(kx)[None, :] * lanczos_ft(ky)[:, None]
    return re * u


def _gauss_sigma_group(p, flux, dk, pos):
    thresh = (1e-2 * flux)[:, None, None]
    # coarse pass (every 4th lattice point) bounds the crossing radius
    kmax = 3.2
    M = int(math.ceil(kmax / dk))
    ix = np.arange(-M, M + 1, 4)
    iy = np.arange(0, M + 1, 4)
    re = _re_psf_on_lattice(p, ix, iy, dk, pos)
    r2 = (ix[None, :] ** 2 + iy[:, None] ** 2) * dk * dk
    below = re < thresh
    rc = np.sqrt(np.where(below, r2[None], np.inf).min(axis=(1, 2)))
    rc = np.where(np.isfinite(rc), rc, kmax)
    Mf = int(math.ceil(rc.max() / dk)) + 3
    ix = np.arange(-Mf, Mf + 1)
    iy = np.arange(0, Mf + 1)
    re = _re_psf_on_lattice(p, ix, iy, dk, pos)
    below = re < thresh
    # ngmix labels lattice point (ix, iy) with ((ix - 1/2)^2 + (iy - 1/2)^2) dk^2 (its meshgrid is
    # offset by half a cell on odd-sized k images); Re PSF is even, so (-ix, -iy) has the same value
    a = (ix[None, :] - 0.5) ** 2 + (iy[:, None] - 0.5) ** 2
    b = (ix[None, :] + 0.5) ** 2 + (iy[:, None] + 0.5) ** 2
    ksq = np.minimum(a, b) * dk * dk
    ksq_max = np.where(below, ksq[None], np.inf).min(axis=(1, 2))
    return np.sqrt(-2.0 * math.log(3e-3) / ksq_max)


# --------------------------------------------------------------------------- core
def _metacal_chunk(image, psf, x0, y0, scale, cfg: MetacalConfig, deconvolved=None):
    N, n, _ = image.shape
    sig = cfg.weight_fwhm * FWHM_TO_SIGMA / scale                  # weight sigma, pixels
    D = 1.0 + 2.0 * abs(cfg.step)
    kcut = math.sqrt(2.0 * math.log(1.0 / cfg.tol)) / sig * (1 + 3 * cfg.step)
    L = max(cfg.lattice, n)
    dq = 2 * np.pi / L
    J = int(math.ceil(kcut / dq))
    qa = np.arange(-J, J + 1) * dq
    qb = np.arange(0, J + 1) * dq
    half_w = np.where(np.arange(J + 1) > 0, 2.0, 1.0)[:, None]      # Hermitian symmetry in qb
    norm = dq * dq / (4 * np.pi ** 2) * 2 * np.pi * sig * sig
    flux = psf.sum(axis=(1, 2))
    flags = np.zeros(N, np.int32)
    gsig = gauss_target_sigma(psf) if cfg.psf == "gauss" else None
    res = {}
    for kind, types in (("A", ("noshear", "1p", "1m")), ("B", ("2p", "2m"))):
        fr = _Frame(kind, n, qa, qb)
        Pe = fr.embed(psf)
        P = fr.dtft(Pe)
        if deconvolved is None:
            Iq = fr.dtft(fr.embed(image))
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = Iq / P
        else:
            ratio = fr.dtft(fr.embed(deconvolved))
        for t in types:
            g1, g2 = shears(cfg.step)[t]
            S = shear_matrix(g1, g2)
            if kind == "A":
                la, lb = S[0, 0], S[1, 1]
            else:
                la, lb = S[0, 0] + S[0, 1], S[0, 0] - S[0, 1]
            ka, kb = np.meshgrid(qa / la, qb / lb)                   # k = S^-1 q, frame axes
            kx, ky = fr.to_pixel_axes(ka, kb)
            ksq = kx * kx + ky * ky
            G = norm * np.exp(-0.5 * sig * sig * ksq) * half_w
            # the weight sits at the object: its phase is exp(+i k.x0) = exp(+i q.S^-1 x0)
            Sinv = np.linalg.inv(S)
            X0 = Sinv @ np.vstack([x0, y0])
            a0, b0 = fr.from_pixel_axes(X0[0], X0[1])
            phase = np.exp(1j * a0[:, None, None] * qa[None, None, :]) * \
                np.exp(1j * b0[:, None, None] * qb[None, :, None])
            if cfg.psf == "dilate":
                Tq = fr.dtft(Pe, D / la, D / lb)
                Tq = Tq * (lanczos_ft(D * kx) * lanczos_ft(D * ky) * pixel_ft(kx) * pixel_ft(ky)
                           / (pixel_ft(D * kx) * pixel_ft(D * ky)))
            else:
                Tq = flux[:, None, None] * np.exp(-0.5 * (D * gsig[:, None, None]) ** 2 * ksq)
            V = (ratio * Tq * phase).real * G
            V = V.reshape(N, -1)
            H = np.stack([np.ones_like(kx), sig * sig - sig ** 4 * kx * kx,
                          sig * sig - sig ** 4 * ky * ky, -sig ** 4 * kx * ky]).reshape(4, -1)
            bad = ~np.isfinite(V).all(axis=1)
            V[bad] = 0.0
            flags[bad] |= FLAG_PSF_VANISHES
            M = V @ H.T                                                 # (N, 4)
            m0, mxx, myy, mxy = M.T
            T = mxx + myy
            okm = (m0 > 0) & (T > 0)
            flags[~okm] |= FLAG_BAD_MOMENTS
            with np.errstate(divide="ignore", invalid="ignore"):
                res[f"{t}_e1"] = np.where(okm, (mxx - myy) / T, np.nan)
                res[f"{t}_e2"] = np.where(okm, 2 * mxy / T, np.nan)
                res[f"{t}_T"] = np.where(okm, T / m0 * scale * scale, np.nan)
    res["flags"] = flags
    return res


def metacal(image, psf, *, pixel_scale: float, row=None, col=None, config: MetacalConfig | None = None,
            deconvolved=None, **kwargs) -> dict[str, np.ndarray]:
    """Metacalibration of a batch of stamps.

    Parameters
    ----------
    image : ndarray, shape (N, n, n) or (N, B, n, n)
        Observed stamps.
    psf : ndarray, same shape as *image*
        PSF images (pixel-convolved), centred on the stamp's true centre.
    pixel_scale : float
        Arcsec per pixel.
    row, col : ndarray, shape (N,), optional
        Object centres in pixels (0-based). [default: the stamp centre (n - 1) / 2]
    config : MetacalConfig, optional
        Settings; keyword arguments (``psf``, ``step``, ...) build one instead.
    deconvolved : ndarray, optional
        A method's deconvolved (pre-PSF) images, same shape as *image*. When given, metacal
        shears and reconvolves these instead of dividing by the PSF (the real-space path).

    Returns
    -------
    dict
        ``{type}_e1``, ``{type}_e2``, ``{type}_T`` for the five types, ``R11``, ``R22``, ``flags``
        and ``time_s``; each (N,) or (N, B) for multi-band input. Flagged objects hold NaN.
    """
    if config is None:
        if "psf_mode" in kwargs:
            kwargs["psf"] = kwargs.pop("psf_mode")
        config = MetacalConfig(**kwargs)
    elif kwargs:
        raise BenchTypeError(f"give either config or keyword settings, not both: {sorted(kwargs)}")
    image = np.asarray(image)
    psf = np.asarray(psf)
    if image.ndim not in (3, 4):
        raise BenchTypeError(f"image must have 3 or 4 dimensions (N, [B,] n, n), got shape {image.shape}")
    if psf.shape != image.shape:
        raise BenchValueError(f"psf shape {psf.shape} does not match image shape {image.shape}")
    if image.shape[-1] != image.shape[-2]:
        raise BenchValueError(f"stamps must be square, got {image.shape[-2:]}")
    if not (math.isfinite(pixel_scale) and pixel_scale > 0):
        raise BenchValueError(f"pixel_scale must be > 0, got {pixel_scale!r}")
    t0 = time.perf_counter()
    N, n = image.shape[0], image.shape[-1]
    multiband = image.ndim == 4
    B = image.shape[1] if multiband else 1
    img = image.reshape(N * B, n, n).astype(np.float64, copy=False)
    ps = psf.reshape(N * B, n, n).astype(np.float64, copy=False)
    dec = None
    if deconvolved is not None:
        dec = np.asarray(deconvolved)
        if dec.shape != image.shape:
            raise BenchValueError(f"deconvolved shape {dec.shape} does not match image shape {image.shape}")
        dec = dec.reshape(N * B, n, n).astype(np.float64, copy=False)
    c = (n - 1) / 2.0
    row = np.full(N, c) if row is None else np.asarray(row, dtype=np.float64)
    col = np.full(N, c) if col is None else np.asarray(col, dtype=np.float64)
    if row.shape != (N,) or col.shape != (N,):
        raise BenchValueError(f"row and col must have shape ({N},), got {row.shape} and {col.shape}")
    y0 = np.repeat(row - c, B)
    x0 = np.repeat(col - c, B)

    flags = np.zeros(N * B, np.int32)
    finite = np.isfinite(img).all(axis=(1, 2)) & np.isfinite(ps).all(axis=(1, 2))
    if dec is not None:
        finite &= np.isfinite(dec).all(axis=(1, 2))
    flags[~finite] |= FLAG_NONFINITE
    psf_ok = np.where(finite, ps.sum(axis=(1, 2)), 0.0) > 0
    flags[finite & ~psf_ok] |= FLAG_PSF_ZERO
    good = np.nonzero(finite & psf_ok)[0]

    out = {f"{t}_{q}": np.full(N * B, np.nan) for t in TYPES for q in ("e1", "e2", "T")}
    for s in range(0, len(good), config.chunk):
        idx = good[s:s + config.chunk]
        r = _metacal_chunk(img[idx], ps[idx], x0[idx], y0[idx], float(pixel_scale), config,
                           None if dec is None else dec[idx])
        for k, v in r.items():
            if k == "flags":
                flags[idx] |= v
            else:
                out[k][idx] = v
    step2 = 2 * config.step
    out["R11"] = (out["1p_e1"] - out["1m_e1"]) / step2
    out["R22"] = (out["2p_e2"] - out["2m_e2"]) / step2
    out["flags"] = flags
    shape = (N, B) if multiband else (N,)
    out = {k: v.reshape(shape) for k, v in out.items()}
    out["time_s"] = np.float64(time.perf_counter() - t0)
    return out


# --------------------------------------------------------------------------- command line
def _load_input(path: str) -> dict[str, np.ndarray]:
    import os
    import zipfile

    from .errors import BenchFileError, BenchKeyError

    if not os.path.exists(path):
        raise BenchFileError(f"input file not found: {path!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise BenchValueError(f"{path!r} is not an npz archive")
            data = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, ValueError, OSError) as err:
        if isinstance(err, BenchValueError):
            raise
        raise BenchValueError(f"{path!r} is not a readable npz file ({err})") from None
    for key in ("image", "psf", "noise_sigma", "pixel_scale"):
        if key not in data:
            raise BenchKeyError(f"{path!r} has no key {key!r} (needs image, psf, noise_sigma, pixel_scale)")
    return data


def _validate_input(d: dict[str, np.ndarray]) -> None:
    img, psf = d["image"], d["psf"]
    if img.ndim not in (3, 4):
        raise BenchTypeError(f"image must have 3 or 4 dimensions (N, [B,] n, n), got shape {img.shape}")
    if psf.ndim != img.ndim:
        raise BenchTypeError(f"psf must have {img.ndim} dimensions like image, got shape {psf.shape}")
    if psf.shape[0] != img.shape[0]:
        raise BenchValueError(f"image has {img.shape[0]} objects but psf has {psf.shape[0]}")
    if psf.shape != img.shape:
        raise BenchValueError(f"psf shape {psf.shape} does not match image shape {img.shape}")
    for key in ("image", "psf"):
        bad = ~np.isfinite(d[key])
        if bad.any():
            i = np.argwhere(bad)[0]
            raise BenchValueError(f"{key} has a non-finite pixel ({d[key][tuple(i)]}) at index {tuple(int(v) for v in i)}")
    s = psf.reshape(psf.shape[0], -1, psf.shape[-2] * psf.shape[-1]).sum(axis=-1)
    if (s <= 0).any():
        i = np.argwhere(s <= 0)[0]
        raise BenchValueError(f"psf of object {int(i[0])} sums to {float(s[tuple(i)])}; it must be > 0")
    scale = np.asarray(d["pixel_scale"])
    if scale.size != 1 or not np.isfinite(scale).all() or float(scale) <= 0:
        raise BenchValueError(f"pixel_scale must be a positive number, got {scale!r}")
    ns = np.asarray(d["noise_sigma"])
    if ns.shape not in ((img.shape[0],), img.shape[:2]):
        raise BenchValueError(f"noise_sigma must have shape ({img.shape[0]},) or {img.shape[:2]}, got {ns.shape}")
    if not np.isfinite(ns).all() or (ns <= 0).any():
        raise BenchValueError(f"noise_sigma must be positive and finite, got min {ns.min()!r}")
    for key in ("row", "col"):
        if key in d and np.asarray(d[key]).shape != (img.shape[0],):
            raise BenchValueError(f"{key} must have shape ({img.shape[0]},), got {np.asarray(d[key]).shape}")


def main(argv=None) -> int:
    import os

    from .cli import make_parser

    p = make_parser("python -m bench.metacal", "Batched metacalibration of stamps in an npz file.")
    p.add_argument("input", help="npz with image, psf, noise_sigma, pixel_scale [, row, col]")
    p.add_argument("--out", required=True, help="output npz")
    p.add_argument("--method", default="fourier", help="registered deconvolution method [fourier]")
    p.add_argument("--psf", default="dilate", help="target PSF: dilate or gauss [dilate]")
    p.add_argument("--step", type=float, default=0.01, help="shear step [0.01]")
    p.add_argument("--weight-fwhm", type=float, default=1.2, help="moment weight FWHM, arcsec [1.2]")
    p.add_argument("--device", default="cpu", help="cpu or cuda [cpu]")
    a = p.parse_args(argv)

    from methods import get_method, get_method_class

    cfg = MetacalConfig(psf=a.psf, step=a.step, weight_fwhm=a.weight_fwhm)
    if a.device not in ("cpu", "cuda"):
        raise unknown_name("device", a.device, ("cpu", "cuda"))
    cls = get_method_class(a.method)
    if a.device == "cuda":
        raise BenchValueError("--device cuda: the GPU path of metacal is not built yet")
    d = _load_input(a.input)
    _validate_input(d)
    deconvolved = None
    if cls.produces_image:
        method = get_method(a.method, device=a.device)
        img4 = d["image"] if d["image"].ndim == 4 else d["image"][:, None]
        psf4 = d["psf"] if d["psf"].ndim == 4 else d["psf"][:, None]
        ns = np.asarray(d["noise_sigma"], dtype=np.float64)
        ns = ns if ns.ndim == 2 else ns[:, None]
        deconvolved = np.asarray(method.deconvolve(img4, psf4, ns)).reshape(d["image"].shape)
    out = metacal(d["image"], d["psf"], pixel_scale=float(d["pixel_scale"]), row=d.get("row"),
                  col=d.get("col"), config=cfg, deconvolved=deconvolved)
    nflag = int(np.count_nonzero(out["flags"]))
    tmp = a.out + ".tmp.npz"
    np.savez(tmp, **out)
    os.replace(tmp, a.out)
    print(f"metacal ({a.method}, {a.psf}): {out['flags'].size} objects, {nflag} flagged, "
          f"{float(out['time_s']):.3f} s -> {a.out}")
    return 0


if __name__ == "__main__":
    import sys

    from .cli import run_cli

    sys.exit(run_cli(main, prog="python -m bench.metacal"))
