"""Image-quality metrics of deconvolved stamps against the truth: PSNR and SSIM, batched.

Settings are pinned, because libraries' defaults differ:

* PSNR = 10 log10(L^2 / MSE) with L the truth stamp's own data range (max - min),
  per stamp and band.
* SSIM as Wang et al. (2004) with scikit-image's Gaussian-window choice, spelled out:
  Gaussian weights of sigma 1.5 truncated at 3.5 sigma (an 11 x 11 window), ``reflect``
  boundaries, population (not sample) covariances, K1 = 0.01, K2 = 0.03, the same data
  range L as PSNR, and the mean over the stamp less a 5-pixel border. This equals
  ``skimage.metrics.structural_similarity(truth, pred, data_range=L, gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False)`` (tested), computed for the whole batch at once.

:class:`ImageQualityMetric` accumulates over batches and aggregates per SNR bin.

The metric interface
--------------------
Everything the benchmark reports per SNR bin is a :class:`Metric`: per-object values computed
where the chunk is measured (:meth:`Metric.per_object`, on a Dask worker too), accumulated over
chunks (:meth:`Metric.update`) and aggregated per SNR bin and over all (:meth:`Metric.compute`).
Each metric declares its JSON columns once (:attr:`Metric.columns`); the benchmark's rows
(:mod:`bench.schema`), the file checks (:mod:`bench.results`) and the report's per-bin table
(:mod:`bench.tables`) read them from the registry, so a new metric is one module and a
:func:`register_metric`::

    @register_metric("flux-ratio")
    class FluxRatio(Metric):
        needs_image = True
        columns = (Column("flux_ratio", "flux out / true"),)

        def __init__(self, spec):
            self.sums = {}

        @classmethod
        def per_object(cls, *, deconvolved, truth, shapes):
            return {"flux_ratio": deconvolved.sum(axis=(-2, -1)).mean(1) / truth.sum(axis=(-2, -1)).mean(1)}

        def update(self, values, *, snr_bin, quad_id, shear_sign, shapes):
            for b, v in zip(snr_bin, values["flux_ratio"]):
                self.sums.setdefault(int(b), []).append(v)

        def compute(self):
            out = {b: {"flux_ratio": float(np.mean(v))} for b, v in self.sums.items()}
            out["all"] = {"flux_ratio": float(np.mean(np.concatenate(list(self.sums.values()))))}
            return out

The built-in metrics are ``image-quality`` (PSNR and SSIM, :class:`ImageQuality`) and
``shear-bias`` (m, c1, c2, :class:`ShearBiasFromShapes`).

References
----------
Wang, Bovik, Sheikh & Simoncelli 2004, IEEE TIP 13, 600.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from .errors import BenchValueError
from .registry import Registry
from .shear import ShearBiasMetric

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _check(pred, truth):
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape or pred.ndim < 2:
        raise BenchValueError(f"prediction shape {pred.shape} does not match truth shape {truth.shape}")
    return pred.astype(np.float64), truth.astype(np.float64)


def data_range(truth) -> np.ndarray:
    """max - min of each stamp (..., n, n)."""
    truth = np.asarray(truth, dtype=np.float64)
    return truth.max(axis=(-2, -1)) - truth.min(axis=(-2, -1))


def psnr(pred, truth) -> np.ndarray:
    """Peak signal-to-noise ratio (dB) of each stamp (..., n, n) against the truth's range."""
    pred, truth = _check(pred, truth)
    mse = np.mean((pred - truth) ** 2, axis=(-2, -1))
    with np.errstate(divide="ignore"):
        return 10 * np.log10(data_range(truth) ** 2 / mse)


