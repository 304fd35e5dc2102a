"""Checkpoints and model cards of the trained networks (PyTorch ``dwdn``, JAX ``resnet-jax``).

A checkpoint is one safetensors file: the model's tensors under ``model.<path>``, in
training checkpoints also the optimiser's under ``optim.<path>`` (so a run resumes), and
metadata ``config`` (JSON of the network's configuration) and ``state`` (JSON: phase,
epoch, step, elapsed seconds). Nothing is unpickled. The model card, ``NAME.card.json``
beside ``NAME.safetensors``, records how the weights were made (:func:`write_card`).
Files are written to a temporary name and renamed, so an interrupted write leaves the
previous file intact.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

from bench.errors import BenchFileError, BenchValueError


def save(path, tensors: dict, *, config: dict, state: dict | None = None, framework: str = "numpy") -> None:
    """Write *tensors* (name -> array) with *config* and *state* atomically.

    framework : {"numpy", "torch"}
        The tensors' kind (safetensors' flavour). [default: "numpy"]
    """
    if framework == "torch":
        from safetensors.torch import save_file
    else:
        from safetensors.numpy import save_file
    meta = {"config": json.dumps(config), "state": json.dumps(state or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def read(path, *, label: str, framework: str = "numpy", device: str = "cpu"):
    """(tensors, config dict, state dict) of a checkpoint; clear errors for a missing or corrupt file.

    label : str
        The network's name, for messages.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise BenchFileError(f"{label} checkpoint not found: {str(path)!r}")
    try:
        with safe_open(str(path), framework="pt" if framework == "torch" else "numpy") as f:
            meta = f.metadata() or {}
        if framework == "torch":
            from safetensors.torch import load_file
            tensors = load_file(str(path), device=str(device))
        else:
            from safetensors.numpy import load_file
            tensors = load_file(str(path))
        config = json.loads(meta["config"])
        state = json.loads(meta.get("state", "{}"))
        if not isinstance(config, dict) or not isinstance(state, dict):
            raise ValueError("config and state must be JSON objects")
    except (SafetensorError, OSError, KeyError, TypeError, json.JSONDecodeError, ValueError) as err:
        raise BenchValueError(f"{str(path)!r} is not a readable {label} checkpoint "
                              f"({type(err).__name__}: {err})") from None
    return tensors, config, state


def split(tensors: dict, prefix: str) -> dict:
    """The tensors under ``prefix.``, with the prefix removed."""
    return {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def card_path(weights_path) -> Path:
    """``NAME.card.json`` beside ``NAME.safetensors``."""
    p = Path(weights_path)
    return p.with_name(p.name.removesuffix(".safetensors") + ".card.json")


def hardware(**framework_info) -> dict:
    """The machine part of a model card."""
    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            **framework_info}


def write_card(path, *, model: str, preset: str, config: dict, parameters: int, dataset: str, dataset_key: str,
               n_train: int, n_val: int, val_fraction: float, schedule: dict, state: dict, wall: float,
               validation: tuple[float, float], hardware_info: dict, module: str) -> dict:
    """Write the model card (JSON) of a training run and return it."""
    card = {
        "model": model, "preset": preset, "config": config, "parameters": int(parameters),
        "dataset": dataset, "dataset_key": dataset_key, "train_samples": int(n_train),
        "validation_samples": int(n_val), "validation_split": f"last {val_fraction:.0%} of quads",
        "schedule": schedule, "steps": state["step"], "wall_time_s": round(wall, 1),
        "hardware": hardware_info,
        "validation": {"psnr_db": round(validation[0], 3), "ssim": round(validation[1], 4)},
        # the command that made it, when it was made from the command line
        "recipe": (f"python -m {module} " + " ".join(sys.argv[1:])
                   if Path(sys.argv[0]).as_posix().endswith(module.replace(".", "/") + ".py") else None),
    }
    Path(path).write_text(json.dumps(card, indent=2) + "\n")
    return card
