"""Shear estimators plugged into metacal: admom through the whole engine against ngmix, the registry,
and pixel measurement of drawn images against the exact Fourier-space moments."""

import numpy as np
import pytest

from bench.errors import BenchError
from bench.metacal import MetacalConfig, ShearEstimator, list_estimators, metacal, register_estimator
from bench.metacal.estimators import unregister_estimator
from conftest import DATA, run_module

REF = DATA / "ngmix_metacal_moffat_100.npz"
ADMOM = DATA / "ngmix_admom_moffat_40.npz"


@pytest.fixture(scope="module")
def ref():
    with np.load(REF) as f, np.load(ADMOM) as g:
        return {k: f[k] for k in f.files}, {k: g[k] for k in g.files}


@pytest.mark.parametrize("mode", ["dilate", "gauss"])
def test_admom_through_metacal_reproduces_ngmix(ref, mode):
    """This project's metacal images (drawn from the stamps) measured with admom, against ngmix's
    admom of ngmix's own metacal images: the median |de| is within admom's tolerance (1e-5)."""
    stamps, admom = ref
    n = len(admom["row"])
    out = metacal(stamps["image"][:n], stamps["psf"][:n], pixel_scale=float(stamps["pixel_scale"]),
                  row=stamps["row"][:n], col=stamps["col"][:n], kernel=mode, noise_correction=False,
                  estimator="admom", dtype="float64")
    assert not out["flags"].any() and not out["estimator_flags"].any()
    types = sorted({k.split("_")[1] for k in admom if k.startswith(f"{mode}_") and k.endswith("_admom_e1")
                    and "_psf_" not in k})
    assert "noshear" in types
    for t in types:
        for q in ("e1", "e2"):
            d = np.abs(out[f"{t}_{q}"] - admom[f"{mode}_{t}_admom_{q}"])
            assert np.median(d) < 2e-5 and d.max() < 5e-4, (t, q, np.median(d), d.max())
        rel = np.abs(out[f"{t}_T"] / admom[f"{mode}_{t}_admom_T"] - 1)
        assert np.median(rel) < 1e-4, (t, np.median(rel))


def test_cli_estimator_admom(tmp_path, ref):
    stamps, admom = ref
    n = len(admom["row"])
    inp = tmp_path / "in.npz"
    np.savez(inp, **{k: stamps[k][:n] for k in ("image", "psf", "noise_sigma", "row", "col")},
             pixel_scale=stamps["pixel_scale"])
    out = tmp_path / "out.npz"
    r = run_module("bench.metacal", inp, "--out", out, "--estimator", "admom", "--psf", "gauss",
                   "--no-noise-correction")
    assert r.returncode == 0, r.stderr
    assert "admom" in r.stdout
    with np.load(out) as f:
        assert str(f["estimator"]) == "admom"
        d = np.abs(f["noshear_e1"] - admom["gauss_noshear_admom_e1"])
    assert np.median(d) < 2e-5            # float32 drawing, as the command line's default
    r = run_module("bench.metacal", inp, "--out", tmp_path / "x.npz", "--estimator", "admon")
    assert r.returncode == 2 and "'admom'" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.npz").exists()


def test_unknown_estimator_names_the_choices():
    with pytest.raises(BenchError, match="Did you mean .gaussmom."):
        MetacalConfig(estimator="gausmom")
    assert {"gaussmom", "admom"} <= set(list_estimators())


