"""The q lattices of the exact Fourier metacal and the folded DTFTs that fill them.

See :mod:`bench.metacal.engine` for the method. A *frame* is the pixel axes ("A") or the
axes rotated by 45 degrees ("B", where the 2p/2m shears are diagonal and the stamp splits
into two dense sub-lattices); its lattice holds qa >= 0 only (Hermitian symmetry).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import BenchValueError
from ..fourier import lanczos_ft, pixel_ft
from .config import FWHM_TO_SIGMA, TYPES, MetacalConfig, shear_matrix, shears

#: kernels whose target is a round Gaussian, known analytically on any lattice
GAUSSIAN_KERNELS = ("gauss", "azgauss", "fitgauss")   # round Gaussian targets, analytic on any lattice


@dataclass
class Part:
    """One dense sub-array of a stamp in a frame: gather indices and pixel positions."""
    gather: np.ndarray | None      # (nb, na) flat pixel index, n*n for an empty cell; None: the stamp
    pa: np.ndarray                 # positions along frame axis a (na,)
    pb: np.ndarray                 # positions along frame axis b (nb,)


@dataclass
class Frame:
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
        """Per part, the transform matrices for the lattice scaled by (sa, sb).

        Returns (A, B): ``A = [cos(sa pa qa) | sin(sa pa qa)]``, shape (na, 2 Qa), and
        ``B = [cos(sb qb pb); sin(sb qb pb)]`` for qb >= 0, shape (2 Qb+, nb); the qb < 0
        half follows from qb >= 0 (:func:`dtfts`). Built once per plan and scale.
        """
        if (sa, sb) in self._mats:
            return self._mats[sa, sb]
        out = []
        qb = self.qb[:len(self.qa)]                        # the qb >= 0 half
        for p in self.parts:
            A = np.concatenate([np.cos(np.outer(p.pa, sa * self.qa)), np.sin(np.outer(p.pa, sa * self.qa))], axis=1)
            B = np.concatenate([np.cos(np.outer(sb * qb, p.pb)), np.sin(np.outer(sb * qb, p.pb))], axis=0)
            out.append((A, B))
        self._mats[sa, sb] = out
        return out


def fold_positions(pos: np.ndarray):
    """Positions of the even and odd parts made by :func:`fold` (pos must be symmetric)."""
    m, h = len(pos), len(pos) // 2
    if not np.allclose(pos, -pos[::-1]):
        raise AssertionError("fold needs positions symmetric about 0")
    return (pos[:h + 1] if m % 2 else pos[:h]), pos[:h]


def fold(xp, X, axis: int):
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


def parts(kind: str, n: int) -> list:
    c = (n - 1) / 2.0
    if kind == "A":
        pos = np.arange(n) - c
        return [Part(None, pos, pos)]
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
        parts.append(Part(gather, (s_vals - 2 * c) / math.sqrt(2.0), d_vals / math.sqrt(2.0)))
    return parts


def plan(n: int, scale: float, cfg: MetacalConfig) -> list:
    """The lattices and analytic kernels for stamps of size n under *cfg* (NumPy, cached)."""
    return _plan(n, scale, cfg.kernel == "dilate", cfg.step, cfg.weight_fwhm, cfg.lattice, cfg.tol)


@functools.lru_cache(maxsize=32)
def _plan(n: int, scale: float, dilate: bool, step: float, weight_fwhm: float, lattice: int, tol: float):
    sig = weight_fwhm * FWHM_TO_SIGMA / scale                  # weight sigma, pixels
    D = 1.0 + 2.0 * abs(step)
    kcut = math.sqrt(2.0 * math.log(1.0 / tol)) / sig * (1 + 3 * step)
    L = max(lattice, n)
    dq = 2 * np.pi / L
    J = int(math.ceil(kcut / dq))
    if sig < 0.5:
        raise BenchValueError(f"weight_fwhm {weight_fwhm!r} arcsec is {sig / FWHM_TO_SIGMA:.3g} pixels at "
                              f"{scale!r} arcsec/pixel: the weight must be at least {0.5 / FWHM_TO_SIGMA:.2f} "
                              f"pixels (FWHM) to be sampled")
    if sig > 4 * n:
        raise BenchValueError(f"weight_fwhm {weight_fwhm!r} arcsec is {sig / FWHM_TO_SIGMA:.3g} pixels at "
                              f"{scale!r} arcsec/pixel, far wider than the {n}-pixel stamp")
    qa = np.arange(0, J + 1) * dq
    qb = np.concatenate([np.arange(0, J + 1), -np.arange(1, J + 1)]) * dq     # order of dtfts
    half_w = np.where(np.arange(J + 1) > 0, 2.0, 1.0)[None, :]
    norm = dq * dq / (4 * np.pi ** 2) * 2 * np.pi * sig * sig
    # gauss mode has an analytic target, so every type lives on the pixel-axis lattice;
    # dilate needs P(D S^-1 q) as a separable transform, so 2p/2m use the 45-degree frame
    if not dilate:
        layout = (("A", TYPES),)
    else:
        layout = (("A", ("noshear", "1p", "1m")), ("B", ("2p", "2m")))
    frames = []
    for kind, types in layout:
        fr = Frame(kind, parts(kind, n), qa, qb, types)
        for t in types:
            S = shear_matrix(*shears(step)[t])
            Sinv = np.linalg.inv(S)
            QA, QB = np.meshgrid(qa, qb)
            qx, qy = fr.rotate_out(QA, QB)
            kx, ky = Sinv[0, 0] * qx + Sinv[0, 1] * qy, Sinv[1, 0] * qx + Sinv[1, 1] * qy
            ksq = kx * kx + ky * ky
            G = norm * np.exp(-0.5 * sig * sig * ksq) * half_w
            if dilate:
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


def dtfts(xp, parts, mats_list):
    """Real and imaginary parts of DTFTs of real stamps split into *parts*, one per lattice.

    parts: per part of the frame, a list of (M_i, nb, na) stamp batches (transformed as one
    batch of sum M_i); mats_list: per lattice, per part, the matrices of :meth:`Frame.matrices`.
    The stamps are laid out (nb, M * na) once, so each contraction is one matrix product for
    the whole batch (a stacked product per stamp is several times slower); the contraction
    over b is shared by all lattices.
    Returns per lattice [Re, Im], each (Qb, M, Qa) in the frame's qb order (>= 0, then < 0).
    """
    out = [None] * len(mats_list)
    for ip, batches in enumerate(parts):
        nb, na = batches[0].shape[1:]
        Xt = xp.concat([xp.permute_dims(x, (1, 0, 2)) for x in batches], axis=1)     # (nb, M, na)
        M = Xt.shape[1]
        Bt = xp.concat([mats[ip][1] for mats in mats_list], axis=0) @ xp.reshape(Xt, (nb, M * na))
        off = 0
        for il, mats in enumerate(mats_list):
            A, B = mats[ip]
            h, Qa = B.shape[0] // 2, A.shape[1] // 2
            Y = xp.reshape(xp.reshape(Bt[off:off + 2 * h], (2 * h * M, na)) @ A, (2 * h, M, 2 * Qa))
            off += 2 * h
            CC, CS, SC, SS = Y[:h, :, :Qa], Y[:h, :, Qa:], Y[h:, :, :Qa], Y[h:, :, Qa:]
            # exp(-i(qa pa + qb pb)) = (ca cb - sa sb) - i (sa cb + ca sb); sin flips with qb
            fr = xp.concat([CC - SS, (CC + SS)[1:]], axis=0)
            fi = xp.concat([-(SC + CS), (SC - CS)[1:]], axis=0)
            if out[il] is None:
                out[il] = [fr, fi]
            else:
                out[il][0] = out[il][0] + fr
                out[il][1] = out[il][1] + fi
    return out


def split(xp, batches, frame: Frame, dev):
    """The stamp batches (each (M_i, n, n)) as the frame's dense parts: per part, a list of batches."""
    if frame.parts[0].gather is None:
        return [list(batches)]

    def gather(x, p):
        M, n = x.shape[0], x.shape[-1]
        flat = xp.concat([xp.reshape(x, (M, n * n)), xp.zeros((M, 1), dtype=x.dtype, device=dev)], axis=1)
        return xp.reshape(xp.take(flat, xp.asarray(p.gather.ravel(), device=dev), axis=1), (M,) + p.gather.shape)

    return [[gather(x, p) for x in batches] for p in frame.parts]
