"""Where the deconvolver sits in metacal (bench.pipeline.PLACEMENTS) and the drawn metacal images.

* The drawn images (bench.metacal.render), with the noise correction, are ngmix's: their
  moments match ngmix's on the reference stamps, the drawn reconvolution PSF matches
  ngmix's metacal PSF, and an identity "method" after the shear is exact metacal.
* An exact linear deconvolver gives exact metacal's m in both placements (noiseless).
* A method that shrinks every ellipticity by 20 % has m = -0.2 in the first placement
  and ~0 in the second, where metacal calibrates it.
"""

import math

import numpy as np
import pytest

from bench.errors import BenchKeyError
from bench.metacal import TYPES, MetacalConfig
from bench.metacal.engine import _shapes
from bench.metacal.render import measure, metacal_images, pixel_moments
from bench.pipeline import PLACEMENTS, run, shear_then_deconvolve
from bench.shear import shear_bias
from methods.fourier import FourierDeconvolution

from conftest import DATA, run_module

REF = DATA / "ngmix_metacal_noise_moffat_100.npz"


@pytest.fixture(scope="module")
def ref():
    with np.load(REF) as f:
        return {k: f[k] for k in f.files}


class ExactDivision(FourierDeconvolution):
    """The inverse filter as an image-returning method (not registered)."""
    name = "exact-division"
    produces_image = True

    def __init__(self):
        super().__init__(floor=1e-6)


class Shrink(ExactDivision):
    """Exact deconvolution, then 0.9 x + 0.1 rot90(x): every ellipticity shrinks by 20 %."""
    name = "shrink"

    def deconvolve(self, image, psf, noise_sigma=None):
        x = super().deconvolve(image, psf, noise_sigma)
        return 0.9 * x + 0.1 * np.rot90(x, k=1, axes=(-2, -1))


@pytest.mark.parametrize("kernel", ["dilate", "gauss", "azgauss", "fitgauss"])
def test_drawn_images_match_ngmix(ref, kernel):
    """ngmix's metacal images with fixnoise (the reference's own noise fields) and its metacal PSF."""
    scale = float(ref["pixel_scale"])
    cfg = MetacalConfig(kernel=kernel, dtype="float64")
    mc = metacal_images(ref["image"], ref["psf"], pixel_scale=scale, config=cfg, noise=ref["noise"])
    assert not mc["flags"].any()
    res = measure(mc["images"], pixel_scale=scale, row=ref["row"], col=ref["col"], config=cfg)
    de = np.abs([res[f"{t}_e{i}"] - ref[f"{kernel}_fixnoise_{t}_e{i}"] for t in TYPES for i in (1, 2)])
    assert np.median(de) <= 1e-5 and de.max() <= 1e-4, (np.median(de), de.max())
    pm = pixel_moments(mc["target_psf"], pixel_scale=scale, weight_fwhm=cfg.weight_fwhm)
    ps = _shapes({t: pm for t in TYPES}, len(pm), scale)
    np.testing.assert_allclose(ps["noshear_T"], ref[f"{kernel}_fixnoise_noshear_psf_T"], rtol=1e-4)
    np.testing.assert_allclose(ps["noshear_e1"], ref[f"{kernel}_fixnoise_noshear_psf_e1"], atol=1e-4)


def test_identity_after_the_shear_is_exact_metacal(ref):
    """No method in the second placement measures the drawn images: the engine's numbers when they are
    sheared about the stamp centre as the engine does; about each object (the placement's choice) they
    differ per object by a fraction of the noise, not on average."""
    scale = float(ref["pixel_scale"])
    kw = dict(pixel_scale=scale, row=ref["row"], col=ref["col"], noise=ref["noise"])
    cfg = MetacalConfig(kernel="gauss", dtype="float64")
    first, _ = run(None, ref["image"], ref["psf"], ref["noise_sigma"], config=cfg, **kw)
    drawn = metacal_images(ref["image"], ref["psf"], pixel_scale=scale, config=cfg, noise=ref["noise"])
    same_centre = measure(drawn["images"], pixel_scale=scale, row=ref["row"], col=ref["col"], config=cfg)
    second, dec = run(None, ref["image"], ref["psf"], ref["noise_sigma"], config=cfg, placement=PLACEMENTS[1], **kw)
    assert dec is None and str(second["placement"]) == "shear-then-deconvolve"
    for t in TYPES:
        np.testing.assert_allclose(same_centre[f"{t}_e1"], first[f"{t}_e1"], atol=1e-4)
        np.testing.assert_allclose(same_centre[f"{t}_T"], first[f"{t}_T"], rtol=1e-4)
        np.testing.assert_allclose(second[f"{t}_e1"], first[f"{t}_e1"], atol=3e-3)
    np.testing.assert_allclose(same_centre["R11"], first["R11"], atol=1e-2)
    assert abs(np.mean(second["R11"] - first["R11"])) < 2e-3