def ssim(pred, truth) -> np.ndarray:
    """Mean structural similarity of each stamp (..., n, n); settings in the module docstring."""
    from scipy.ndimage import gaussian_filter

    pred, truth = _check(pred, truth)
    L = data_range(truth)[..., None, None]

    def blur(a):
        return gaussian_filter(a, SSIM_SIGMA, mode="reflect", truncate=SSIM_TRUNCATE, axes=(-2, -1))

    ux, uy = blur(truth), blur(pred)
    vx = blur(truth * truth) - ux * ux
    vy = blur(pred * pred) - uy * uy
    vxy = blur(truth * pred) - ux * uy
    C1, C2 = (SSIM_K1 * L) ** 2, (SSIM_K2 * L) ** 2
    S = (2 * ux * uy + C1) * (2 * vxy + C2) / ((ux * ux + uy * uy + C1) * (vx + vy + C2))
    pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    return S[..., pad:-pad, pad:-pad].mean(axis=(-2, -1))


#: objects scored at a time: SSIM holds about ten float64 copies of its batch (2.2 GB for 4096
#: objects of 3 bands of 48 x 48, the measurement pass's chunk), 140 MB for this many
SCORE_BATCH = 256


def object_scores(pred, truth):
    """(PSNR, SSIM) per object of stamps (N, [B,] n, n), averaged over bands; NaN where pred is not finite.

    Computed :data:`SCORE_BATCH` objects at a time (the same numbers, bounded memory)."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape or pred.ndim not in (3, 4):
        raise BenchValueError(f"expected (N, [B,] n, n) stamps like the truth {truth.shape}, got {pred.shape}")
    bands = tuple(range(1, pred.ndim - 2))
    ok = np.isfinite(pred).all(axis=tuple(range(1, pred.ndim)))
    p, s = np.full(len(pred), np.nan), np.full(len(pred), np.nan)
    idx = np.flatnonzero(ok)
    for a in range(0, len(idx), SCORE_BATCH):
        sel = idx[a:a + SCORE_BATCH]
        p[sel] = np.mean(psnr(pred[sel], truth[sel]), axis=bands)
        s[sel] = np.mean(ssim(pred[sel], truth[sel]), axis=bands)
    return p, s


def _spread(a, sel) -> tuple[float, float]:
    """16th and 84th percentiles (+-1 sigma for a Gaussian) of the finite *a* in *sel* (NaN if none)."""
    v = a[sel & np.isfinite(a)]
    return tuple(float(x) for x in np.percentile(v, (16, 84))) if len(v) else (np.nan, np.nan)


class ImageQualityMetric:
    """Accumulate PSNR and SSIM over batches; aggregate per SNR bin at the end.

    ``update(pred, truth, snr_bin)`` takes (N, B, n, n) stamps and (N,) bin labels;
    ``add(psnr, ssim, snr_bin)`` takes per-object scores computed elsewhere (a Dask worker);
    ``compute()`` returns a pandas DataFrame with the median and mean PSNR, the mean SSIM
    (both averaged over bands per object first), their spread over objects (16th and 84th
    percentiles, ``psnr_p16`` ... ``ssim_p84``) and the object count per bin and overall.
    Objects whose prediction is not finite are counted in ``n_failed`` and left out.
    """

    def __init__(self):
        self._psnr, self._ssim, self._bin, self._failed = [], [], [], []

    def update(self, pred, truth, snr_bin) -> None:
        pred, truth = np.asarray(pred), np.asarray(truth)
        bins = np.asarray(snr_bin)
        if pred.ndim != 4 or bins.shape != (pred.shape[0],):
            raise BenchValueError(f"expected (N, B, n, n) stamps and (N,) bins, got {pred.shape} and {bins.shape}")
        self.add(*object_scores(pred, truth), bins)

    def add(self, psnr_db, ssim_mean, snr_bin) -> None:
        """Add per-object scores computed elsewhere (band means, NaN for a failed object), e.g. on a worker."""
        p, s, bins = (np.asarray(a) for a in (psnr_db, ssim_mean, snr_bin))
        if not (p.shape == s.shape == bins.shape and p.ndim == 1):
            raise BenchValueError(f"psnr, ssim and snr_bin must be (N,) alike, got {p.shape}, {s.shape}, {bins.shape}")
        ok = ~(np.isnan(p) | np.isnan(s))        # a perfect stamp has PSNR inf: not a failure
        self._failed.append(bins[~ok])
        self._psnr.append(p[ok])
        self._ssim.append(s[ok])
        self._bin.append(bins[ok])

    def compute(self):
        import pandas as pd

        p, s, b = (np.concatenate(v) for v in (self._psnr, self._ssim, self._bin))
        failed = np.concatenate(self._failed)
        rows = []
        for label in sorted(set(b.tolist()) | set(failed.tolist())) + ["all"]:
            sel = np.ones(len(b), bool) if label == "all" else b == label
            nf = len(failed) if label == "all" else int(np.sum(failed == label))
            (p16, p84), (s16, s84) = _spread(p, sel), _spread(s, sel)
            rows.append({"snr_bin": label, "psnr_median": float(np.median(p[sel])) if sel.any() else np.nan,
                         "psnr_mean": float(np.mean(p[sel])) if sel.any() else np.nan,
                         "ssim_mean": float(np.mean(s[sel])) if sel.any() else np.nan,
                         "psnr_p16": p16, "psnr_p84": p84, "ssim_p16": s16, "ssim_p84": s84,
                         "n": int(sel.sum()), "n_failed": nf})
        return pd.DataFrame(rows).set_index("snr_bin")


# --------------------------------------------------------------------------- the metric interface
@dataclass(frozen=True)
class Column:
    """One JSON column of a per-bin row.

    Parameters
    ----------
    name : str
        The key in ``by_snr`` rows.
    heading : str
        How tables head it. [default: the name]
    kind : {"number", "series"}
        One number (or null) per row, or a list of them (e.g. jackknife replicates, kept out of
        tables). [default: "number"]
    fmt : str
        Format spec of the tables. [default: ".4g"]
    table : bool
        Shown in the report's per-bin table. [default: True for numbers]
    """

    name: str
    heading: str = ""
    kind: str = "number"
    fmt: str = ".4g"
    table: bool = True


class Metric(ABC):
    """A quantity reported per SNR bin: per-object values, accumulated, aggregated.

    Class attributes: ``name`` (set by :func:`register_metric`), ``columns`` (the JSON columns
    it writes, :class:`Column`), ``needs_image`` (True: only for methods that return images;
    :meth:`per_object` then gets the method's deconvolved stamps and the truth). An instance
    is made per benchmark row with the dataset's spec.
    """

    name: str = ""
    columns: tuple = ()
    needs_image: bool = False

    def __init__(self, spec=None):
        self.spec = spec

    @classmethod
    def per_object(cls, *, deconvolved, truth, shapes) -> dict:
        """Per-object values of one chunk, computed where it is measured (a Dask worker too): a
        class method, since it runs far from the instance that accumulates.

        Parameters
        ----------
        deconvolved, truth : numpy.ndarray, shape (N, B, n, n) or None
            The method's output (the noshear image's, after the shear) and the truth; None
            for a method without images.
        shapes : dict of numpy.ndarray
            The chunk's metacal output (per object and band).

        Returns
        -------
        dict of numpy.ndarray, each (N,)
            Keys unique to this metric; they travel with the chunk's output. [default: none]
        """
        return {}

    @abstractmethod
    def update(self, values: dict, *, snr_bin, quad_id, shear_sign, shapes) -> None:
        """Accumulate one chunk: its :meth:`per_object` values, labels (N,) and metacal output."""

    @abstractmethod
    def compute(self) -> dict:
        """{bin label or ``"all"``: {column: value}} over everything accumulated."""


_REGISTRY = Registry("metric", Metric)
#: class decorator registering a :class:`Metric` subclass under a name (the order of registration
#: is the order of the columns)
register_metric = _REGISTRY.register
unregister_metric = _REGISTRY.unregister
#: the registered metric names, in registration order (the built-ins first)
list_metrics = _REGISTRY.names
#: the class registered under a name (an unknown name suggests the closest)
get_metric_class = _REGISTRY.get


def metric_columns() -> list:
    """Every registered metric's :class:`Column`, in order."""
    return [c for name in list_metrics() for c in get_metric_class(name).columns]


