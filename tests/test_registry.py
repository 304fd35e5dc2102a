import os
import subprocess
import sys

import numpy as np
import pytest

from bench.errors import BenchKeyError, MethodUnavailableError
from conftest import ROOT, run_module
from methods import Method, get_method, list_methods, register
from methods.registry import _REGISTRY


def test_list_and_get():
    assert "fourier" in list_methods()
    assert list_methods("four*") == ["fourier"]
    assert get_method("fourier").name == "fourier"


def test_unknown_name_suggests():
    with pytest.raises(BenchKeyError, match="Did you mean 'fourier'"):
        get_method("fourrier")


def test_register_and_unavailable():
    @register
    class NeedsGhost(Method):
        name = "test-needs-ghost"
        requires = ("surely_not_a_module_xyz",)

        def deconvolve(self, image, psf, noise_sigma):
            return image

    try:
        assert "test-needs-ghost" in list_methods("test-*")
        assert "surely_not_a_module_xyz" in NeedsGhost.unavailable_reason()
        with pytest.raises(MethodUnavailableError, match="surely_not_a_module_xyz"):
            get_method("test-needs-ghost")
    finally:
        _REGISTRY.pop("test-needs-ghost")


def test_cuda_only_method_is_unavailable_without_gpu():
    from bench.devices import cuda_unavailable_reason
    if not cuda_unavailable_reason():
        pytest.skip("a GPU is present")

    class GpuOnly(Method):
        name = "test-gpu-only"
        devices = ("cuda",)

        def deconvolve(self, image, psf, noise_sigma):
            return image

    assert "NVIDIA" in GpuOnly.unavailable_reason()


def test_methods_table():
    r = run_module("methods")
    assert r.returncode == 0, r.stderr
    assert "fourier" in r.stdout and "available" in r.stdout


def _plugin_env():
    """The environment of a process that sees the test plugins' entry points."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "plugin_pkg"), str(ROOT),
                                         env.get("PYTHONPATH", "")])
    return env


def test_entry_point_plugin():
    env = _plugin_env()
    r = run_module("methods", env=env)
    assert r.returncode == 0, r.stderr
    assert "demo-identity" in r.stdout


def test_fourier_inverts_band_limited_convolution():
    from bench.fourier import convolve
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:48, :48] - 23.5
    truth = np.exp(-(x ** 2 + y ** 2) / (2 * 3.0 ** 2))[None, None] * rng.uniform(0.5, 1, (2, 3, 1, 1))
    psf = np.exp(-(x ** 2 + y ** 2) / (2 * 1.2 ** 2))
    psf = np.broadcast_to(psf / psf.sum(), truth.shape)
    obs = convolve(truth, psf)
    est = get_method("fourier", floor=1e-6).deconvolve(obs, psf, None)
    assert np.abs(est - truth).max() < 1e-4 * truth.max()


def test_fourier_in_chunks_matches_one_transform(monkeypatch):
    """The inverse filter runs in chunks of stamps (bounded memory): same numbers, same dtype."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[:32, :32] - 15.5
    psf = np.exp(-(x ** 2 + y ** 2) / (2 * rng.uniform(1, 2, (7, 2, 1, 1)) ** 2))
    psf /= psf.sum(axis=(-2, -1), keepdims=True)
    obs = rng.normal(size=(7, 2, 32, 32)).astype(np.float32)
    method = get_method("fourier")
    monkeypatch.setattr(method, "chunk_stamps", 10 ** 6)
    whole = method.deconvolve(obs, psf, None)
    monkeypatch.setattr(method, "chunk_stamps", 3)   # 14 stamps: chunks of 3, the last of 2
    chunked = method.deconvolve(obs, psf, None)
    assert chunked.dtype == np.float32 and chunked.shape == obs.shape
    np.testing.assert_array_equal(chunked, whole)


def test_misbehaving_plugins_are_reported_not_fatal():
    """A plugin that exits at import, has no name or a number for one, or takes a built-in's name."""
    env = _plugin_env()
    r = run_module("methods", env=env)
    assert r.returncode == 0, r.stderr
    assert "demo-identity" in r.stdout and "fourier" in r.stdout
    for name in ("exits", "no-name", "number-name", "takes-fourier"):
        assert f"plugin {name!r} failed to load" in r.stdout
    assert "already registered" in r.stdout
    code = ("from methods import get_method_class; c = get_method_class('fourier'); "
            "print(c.__module__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.stdout.strip() == "methods.fourier", r.stdout + r.stderr


def test_turn_average_cancels_a_constant_spin2_artefact():
    """A 'network' that adds a fixed e1 pattern to a round input: two quarter turns cancel it."""
    from bench.metacal.render import pixel_moments
    from methods.registry import turn_average

    n = 32
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    round_ = np.exp(-0.5 * (x * x + y * y) / 9.0)[None, None]
    artefact = 0.01 * (x * x - y * y) * np.exp(-0.5 * (x * x + y * y) / 16.0)

    def run(img, psf, sig):
        return img + artefact

    def rot90(a, k):
        return np.rot90(a, k, axes=(-2, -1))

    def e1(a):
        m = pixel_moments(a[:, 0], pixel_scale=0.2)[0]
        return (m[1] - m[2]) / (m[1] + m[2])

    assert abs(e1(run(round_, None, None))) > 0.05
    for turns in (2, 4):
        assert abs(e1(turn_average(run, round_, round_, None, turns=turns, rot90=rot90))) < 1e-12
