"""Metacal's own shear bias on paired simulations (datasets/bias-kolmogorov.toml).

6000 quads at SNR 100, Kolmogorov PSF shared within each quad, g1 = +-0.02 with shared
noise for +g and -g. `pytest -s` prints m and c. About 40 s to simulate on two cores, then a few seconds of metacal.
With ~2500 quads the jackknife error on m is about 1.3e-3 for this galaxy population
(the per-object response noise dominates), so the test uses 6000 to resolve 1e-3.
"""

import pytest

import functools as _functools

from bench.dataset import load_dataset
from bench.shear import shear_bias

from bench.metacal import metacal as _engine

# these tests check the engine without the noise correction (ngmix fixnoise=False)
metacal = _functools.partial(_engine, noise_correction=False)

# each resolves a shear bias of 1e-3 or a 2x error ratio: thousands of quads, 10-40 s apiece
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bias_set(tmp_path_factory):
    return load_dataset("bias-kolmogorov", cache_dir=tmp_path_factory.mktemp("cache"),
                        progress=False, workers=2)


@pytest.mark.parametrize("mode", ["dilate", "gauss"])
def test_metacal_shear_bias(bias_set, mode):
    ds = bias_set
    assert ds.spec.psf["model"] == "kolmogorov"
    out = metacal(ds["image"][:, 0], ds["psf"][:, 0], pixel_scale=ds.spec.pixel_scale,
                  row=ds["row"], col=ds["col"], kernel=mode)
    row = shear_bias(out, quad_id=ds["quad_id"], shear_sign=ds["shear_sign"], g=ds.spec.shear).loc["all"]
    print(f"\n{mode}: m = {row.m:+.2e} +- {row.m_err:.1e}, c1 = {row.c1:+.2e} +- {row.c1_err:.1e}, "
          f"c2 = {row.c2:+.2e} +- {row.c2_err:.1e}, {int(row.n_quads)} quads")
    assert row.n_dropped == 0
    assert row.m_err <= 1e-3
    assert abs(row.m) <= 2e-3
    # c consistent with zero: within 3 sigma
    assert abs(row.c1) <= 3 * row.c1_err and abs(row.c2) <= 3 * row.c2_err


def test_metacal_shear_bias_without_noise(bias_set):
    """On the noiseless images only the method's own (second-order) bias is left."""
    ds = bias_set
    out = metacal(ds["noiseless"][:, 0], ds["psf"][:, 0], pixel_scale=ds.spec.pixel_scale,
                  row=ds["row"], col=ds["col"], kernel="dilate")
    row = shear_bias(out, quad_id=ds["quad_id"], shear_sign=ds["shear_sign"], g=ds.spec.shear).loc["all"]
    print(f"\nnoiseless dilate: m = {row.m:+.2e} +- {row.m_err:.1e}")
    assert row.m_err < 1e-4
    assert abs(row.m) <= 1e-3


def test_antithetic_pairing_cuts_the_error_on_m(tmp_path):
    """The same galaxies, r band, SNR 10-20: antithetic pairing must cut fourier's m error by over 2x.

    With independent fields per rotation the linear noise term of each object's response
    only averages down; with minus the rotated field it cancels within the quad. `pytest -s`
    prints both (about 10 s).
    """
    from bench.simulate import simulate
    from bench.spec import load_spec

    base = load_spec("default").with_overrides(bands=["r"], n_quads=600, snr_bins=[10, 20],
                                               snr_bin_weights=None)
    errs = {}
    for pairing in ("independent", "antithetic"):
        d = simulate(base.with_overrides(noise_pairing=pairing), progress=False, workers=2)
        out = metacal(d["image"][:, 0], d["psf"][:, 0], pixel_scale=base.pixel_scale, row=d["row"], col=d["col"])
        row = shear_bias(out, quad_id=d["quad_id"], shear_sign=d["shear_sign"], g=base.shear).loc["all"]
        errs[pairing] = row.m_err
        print(f"\n{pairing}: m = {row.m:+.4f} +- {row.m_err:.4f}, c1 = {row.c1:+.4f} +- {row.c1_err:.4f} "
              f"({int(row.n_quads)} quads)")
    assert errs["antithetic"] < errs["independent"] / 2


def test_noise_correction_removes_the_low_snr_bias():
    """r band, SNR 10-20, 600 antithetic quads: without the correction exact metacal's m is biased
    high (metacal's correlated-noise bias); with it, fields keyed by quad like the dataset's noise,
    m is consistent with zero. `pytest -s` prints both (about 15 s)."""
    from bench.metacal import MetacalConfig
    from bench.pipeline import paired_noise
    from bench.simulate import simulate
    from bench.spec import load_spec

    spec = load_spec("default").with_overrides(bands=["r"], n_quads=600, snr_bins=[10, 20],
                                               snr_bin_weights=None, seed=4242)
    d = simulate(spec, progress=False, workers=2)
    kw = dict(pixel_scale=spec.pixel_scale, row=d["row"], col=d["col"])
    noise = paired_noise(d["quad_id"], d["rotation"], d["noise_sigma"], d["image"].shape[1:],
                         pairing=spec.noise_pairing)
    res = {}
    for corr in (False, True):
        out = _engine(d["image"][:, 0], d["psf"][:, 0], config=MetacalConfig(noise_correction=corr),
                      noise=noise[:, 0] if corr else None, **kw)
        res[corr] = shear_bias(out, quad_id=d["quad_id"], shear_sign=d["shear_sign"], g=spec.shear).loc["all"]
        print(f"\ncorrection {corr}: m = {res[corr].m:+.4f} +- {res[corr].m_err:.4f}")
    assert res[False].m > 2 * res[False].m_err
    assert abs(res[True].m) < 2 * res[True].m_err
    assert res[True].m_err < 2.5 * res[False].m_err
