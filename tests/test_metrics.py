"""PSNR and SSIM against scikit-image with the pinned settings."""

import numpy as np
import pytest

from bench.errors import BenchValueError
from bench.metrics import ImageQualityMetric, psnr, ssim

skm = pytest.importorskip("skimage.metrics")


@pytest.fixture
def pair():
    rng = np.random.default_rng(3)
    y, x = np.mgrid[:48, :48] - 23.5
    truth = np.exp(-(x * x + 2 * y * y) / 40.0)[None] * rng.uniform(0.5, 2, (6, 1, 1))
    pred = truth + 0.05 * rng.standard_normal(truth.shape)
    return pred, truth


def test_psnr_matches_skimage(pair):
    pred, truth = pair
    ours = psnr(pred, truth)
    for i in range(len(pred)):
        L = truth[i].max() - truth[i].min()
        assert ours[i] == pytest.approx(skm.peak_signal_noise_ratio(truth[i], pred[i], data_range=L), rel=1e-10)


def test_ssim_matches_skimage(pair):
    pred, truth = pair
    ours = ssim(pred, truth)
    for i in range(len(pred)):
        L = truth[i].max() - truth[i].min()
        ref = skm.structural_similarity(truth[i], pred[i], data_range=L, gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=False)
        assert ours[i] == pytest.approx(ref, rel=1e-8)
    assert ssim(truth, truth) == pytest.approx(np.ones(len(truth)))


def test_metric_accumulates_per_bin(pair):
    pred, truth = pair
    m = ImageQualityMetric()
    m.update(pred[:3, None], truth[:3, None], np.array([0, 1, 1]))
    bad = pred[3:, None].copy()
    bad[0, 0, 0, 0] = np.nan
    m.update(bad, truth[3:, None], np.array([0, 0, 1]))
    t = m.compute()
    assert list(t.index) == [0, 1, "all"]
    assert t.loc["all", "n"] == 5 and t.loc["all", "n_failed"] == 1 and t.loc[0, "n_failed"] == 1
    kept = np.r_[psnr(pred[:3], truth[:3]), psnr(pred[4:], truth[4:])]
    assert t.loc["all", "psnr_mean"] == pytest.approx(np.mean(kept))
    # the spread is over the objects kept, percentiles as numpy computes them
    assert t.loc["all", "psnr_p16"] == pytest.approx(np.percentile(kept, 16))
    assert t.loc["all", "psnr_p84"] == pytest.approx(np.percentile(kept, 84))
    assert t.loc["all", "psnr_p16"] < t.loc["all", "psnr_median"] < t.loc["all", "psnr_p84"]
    with pytest.raises(BenchValueError):
        m.update(pred, truth, np.zeros(6))


def test_object_scores_band_means_and_failures():
    from bench.metrics import object_scores, psnr, ssim
    rng = np.random.default_rng(1)
    truth = rng.random((3, 2, 24, 24))
    pred = truth + 0.05 * rng.standard_normal(truth.shape)
    pred[1, 0, 5, 5] = np.nan
    p, s = object_scores(pred, truth)
    assert np.isnan(p[1]) and np.isnan(s[1])
    np.testing.assert_allclose(p[[0, 2]], psnr(pred[[0, 2]], truth[[0, 2]]).mean(axis=1))
    np.testing.assert_allclose(s[[0, 2]], ssim(pred[[0, 2]], truth[[0, 2]]).mean(axis=1))
    p1, _ = object_scores(pred[:, 0], truth[:, 0])           # single band (N, n, n)
    np.testing.assert_allclose(p1[[0, 2]], psnr(pred[[0, 2], 0], truth[[0, 2], 0]))
