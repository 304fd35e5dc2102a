"""DWDN (PyTorch): shipped weights, exact normalisation, checkpoints, training command, bad input."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from bench.errors import BenchError, BenchValueError  # noqa: E402
from methods import get_method  # noqa: E402
from methods.dwdn.checkpoint import DEFAULT_CHECKPOINT, card_path, load  # noqa: E402


def _t(a):
    return torch.as_tensor(np.ascontiguousarray(a))


def test_shipped_weights_and_model_card():
    assert DEFAULT_CHECKPOINT.exists()
    assert DEFAULT_CHECKPOINT.stat().st_size < 30 * 2 ** 20
    card = json.loads(card_path(DEFAULT_CHECKPOINT).read_text())
    for key in ("config", "dataset", "dataset_key", "steps", "wall_time_s", "hardware", "validation", "schedule"):
        assert key in card
    model, state, _ = load(DEFAULT_CHECKPOINT)
    assert model.n_parameters() == card["parameters"]
    assert card["dataset"] == "train"          # never a benchmark dataset


def test_deconvolve_beats_observation_and_keeps_dtype(smoke):
    m = get_method("dwdn")
    img, psf, sig = _t(smoke["image"][:16]), _t(smoke["psf"][:16]), _t(smoke["noise_sigma"][:16])
    out = m.deconvolve(img, psf, sig)
    assert out.dtype == img.dtype and out.shape == img.shape
    truth = smoke["truth"][:16]
    rmse_out = np.sqrt(((out.numpy() - truth) ** 2).mean(axis=(2, 3)))
    rmse_obs = np.sqrt(((smoke["image"][:16] - truth) ** 2).mean(axis=(2, 3)))
    assert np.median(rmse_out / rmse_obs) < 0.85


def test_normalisation_is_undone_exactly(smoke):
    """Per-stamp normalisation: scaling image and noise by k scales the output by k."""
    m = get_method("dwdn")
    img, psf, sig = _t(smoke["image"][:6]), _t(smoke["psf"][:6]), _t(smoke["noise_sigma"][:6])
    a = m.deconvolve(img, psf, sig)
    b = m.deconvolve(img * 1000.0, psf, sig * 1000.0)
    torch.testing.assert_close(b, a * 1000.0, rtol=1e-4, atol=1e-4 * float(a.abs().max()) * 1000)


def test_training_command_writes_resumable_checkpoint(tmp_path, smoke):
    from methods.train.dwdn import train
    out = tmp_path / "w.safetensors"
    card = train(dataset="smoke", out=str(out), epochs=(1, 0), lr=(1e-3, 1e-4), batch=8, progress=False)
    assert card["steps"] > 0 and out.exists() and card_path(out).exists()
    model, state, _ = load(out)
    assert state["phase"] == 0 and state["epoch"] == 1
    card2 = train(dataset="smoke", out=str(out), epochs=(1, 1), lr=(1e-3, 1e-4), batch=8, progress=False,
                  resume=True)
    assert card2["steps"] > card["steps"]          # continued: only the fine-tuning epoch ran


def test_bad_inputs_named(smoke, tmp_path):
    m = get_method("dwdn")
    img, psf, sig = _t(smoke["image"][:4]), _t(smoke["psf"][:4]), _t(smoke["noise_sigma"][:4])
    with pytest.raises(BenchValueError, match="expects 3 bands"):
        m.deconvolve(img[:, :2], psf[:, :2], sig[:, :2])
    with pytest.raises(BenchValueError, match="48x48"):
        m.deconvolve(img[..., :40, :40], psf[..., :40, :40], sig)
    bad = img.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(BenchValueError, match="non-finite"):
        m.deconvolve(bad, psf, sig)
    with pytest.raises(BenchError, match="not found"):
        get_method("dwdn", checkpoint=tmp_path / "none.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BenchValueError, match="not a readable DWDN checkpoint"):
        get_method("dwdn", checkpoint=junk)


def test_astro_loss_same_code_for_numpy_and_torch():
    from methods.losses import astro_loss
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:48, :48] - 23.5
    t = np.exp(-(x * x + 2 * y * y) / 30.0)[None] * rng.uniform(0.5, 2, (4, 1, 1))
    p = np.roll(t, 1, axis=-1) * 1.1
    assert float(astro_loss(t, t)) == pytest.approx(0.0, abs=1e-9)
    a = float(astro_loss(p, t))
    b = float(astro_loss(torch.as_tensor(p), torch.as_tensor(t)))
    assert a > 0.1 and a == pytest.approx(b, rel=1e-9)


def test_metacal_weights_are_a_fine_tuning_of_the_shipped_ones():
    import hashlib

    from methods import get_method_class
    from methods.dwdn.checkpoint import METACAL_CHECKPOINT

    card = json.loads(card_path(METACAL_CHECKPOINT).read_text())
    assert card["dataset"] == "train" and "metacal" in card["schedule"]["data"]
    assert card["schedule"]["init"]["sha256"] == hashlib.sha256(DEFAULT_CHECKPOINT.read_bytes()).hexdigest()
    cls = get_method_class("dwdn-metacal")
    assert cls.placements == ("shear-then-deconvolve",) and cls.default_checkpoint() == METACAL_CHECKPOINT
    assert get_method("dwdn-metacal").turns == 2 and get_method("dwdn").turns == 1


def test_fine_tuning_on_metacal_images(tmp_path, smoke):
    from methods.train.dwdn import train
    out = tmp_path / "ft.safetensors"
    card = train(dataset="smoke", out=str(out), epochs=(0, 1), lr=(1e-3, 1e-4), batch=8, progress=False,
                 data="metacal", init=str(DEFAULT_CHECKPOINT))
    assert card["steps"] > 0 and out.exists()
    assert card["schedule"]["init"]["file"] == DEFAULT_CHECKPOINT.name
    assert "metacal" in card["schedule"]["data"]


def test_four_turns_make_the_network_rotation_equivariant(smoke):
    img, psf, sig = _t(smoke["image"][:4]), _t(smoke["psf"][:4]), _t(smoke["noise_sigma"][:4])
    m = get_method("dwdn", turns=4)

    def rot(a):
        return torch.rot90(a, 1, dims=(-2, -1)).contiguous()

    out, out_rot = m.deconvolve(img, psf, sig), m.deconvolve(rot(img), rot(psf), sig)
    np.testing.assert_allclose(out_rot.numpy(), rot(out).numpy(), atol=1e-5 * float(out.abs().max()))
    plain = get_method("dwdn")
    gap = (plain.deconvolve(rot(img), rot(psf), sig) - rot(plain.deconvolve(img, psf, sig))).abs().max()
    assert float(gap) > 1e-3 * float(out.abs().max())          # without the average it is not
    with pytest.raises(BenchValueError, match="turns must be one of"):
        get_method("dwdn", turns=3)