def make_metrics(spec, *, images: bool) -> list:
    """One instance of each registered metric for a benchmark row (image metrics only with *images*)."""
    classes = [get_metric_class(name) for name in list_metrics()]
    return [cls(spec) for cls in classes if images or not cls.needs_image]


@register_metric("image-quality")
class ImageQuality(Metric):
    """PSNR and SSIM against the truth (:class:`ImageQualityMetric`), per bin: means, spread, failures."""

    needs_image = True
    columns = (Column("psnr_db", "PSNR (dB)", fmt=".2f"), Column("ssim", "SSIM", fmt=".3f"),
               Column("psnr_p16", table=False), Column("psnr_p84", table=False),
               Column("ssim_p16", table=False), Column("ssim_p84", table=False),
               Column("n_images_failed", "non-finite", fmt=".0f"))

    def __init__(self, spec=None):
        super().__init__(spec)
        self._m = ImageQualityMetric()

    @classmethod
    def per_object(cls, *, deconvolved, truth, shapes):
        if deconvolved is None:
            return {}
        p, s = object_scores(deconvolved, truth)
        return {"psnr": p, "ssim": s}

    def update(self, values, *, snr_bin, quad_id, shear_sign, shapes):
        self._m.add(values["psnr"], values["ssim"], snr_bin)

    def compute(self):
        q = self._m.compute()
        out = {}
        for label, r in q.iterrows():
            out[label] = {"n": int(r["n"]), "psnr_db": float(r["psnr_mean"]), "ssim": float(r["ssim_mean"]),
                          "n_images_failed": int(r["n_failed"]),
                          **{k: float(r[k]) for k in ("psnr_p16", "psnr_p84", "ssim_p16", "ssim_p84")}}
        return out