def test_noise_level_handed_to_the_method(ref):
    """The returned sigma is the drawn noise image's pixel rms (white noise through T / P)."""
    rng = np.random.default_rng(1)
    n = ref["image"].shape[-1]
    k = 4
    psf = np.repeat(ref["psf"][:k], 50, axis=0)
    noise = rng.standard_normal((len(psf), n, n)).astype(np.float32)
    cfg = MetacalConfig(noise_correction=False, dtype="float64")
    mc = metacal_images(noise, psf, pixel_scale=float(ref["pixel_scale"]), config=cfg, noise_sigma=np.ones(len(psf)))
    inner = mc["images"]["noshear"][:, 4:-4, 4:-4].reshape(k, -1)       # away from the wrapped edge
    measured = np.sqrt(np.mean(inner.reshape(k, 50, -1) ** 2, axis=(1, 2)))
    np.testing.assert_allclose(measured, mc["noise_sigma"][::50], rtol=0.05)


class Identity(ExactDivision):
    """Returns its input: what it is handed is what comes back."""
    name = "identity"

    def deconvolve(self, image, psf, noise_sigma=None):
        return np.array(image, copy=True)


def test_second_placement_returns_the_methods_noshear_output(ref):
    """The images run() returns in the second placement (scored against the truth by the benchmark)
    are the method's output on the noshear metacal image, not on the observed stamp or a sheared one."""
    scale = float(ref["pixel_scale"])
    kw = dict(pixel_scale=scale, row=ref["row"], col=ref["col"], noise=ref["noise"])
    cfg = MetacalConfig(kernel="gauss")
    res, dec = run(Identity(), ref["image"], ref["psf"], ref["noise_sigma"], config=cfg, placement=PLACEMENTS[1], **kw)
    assert "deconvolved_noshear" not in res and dec.shape == ref["image"].shape
    drawn = metacal_images(ref["image"], ref["psf"], config=cfg, **kw)["images"]
    np.testing.assert_array_equal(dec, drawn["noshear"])
    assert not np.allclose(dec, drawn["1p"], atol=1e-4) and not np.allclose(dec, ref["image"], atol=1e-3)
    assert run(None, ref["image"], ref["psf"], ref["noise_sigma"], config=cfg, placement=PLACEMENTS[1], **kw)[1] is None


def test_pixel_moments_of_a_gaussian():
    """A sheared Gaussian under a round Gaussian weight: the weighted covariance is (C^-1 + W^-1)^-1."""
    n, scale, fwhm = 64, 0.2, 1.2
    c = (n - 1) / 2
    C = np.array([[9.0, 2.0], [2.0, 5.0]])          # (x, y) covariance, pixels^2
    y, x = np.mgrid[:n, :n] - c
    r = np.stack([x, y], axis=-1)
    img = np.exp(-0.5 * np.einsum("...i,ij,...j", r, np.linalg.inv(C), r))[None]
    s2 = (fwhm / (2 * math.sqrt(2 * math.log(2))) / scale) ** 2
    Cw = np.linalg.inv(np.linalg.inv(C) + np.eye(2) / s2)
    m = pixel_moments(img, pixel_scale=scale, weight_fwhm=fwhm)[0]
    np.testing.assert_allclose(m[1:] / m[0], [Cw[0, 0], Cw[1, 1], Cw[0, 1]], rtol=1e-6)


