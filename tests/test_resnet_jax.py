"""resnet-jax (Flax NNX): shipped weights, exact normalisation, compilation, checkpoints, training, bad input."""

import json

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("safetensors")
import jax.numpy as jnp  # noqa: E402

from bench.errors import BenchError, BenchValueError  # noqa: E402
from methods import get_method  # noqa: E402
from methods.resnet_jax.checkpoint import DEFAULT_CHECKPOINT, card_path, load  # noqa: E402
from methods.resnet_jax.model import n_parameters  # noqa: E402
from tests.conftest import run_module  # noqa: E402


def _j(*arrays):
    return [jnp.asarray(np.ascontiguousarray(a)) for a in arrays]


def test_shipped_weights_and_model_card():
    assert DEFAULT_CHECKPOINT.exists()
    assert DEFAULT_CHECKPOINT.stat().st_size < 30 * 2 ** 20
    card = json.loads(card_path(DEFAULT_CHECKPOINT).read_text())
    for key in ("config", "dataset", "dataset_key", "steps", "wall_time_s", "hardware", "validation", "schedule"):
        assert key in card
    model, state, _ = load(DEFAULT_CHECKPOINT)
    assert n_parameters(model) == card["parameters"]
    assert card["dataset"] == "train"          # never a benchmark dataset
    assert state["step"] == card["steps"]


def test_deconvolve_beats_observation_and_keeps_dtype(smoke):
    m = get_method("resnet-jax")
    img, psf, sig = _j(smoke["image"][:16], smoke["psf"][:16], smoke["noise_sigma"][:16])
    out = m.deconvolve(img, psf, sig)
    assert isinstance(out, jax.Array) and out.dtype == img.dtype and out.shape == img.shape
    truth = smoke["truth"][:16]
    rmse_out = np.sqrt(((np.asarray(out) - truth) ** 2).mean(axis=(2, 3)))
    rmse_obs = np.sqrt(((smoke["image"][:16] - truth) ** 2).mean(axis=(2, 3)))
    assert np.median(rmse_out / rmse_obs) < 0.85


def test_normalisation_is_undone_exactly(smoke):
    """Per-stamp normalisation: scaling image and noise by k scales the output by k."""
    m = get_method("resnet-jax")
    img, psf, sig = _j(smoke["image"][:6], smoke["psf"][:6], smoke["noise_sigma"][:6])
    a = np.asarray(m.deconvolve(img, psf, sig))
    b = np.asarray(m.deconvolve(img * 1000.0, psf, sig * 1000.0))
    np.testing.assert_allclose(b, a * 1000.0, rtol=1e-4, atol=1e-4 * np.abs(a).max() * 1000)


def test_compiles_once_and_padding_changes_nothing(smoke):
    """Chunks are padded to the batch size: one compilation, and results equal the unpadded ones."""
    img, psf, sig = _j(smoke["image"][:7], smoke["psf"][:7], smoke["noise_sigma"][:7])
    m = get_method("resnet-jax", batch=3)
    a = np.asarray(m.deconvolve(img, psf, sig))          # chunks of 3, 3, 1 (+2 padding)
    assert m.compile_s > 0
    assert len(m._compiled) == 1
    m.deconvolve(img, psf, sig)
    assert m.compile_s == 0.0                            # reused: steady state excludes compilation
    b = np.asarray(get_method("resnet-jax", batch=7).deconvolve(img, psf, sig))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


def test_bad_input_names_the_problem(smoke):
    m = get_method("resnet-jax")
    img, psf, sig = _j(smoke["image"][:2], smoke["psf"][:2], smoke["noise_sigma"][:2])
    with pytest.raises(BenchValueError, match="expects 3 bands of 48x48 stamps, got 2 bands"):
        m.deconvolve(img[:, :2], psf[:, :2], sig[:, :2])
    with pytest.raises(BenchValueError, match="got 3 bands of 32x32"):
        m.deconvolve(img[..., :32, :32], psf[..., :32, :32], sig)
    with pytest.raises(BenchValueError, match="image has non-finite values"):
        m.deconvolve(img.at[0, 0, 3, 3].set(jnp.nan), psf, sig)
    with pytest.raises(BenchValueError, match="psf has 3 bands but image has 2"):
        m.deconvolve(img[:, :2], psf, sig[:, :2])
    with pytest.raises(BenchValueError, match="batch must be a positive integer, got 0"):
        get_method("resnet-jax", batch=0)


def test_unreadable_checkpoint(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(BenchValueError, match="not a readable resnet-jax checkpoint"):
        load(bad)
    with pytest.raises(BenchError, match="not found"):
        load(tmp_path / "missing.safetensors")


@pytest.mark.slow
def test_training_command_writes_resumable_checkpoint(tmp_path, smoke):
    from methods.train.resnet_jax import train
    out = tmp_path / "w.safetensors"
    card = train(dataset="smoke", out=str(out), epochs=(1, 0), lr=(1e-3, 1e-4), batch=8, progress=False)
    assert card["steps"] > 0 and out.exists() and card_path(out).exists()
    assert card["dataset_key"] and card["hardware"]["jax"] == jax.__version__
    _, state, _ = load(out)
    assert state["phase"] == 0 and state["epoch"] == 1
    card2 = train(dataset="smoke", out=str(out), epochs=(1, 1), lr=(1e-3, 1e-4), batch=8, progress=False,
                  resume=True)
    assert card2["steps"] == 2 * card["steps"]          # continued: only the fine-tuning epoch ran
    _, state2, _ = load(out)
    assert state2["phase"] == 1 and state2["epoch"] == 1


def test_training_cli_rejects_bad_options(tmp_path):
    r = run_module("methods.train.resnet_jax", "--preset", "huge", "--dataset", "smoke", "--epochs", "1", "0",
                   "--allow-benchmark-dataset", "--out", tmp_path / "x.safetensors")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "invalid choice: 'huge'" in r.stderr and "'small', 'full'" in r.stderr


def test_astronomical_loss_is_shared_with_torch():
    """One array-API implementation: JAX and PyTorch get the same loss on the same stamps."""
    torch = pytest.importorskip("torch")
    from methods.losses import astro_loss
    rng = np.random.default_rng(3)
    a = rng.random((4, 3, 48, 48)).astype(np.float32)
    b = a * 1.1 + 0.01
    lj = float(astro_loss(jnp.asarray(a), jnp.asarray(b)))
    lt = float(astro_loss(torch.as_tensor(a), torch.as_tensor(b)))
    assert lj == pytest.approx(lt, rel=1e-5) and lj > 0


def test_metacal_weights_and_turns(smoke):
    import hashlib

    from methods.resnet_jax.checkpoint import METACAL_CHECKPOINT

    card = json.loads(card_path(METACAL_CHECKPOINT).read_text())
    assert card["dataset"] == "train" and "metacal" in card["schedule"]["data"]
    assert card["schedule"]["init"]["sha256"] == hashlib.sha256(DEFAULT_CHECKPOINT.read_bytes()).hexdigest()
    m = get_method("resnet-jax-metacal")
    assert m.turns == 2 and m.placements == ("shear-then-deconvolve",)
    img, psf, sig = (jnp.asarray(smoke[k][:4]) for k in ("image", "psf", "noise_sigma"))
    four = get_method("resnet-jax", turns=4)

    def rot(a):
        return jnp.rot90(a, 1, axes=(-2, -1))

    out, out_rot = four.deconvolve(img, psf, sig), four.deconvolve(rot(img), rot(psf), sig)
    np.testing.assert_allclose(np.asarray(out_rot), np.asarray(rot(out)), atol=1e-5 * float(jnp.abs(out).max()))
