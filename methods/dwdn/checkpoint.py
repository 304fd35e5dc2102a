"""DWDN's side of :mod:`methods.checkpoint`: its tensors in, a built model out."""

from __future__ import annotations

from pathlib import Path

from bench.errors import BenchValueError

from .. import checkpoint as ck

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_CHECKPOINT = WEIGHTS_DIR / "dwdn-small.safetensors"
#: the shipped weights fine-tuned on metacal's images, for the shear-then-deconvolve placement
METACAL_CHECKPOINT = WEIGHTS_DIR / "dwdn-small-metacal.safetensors"
card_path = ck.card_path


def save(path, model, *, optimizer=None, state: dict | None = None) -> None:
    """Write a checkpoint of *model* (and the Adam moments of *optimizer*, to resume) atomically."""
    import torch

    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if optimizer is not None:
        for i, st in optimizer.state_dict()["state"].items():
            for k, v in st.items():
                t = v if torch.is_tensor(v) else torch.tensor(v)
                tensors[f"optim.{i}.{k}"] = t.detach().contiguous().cpu()
    ck.save(path, tensors, config=model.cfg.to_dict(), state=state, framework="torch")


def load(path, *, device="cpu"):
    """(model, state, optimiser tensors) from a checkpoint."""
    from .model import DWDN, DWDNConfig

    tensors, cfg_dict, state = ck.read(path, label="DWDN", framework="torch", device=device)
    try:
        cfg_dict["widths"] = tuple(cfg_dict["widths"])
        model = DWDN(DWDNConfig(**cfg_dict)).to(device)
    except (KeyError, TypeError, ValueError) as err:
        raise BenchValueError(f"{str(path)!r} has an unusable DWDN configuration ({err})") from None
    missing, unexpected = model.load_state_dict(ck.split(tensors, "model"), strict=False)
    if missing or unexpected:
        raise BenchValueError(f"{str(path)!r} does not match its own configuration: missing {missing}, "
                              f"unexpected {unexpected}")
    return model, state, ck.split(tensors, "optim")


def restore_optimizer(optimizer, optim_tensors: dict) -> None:
    """Put saved Adam moments back into a freshly built optimiser over the same parameters."""
    import torch

    sd = optimizer.state_dict()
    state = {}
    for key, t in optim_tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = t if name != "step" else torch.as_tensor(t, dtype=torch.float32)
    sd["state"] = state
    optimizer.load_state_dict(sd)