@pytest.fixture(scope="module")
def paired():
    """200 quads, r band, SNR 40-200, noiseless and noisy, without the correction (a few seconds)."""
    from bench.simulate import simulate
    from bench.spec import load_spec

    spec = load_spec("default").with_overrides(bands=["r"], n_quads=200, snr_bins=[40, 200], snr_bin_weights=None)
    return spec, simulate(spec, progress=False, workers=1)


def _m(spec, d, method, placement, key="noiseless"):
    cfg = MetacalConfig(noise_correction=False)
    res, _ = run(method, d[key][:, 0], d["psf"][:, 0], d["noise_sigma"][:, 0], pixel_scale=spec.pixel_scale,
                 row=d["row"], col=d["col"], config=cfg, placement=placement)
    row = shear_bias(res, quad_id=d["quad_id"], shear_sign=d["shear_sign"], g=spec.shear).loc["all"]
    assert row.n_dropped == 0
    return row.m, row.m_err


def test_exact_deconvolver_same_m_in_both_placements(paired):
    spec, d = paired
    exact, err = _m(spec, d, None, PLACEMENTS[0])
    assert err < 1e-4
    for placement in PLACEMENTS:
        m, _ = _m(spec, d, ExactDivision(), placement)
        print(f"\nexact division, {placement}: m = {m:+.5f} (exact metacal {exact:+.5f})")
        assert abs(m - exact) < 5e-4


def test_shrinking_method_is_calibrated_only_after_the_shear(paired):
    spec, d = paired
    first, _ = _m(spec, d, Shrink(), PLACEMENTS[0])
    second, err = _m(spec, d, Shrink(), PLACEMENTS[1])
    print(f"\nshrink by 20 %: m = {first:+.4f} (deconvolve, then shear), {second:+.4f} +- {err:.4f} "
          f"(shear, then deconvolve)")
    assert abs(first + 0.2) < 0.02
    assert abs(second) < 0.02


def test_unknown_placement_suggests():
    with pytest.raises(BenchKeyError, match="shear-then-deconvolve"):
        run(None, np.zeros((1, 8, 8)), np.ones((1, 8, 8)), np.ones(1), pixel_scale=0.2, placement="shear-then-deconvolv")


def test_command_line_placement(ref, tmp_path):
    inp = tmp_path / "in.npz"
    np.savez(inp, image=ref["image"][:8], psf=ref["psf"][:8], noise_sigma=ref["noise_sigma"][:8],
             pixel_scale=ref["pixel_scale"], row=ref["row"][:8], col=ref["col"][:8], noise=ref["noise"][:8])
    out = tmp_path / "out.npz"
    r = run_module("bench.metacal", inp, "--out", out, "--method", "wiener-fftw", "--placement",
                   "shear-then-deconvolve")
    assert r.returncode == 0, r.stderr
    assert "shear-then-deconvolve" in r.stdout
    with np.load(out) as f:
        assert str(f["placement"]) == "shear-then-deconvolve"
        assert np.isfinite(f["R11"]).all()
    bad = run_module("bench.metacal", inp, "--out", tmp_path / "bad.npz", "--placement", "after")
    assert bad.returncode == 2 and "placement" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad.npz").exists()


def test_method_returning_the_wrong_shape_is_named(ref):
    class Cropper(ExactDivision):
        name = "cropper"

        def deconvolve(self, image, psf, noise_sigma=None):
            return image[..., 1:, 1:]

    from bench.errors import BenchValueError
    for placement in PLACEMENTS:
        with pytest.raises(BenchValueError, match="'cropper' returned shape"):
            run(Cropper(), ref["image"][:4], ref["psf"][:4], ref["noise_sigma"][:4],
                pixel_scale=float(ref["pixel_scale"]), placement=placement)


