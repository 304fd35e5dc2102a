"""DWDN checkpoints: safetensors weights with the configuration in the metadata, and a model card.

A checkpoint file holds the model's tensors (``model.*``), optionally the optimiser's
(``optim.*``, for resuming), and metadata: ``config`` (JSON of :class:`DWDNConfig`) and
``state`` (JSON: phase, epoch, step, elapsed seconds). The model card
(``NAME.card.json`` next to ``NAME.safetensors``) records how the weights were made.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench.errors import BenchFileError, BenchValueError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_CHECKPOINT = WEIGHTS_DIR / "dwdn-small.safetensors"


def save(path, model, *, optimizer=None, state: dict | None = None) -> None:
    """Write a checkpoint atomically (temporary file, then rename)."""
    import torch
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if optimizer is not None:
        for i, st in optimizer.state_dict()["state"].items():
            for k, v in st.items():
                t = v if torch.is_tensor(v) else torch.tensor(v)
                tensors[f"optim.{i}.{k}"] = t.detach().contiguous().cpu()
    meta = {"config": json.dumps(model.cfg.to_dict()), "state": json.dumps(state or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load(path, *, device="cpu"):
    """(model, state, optimiser tensors) from a checkpoint; clear errors for missing or corrupt files."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    from .model import DWDN, DWDNConfig

    path = Path(path)
    if not path.exists():
        raise BenchFileError(f"DWDN checkpoint not found: {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path), device=str(device))
        cfg_dict = json.loads(meta["config"])
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError, ValueError) as err:
        raise BenchValueError(f"{str(path)!r} is not a readable DWDN checkpoint ({type(err).__name__}: {err})") from None
    cfg_dict["widths"] = tuple(cfg_dict["widths"])
    model = DWDN(DWDNConfig(**cfg_dict)).to(device)
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise BenchValueError(f"{str(path)!r} does not match its own configuration: missing {missing}, "
                              f"unexpected {unexpected}")
    optim = {k[len("optim."):]: v for k, v in tensors.items() if k.startswith("optim.")}
    return model, json.loads(meta.get("state", "{}")), optim


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


def card_path(weights_path) -> Path:
    p = Path(weights_path)
    return p.with_name(p.name.removesuffix(".safetensors") + ".card.json")
