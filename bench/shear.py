"""Shear estimators from metacal outputs: mean shear, multiplicative m and additive c.

The datasets come in quads (one galaxy at rotations 0 and 90 degrees, each sheared
by +g and -g with the same noise for +g and -g), so shape noise and most pixel
noise cancel in the difference of the +g and -g halves. For a set of quads

    g1(+-) = <e1>(+-) / <R11>(+-)
    m      = (g1(+) - g1(-)) / (2 g) - 1
    c1     = (g1(+) + g1(-)) / 2
    c2     = <e2> / <R22>           (all four members; the true g2 is 0)

with jackknife errors over groups of whole quads. A quad with any flagged member
is dropped entirely, so the cancellation survives; the number dropped is reported.

Multi-band metacal output (N, B) is combined into one shear with
:func:`combine_bands`: e and R averaged over bands with equal (or given) weights,
which keeps ``<e> / <R>`` unbiased because the response is averaged the same way.

Accumulate over batches with :class:`ShearBiasMetric` (``update`` per batch,
``compute`` at the end), as BTK's metrics do.

References
----------
Pujol et al. 2019, A&A 621, A2 (paired shear simulations); Sheldon & Huff 2017, ApJ 841, 24.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import BenchValueError

#: Per-quad sums kept by the metric: e1 and R11 of the +g and -g halves, e2 and R22 of all four.
_SUMS = ("e1_p", "R11_p", "n_p", "e1_m", "R11_m", "n_m", "e2", "R22", "n")


def combine_bands(out: dict, weights=None) -> dict:
    """Average per-band metacal arrays (N, B) over bands into (N,) arrays.

    Parameters
    ----------
    out : dict
        :func:`bench.metacal.metacal` output for multi-band input.
    weights : array_like, shape (B,), optional
        Band weights (normalised here). [default: equal weights]

    Returns
    -------
    dict
        The same keys, each (N,); ``flags`` is the bitwise OR over bands.
    """
    flags = np.asarray(out["flags"])
    if flags.ndim == 1:
        return dict(out)
    B = flags.shape[1]
    w = np.full(B, 1.0 / B) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (B,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise BenchValueError(f"band weights must be {B} non-negative numbers with a positive sum, got {weights!r}")
    w = w / w.sum()
    res = {}
    for k, v in out.items():
        v = np.asarray(v)
        if k == "flags":
            res[k] = np.bitwise_or.reduce(v, axis=1)
        elif v.ndim == 2:
            res[k] = v @ w
        else:
            res[k] = v
    return res


@dataclass(frozen=True)
class ShearBias:
    """m, c1, c2 with jackknife errors for one set of quads."""

    m: float
    m_err: float
    c1: float
    c1_err: float
    c2: float
    c2_err: float
    g1_plus: float
    g1_minus: float
    R11: float
    R22: float
    n_quads: int
    n_dropped: int


def _estimate(s: dict, g: float) -> np.ndarray:
    """(m, c1, c2, g1+, g1-) from summed per-quad statistics."""
    g1p = s["e1_p"] / s["R11_p"]
    g1m = s["e1_m"] / s["R11_m"]
    return np.array([(g1p - g1m) / (2 * g) - 1, 0.5 * (g1p + g1m), s["e2"] / s["R22"], g1p, g1m])


def bias_from_quad_sums(sums: dict, g: float, *, n_jackknife: int = 100, n_dropped: int = 0) -> ShearBias:
    """m and c with delete-one-group jackknife errors from per-quad sums (each (Q,)).

    Parameters
    ----------
    sums : dict of ndarray
        The :data:`_SUMS` keys, one entry per quad.
    g : float
        The applied shear magnitude.
    n_jackknife : int
        Number of jackknife groups (contiguous blocks of quads). [default: 100]
    n_dropped : int
        Quads already dropped for flags, reported as is. [default: 0]
    """
    Q = len(sums["n"])
    if Q < 2:
        raise BenchValueError(f"need at least 2 unflagged quads for a jackknife, got {Q}")
    total = {k: float(np.sum(v)) for k, v in sums.items()}
    est = _estimate(total, g)
    K = min(n_jackknife, Q)
    groups = np.array_split(np.arange(Q), K)
    jk = np.array([_estimate({k: total[k] - float(np.sum(sums[k][idx])) for k in sums}, g)
                   for idx in groups])
    err = np.sqrt((K - 1) / K * np.sum((jk - jk.mean(axis=0)) ** 2, axis=0))
    return ShearBias(m=est[0], m_err=err[0], c1=est[1], c1_err=err[1], c2=est[2], c2_err=err[2],
                     g1_plus=est[3], g1_minus=est[4], R11=total["R11_p"] / total["n_p"],
                     R22=total["R22"] / total["n"], n_quads=Q, n_dropped=n_dropped)


class ShearBiasMetric:
    """Accumulate metacal results over batches; m and c per SNR bin at the end.

    Parameters
    ----------
    g : float
        Applied shear magnitude of the dataset (g1 = +-g).
    n_jackknife : int
        Jackknife groups per estimate. [default: 100]
    """

    def __init__(self, g: float, *, n_jackknife: int = 100):
        if not (np.isfinite(g) and g > 0):
            raise BenchValueError(f"g must be > 0, got {g!r}")
        self.g = float(g)
        self.n_jackknife = int(n_jackknife)
        self._quads: dict[int, dict] = {}
        self._bin: dict[int, int] = {}
        self._bad: set[int] = set()

    def update(self, out: dict, *, quad_id, shear_sign, snr_bin=None) -> None:
        """Add one batch: metacal output (single-band, or combined with :func:`combine_bands`).

        Members of a quad may arrive in different batches.
        """
        out = combine_bands(out)
        quad_id = np.asarray(quad_id)
        sign = np.asarray(shear_sign)
        snr_bin = np.zeros(len(quad_id), int) if snr_bin is None else np.asarray(snr_bin)
        if not (len(sign) == len(quad_id) == len(snr_bin) == len(out["flags"])):
            raise BenchValueError(
                f"quad_id, shear_sign, snr_bin and the metacal output differ in length: "
                f"{len(quad_id)}, {len(sign)}, {len(snr_bin)}, {len(out['flags'])}")
        if not np.all(np.isin(sign, (-1, 1))):
            raise BenchValueError(f"shear_sign must be +1 or -1, got values {np.unique(sign).tolist()}")
        e1, e2 = np.asarray(out["noshear_e1"]), np.asarray(out["noshear_e2"])
        R11, R22 = np.asarray(out["R11"]), np.asarray(out["R22"])
        bad = (np.asarray(out["flags"]) != 0) | ~np.isfinite(e1 + e2 + R11 + R22)
        for i, q in enumerate(quad_id.tolist()):
            self._bin[q] = int(snr_bin[i])
            if bad[i]:
                self._bad.add(q)
                continue
            s = self._quads.setdefault(q, dict.fromkeys(_SUMS, 0.0))
            h = "p" if sign[i] > 0 else "m"
            s[f"e1_{h}"] += e1[i]
            s[f"R11_{h}"] += R11[i]
            s[f"n_{h}"] += 1
            s["e2"] += e2[i]
            s["R22"] += R22[i]
            s["n"] += 1

    def compute(self, *, by_bin: bool = True):
        """A pandas DataFrame: one row per SNR bin (and ``all``) with m, c and their errors."""
        import pandas as pd

        good = [q for q in self._quads if q not in self._bad
                and self._quads[q]["n_p"] > 0 and self._quads[q]["n_m"] > 0]
        rows = []
        labels = sorted({self._bin[q] for q in good}) if by_bin else []
        for label in labels + ["all"]:
            qs = good if label == "all" else [q for q in good if self._bin[q] == label]
            dropped = len({q for q in self._bad if label == "all" or self._bin.get(q) == label})
            if len(qs) < 2:
                # too few quads for a jackknife: reported as NaN with the counts, so that one
                # nearly empty bin does not fail the whole table
                nan = float("nan")
                rows.append({"snr_bin": label, **dict.fromkeys(ShearBias.__dataclass_fields__, nan),
                             "n_quads": len(qs), "n_dropped": dropped})
                continue
            sums = {k: np.array([self._quads[q][k] for q in qs]) for k in _SUMS}
            b = bias_from_quad_sums(sums, self.g, n_jackknife=self.n_jackknife, n_dropped=dropped)
            rows.append({"snr_bin": label, **b.__dict__})
        return pd.DataFrame(rows).set_index("snr_bin")


def shear_bias(out: dict, *, quad_id, shear_sign, g: float, snr_bin=None, n_jackknife: int = 100):
    """m and c of one metacal output in a single call (see :class:`ShearBiasMetric`)."""
    metric = ShearBiasMetric(g, n_jackknife=n_jackknife)
    metric.update(out, quad_id=quad_id, shear_sign=shear_sign, snr_bin=snr_bin)
    return metric.compute(by_bin=snr_bin is not None)