def test_gaussmom_on_pixels_matches_the_fourier_engine(ref):
    """The pixel path (images drawn, Gaussian moments on pixels) against the exact engine. The images
    are sheared about the stamp centre, as the engine shears (about each object's centre, metacal
    moves the object less and e differs by up to 3e-3: tests/test_placement.py)."""
    from bench.metacal.render import measure, metacal_images
    stamps, _ = ref
    kw = dict(pixel_scale=float(stamps["pixel_scale"]), row=stamps["row"][:40], col=stamps["col"][:40])
    cfg = MetacalConfig(noise_correction=False, dtype="float64")
    exact = metacal(stamps["image"][:40], stamps["psf"][:40], config=cfg, **kw)
    mc = metacal_images(stamps["image"][:40], stamps["psf"][:40], config=cfg, pixel_scale=kw["pixel_scale"])
    drawn = measure(mc["images"], config=cfg, flags=mc["flags"], **kw)
    for k in ("noshear_e1", "noshear_e2", "1p_e1", "2m_e2"):
        np.testing.assert_allclose(drawn[k], exact[k], atol=1e-4, err_msg=k)
    for k in ("R11", "R22"):
        np.testing.assert_allclose(drawn[k], exact[k], atol=5e-3, err_msg=k)    # e's 1e-4 over the step 0.02


def test_first_placement_with_a_method_on_pixels_matches_the_engine(ref):
    """A method's deconvolved images sheared and drawn (metacal_images(deconvolved=...)) then measured
    with gaussmom on pixels, against the engine's Fourier-space moments of the same images."""
    from bench.metacal.render import measure, metacal_images
    from methods import get_method
    stamps, _ = ref
    n = 24
    img, psf = stamps["image"][:n, None], stamps["psf"][:n, None]
    sig = stamps["noise_sigma"][:n, None].astype(np.float32)
    dec = get_method("wiener-fftw").deconvolve(img, psf, sig)
    cfg = MetacalConfig(noise_correction=False, dtype="float64")
    kw = dict(pixel_scale=float(stamps["pixel_scale"]), row=stamps["row"][:n], col=stamps["col"][:n], config=cfg)
    exact = metacal(img, psf, deconvolved=dec, **kw)
    mc = metacal_images(img, psf, deconvolved=dec, pixel_scale=kw["pixel_scale"], config=cfg)
    drawn = measure(mc["images"], flags=mc["flags"], **kw)
    for k in ("noshear_e1", "1p_e1", "1m_e1"):
        np.testing.assert_allclose(drawn[k], exact[k], atol=1e-4, err_msg=k)
    # and admom runs on them, end to end through metacal()
    out = metacal(img, psf, deconvolved=dec, **{**kw, "config": MetacalConfig(noise_correction=False,
                                                                             estimator="admom")})
    assert out["noshear_e1"].shape == (n, 1) and np.isfinite(out["R11"]).mean() > 0.9


def test_a_registered_estimator_is_used_and_its_failures_flagged(ref):
    """A toy estimator (unweighted moments inside a box, failing on purpose on one object)."""
    stamps, _ = ref

    @register_estimator("toy-box")
    class Box(ShearEstimator):
        def measure(self, images, *, pixel_scale, row, col, config):
            n = images.shape[-1]
            y, x = np.mgrid[:n, :n]
            dy, dx = y[None] - row[:, None, None], x[None] - col[:, None, None]
            w = (dx ** 2 + dy ** 2 < 36).astype(float)
            f = images * w
            m0 = f.sum(axis=(1, 2))
            mxx, myy, mxy = ((f * a).sum(axis=(1, 2)) / m0 for a in (dx * dx, dy * dy, dx * dy))
            flags = np.zeros(len(images), int)
            flags[0] = 64
            T = mxx + myy
            return {"e1": (mxx - myy) / T, "e2": 2 * mxy / T, "T": T * pixel_scale ** 2, "flags": flags}

    try:
        out = metacal(stamps["image"][:8], stamps["psf"][:8], pixel_scale=float(stamps["pixel_scale"]),
                      row=stamps["row"][:8], col=stamps["col"][:8], noise_correction=False, estimator="toy-box")
        assert out["flags"][0] & 8 and out["estimator_flags"][0] == 64 and np.isnan(out["noshear_e1"][0])
        assert not out["flags"][1:].any() and np.isfinite(out["R11"][1:]).all()
        assert 0.2 < np.median(out["R11"][1:]) < 1.5
    finally:
        unregister_estimator("toy-box")
