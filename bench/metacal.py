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

and the integral is a Riemann sum over a lattice of q with spacing ``2 pi / L``;
its error is the weighted image aliased from a distance L, negligible for L >= n
(L = n = 48 gives median |de| 5e-8 against ngmix). I(q) and P(q) are discrete-time
Fourier transforms of the stamps, computed as two small matrix products per stamp
in a frame where S_t is diagonal (pixel axes; axes rotated by 45 degrees for
2p/2m in dilate mode, where the stamp splits into two dense sub-lattices). Only
|k| below the weight's cut-off (set by ``tol``) and qa >= 0 (Hermitian symmetry)
are needed, and stamp positions are symmetric about the centre, so cosines see
only the even half of the data and sines the odd half.

The same code runs on NumPy, CuPy or torch arrays (the array API through
``array-api-compat``); NumPy input needs neither.

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
16 |e| >= 1 in some type: no positive image has such weighted moments, so the weighted
   stamp is dominated by noise (at SNR ~10, in the faint bands). Values are kept. Shear
   estimators drop the whole quad of a flagged object, +g and -g alike, so the cut
   selects galaxies without favouring either shear sign.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.special import sici

from .errors import BenchTypeError, BenchValueError, unknown_name

TYPES = ("noshear", "1p", "1m", "2p", "2m")
PSF_MODES = ("dilate", "gauss")
DTYPES = ("float32", "float64")
FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))

FLAG_NONFINITE = 1
FLAG_PSF_ZERO = 2
FLAG_PSF_VANISHES = 4
FLAG_BAD_MOMENTS = 8
FLAG_NOT_POSITIVE = 16


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
        The q lattice spacing is 2 pi / max(lattice, n) rad/pixel for n x n stamps; a lattice
        smaller than the stamp would alias the image. [default: 48]
    tol : float
        Relative size of the weight's transform at the lattice edge. [default: 1e-10]
    chunk : int
        Objects processed at a time (bounds memory). [default: 1024]
    dtype : {"float32", "float64"}
        Precision of the transforms and moments. float32 is twice as fast and agrees with
        float64 to ~1e-7 in e on the ngmix reference; the gauss-mode target width is always
        found in float64, since it is a threshold decision. [default: "float32"]
    """

    psf: str = "dilate"
    step: float = 0.01
    weight_fwhm: float = 1.2
    lattice: int = 48
    tol: float = 1e-6
    chunk: int = 1024
    dtype: str = "float32"

    def __post_init__(self):
        if self.psf not in PSF_MODES:
            raise unknown_name("PSF mode", self.psf, PSF_MODES)
        if not (math.isfinite(self.step) and 0 < self.step < 0.2):
            raise BenchValueError(f"step must be in (0, 0.2), got {self.step!r}")
        if not (math.isfinite(self.weight_fwhm) and self.weight_fwhm > 0):
            raise BenchValueError(f"weight_fwhm must be > 0, got {self.weight_fwhm!r}")
        if not (0 < self.tol < 1e-3):
            raise BenchValueError(f"tol must be in (0, 1e-3), got {self.tol!r}")
        if self.dtype not in DTYPES:
            raise unknown_name("dtype", self.dtype, DTYPES)
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


# --------------------------------------------------------------------------- array namespace
def _namespace(*arrays):
    """The array namespace of *arrays*: NumPy itself, or array-api-compat's wrapper for others.

    NumPy input never imports array-api-compat, so the NumPy path needs only NumPy and SciPy.
    """
    if all(isinstance(a, np.ndarray) for a in arrays):
        return np
    from array_api_compat import array_namespace
    return array_namespace(*arrays)


def _device(x):
    if isinstance(x, np.ndarray):
        return None
    from array_api_compat import device
    return device(x)


def to_numpy(x) -> np.ndarray:
    """Copy an array of any supported framework (NumPy, CuPy, torch, JAX) to host NumPy."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "get"):                      # CuPy
        return x.get()
    if hasattr(x, "detach"):                   # torch
        return x.detach().cpu().numpy()
    return np.asarray(x)


