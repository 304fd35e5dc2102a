"""The one measurement path (bench.pipeline): chunking never changes a number, and time_s means
method + metacal + measurement in both placements."""

import numpy as np
import pytest

from bench.metacal import MetacalConfig
from bench.pipeline import measure_chunk, measure_dataset, run, shear_then_deconvolve
from methods import get_method


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from bench.dataset import load_dataset
    ds = load_dataset("smoke", progress=False, cache_dir=tmp_path_factory.mktemp("cache"))
    yield ds
    ds.close()


def test_second_placement_does_not_depend_on_the_chunk(smoke):
    n = 12
    args = [smoke[k][:n] for k in ("image", "psf", "noise_sigma")]
    kw = dict(pixel_scale=smoke.spec.pixel_scale, row=smoke["row"][:n], col=smoke["col"][:n], keep_noshear=True)
    method = get_method("wiener-fftw")
    whole = shear_then_deconvolve(method, *args, config=MetacalConfig(chunk=1024), **kw)
    pieces = shear_then_deconvolve(method, *args, config=MetacalConfig(chunk=5), **kw)
    for k in ("noshear_e1", "1p_e1", "R11", "R22", "flags", "deconvolved_noshear"):
        np.testing.assert_array_equal(pieces[k], whole[k], err_msg=k)


def test_measure_dataset_equals_one_chunk(smoke):
    method = get_method("wiener-fftw")
    cfg = MetacalConfig()
    parts = list(measure_dataset(smoke, method, config=cfg, quality=True, chunk=8))
    assert [p[0] for p in parts] == [slice(a, a + 8) for a in range(0, len(smoke), 8)]
    data = {k: smoke[k][:] for k in ("image", "psf", "noise_sigma", "row", "col", "quad_id", "rotation", "truth")}
    one = measure_chunk(data, pixel_scale=smoke.spec.pixel_scale, config=cfg, method=method,
                        noise_pairing=smoke.spec.noise_pairing, quality=True)
    for k in ("noshear_e1", "R11", "psnr", "ssim"):
        np.testing.assert_allclose(np.concatenate([p[1][k] for p in parts]), one[k], rtol=1e-6, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("placement", ["deconvolve-then-shear", "shear-then-deconvolve"])
def test_time_s_counts_the_method(smoke, placement):
    """A method that sleeps 0.2 s per call: time_s holds it in either placement."""
    import time

    inner = get_method("wiener-fftw")

    class Slow:
        name, framework, produces_image, placements = "slow", "numpy", True, ()

        def deconvolve(self, image, psf, noise_sigma):
            time.sleep(0.2)
            return inner.deconvolve(image, psf, noise_sigma)

    n = 8
    res, _ = run(Slow(), *(smoke[k][:n] for k in ("image", "psf", "noise_sigma")),
                 pixel_scale=smoke.spec.pixel_scale, placement=placement)
    calls = 2 if placement == "deconvolve-then-shear" else 5      # image and rotated noise; five metacal images
    assert float(res["time_s"]) >= 0.2 * calls


def test_the_engine_takes_jax_arrays_through_numpy(smoke):
    """A JAX method's arrays reach the engine as NumPy on the CPU (DLPack), with the same numbers:
    JAX's eager mode compiled every operation of the engine and kept it (4 GB for 5000 stamps)."""
    pytest.importorskip("jax")
    from bench.arrays import engine_array, method_inputs
    from bench.metacal import metacal
    img, psf = smoke["image"][:], smoke["psf"][:]
    ji, jp = method_inputs([img, psf], "jax", "cpu")
    assert isinstance(engine_array(ji), np.ndarray) and engine_array(img) is img and engine_array(None) is None
    a = metacal(img, psf, pixel_scale=smoke.spec.pixel_scale, noise_sigma=smoke["noise_sigma"][:])
    b = metacal(ji, jp, pixel_scale=smoke.spec.pixel_scale, noise_sigma=smoke["noise_sigma"][:])
    for k in ("noshear_e1", "R11", "flags"):
        np.testing.assert_array_equal(a[k], b[k])
