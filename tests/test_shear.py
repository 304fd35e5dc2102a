"""Shear estimators (bench.shear) on synthetic metacal outputs with a known answer."""

import numpy as np
import pytest

from bench.errors import BenchValueError
from bench.shear import ShearBiasMetric, combine_bands, shear_bias


def fake_quads(Q, *, m=0.0, c1=0.0, c2=0.0, g=0.02, noise=0.0, seed=0):
    """Metacal-like outputs for Q quads: e = R ((1 + m) g_true + c) + e_int (+ noise)."""
    rng = np.random.default_rng(seed)
    R = rng.uniform(0.3, 0.6, Q).repeat(4)
    e_int = rng.normal(0, 0.2, (Q, 2))
    rot = np.tile([1, 1, -1, -1], Q)            # rotation by 90 degrees flips the intrinsic shape
    sign = np.tile([1, -1, 1, -1], Q)
    e1 = R * ((1 + m) * g * sign + c1) + rot * e_int.repeat(4, axis=0)[:, 0] + noise * rng.normal(size=4 * Q)
    e2 = R * c2 + rot * e_int.repeat(4, axis=0)[:, 1]
    out = {"noshear_e1": e1, "noshear_e2": e2, "R11": R, "R22": R, "flags": np.zeros(4 * Q, np.int32)}
    return out, np.arange(Q).repeat(4), sign


def test_recovers_known_m_and_c():
    out, qid, sign = fake_quads(400, m=0.01, c1=2e-4, c2=-3e-4)
    row = shear_bias(out, quad_id=qid, shear_sign=sign, g=0.02).loc["all"]
    assert row.m == pytest.approx(0.01, abs=1e-12)
    assert row.c1 == pytest.approx(2e-4, abs=1e-12)
    assert row.c2 == pytest.approx(-3e-4, abs=1e-12)
    assert row.m_err < 1e-12            # no noise: rotation and pairing cancel everything
    assert row.n_quads == 400 and row.n_dropped == 0


def test_jackknife_error_matches_scatter_over_realisations():
    ms, errs = [], []
    for seed in range(40):
        out, qid, sign = fake_quads(300, noise=0.01, seed=seed)
        row = shear_bias(out, quad_id=qid, shear_sign=sign, g=0.02).loc["all"]
        ms.append(row.m)
        errs.append(row.m_err)
    assert np.median(errs) == pytest.approx(np.std(ms), rel=0.35)


def test_flagged_quad_is_dropped_whole_and_counted():
    out, qid, sign = fake_quads(50, m=0.02)
    out["flags"][5] = 8
    out["noshear_e1"][5] = np.nan
    row = shear_bias(out, quad_id=qid, shear_sign=sign, g=0.02).loc["all"]
    assert row.n_quads == 49 and row.n_dropped == 1
    assert row.m == pytest.approx(0.02, abs=1e-12)


def test_batches_and_bins_accumulate():
    out, qid, sign = fake_quads(200, m=-0.005)
    bins = (qid % 2)
    metric = ShearBiasMetric(0.02, n_jackknife=20)
    # split so that members of one quad arrive in different batches
    for sl in (slice(0, 401), slice(401, 800)):
        metric.update({k: v[sl] for k, v in out.items()}, quad_id=qid[sl], shear_sign=sign[sl],
                      snr_bin=bins[sl])
    table = metric.compute()
    assert list(table.index) == [0, 1, "all"]
    assert table.loc[0, "n_quads"] == 100 and table.loc["all", "n_quads"] == 200
    np.testing.assert_allclose(table["m"], -0.005, atol=1e-12)


def test_combine_bands_averages_e_and_R():
    out = {"noshear_e1": np.array([[0.1, 0.3]]), "R11": np.array([[0.4, 0.6]]),
           "flags": np.array([[0, 4]], np.int32)}
    c = combine_bands(out, weights=[1, 3])
    assert c["noshear_e1"][0] == pytest.approx(0.25) and c["R11"][0] == pytest.approx(0.55)
    assert c["flags"][0] == 4
    with pytest.raises(BenchValueError, match="band weights"):
        combine_bands(out, weights=[1, -1])


def test_bad_inputs_are_named():
    out, qid, sign = fake_quads(4)
    with pytest.raises(BenchValueError, match="shear_sign"):
        shear_bias(out, quad_id=qid, shear_sign=sign * 2, g=0.02)
    with pytest.raises(BenchValueError, match="differ in length"):
        shear_bias(out, quad_id=qid[:-1], shear_sign=sign, g=0.02)
    with pytest.raises(BenchValueError, match="g must be"):
        ShearBiasMetric(0.0)