# --------------------------------------------------------------------------- lattice plan
@dataclass
class _Part:
    """One dense sub-array of a stamp in a frame: gather indices and pixel positions."""
    gather: np.ndarray | None      # (nb, na) flat pixel index, n*n for an empty cell; None: the stamp
    pa: np.ndarray                 # positions along frame axis a (na,)
    pb: np.ndarray                 # positions along frame axis b (nb,)


@dataclass
class _Frame:
    """A frame (pixel axes, or rotated by 45 degrees), its q lattice and its shear types.

    The lattice holds qa >= 0 only (Hermitian symmetry; ``W`` weights qa > 0 twice).
    """
    kind: str
    parts: list
    qa: np.ndarray
    qb: np.ndarray
    types: tuple
    scales: dict = field(default_factory=dict)   # type -> (sa, sb) of the dilated PSF lattice
    W: dict = field(default_factory=dict)        # type -> (Qb*Qa, 4) moment kernels
    ksq: dict = field(default_factory=dict)      # type -> (Qb, Qa) |S^-1 q|^2
    Sinv: dict = field(default_factory=dict)     # type -> 2x2 inverse shear matrix
    _mats: dict = field(default_factory=dict)    # (sa, sb) -> matrices, built once per plan

    def rotate_out(self, ka, kb):
        """Frame components -> pixel axes (x, y)."""
        if self.kind == "A":
            return ka, kb
        r = 1 / math.sqrt(2.0)
        return (ka - kb) * r, (ka + kb) * r

    def rotate_in(self, x, y):
        """Pixel-axis components -> frame components."""
        if self.kind == "A":
            return x, y
        r = 1 / math.sqrt(2.0)
        return (x + y) * r, (y - x) * r

    def matrices(self, sa: float = 1.0, sb: float = 1.0):
        """Per part, the folded transform matrices for the lattice scaled by (sa, sb).

        Positions are symmetric about 0, so cos needs only the even part of the data and
        sin the odd part (see :func:`_fold`), and the qb < 0 half follows from qb >= 0.
        Returns (cos(sa qa pa_even), sin(sa qa pa_odd), cos(sb qb pb_even), sin(sb qb pb_odd))
        with shapes (na_even, Qa), (na_odd, Qa), (Qb+, nb_even), (Qb+, nb_odd).
        """
        if (sa, sb) in self._mats:
            return self._mats[sa, sb]
        out = []
        qb = self.qb[:len(self.qa)]                        # the qb >= 0 half
        for p in self.parts:
            ae, ao = _fold_positions(p.pa)
            be, bo = _fold_positions(p.pb)
            out.append((np.cos(np.outer(ae, sa * self.qa)), np.sin(np.outer(ao, sa * self.qa)),
                        np.cos(np.outer(sb * qb, be)), np.sin(np.outer(sb * qb, bo))))
        self._mats[sa, sb] = out
        return out


def _fold_positions(pos: np.ndarray):
    """Positions of the even and odd parts made by :func:`_fold` (pos must be symmetric)."""
    m, h = len(pos), len(pos) // 2
    if not np.allclose(pos, -pos[::-1]):
        raise AssertionError("fold needs positions symmetric about 0")
    return (pos[:h + 1] if m % 2 else pos[:h]), pos[:h]


def _fold(xp, X, axis: int):
    """Even and odd parts of X along *axis* (1 or 2) about its centre: X[j] +- X[m-1-j], j < m/2.

    For odd m the middle element is appended to the even part (its odd part is 0).
    """
    m = X.shape[axis]
    h = m // 2

    def sl(a, b):
        return X[:, a:b] if axis == 1 else X[:, :, a:b]

    lo, hi = sl(0, h), xp.flip(sl(m - h, m), axis=axis)
    even, odd = lo + hi, lo - hi
    if m % 2:
        even = xp.concat([even, sl(h, h + 1)], axis=axis)
    return even, odd