@pytest.mark.parametrize("t", TYPES)
@pytest.mark.parametrize("about", ["stamp", "object"])
def test_sheared_stamps_match_galsim(t, about):
    """Metacal's shear of an offset band-limited profile against GalSim: about the stamp centre it
    shears the shifted profile, about the object's centre it shifts the sheared profile."""
    galsim = pytest.importorskip("galsim")
    from bench.metacal.config import shears
    from bench.metacal.render import sheared_stamps

    n, scale, (dx, dy) = 48, 0.2, (0.4, -0.3)                  # offsets in pixels
    prof = galsim.Gaussian(sigma=0.5).shear(g1=0.2, g2=-0.1)     # 2.5 px: band-limited

    def draw(p):
        return p.drawImage(nx=n, ny=n, scale=scale, method="no_pixel").array.astype(np.float32)

    shifted = prof.shift(dx * scale, dy * scale)
    c = (n - 1) / 2
    centre = dict(row=[c + dy], col=[c + dx]) if about == "object" else {}
    got = sheared_stamps(draw(shifted)[None], step=0.01, **centre)[t][0]
    g1, g2 = shears(0.01)[t]
    want = draw(prof.shear(g1=g1, g2=g2).shift(dx * scale, dy * scale) if about == "object"
                else shifted.shear(g1=g1, g2=g2))
    np.testing.assert_allclose(got, want, atol=2e-5 * want.max())


def test_sheared_truth_reconvolved_is_the_noiseless_metacal_image():
    """T * S_t(truth) against the metacal images of the noiseless stamps: the training targets of the
    networks for the second placement are what those images deconvolve to."""
    from bench.dataset import load_dataset
    from bench.fourier import convolve
    from bench.metacal.render import sheared_stamps

    ds = load_dataset("smoke")
    idx = np.arange(8)
    mc = metacal_images(ds["noiseless"][idx], ds["psf"][idx], pixel_scale=ds.spec.pixel_scale,
                        config=MetacalConfig(noise_correction=False))
    target = sheared_stamps(ds["truth"][idx])
    for t in TYPES:
        ref = mc["images"][t]
        np.testing.assert_allclose(convolve(target[t], mc["target_psf"]), ref, atol=5e-3 * np.abs(ref).max())


class SecondOnly(ExactDivision):
    name = "second-only"
    placements = ("shear-then-deconvolve",)


def test_method_made_for_one_placement_refuses_the_other(ref):
    from bench.errors import BenchValueError

    args = (ref["image"][:4], ref["psf"][:4], ref["noise_sigma"][:4])
    with pytest.raises(BenchValueError, match="'second-only' is made for placement 'shear-then-deconvolve' only"):
        run(SecondOnly(), *args, pixel_scale=float(ref["pixel_scale"]), placement=PLACEMENTS[0])
    res, _ = run(SecondOnly(), *args, pixel_scale=float(ref["pixel_scale"]), placement=PLACEMENTS[1],
                 noise=ref["noise"][:4])
    assert str(res["placement"]) == PLACEMENTS[1]


