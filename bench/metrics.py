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

References
----------
Wang, Bovik, Sheikh & Simoncelli 2004, IEEE TIP 13, 600.
"""

from __future__ import annotations

import numpy as np

from .errors import BenchValueError

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


def object_scores(pred, truth):
    """(PSNR, SSIM) per object of stamps (N, [B,] n, n), averaged over bands; NaN where pred is not finite."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape or pred.ndim not in (3, 4):
        raise BenchValueError(f"expected (N, [B,] n, n) stamps like the truth {truth.shape}, got {pred.shape}")
    bands = tuple(range(1, pred.ndim - 2))
    ok = np.isfinite(pred).all(axis=tuple(range(1, pred.ndim)))
    p, s = np.full(len(pred), np.nan), np.full(len(pred), np.nan)
    if ok.any():
        p[ok] = np.mean(psnr(pred[ok], truth[ok]), axis=bands)
        s[ok] = np.mean(ssim(pred[ok], truth[ok]), axis=bands)
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
