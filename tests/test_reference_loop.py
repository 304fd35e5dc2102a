"""The GalSim per-object loop (the speed reference) reproduces ngmix on reference stamps."""

import numpy as np
import pytest

from bench.reference_loop import galsim_metacal_loop, weighted_moments


@pytest.mark.parametrize("mode", ["dilate", "gauss"])
def test_galsim_loop_matches_ngmix(reference, mode):
    d = reference
    k = slice(0, 3)
    r = galsim_metacal_loop(d["image"][k], d["psf"][k], pixel_scale=float(d["pixel_scale"]),
                            rows=d["row"][k], cols=d["col"][k], kernel=mode)
    for t in ("noshear", "1p", "1m", "2p", "2m"):
        np.testing.assert_allclose(r[f"{t}_e1"], d[f"{mode}_{t}_e1"][k], rtol=0, atol=1e-6)
        np.testing.assert_allclose(r[f"{t}_e2"], d[f"{mode}_{t}_e2"][k], rtol=0, atol=1e-6)
        np.testing.assert_allclose(r[f"{t}_T"], d[f"{mode}_{t}_T"][k], rtol=1e-6)


def test_weighted_moments_of_elliptical_gaussian():
    n, scale = 64, 0.2
    rr, cc = np.mgrid[:n, :n]
    v, u = (rr - 31.2) * scale, (cc - 32.4) * scale
    cov = np.array([[0.30, 0.05], [0.05, 0.20]])          # arcsec^2, (u, v)
    icov = np.linalg.inv(cov)
    img = np.exp(-0.5 * (icov[0, 0] * u * u + 2 * icov[0, 1] * u * v + icov[1, 1] * v * v))
    e1, e2, T = weighted_moments(img, 31.2, 32.4, scale)
    s = 1.2 / (2 * np.sqrt(2 * np.log(2)))
    m = np.linalg.inv(icov + np.eye(2) / s ** 2)
    assert T == pytest.approx(m[0, 0] + m[1, 1], rel=1e-6)
    assert e1 == pytest.approx((m[0, 0] - m[1, 1]) / T, abs=1e-7)
    assert e2 == pytest.approx(2 * m[0, 1] / T, abs=1e-7)