class Binned(ExactDivision):
    """No deconvolution: the mean of each 4 x 4 block of pixels, repeated over the block. Its output
    depends on where the object sits on the pixel grid, as a network's does."""
    name = "binned"

    def deconvolve(self, image, psf, noise_sigma=None):
        n = image.shape[-1]
        b = image.reshape(image.shape[:-2] + (n // 4, 4, n // 4, 4)).mean(axis=(-3, -1))
        return np.repeat(np.repeat(b, 4, axis=-2), 4, axis=-1)


def test_second_placement_shears_about_the_object(paired):
    """Sheared about the stamp centre, metacal would also move each object by (S - 1)(x0 - c), which the
    real shear does not; a sub-pixel-sensitive method then shows an m that shearing about the object removes."""
    spec, d = paired
    cfg = MetacalConfig(noise_correction=False)
    args = (d["noiseless"][:, 0], d["psf"][:, 0], d["noise_sigma"][:, 0])
    m = {}
    for about, centre in (("object", dict(row=d["row"], col=d["col"])), ("stamp", {})):
        if about == "object":
            res = shear_then_deconvolve(Binned(), *args, pixel_scale=spec.pixel_scale, config=cfg, **centre)
        else:                       # measured at the object as before, only the shear centre differs
            images = metacal_images(*args[:2], pixel_scale=spec.pixel_scale, config=cfg)
            sq = {t: Binned().deconvolve(images["images"][t], images["target_psf"]) for t in TYPES}
            res = measure(sq, pixel_scale=spec.pixel_scale, row=d["row"], col=d["col"], config=cfg)
        row = shear_bias(res, quad_id=d["quad_id"], shear_sign=d["shear_sign"], g=spec.shear).loc["all"]
        m[about] = (row.m, row.m_err)
    print(f"\n4 x 4 binning after the shear: m = {m['object'][0]:+.5f} +- {m['object'][1]:.5f} about the object, "
          f"{m['stamp'][0]:+.5f} +- {m['stamp'][1]:.5f} about the stamp centre")
    assert abs(m["object"][0]) < 3 * m["object"][1] + 1e-3
    assert abs(m["stamp"][0] - m["object"][0]) > 5 * max(m["object"][1], m["stamp"][1])


def test_command_line_refuses_a_method_outside_its_placement(ref, tmp_path):
    inp = tmp_path / "in.npz"
    np.savez(inp, image=ref["image"][:4], psf=ref["psf"][:4], noise_sigma=ref["noise_sigma"][:4],
             pixel_scale=ref["pixel_scale"])
    r = run_module("bench.metacal", inp, "--out", tmp_path / "out.npz", "--method", "dwdn-metacal")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "'dwdn-metacal' is made for placement 'shear-then-deconvolve' only" in r.stderr
    assert not (tmp_path / "out.npz").exists()


@pytest.fixture(scope="module")
def paired_gri():
    """100 quads in g, r, i (what the networks take), SNR 40-200, noiseless stamps used."""
    from bench.simulate import simulate
    from bench.spec import load_spec

    spec = load_spec("default").with_overrides(n_quads=100, snr_bins=[40, 200], snr_bin_weights=None)
    return spec, simulate(spec, progress=False, workers=1)


@pytest.mark.slow
def test_network_after_the_shear_needs_the_object_centre_and_quarter_turns(paired_gri):
    """dwdn on noiseless metacal images: sheared about the stamp centre m is biased (the object moves
    under a network that sees its sub-pixel position); about the object m is ~0 but a constant
    spin-2 artefact remains in c, which averaging over 0 and 90 degrees cancels."""
    pytest.importorskip("torch")
    from methods import get_method

    spec, d = paired_gri
    cfg = MetacalConfig(noise_correction=False)
    args = (d["noiseless"], d["psf"], d["noise_sigma"])
    rows = {}
    for label, turns, centre in (("stamp centre", 1, {}), ("object", 1, dict(row=d["row"], col=d["col"])),
                                 ("object, turns=2", 2, dict(row=d["row"], col=d["col"]))):
        if centre:
            res = shear_then_deconvolve(get_method("dwdn", turns=turns), *args, pixel_scale=spec.pixel_scale,
                                        config=cfg, **centre)
        else:                   # moments at the object, as always; only the shear centre differs
            images = metacal_images(*args[:2], pixel_scale=spec.pixel_scale, config=cfg, noise_sigma=args[2])
            res = measure(_dwdn_images(images), pixel_scale=spec.pixel_scale, row=d["row"], col=d["col"], config=cfg)
        b = shear_bias(res, quad_id=d["quad_id"], shear_sign=d["shear_sign"], g=spec.shear).loc["all"]
        rows[label] = b
        print(f"\ndwdn after the shear, noiseless, shears about the {label}: m = {b.m:+.4f} +- {b.m_err:.4f}, "
              f"c1 = {b.c1:+.4f} +- {b.c1_err:.4f}, c2 = {b.c2:+.4f} +- {b.c2_err:.4f}")
    stamp, obj, turned = rows["stamp centre"], rows["object"], rows["object, turns=2"]
    assert stamp.m - obj.m > 3 * np.hypot(stamp.m_err, obj.m_err)
    assert abs(turned.m) < 3 * turned.m_err + 3e-3
    assert max(abs(obj.c1) / obj.c1_err, abs(obj.c2) / obj.c2_err) > 5          # the artefact, seen
    assert abs(turned.c1) < 3 * turned.c1_err + 1e-3 and abs(turned.c2) < 3 * turned.c2_err + 1e-3


def _dwdn_images(images):
    """dwdn on each drawn metacal image, with the reconvolution PSF and the images' noise level."""
    from bench.pipeline import deconvolve_numpy
    from methods import get_method

    m = get_method("dwdn")
    s = np.where(np.isfinite(images["noise_sigma"]), images["noise_sigma"], 0.0).astype(np.float32)
    return {t: deconvolve_numpy(m, images["images"][t], images["target_psf"], s) for t in TYPES}
