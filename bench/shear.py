"""Shear estimators from metacal outputs: mean shear, multiplicative m and additive c.

The datasets come in quads (one galaxy at rotations 0 and 90 degrees, each sheared
by +g and -g with the same noise for +g and -g), so shape noise and most pixel
noise cancel in the difference of the +g and -g halves. For a set of quads

    g1(+-) = <e1>(+-) / <R11>(+-)
    m      = (g1(+) - g1(-)) / (2 g) - 1
    c1     = (g1(+) + g1(-)) / 2
    c2     = <e2> / <R22>           (all four members; the true g2 is 0)

with jackknife errors over blocks of whole quads. The blocks are fixed by quad id
(contiguous ranges of ids, :func:`jackknife_blocks`), not by which quads survived, so two
runs on one dataset share their blocks and their leave-one-block-out replicates can be
differenced pairwise (the regression gate does, :mod:`bench.compare`). A quad with any
flagged member is dropped entirely, so the cancellation survives; the number dropped is
reported.

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


def jackknife_blocks(quad_id, n_quads: int, n_blocks: int) -> np.ndarray:
    """The jackknife block of each quad: ids cut into *n_blocks* contiguous ranges of ``0..n_quads-1``.

    A quad's block depends on its id alone, so two runs of one dataset (whatever they flag)
    put a quad in the same block. Parameters: *quad_id* (Q,) ints in ``[0, n_quads)``;
    *n_quads*, the dataset's number of quads; *n_blocks*, the number of blocks.
    """
    q = np.asarray(quad_id, dtype=np.int64)
    return (q * int(n_blocks)) // max(int(n_quads), 1)


@dataclass(frozen=True)
class ShearBias:
    """m, c1, c2 with jackknife errors for one set of quads.

    ``m_jackknife``, ``c1_jackknife``, ``c2_jackknife`` are the leave-one-block-out estimates,
    one per block (NaN where a block holds none of these quads), for pairing two runs.
    """

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
    m_jackknife: tuple = ()
    c1_jackknife: tuple = ()
    c2_jackknife: tuple = ()


def _estimate(s: dict, g: float) -> np.ndarray:
    """(m, c1, c2, g1+, g1-) from summed per-quad statistics."""
    g1p = s["e1_p"] / s["R11_p"]
    g1m = s["e1_m"] / s["R11_m"]
    return np.array([(g1p - g1m) / (2 * g) - 1, 0.5 * (g1p + g1m), s["e2"] / s["R22"], g1p, g1m])


def bias_from_quad_sums(sums: dict, g: float, *, n_jackknife: int = 100, n_dropped: int = 0,
                        blocks=None) -> ShearBias:
    """m and c with delete-one-block jackknife errors from per-quad sums (each (Q,)).

    Parameters
    ----------
    sums : dict of ndarray
        The :data:`_SUMS` keys, one entry per quad.
    g : float
        The applied shear magnitude.
    n_jackknife : int
        Number of jackknife blocks. [default: 100]
    n_dropped : int
        Quads already dropped for flags, reported as is. [default: 0]
    blocks : array_like of int, shape (Q,), optional
        Each quad's block in ``[0, n_jackknife)`` (:func:`jackknife_blocks`); empty blocks are
        left out of the error and give NaN replicates. [default: *n_jackknife* contiguous
        blocks of the quads in the order given]
    """
    Q = len(sums["n"])
    if Q < 2:
        raise BenchValueError(f"need at least 2 unflagged quads for a jackknife, got {Q}")
    total = {k: float(np.sum(v)) for k, v in sums.items()}
    est = _estimate(total, g)
    K = int(n_jackknife)
    if blocks is None:
        K = min(K, Q)
        blocks = np.repeat(np.arange(K), [len(a) for a in np.array_split(np.arange(Q), K)])
    blocks = np.asarray(blocks, dtype=np.int64)
    if blocks.shape != (Q,) or (Q and (blocks.min() < 0 or blocks.max() >= K)):
        raise BenchValueError(f"blocks must be {Q} integers in [0, {K}), got shape {blocks.shape} "
                              f"and range [{blocks.min() if Q else None}, {blocks.max() if Q else None}]")
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in sums.items()}
    in_block = {k: np.bincount(blocks, weights=v, minlength=K) for k, v in arrays.items()}
    used = np.bincount(blocks, minlength=K) > 0
    jk = np.full((K, 5), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in np.flatnonzero(used):
            jk[i] = _estimate({k: total[k] - in_block[k][i] for k in sums}, g)
    k_used = int(used.sum())
    if k_used < 2:
        err = np.full(5, np.nan)
    else:
        good = jk[used]
        err = np.sqrt((k_used - 1) / k_used * np.sum((good - good.mean(axis=0)) ** 2, axis=0))
    return ShearBias(m=est[0], m_err=err[0], c1=est[1], c1_err=err[1], c2=est[2], c2_err=err[2],
                     g1_plus=est[3], g1_minus=est[4], R11=total["R11_p"] / total["n_p"],
                     R22=total["R22"] / total["n"], n_quads=Q, n_dropped=n_dropped,
                     m_jackknife=tuple(jk[:, 0]), c1_jackknife=tuple(jk[:, 1]), c2_jackknife=tuple(jk[:, 2]))


class ShearBiasMetric:
    """Accumulate metacal results over batches; m and c per SNR bin at the end.

    Parameters
    ----------
    g : float
        Applied shear magnitude of the dataset (g1 = +-g).
    n_jackknife : int
        Jackknife blocks per estimate, fixed by quad id over all quads seen
        (:func:`jackknife_blocks`), the same in every SNR bin. [default: 100]
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

    def compute(self, *, by_bin: bool = True, replicates: bool = False):
        """A pandas DataFrame: one row per SNR bin (and ``all``) with m, c and their errors.

        With *replicates*, also the columns ``m_jackknife``, ``c1_jackknife``, ``c2_jackknife``
        (a tuple per row: the leave-one-block-out estimates, NaN for empty blocks). [default: False]
        """
        import pandas as pd

        good = [q for q in self._quads if q not in self._bad
                and self._quads[q]["n_p"] > 0 and self._quads[q]["n_m"] > 0]
        # blocks by quad id over every quad seen (flagged too), so runs of one dataset share them
        n_ids = max(self._bin, default=-1) + 1
        rows = []
        labels = sorted({self._bin[q] for q in good}) if by_bin else []
        for label in labels + ["all"]:
            qs = good if label == "all" else [q for q in good if self._bin[q] == label]
            dropped = len({q for q in self._bad if label == "all" or self._bin.get(q) == label})
            if len(qs) < 2:
                # too few quads for a jackknife: reported as NaN with the counts, so that one
                # nearly empty bin does not fail the whole table
                nan = float("nan")
                rows.append({"snr_bin": label, **{k: () if k.endswith("_jackknife") else nan
                                                  for k in ShearBias.__dataclass_fields__},
                             "n_quads": len(qs), "n_dropped": dropped})
                continue
            sums = {k: np.array([self._quads[q][k] for q in qs]) for k in _SUMS}
            b = bias_from_quad_sums(sums, self.g, n_jackknife=self.n_jackknife, n_dropped=dropped,
                                    blocks=jackknife_blocks(qs, n_ids, self.n_jackknife))
            rows.append({"snr_bin": label, **b.__dict__})
        table = pd.DataFrame(rows).set_index("snr_bin")
        return table if replicates else table.drop(columns=[c for c in table.columns if c.endswith("_jackknife")])


def shear_bias(out: dict, *, quad_id, shear_sign, g: float, snr_bin=None, n_jackknife: int = 100):
    """m and c of one metacal output in a single call (see :class:`ShearBiasMetric`)."""
    metric = ShearBiasMetric(g, n_jackknife=n_jackknife)
    metric.update(out, quad_id=quad_id, shear_sign=shear_sign, snr_bin=snr_bin)
    return metric.compute(by_bin=snr_bin is not None)