def _parts(kind: str, n: int) -> list:
    c = (n - 1) / 2.0
    if kind == "A":
        pos = np.arange(n) - c
        return [_Part(None, pos, pos)]
    # 45-degree frame: a along (1, 1)/sqrt2 (s = x + y), b along (-1, 1)/sqrt2 (d = y - x).
    # Pixels with s even and s odd form two dense sub-lattices of spacing sqrt2.
    y, x = np.mgrid[:n, :n]
    s, d = (x + y).ravel(), (y - x).ravel()
    parts = []
    for parity in (0, 1):
        sel = np.nonzero(s % 2 == parity)[0]
        s_vals = np.arange(parity, 2 * n - 1, 2)
        d_vals = np.arange(-(n - 1) + ((n - 1 + parity) % 2), n, 2)
        gather = np.full((len(d_vals), len(s_vals)), n * n)
        gather[(d[sel] - d_vals[0]) // 2, (s[sel] - parity) // 2] = sel
        parts.append(_Part(gather, (s_vals - 2 * c) / math.sqrt(2.0), d_vals / math.sqrt(2.0)))
    return parts


@functools.lru_cache(maxsize=32)
def _plan(n: int, scale: float, cfg: "MetacalConfig") -> list:
    """The lattices and analytic kernels for stamps of size n (NumPy, cached)."""
    sig = cfg.weight_fwhm * FWHM_TO_SIGMA / scale                  # weight sigma, pixels
    D = 1.0 + 2.0 * abs(cfg.step)
    kcut = math.sqrt(2.0 * math.log(1.0 / cfg.tol)) / sig * (1 + 3 * cfg.step)
    L = max(cfg.lattice, n)
    dq = 2 * np.pi / L
    J = int(math.ceil(kcut / dq))
    qa = np.arange(0, J + 1) * dq
    qb = np.concatenate([np.arange(0, J + 1), -np.arange(1, J + 1)]) * dq     # order of _dtfts
    half_w = np.where(np.arange(J + 1) > 0, 2.0, 1.0)[None, :]
    norm = dq * dq / (4 * np.pi ** 2) * 2 * np.pi * sig * sig
    # gauss mode has an analytic target, so every type lives on the pixel-axis lattice;
    # dilate needs P(D S^-1 q) as a separable transform, so 2p/2m use the 45-degree frame
    if cfg.psf == "gauss":
        layout = (("A", TYPES),)
    else:
        layout = (("A", ("noshear", "1p", "1m")), ("B", ("2p", "2m")))
    frames = []
    for kind, types in layout:
        fr = _Frame(kind, _parts(kind, n), qa, qb, types)
        for t in types:
            S = shear_matrix(*shears(cfg.step)[t])
            Sinv = np.linalg.inv(S)
            QA, QB = np.meshgrid(qa, qb)
            qx, qy = fr.rotate_out(QA, QB)
            kx, ky = Sinv[0, 0] * qx + Sinv[0, 1] * qy, Sinv[1, 0] * qx + Sinv[1, 1] * qy
            ksq = kx * kx + ky * ky
            G = norm * np.exp(-0.5 * sig * sig * ksq) * half_w
            if cfg.psf == "dilate":
                # S is diagonal in this frame, so k = S^-1 q scales each frame axis
                ka = fr.rotate_in(*Sinv @ np.array(fr.rotate_out(1.0, 0.0)))
                kb = fr.rotate_in(*Sinv @ np.array(fr.rotate_out(0.0, 1.0)))
                if abs(ka[1]) > 1e-12 or abs(kb[0]) > 1e-12:
                    raise AssertionError(f"shear {t} is not diagonal in frame {kind}")
                fr.scales[t] = (D * ka[0], D * kb[1])
                G = G * (lanczos_ft(D * kx) * lanczos_ft(D * ky) * pixel_ft(kx) * pixel_ft(ky)
                         / (pixel_ft(D * kx) * pixel_ft(D * ky)))
            s2, s4 = sig * sig, sig ** 4
            H = np.stack([np.ones_like(kx), s2 - s4 * kx * kx, s2 - s4 * ky * ky, -s4 * kx * ky])
            fr.W[t] = (H * G[None]).reshape(4, -1).T.copy()
            fr.ksq[t] = ksq
            fr.Sinv[t] = Sinv
        frames.append(fr)
    return frames


def _dtfts(xp, parts, mats_list):
    """Real and imaginary parts of DTFTs of real stamps split into *parts*, one per lattice.

    parts: list of (M, nb, na) arrays; mats_list: per lattice, per part, the matrices of
    :meth:`_Frame.matrices`. The first contraction (over a) is shared by all lattices.
    Returns per lattice [Re, Im], each (M, Qb, Qa) in the frame's qb order (>= 0, then < 0).
    """
    out = [None] * len(mats_list)
    for ip, X in enumerate(parts):
        M, nb, na = X.shape
        Xe, Xo = _fold(xp, X, 2)
        Ca = xp.concat([mats[ip][0] for mats in mats_list], axis=1)
        Sa = xp.concat([mats[ip][1] for mats in mats_list], axis=1)
        Yc = xp.reshape(xp.reshape(Xe, (M * nb, Xe.shape[2])) @ Ca, (M, nb, Ca.shape[1]))
        Ys = xp.reshape(xp.reshape(Xo, (M * nb, Xo.shape[2])) @ Sa, (M, nb, Sa.shape[1]))
        Yce, Yco = _fold(xp, Yc, 1)
        Yse, Yso = _fold(xp, Ys, 1)
        off = 0
        for il, mats in enumerate(mats_list):
            _, _, Cb, Sb = mats[ip]
            Qa = mats[ip][0].shape[1]
            s = slice(off, off + Qa)
            off += Qa
            CC, SS = Cb @ Yce[:, :, s], Sb @ Yso[:, :, s]
            SC, CS = Sb @ Yco[:, :, s], Cb @ Yse[:, :, s]
            # exp(-i(qa pa + qb pb)) = (ca cb - sa sb) - i (sa cb + ca sb); sin flips with qb
            fr = xp.concat([CC - SS, (CC + SS)[:, 1:]], axis=1)
            fi = xp.concat([-(SC + CS), (SC - CS)[:, 1:]], axis=1)
            if out[il] is None:
                out[il] = [fr, fi]
            else:
                out[il][0] = out[il][0] + fr
                out[il][1] = out[il][1] + fi
    return out


def _split(xp, x, frame: _Frame, dev):
    """The stamp batch x (M, n, n) as the frame's dense parts."""
    if frame.parts[0].gather is None:
        return [x]
    M, n = x.shape[0], x.shape[-1]
    flat = xp.concat([xp.reshape(x, (M, n * n)), xp.zeros((M, 1), dtype=x.dtype, device=dev)], axis=1)
    return [xp.reshape(xp.take(flat, xp.asarray(p.gather.ravel(), device=dev), axis=1),
                       (M,) + p.gather.shape) for p in frame.parts]


def gauss_target_sigma(psf) -> np.ndarray:
    """ngmix's round-Gaussian target width (pixels) for each PSF image in *psf* (N, n, n).

    Accepts any supported array type; returns a host NumPy array.
    """
    xp = _namespace(psf)
    dev = _device(psf)
    N, n, _ = psf.shape
    flux = xp.sum(psf, axis=(1, 2))
    # stepk of GalSim's InterpolatedImage: box radius enclosing 99.5% of the flux around the
    # pixel at index n // 2, in quadrature with the lanczos15 range
    i0 = n // 2
    dmax = (n - 1) // 2
    boxes = xp.stack([xp.sum(psf[:, i0 - d:i0 + d + 1, i0 - d:i0 + d + 1], axis=(1, 2))
                      for d in range(1, dmax + 1)], axis=1)
    enclosed = to_numpy(boxes >= 0.995 * flux[:, None])
    first = np.where(enclosed.any(axis=1), enclosed.argmax(axis=1) + 1.5, dmax + 1.5)
    dk = np.pi / np.hypot(first, 15.0) / 4.0          # rad / pixel
    pos = np.arange(n) - (n - 1) / 2.0
    out = np.empty(N)
    for dkv in np.unique(dk):
        sel = np.nonzero(dk == dkv)[0]
        idx = xp.asarray(sel, device=dev)
        out[sel] = _gauss_sigma_group(xp, dev, xp.take(psf, idx, axis=0), xp.take(flux, idx, axis=0),
                                      float(dkv), pos)
    return out


def _re_psf_half_planes(xp, dev, pe, po, ix, iy, dk, pos):
    """Re PSF(k) times the lanczos15 transform on the lattice (+-ix, iy) dk, ix, iy >= 0.

    pe, po: the PSF folded along x (:func:`_fold`). Returns (values at +ix, values at -ix),
    each (M, len(iy), len(ix)).
    """
    kx, ky = ix * dk, iy * dk
    pos_e, pos_o = _fold_positions(pos)
    Yce, _ = _fold(xp, pe @ xp.asarray(np.cos(np.outer(pos_e, kx)), device=dev), 1)
    _, Yso = _fold(xp, po @ xp.asarray(np.sin(np.outer(pos_o, kx)), device=dev), 1)
    # Re sum p[y, x] exp(-i(kx x + ky y)) = sum p (cos kx x cos ky y - sin kx x sin ky y)
    CC = xp.asarray(np.cos(np.outer(ky, pos_e)), device=dev) @ Yce
    SS = xp.asarray(np.sin(np.outer(ky, pos_o)), device=dev) @ Yso
    u = xp.asarray(lanczos_ft(kx)[None, :] * lanczos_ft(ky)[:, None], device=dev)
    return (CC - SS) * u, (CC + SS) * u


def _gauss_sigma_group(xp, dev, p, flux, dk, pos):
    thresh = (1e-2 * flux)[:, None, None]
    pe, po = _fold(xp, p, 2)
    # coarse pass (every 4th lattice point) bounds the crossing radius
    kmax = 3.2
    M = int(math.ceil(kmax / dk))
    ix = iy = np.arange(0, M + 1, 4)
    rp, rm = _re_psf_half_planes(xp, dev, pe, po, ix, iy, dk, pos)
    below = to_numpy((rp < thresh) | (rm < thresh))
    r2 = (ix[None, :] ** 2 + iy[:, None] ** 2) * dk * dk
    rc = np.sqrt(np.where(below, r2[None], np.inf).min(axis=(1, 2)))
    rc = np.where(np.isfinite(rc), rc, kmax)
    Mf = int(math.ceil(rc.max() / dk)) + 3
    ix = iy = np.arange(0, Mf + 1)
    rp, rm = _re_psf_half_planes(xp, dev, pe, po, ix, iy, dk, pos)
    # ngmix labels lattice point (ix, iy) with ((ix - 1/2)^2 + (iy - 1/2)^2) dk^2 (its meshgrid is
    # offset by half a cell on odd-sized k images); Re PSF is even, so (-ix, -iy) has the same value
    X, Y = ix[None, :], iy[:, None]
    lab_p = np.minimum((X - 0.5) ** 2 + (Y - 0.5) ** 2, (X + 0.5) ** 2 + (Y + 0.5) ** 2) * dk * dk
    lab_m = np.minimum((X + 0.5) ** 2 + (Y - 0.5) ** 2, (X - 0.5) ** 2 + (Y + 0.5) ** 2) * dk * dk
    ksq_max = np.minimum(np.where(to_numpy(rp < thresh), lab_p[None], np.inf).min(axis=(1, 2)),
                         np.where(to_numpy(rm < thresh), lab_m[None], np.inf).min(axis=(1, 2)))
    return np.sqrt(-2.0 * math.log(3e-3) / ksq_max)


# --------------------------------------------------------------------------- core
def _metacal_chunk(xp, dev, frames, image, psf, x0, y0, cfg: MetacalConfig, scale: float,
                   deconvolved=None):
    """Moments of the five metacal images for one chunk; returns host NumPy arrays."""
    N = image.shape[0]
    D = 1.0 + 2.0 * abs(cfg.step)
    dilate = cfg.psf == "dilate"
    flux = xp.sum(psf, axis=(1, 2))
    if not dilate:
        gsig = xp.asarray(gauss_target_sigma(xp.astype(psf, xp.float64)), device=dev, dtype=psf.dtype)
    offset = bool(np.any(x0 != 0) or np.any(y0 != 0))
    moments = {}
    for fr in frames:
        def mats(sa=1.0, sb=1.0):
            return [tuple(xp.asarray(m, device=dev, dtype=image.dtype) for m in pair) for pair in fr.matrices(sa, sb)]

        base = mats()
        src = image if deconvolved is None else deconvolved
        (Ir, Ii), = _dtfts(xp, _split(xp, src, fr, dev), [base])
        lattices = [] if deconvolved is not None else [base]
        if dilate:
            lattices += [mats(*fr.scales[t]) for t in fr.types]
        Ps = _dtfts(xp, _split(xp, psf, fr, dev), lattices) if lattices else []
        if deconvolved is None:
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
                a0, b0 = fr.rotate_in(X0[0], X0[1])
                pa = xp.asarray(a0[:, None, None] * fr.qa[None, None, :], device=dev, dtype=image.dtype)
                pb = xp.asarray(b0[:, None, None] * fr.qb[None, :, None], device=dev, dtype=image.dtype)
                ca, sa, cb, sb = xp.cos(pa), xp.sin(pa), xp.cos(pb), xp.sin(pb)
                Vr = Vr * (ca * cb - sa * sb) - Vi * (sa * cb + ca * sb)
            if not dilate:
                ksq = xp.asarray(fr.ksq[t], device=dev, dtype=image.dtype)
                Vr = Vr * (flux[:, None, None] * xp.exp(-0.5 * (D * gsig[:, None, None]) ** 2 * ksq))
            moments[t] = xp.reshape(Vr, (N, -1)) @ xp.asarray(fr.W[t], device=dev, dtype=image.dtype)   # (N, 4)
    res = {}
    flags = np.zeros(N, np.int32)
    for t in TYPES:
        m = to_numpy(moments[t])
        bad = ~np.isfinite(m).all(axis=1)
        flags[bad] |= FLAG_PSF_VANISHES
        m0, mxx, myy, mxy = m.T
        T = mxx + myy
        okm = ~bad & (m0 > 0) & (T > 0)
        flags[~bad & ~okm] |= FLAG_BAD_MOMENTS
        with np.errstate(divide="ignore", invalid="ignore"):
            res[f"{t}_e1"] = np.where(okm, (mxx - myy) / T, np.nan)
            res[f"{t}_e2"] = np.where(okm, 2 * mxy / T, np.nan)
            res[f"{t}_T"] = np.where(okm, T / m0 * scale * scale, np.nan)
        flags[okm & (np.hypot(res[f"{t}_e1"], res[f"{t}_e2"]) >= 1)] |= FLAG_NOT_POSITIVE
    res["flags"] = flags
    return res


def metacal(image, psf, *, pixel_scale: float, row=None, col=None, config: MetacalConfig | None = None,
            deconvolved=None, **kwargs) -> dict[str, np.ndarray]:
    """Metacalibration of a batch of stamps.

    The same code runs on NumPy, CuPy and torch arrays (through the array API); the
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
        Settings; keyword arguments (``psf``, ``step``, ...) build one instead. [default: MetacalConfig()]
    deconvolved : array, optional
        A method's deconvolved (pre-PSF) images, same shape as *image*. When given, metacal
        shears and reconvolves these instead of dividing by the PSF (the real-space path).
        [default: None]

    Returns
    -------
    dict of numpy.ndarray
        ``{type}_e1``, ``{type}_e2``, ``{type}_T`` (arcsec^2) for the five types, ``R11``, ``R22``,
        ``flags`` and ``time_s``; each (N,) or (N, B) for multi-band input, on the host.
        Flagged objects hold NaN.

    References
    ----------
    Huff & Mandelbaum 2017, arXiv:1702.02600; Sheldon & Huff 2017, ApJ 841, 24.
    """
    if config is None:
        if "psf_mode" in kwargs:
            kwargs["psf"] = kwargs.pop("psf_mode")
        config = MetacalConfig(**kwargs)
    elif kwargs:
        raise BenchTypeError(f"give either config or keyword settings, not both: {sorted(kwargs)}")
    if isinstance(image, (list, tuple)) or np.isscalar(image):
        image = np.asarray(image)
    if isinstance(psf, (list, tuple)) or np.isscalar(psf):
        psf = np.asarray(psf)
    xp = _namespace(image, psf)
    dev = _device(image)
    if image.ndim not in (3, 4):
        raise BenchTypeError(f"image must have 3 or 4 dimensions (N, [B,] n, n), got shape {tuple(image.shape)}")
    if tuple(psf.shape) != tuple(image.shape):
        raise BenchValueError(f"psf shape {tuple(psf.shape)} does not match image shape {tuple(image.shape)}")
    if image.shape[-1] != image.shape[-2]:
        raise BenchValueError(f"stamps must be square, got {tuple(image.shape[-2:])}")
    if not (math.isfinite(pixel_scale) and pixel_scale > 0):
        raise BenchValueError(f"pixel_scale must be > 0, got {pixel_scale!r}")
    t0 = time.perf_counter()
    N, n = image.shape[0], image.shape[-1]
    multiband = image.ndim == 4
    B = image.shape[1] if multiband else 1
    ftype = getattr(xp, config.dtype)
    img = xp.astype(xp.reshape(image, (N * B, n, n)), ftype)
    ps = xp.astype(xp.reshape(psf, (N * B, n, n)), ftype)
    dec = None
    if deconvolved is not None:
        if tuple(deconvolved.shape) != tuple(image.shape):
            raise BenchValueError(f"deconvolved shape {tuple(deconvolved.shape)} does not match "
                                  f"image shape {tuple(image.shape)}")
        dec = xp.astype(xp.reshape(deconvolved, (N * B, n, n)), ftype)
    c = (n - 1) / 2.0
    row = np.full(N, c) if row is None else to_numpy(row).astype(np.float64)
    col = np.full(N, c) if col is None else to_numpy(col).astype(np.float64)
    if row.shape != (N,) or col.shape != (N,):
        raise BenchValueError(f"row and col must have shape ({N},), got {row.shape} and {col.shape}")
    y0 = np.repeat(row - c, B)
    x0 = np.repeat(col - c, B)

    flags = np.zeros(N * B, np.int32)
    finite = xp.all(xp.isfinite(img), axis=(1, 2)) & xp.all(xp.isfinite(ps), axis=(1, 2))
    if dec is not None:
        finite = finite & xp.all(xp.isfinite(dec), axis=(1, 2))
    finite = to_numpy(finite)
    flags[~finite] |= FLAG_NONFINITE
    psf_ok = to_numpy(xp.sum(ps, axis=(1, 2)) > 0)
    flags[finite & ~psf_ok] |= FLAG_PSF_ZERO
    good = np.nonzero(finite & psf_ok)[0]

    frames = _plan(n, float(pixel_scale), config)
    out = {f"{t}_{q}": np.full(N * B, np.nan) for t in TYPES for q in ("e1", "e2", "T")}
    for s in range(0, len(good), config.chunk):
        idx = good[s:s + config.chunk]
        sel = xp.asarray(idx, device=dev)
        r = _metacal_chunk(xp, dev, frames, xp.take(img, sel, axis=0), xp.take(ps, sel, axis=0),
                           x0[idx], y0[idx], config, float(pixel_scale),
                           None if dec is None else xp.take(dec, sel, axis=0))
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
    from .cli import make_parser

    p = make_parser("python -m bench.metacal", "Batched metacalibration of stamps in an npz file.")
    p.add_argument("input", help="npz with image, psf, noise_sigma, pixel_scale [, row, col]")
    p.add_argument("--out", required=True, help="output npz")
    p.add_argument("--method", default="fourier", help="registered deconvolution method [fourier]")
    p.add_argument("--psf", default="dilate", help="target PSF: dilate or gauss [dilate]")
    p.add_argument("--step", type=float, default=0.01, help="shear step [0.01]")
    p.add_argument("--weight-fwhm", type=float, default=1.2, help="moment weight FWHM, arcsec [1.2]")
    p.add_argument("--device", default="cpu", help="cpu or cuda [cpu]")
    p.add_argument("--workers", type=int, default=None,
                   help="run on a local Dask cluster of this many worker processes [one process, no Dask]")
    p.add_argument("--scheduler", default=None, help="run on the Dask scheduler at tcp://HOST:PORT")
    p.add_argument("--shard-size", type=int, default=None,
                   help="samples per Dask task, a multiple of 4 [4096]")
    p.add_argument("--work-dir", default=None,
                   help="where Dask shards are kept until the output is written; an interrupted run "
                        "started again with the same input and options continues there [OUT.parts]")
    a = p.parse_args(argv)

    from methods import get_method, get_method_class

    cfg = MetacalConfig(psf=a.psf, step=a.step, weight_fwhm=a.weight_fwhm)
    if a.device not in ("cpu", "cuda"):
        raise unknown_name("device", a.device, ("cpu", "cuda"))
    cls = get_method_class(a.method)
    if a.device == "cuda":
        from .devices import cuda_unavailable_reason, module_missing
        why = cuda_unavailable_reason() or ("CuPy is not installed (pip install '.[gpu]')"
                                            if module_missing("cupy") else "")
        if why:
            raise BenchValueError(f"--device cuda is unavailable here: {why}")
    d = _load_input(a.input)
    _validate_input(d)
    if a.workers is not None or a.scheduler:
        return _main_distributed(a, d, cfg)
    if a.shard_size is not None or a.work_dir is not None:
        raise BenchValueError("--shard-size and --work-dir need --workers or --scheduler")
    if a.device == "cuda":
        import cupy
        d["image"], d["psf"] = cupy.asarray(d["image"]), cupy.asarray(d["psf"])
    deconvolved = None
    if cls.produces_image:
        from methods.registry import deconvolve_numpy

        method = get_method(a.method, device=a.device)
        img4 = d["image"] if d["image"].ndim == 4 else d["image"][:, None]
        psf4 = d["psf"] if d["psf"].ndim == 4 else d["psf"][:, None]
        ns = np.asarray(d["noise_sigma"], dtype=img4.dtype)
        ns = ns if ns.ndim == 2 else ns[:, None]
        deconvolved = deconvolve_numpy(method, to_numpy(img4), to_numpy(psf4), ns,
                                       device=a.device).reshape(d["image"].shape)
    out = metacal(d["image"], d["psf"], pixel_scale=float(d["pixel_scale"]), row=d.get("row"),
                  col=d.get("col"), config=cfg, deconvolved=deconvolved)
    _write_output(a, out)
    return 0


def _write_output(a, out) -> None:
    import os

    nflag = int(np.count_nonzero(out["flags"]))
    tmp = a.out + ".tmp.npz"
    np.savez(tmp, **out)
    os.replace(tmp, a.out)
    print(f"metacal ({a.method}, {a.psf}): {out['flags'].size} objects, {nflag} flagged, "
          f"{float(out['time_s']):.3f} s -> {a.out}")


def _main_distributed(a, d, cfg) -> int:
    """The same computation as shards on Dask: the input becomes a chunked HDF5 file the workers read."""
    import shutil
    from dataclasses import asdict
    from pathlib import Path

    from .distributed import SHARD_SIZE, connect, gather_outputs, run_shards, shard_bounds, write_h5

    if a.workers is not None and a.scheduler:
        raise BenchValueError("give --workers or --scheduler, not both")
    shard = SHARD_SIZE if a.shard_size is None else a.shard_size
    shard_bounds(len(d["image"]), shard)                          # validates the size before any work
    work = Path(a.work_dir or a.out + ".parts")
    work.mkdir(parents=True, exist_ok=True)
    source = work / "input.h5"
    if not source.exists():
        write_h5(source, {k: v for k, v in d.items() if k in ("image", "psf", "noise_sigma", "row", "col",
                                                                "pixel_scale")})
    kwargs = {k: v for k, v in asdict(cfg).items() if k not in ("chunk", "psf")}
    kwargs["psf_mode"] = cfg.psf        # "psf" would collide with metacal's psf argument
    client = connect(a.scheduler, a.workers, device=a.device)
    try:
        paths = run_shards(client, source, len(d["image"]), work / "shards", shard_size=shard,
                           metacal_kwargs=kwargs, method=a.method, device=a.device)
    finally:
        client.close()
    _write_output(a, gather_outputs(paths))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    import sys

    from .cli import run_cli

    sys.exit(run_cli(main, prog="python -m bench.metacal"))
