"""Metacal against ngmix's own outputs (tests/data, from the shared reference file)."""

import numpy as np
import pytest

from bench.metacal import (FLAG_NOT_POSITIVE, FWHM_TO_SIGMA, TYPES, gauss_target_sigma, metacal,
                           shear_matrix, shears)

import functools as _functools

from bench.metacal import metacal as _engine

# these tests check the engine without the noise correction (ngmix fixnoise=False)
metacal = _functools.partial(_engine, noise_correction=False)


@pytest.mark.parametrize("mode", ["dilate", "gauss"])
def test_reproduces_ngmix(reference, mode):
    d = reference
    out = metacal(d["image"], d["psf"], pixel_scale=float(d["pixel_scale"]), row=d["row"],
                  col=d["col"], kernel=mode)
    assert not out["flags"].any()
    de = np.concatenate([np.abs(out[f"noshear_{q}"] - d[f"{mode}_noshear_{q}"]) for q in ("e1", "e2")])
    assert np.median(de) <= 1e-4
    assert de.max() <= 1e-3
    for t in TYPES:
        dt = np.abs(out[f"{t}_e1"] - d[f"{mode}_{t}_e1"])
        assert np.median(dt) <= 1e-4, t
        rel = np.abs(out[f"{t}_T"] / d[f"{mode}_{t}_T"] - 1)
        # one gauss-mode object sits on ngmix's lattice threshold: its target width differs
        assert np.median(rel) <= 1e-5 and rel.max() <= 5e-3, t
    r11 = (d[f"{mode}_1p_e1"] - d[f"{mode}_1m_e1"]) / 0.02
    r22 = (d[f"{mode}_2p_e2"] - d[f"{mode}_2m_e2"]) / 0.02
    assert abs(out["R11"].mean() / r11.mean() - 1) <= 1e-3
    assert abs(out["R22"].mean() / r22.mean() - 1) <= 1e-3


def _weighted_gaussian_shape(cov, sig_w):
    """e1, e2, T of a Gaussian (covariance *cov*) measured with a round Gaussian weight."""
    m = np.linalg.inv(np.linalg.inv(cov) + np.eye(2) / sig_w ** 2)
    T = m[0, 0] + m[1, 1]
    return (m[0, 0] - m[1, 1]) / T, 2 * m[0, 1] / T, T


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-8), ("float32", 2e-6)])
def test_gaussian_through_gaussian_closed_form(dtype, tol):
    """A round Gaussian galaxy through a Gaussian PSF, gauss target: every type has a closed form.

    Sheared by S and reconvolved with a round Gaussian of width D sigma_t, the galaxy is a
    Gaussian of covariance sigma_g^2 S S^T + (D sigma_t)^2 I; a Gaussian weight of width
    sigma_w turns that into (C^-1 + I / sigma_w^2)^-1, whose ellipticity and trace metacal
    must return. sigma_t is ngmix's rule (tested against ngmix above).
    """
    n, scale = 48, 0.2
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    sg, sp = 2.2, 2.0   # pixels; wide enough that sampling aliases below 1e-8
    s2 = sg * sg + sp * sp
    img = np.exp(-(x * x + y * y) / (2 * s2)) / (2 * np.pi * s2)
    psf = np.exp(-(x * x + y * y) / (2 * sp * sp)) / (2 * np.pi * sp * sp)
    step = 0.01
    out = metacal(img[None], psf[None], pixel_scale=scale, kernel="gauss", dtype=dtype, step=step)
    sig_t = (1 + 2 * step) * gauss_target_sigma(psf[None])[0]
    sig_w = 1.2 * FWHM_TO_SIGMA / scale
    for t, (g1, g2) in shears(step).items():
        S = shear_matrix(g1, g2)
        e1, e2, T = _weighted_gaussian_shape(sg * sg * S @ S.T + sig_t ** 2 * np.eye(2), sig_w)
        assert abs(out[f"{t}_e1"][0] - e1) < tol, t
        assert abs(out[f"{t}_e2"][0] - e2) < tol, t
        assert abs(out[f"{t}_T"][0] / (T * scale * scale) - 1) < tol, t
    assert out["R11"][0] > 0.1


