"""Wiener and Richardson-Lucy: agreement with scikit-image, dtypes, availability, bad input."""

import numpy as np
import pytest

from bench.devices import module_missing
from bench.errors import BenchError, BenchValueError, MethodUnavailableError
from methods import get_method, get_method_class, list_methods
from methods.richardson_lucy import richardson_lucy
from methods.wiener import wiener

import functools as _functools

from bench.metacal import metacal as _engine

# these tests check the engine without the noise correction (ngmix fixnoise=False)
metacal = _functools.partial(_engine, noise_correction=False)

restoration = pytest.importorskip("skimage.restoration")
BACKENDS = ["scipy"] + ([] if module_missing("pyfftw") else ["pyfftw"])


@pytest.fixture
def odd_stamp():
    """An odd-sized stamp, where scikit-image's PSF centre (n // 2) is the true centre."""
    rng = np.random.default_rng(5)
    n = 47
    y, x = np.mgrid[:n, :n] - n // 2
    img = np.exp(-(x * x + 1.5 * y * y) / 30.0) + 0.02 * rng.random((n, n))
    psf = np.exp(-(x * x / 6.0 + y * y / 4.0 + 0.3 * x * y / 5.0))
    return img, psf / psf.sum()


@pytest.mark.parametrize("backend", BACKENDS)
def test_wiener_matches_skimage(odd_stamp, backend):
    img, psf = odd_stamp
    ours = wiener(img[None, None], psf[None, None], np.ones((1, 1)), strength=0.05,
                  regulariser="laplacian", backend=backend)[0, 0]
    ref = restoration.wiener(img, psf, 0.05, clip=False)
    assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("backend", BACKENDS)
def test_richardson_lucy_matches_skimage(odd_stamp, backend):
    img, psf = odd_stamp
    ours = richardson_lucy(img[None, None], psf[None, None], np.ones((1, 1)), iterations=25,
                           background=0, init=0.5, conserve_flux=False, pad=True, backend=backend)[0, 0]
    ref = restoration.richardson_lucy(img, psf, num_iter=25, clip=False)
    assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()


@pytest.mark.parametrize("name", ["wiener-fftw", "richardson-lucy"])
def test_deconvolution_beats_the_observation_and_keeps_dtype(smoke, name):
    method = get_method(name)
    img = smoke["image"][:16]
    out = method.deconvolve(img, smoke["psf"][:16], smoke["noise_sigma"][:16])
    assert out.dtype == img.dtype and out.shape == img.shape
    truth = smoke["truth"][:16]

    def rmse(a):
        return np.sqrt(((a - truth) ** 2).mean(axis=(2, 3)))

    # closer to the pre-PSF truth than the blurred, noisy observation is
    assert np.median(rmse(out) / rmse(img)) < 0.85
    if name == "richardson-lucy":
        assert (out >= 0).all()
        flux = img.sum(axis=(2, 3))
        pos = flux > 0            # a non-negative image cannot carry a negative observed flux
        assert pos.mean() > 0.5
        np.testing.assert_allclose(out.sum(axis=(2, 3))[pos], flux[pos], rtol=1e-4)


def test_backends_agree(smoke):
    if module_missing("pyfftw"):
        pytest.skip("pyFFTW is not installed")
    a = wiener(smoke["image"][:8], smoke["psf"][:8], smoke["noise_sigma"][:8], backend="scipy")
    b = wiener(smoke["image"][:8], smoke["psf"][:8], smoke["noise_sigma"][:8], backend="pyfftw")
    np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(a).max())


def test_fftw_wisdom_is_kept(tmp_path, monkeypatch):
    if module_missing("pyfftw"):
        pytest.skip("pyFFTW is not installed")
    from methods.fft import PyFFTW
    monkeypatch.setenv("DECONVBENCH_CACHE", str(tmp_path))
    PyFFTW(threads=1).rfft2(np.zeros((3, 16, 16)))
    f = tmp_path / "fftw_wisdom.json"
    assert f.stat().st_size > 0
    from methods.fft import read_wisdom
    assert read_wisdom(f) is not None and read_wisdom(f)[0].startswith(b"(fftw")


@pytest.mark.parametrize("content", [b"\x80\x04K\x01.", b"{}", b'{"format": "x", "wisdom": []}',
                                     b'{"format": "deconvbench-fftw-wisdom-1", "wisdom": ["import os", "", ""]}',
                                     b"\xff\xfe garbage"])
def test_fftw_wisdom_file_is_never_trusted(tmp_path, monkeypatch, content):
    """A pickle, or anything else that is not FFTW wisdom text, is ignored: no traceback, plans from scratch."""
    if module_missing("pyfftw"):
        pytest.skip("pyFFTW is not installed")
    from methods.fft import PyFFTW, read_wisdom
    monkeypatch.setenv("DECONVBENCH_CACHE", str(tmp_path))
    (tmp_path / "fftw_wisdom.json").write_bytes(content)
    assert read_wisdom(tmp_path / "fftw_wisdom.json") is None
    x = np.random.default_rng(0).standard_normal((2, 16, 16))
    np.testing.assert_allclose(PyFFTW(threads=1).rfft2(x), np.fft.rfft2(x), atol=1e-9)


def test_gpu_methods_listed_with_reason():
    assert {"wiener-fftw", "wiener-cupy", "richardson-lucy"} <= set(list_methods())
    cls = get_method_class("wiener-cupy")
    why = cls.unavailable_reason()
    if why:
        assert "cupy" in why or "GPU" in why or "driver" in why
        with pytest.raises(MethodUnavailableError, match="unavailable"):
            get_method("wiener-cupy")


def test_inside_metacal_real_space_path(smoke):
    img, psf = smoke["image"][:12], smoke["psf"][:12]
    dec = get_method("wiener-fftw").deconvolve(img, psf, smoke["noise_sigma"][:12])
    out = metacal(img, psf, pixel_scale=smoke.spec.pixel_scale, row=smoke["row"][:12],
                  col=smoke["col"][:12], deconvolved=dec)
    assert np.isfinite(out["R11"]).all() and out["R11"].shape == (12, 3)


BAD = {
    "bands": (lambda i, p, s: (i, p[:, :2], s), "bands"),
    "stamp": (lambda i, p, s: (i, p[:, :, :40, :40], s), "stamps"),
    "zero": (lambda i, p, s: (i, np.where(np.arange(len(p))[:, None, None, None] == 1, 0, p), s), "all zero"),
    "sigma": (lambda i, p, s: (i, p, -s), "noise_sigma"),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("func", [wiener, richardson_lucy])
def test_bad_batches_are_named(smoke, case, func):
    mutate, words = BAD[case]
    i, p, s = mutate(smoke["image"][:4], smoke["psf"][:4], smoke["noise_sigma"][:4])
    with pytest.raises(BenchValueError, match=words):
        func(i, p, s)


@pytest.mark.parametrize("kwargs,words", [
    (dict(strength=float("nan")), "strength"), (dict(strength=0), "strength"),
    (dict(regulariser="tv"), "allowed: laplacian, nsr"),
])
def test_bad_wiener_settings(kwargs, words):
    with pytest.raises(BenchError, match=words):
        get_method_class("wiener-fftw")(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(iterations=0), dict(iterations=2.5), dict(iterations=float("inf")),
                                    dict(background=float("nan"))])
def test_bad_rl_settings(kwargs):
    with pytest.raises(BenchValueError, match=next(iter(kwargs))):
        get_method_class("richardson-lucy")(**kwargs)