@register_metric("shear-bias")
class ShearBiasFromShapes(Metric):
    """m, c1, c2 per SNR bin from the metacal shapes, bands averaged (:class:`ShearBiasMetric`), with
    their jackknife errors and leave-one-block-out replicates. *spec* gives the applied shear."""

    columns = (Column("m", "m", fmt="+.4f"), Column("m_err", "m err", fmt=".4f"),
               Column("c", "c1", fmt="+.4f"), Column("c_err", "c1 err", fmt=".4f"),
               Column("c2", "c2", fmt="+.4f"), Column("c2_err", "c2 err", fmt=".4f"),
               Column("n_quads", table=False), Column("n_quads_dropped", "quads dropped", fmt=".0f"),
               Column("m_jackknife", kind="series", table=False), Column("c1_jackknife", kind="series", table=False),
               Column("c2_jackknife", kind="series", table=False))

    def __init__(self, spec=None):
        super().__init__(spec)
        self._m = ShearBiasMetric(spec.shear)

    def update(self, values, *, snr_bin, quad_id, shear_sign, shapes):
        self._m.update(shapes, quad_id=quad_id, shear_sign=shear_sign, snr_bin=snr_bin)   # it combines the bands

    def compute(self):
        out = {}      # NaN (a bin of fewer than 2 usable quads) becomes null in bench.schema.snr_rows
        for label, b in self._m.compute(replicates=True).iterrows():
            out[label] = {"m": b.m, "m_err": b.m_err, "c": b.c1, "c_err": b.c1_err,
                          "c2": b.c2, "c2_err": b.c2_err, "n_quads": int(b.n_quads),
                          "n_quads_dropped": int(b.n_dropped),
                          "m_jackknife": list(b.m_jackknife), "c1_jackknife": list(b.c1_jackknife),
                          "c2_jackknife": list(b.c2_jackknife)}
        return out