def test_multiband_shapes(reference):
    d = reference
    img = np.stack([d["image"][:6], d["image"][6:12]], axis=1)
    psf = np.stack([d["psf"][:6], d["psf"][6:12]], axis=1)
    out = metacal(img, psf, pixel_scale=0.2)
    assert out["R11"].shape == (6, 2)
    single = metacal(d["image"][6:12], d["psf"][6:12], pixel_scale=0.2)
    # the same objects in another batch shape: equal to float32 rounding (BLAS blocking)
    np.testing.assert_allclose(out["noshear_e1"][:, 1], single["noshear_e1"], rtol=1e-5, atol=1e-6)


def test_bad_object_is_flagged_not_fatal(reference):
    d = reference
    img = d["image"][:4].copy()
    psf = d["psf"][:4].copy()
    img[1, 3, 3] = np.nan
    psf[2] = 0.0
    out = metacal(img, psf, pixel_scale=0.2)
    assert out["flags"][0] == 0 and out["flags"][3] == 0
    assert out["flags"][1] & 1 and out["flags"][2] & 2
    assert np.isnan(out["noshear_e1"][1]) and np.isfinite(out["noshear_e1"][3])


def test_noise_dominated_moments_are_flagged():
    """|e| >= 1 (no positive image has such weighted moments) sets flag 16 and keeps the values."""
    n = 48
    y, x = np.mgrid[:n, :n] - (n - 1) / 2

    def gauss(sx, sy):
        return np.exp(-x ** 2 / (2 * sx ** 2) - y ** 2 / (2 * sy ** 2))

    psf = gauss(1.2, 1.2) / gauss(1.2, 1.2).sum()
    # an x-elongated galaxy minus a y-elongated dip: positive flux and T, but Mvv < 0
    img = np.stack([gauss(4, 1.5), gauss(4, 1.5) - 0.5 * gauss(1.5, 4)])
    out = metacal(img, np.stack([psf, psf]), pixel_scale=0.2)
    assert out["flags"][0] == 0 and 0 < out["noshear_e1"][0] < 1
    assert out["flags"][1] == FLAG_NOT_POSITIVE and out["noshear_e1"][1] > 1


@pytest.mark.parametrize("shift,flagged", [((0.0, 0.0), False), ((0.3, -0.3), False), ((2.0, 0.0), True),
                                           ((0.0, -1.5), True)])
def test_off_centre_psf_is_flagged(shift, flagged):
    """A PSF centred away from the stamp's true centre (flag 32, values kept); up to 0.5 pixel is fine."""
    from bench.metacal import FLAG_PSF_OFFCENTRE
    n = 48
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    psf = np.exp(-((x - shift[0]) ** 2 + (y - shift[1]) ** 2) / (2 * 1.5 ** 2))
    img = np.exp(-(x ** 2 / 9 + y ** 2 / 4) / 2)
    out = metacal(img[None], (psf / psf.sum())[None], pixel_scale=0.2, noise_correction=False)
    assert bool(out["flags"][0] & FLAG_PSF_OFFCENTRE) == flagged
    assert np.isfinite(out["R11"][0])


def test_chunking_and_precision_do_not_change_results(reference):
    d = {k: reference[k][:40] for k in ("image", "psf", "row", "col")}
    kw = dict(pixel_scale=0.2, row=d["row"], col=d["col"])
    a = metacal(d["image"], d["psf"], dtype="float64", **kw)
    b = metacal(d["image"], d["psf"], dtype="float64", chunk=7, **kw)
    c = metacal(d["image"], d["psf"], dtype="float32", **kw)
    for t in TYPES:
        np.testing.assert_allclose(b[f"{t}_e1"], a[f"{t}_e1"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(c[f"{t}_e1"], a[f"{t}_e1"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["dilate", "gauss"])
def test_torch_tensors_run_the_same_code(reference, mode):
    """The array-API path: torch tensors in, the same numbers out (CPU torch here)."""
    torch = pytest.importorskip("torch")
    d = {k: reference[k][:30] for k in ("image", "psf", "row", "col")}
    kw = dict(pixel_scale=0.2, row=d["row"], col=d["col"], kernel=mode, dtype="float64")
    a = metacal(d["image"], d["psf"], **kw)
    b = metacal(torch.from_numpy(d["image"]), torch.from_numpy(d["psf"]), **kw)
    for t in TYPES:
        np.testing.assert_allclose(b[f"{t}_e1"], a[f"{t}_e1"], rtol=0, atol=1e-10)
        np.testing.assert_allclose(b[f"{t}_T"], a[f"{t}_T"], rtol=1e-9)
