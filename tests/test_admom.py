"""Adaptive moments against ngmix's AdmomFitter (tests/data) and analytic Gaussians."""

from pathlib import Path

import numpy as np
import pytest

from bench.errors import BenchValueError
from bench.metacal import adaptive_moments as admom
from bench.metacal.admom import CEN_SHIFT, MAXITER, NONPOS_FLUX, NONPOS_SIZE

DATA = Path(__file__).resolve().parent / "data"

SETS = [("dilate", "noshear", "image"), ("dilate", "1p", "image"), ("gauss", "noshear", "image"),
        ("dilate", "noshear", "psf"), ("gauss", "noshear", "psf")]


@pytest.fixture(scope="module")
def ref():
    with np.load(DATA / "ngmix_admom_moffat_40.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("mode, typ, kind", SETS)
def test_reproduces_ngmix(ref, mode, typ, kind):
    d = ref
    # the galaxy's Jacobian is centred on the object, the PSF's on the stamp centre
    cen = {} if kind == "psf" else {"row": d["row"], "col": d["col"]}
    out = admom(d[f"{mode}_{typ}_{kind}"], pixel_scale=float(d["pixel_scale"]), guess=0.5, **cen)
    p = "psf_" if kind == "psf" else ""
    want = {q: d[f"{mode}_{typ}_{p}admom_{q}"] for q in ("e1", "e2", "T", "flags")}
    np.testing.assert_array_equal(out["flags"], want["flags"])
    ok = want["flags"] == 0
    # ngmix starts from a random weight and stops once e moves by < 1e-5: two ngmix runs on the
    # same image differ by a median 2e-6 (max 5e-5); measured here: median 1e-6 to 6e-6
    for q in ("e1", "e2"):
        de = np.abs(out[q] - want[q])[ok]
        assert np.median(de) <= 2e-5, q
        assert de.max() <= 1e-4, q
    rel = np.abs(out["T"] / want["T"] - 1)[ok]
    # T's tolerance is looser (1e-3): near-round PSFs with wings stop up to 3e-4 apart
    assert np.median(rel) <= 1e-4
    assert rel.max() <= 1e-3
    assert (out["n_iter"][ok] >= 2).all()


def _gaussian(n, row, col, cov_vv, cov_uu, cov_uv, scale):
    """A noiseless elliptical Gaussian (covariance in arcsec^2, v along rows, u along columns)."""
    pix = np.arange(n, dtype=np.float64)
    v = (pix[:, None] - row) * scale
    u = (pix[None, :] - col) * scale
    C = np.array([[cov_vv, cov_uv], [cov_uv, cov_uu]])
    iC = np.linalg.inv(C)
    chi2 = iC[0, 0] * v * v + iC[1, 1] * u * u + 2 * iC[0, 1] * u * v
    return np.exp(-0.5 * chi2)


def test_gaussian_gives_its_own_covariance():
    """For a Gaussian the weight converges to the object: e and T are the object's, exactly."""
    n, scale = 48, 0.2
    cases = [(0.12, 0.20, 0.0), (0.30, 0.10, 0.05), (0.15, 0.15, -0.08), (0.5, 0.4, 0.2)]
    rows = np.array([23.5, 24.1, 22.8, 23.3])
    cols = np.array([23.5, 22.9, 23.7, 24.4])
    imgs = np.stack([_gaussian(n, r, c, *cov, scale) for r, c, cov in zip(rows, cols, cases)])
    # start from the stamp centre, off the object by up to a pixel; the default tolerances stop
    # within ~1e-6 of the fixed point, tight ones reach it to rounding. The convergence test
    # looks at e and T only: the centroid, which halves its error per iteration on a Gaussian,
    # may still be a few thousandths of a pixel off when they have stopped moving
    # (the weight's roll-off between chi^2 = 20 and 25 leaves ~1e-8 in T)
    for tol, Ttol, kw in ((5e-6, 2e-5, {}), (1e-8, 1e-7, {"etol": 1e-12, "Ttol": 1e-12})):
        out = admom(imgs, pixel_scale=scale, guess=0.3, **kw)
        assert not out["flags"].any()
        for i, (vv, uu, uv) in enumerate(cases):
            T = vv + uu
            assert out["T"][i] == pytest.approx(T, rel=Ttol)
            assert out["e1"][i] == pytest.approx((uu - vv) / T, abs=tol)
            assert out["e2"][i] == pytest.approx(2 * uv / T, abs=tol)
        np.testing.assert_allclose(out["row"], rows, atol=5e-3 if tol > 1e-6 else 1e-5)
        np.testing.assert_allclose(out["col"], cols, atol=5e-3 if tol > 1e-6 else 1e-5)


def test_weight_map_masks_but_does_not_weight():
    n, scale = 32, 0.25
    img = _gaussian(n, 15.7, 15.2, 0.2, 0.3, 0.05, scale)[None].repeat(3, axis=0)
    img[1, :, 5] = 1e3                     # a bad column, masked below
    img[2, 3, 4] = np.nan                  # non-finite, masked below
    w = np.ones_like(img)
    w[0] = 4.0                             # positive weights do not change the moments
    w[1, :, 5] = 0.0
    w[2, 3, 4] = 0.0
    out = admom(img, w, pixel_scale=scale)
    plain = admom(img[:1], pixel_scale=scale)
    assert not out["flags"].any()
    for q in ("e1", "e2", "T"):
        assert out[q][0] == plain[q][0]
        np.testing.assert_allclose(out[q][1:], plain[q][0], rtol=1e-6, atol=1e-6)


def test_failures_are_flagged_per_object():
    n, scale = 32, 0.2
    good = _gaussian(n, 15.5, 15.5, 0.2, 0.15, 0.02, scale)
    delta = np.zeros((n, n))
    delta[15, 15] = 1.0                    # on a pixel: zero size
    far = _gaussian(n, 25.0, 15.5, 0.1, 0.1, 0.0, scale)
    imgs = np.stack([good, np.zeros((n, n)), -good, delta, good, far])
    w = np.ones_like(imgs)
    w[4] = 0.0                             # everything masked
    out = admom(imgs, w, pixel_scale=scale, shiftmax=1.0)
    assert out["flags"].tolist() == [0, NONPOS_FLUX, NONPOS_FLUX, NONPOS_SIZE, NONPOS_FLUX, CEN_SHIFT]
    for q in ("e1", "e2", "T"):
        assert np.isfinite(out[q][0]) and np.isnan(out[q][1:]).all()
    # a failure elsewhere in the batch leaves an object's result untouched
    alone = admom(good[None], pixel_scale=scale, shiftmax=1.0)
    assert out["e1"][0] == alone["e1"][0] and out["T"][0] == alone["T"][0]
    # as in ngmix, stopping at the last allowed iteration is MAXITER, converged or not
    short = admom(imgs[:1], pixel_scale=scale, maxiter=alone["n_iter"][0])
    assert short["flags"][0] == MAXITER and np.isnan(short["e1"][0])
    assert admom(imgs[:1], pixel_scale=scale, maxiter=1)["flags"][0] == MAXITER


def test_keys_and_defaults():
    img = _gaussian(20, 9.5, 9.5, 0.2, 0.2, 0.0, 0.2)[None]
    out = admom(img, pixel_scale=0.2)
    assert set(out) == {"e1", "e2", "T", "row", "col", "flags", "n_iter"}
    assert all(v.shape == (1,) for v in out.values())
    assert out["flags"].dtype == np.int32
    same = admom(img, np.ones_like(img), pixel_scale=0.2, row=[9.5], col=9.5, guess=[0.5])
    assert out["T"][0] == same["T"][0]


@pytest.mark.parametrize("kwargs, match", [
    ({"images": np.ones((4, 4))}, "images must have shape"),
    ({"images": np.ones((2, 4, 5))}, "images must have shape"),
    ({"images": np.full((1, 4, 4), np.nan)}, "images must be finite"),
    ({"weight": np.ones((1, 5, 5))}, "weight must have the images' shape"),
    ({"weight": -np.ones((1, 4, 4))}, "weight must be finite and >= 0"),
    ({"weight": np.full((1, 4, 4), np.inf)}, "weight must be finite and >= 0"),
    ({"pixel_scale": 0.0}, "pixel_scale must be a positive number"),
    ({"pixel_scale": "big"}, "pixel_scale must be a positive number"),
    ({"guess": 0.0}, r"guess \(starting T, arcsec\^2\) must be finite and > 0; got 0.0"),
    ({"guess": np.nan}, "guess .* must be finite and > 0"),
    ({"guess": [0.5, 0.5]}, r"guess must be a scalar or have shape \(1,\)"),
    ({"row": [1.0, 2.0]}, r"row must be a scalar or have shape \(1,\)"),
    ({"col": [np.inf]}, "col must be finite"),
    ({"maxiter": 0}, "maxiter must be an integer >= 1; got 0"),
    ({"etol": -1e-5}, "etol must be a finite number > 0"),
    ({"Ttol": np.nan}, "Ttol must be a finite number > 0"),
    ({"shiftmax": 0}, "shiftmax must be a finite number > 0"),
])
def test_bad_input(kwargs, match):
    args = {"images": np.ones((1, 4, 4)), "pixel_scale": 0.2} | kwargs
    with pytest.raises(BenchValueError, match=match):
        admom(args.pop("images"), args.pop("weight", None), **args)
