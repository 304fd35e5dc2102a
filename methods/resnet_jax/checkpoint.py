"""``resnet-jax`` checkpoints: safetensors (NumPy flavour) with the configuration in the metadata.

Keys are ``model.<path>`` for the network's parameters and, in training checkpoints,
``optim.<path>`` for the optimiser state (Adam moments and step count), so a run can
be resumed. Metadata: ``config`` (JSON of :class:`ResNetConfig`) and ``state`` (JSON:
phase, epoch, step, elapsed seconds). The model card (``NAME.card.json``) sits beside
the weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from bench.errors import BenchFileError, BenchValueError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_CHECKPOINT = WEIGHTS_DIR / "resnet-jax-small.safetensors"


def _flat(tree, prefix: str) -> dict[str, np.ndarray]:
    import jax
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        key = ".".join(str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p)))) for p in path)
        out[f"{prefix}.{key}"] = np.ascontiguousarray(np.asarray(leaf))
    return out


def _unflat(template, tensors: dict, prefix: str, path_name: str):
    """Fill *template*'s leaves from *tensors* (keys as written by :func:`_flat`)."""
    import jax
    import jax.numpy as jnp
    want = _flat(template, prefix)
    missing = sorted(set(want) - set(tensors))
    if missing:
        raise BenchValueError(f"{path_name!r} lacks {len(missing)} tensors of its configuration, "
                              f"e.g. {missing[:3]}")
    for k, v in want.items():
        if tensors[k].shape != v.shape:
            raise BenchValueError(f"{path_name!r}: tensor {k} has shape {tensors[k].shape}, "
                                  f"the configuration needs {v.shape}")
    leaves = [jnp.asarray(tensors[k]) for k in want]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), leaves)


def save(path, cfg, params, *, opt_state=None, state: dict | None = None) -> None:
    """Write a checkpoint atomically (temporary file, then rename)."""
    from safetensors.numpy import save_file

    tensors = _flat(params, "model")
    if opt_state is not None:
        tensors.update(_flat(opt_state, "optim"))
    meta = {"config": json.dumps(cfg.to_dict()), "state": json.dumps(state or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load(path, *, optimizer=None):
    """(model, state, opt_state or None) from a checkpoint; clear errors for missing or corrupt files.

    With *optimizer* (an optax transformation) the saved optimiser state is restored
    into ``optimizer.init(params)``'s structure, when the file has one.
    """
    from flax import nnx
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    from .model import ResNetConfig, ResNetDeconv

    path = Path(path)
    if not path.exists():
        raise BenchFileError(f"resnet-jax checkpoint not found: {str(path)!r}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
        cfg = ResNetConfig(**json.loads(meta["config"]))
        state = json.loads(meta.get("state", "{}"))
    except (SafetensorError, OSError, KeyError, TypeError, json.JSONDecodeError, ValueError) as err:
        if isinstance(err, BenchValueError):
            raise
        raise BenchValueError(f"{str(path)!r} is not a readable resnet-jax checkpoint "
                              f"({type(err).__name__}: {err})") from None
    model = ResNetDeconv(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    params = _unflat(params, tensors, "model", str(path))
    model = nnx.merge(graphdef, params)
    opt_state = None
    if optimizer is not None and any(k.startswith("optim.") for k in tensors):
        opt_state = _unflat(optimizer.init(params), tensors, "optim", str(path))
    return model, state, opt_state


def card_path(weights_path) -> Path:
    p = Path(weights_path)
    return p.with_name(p.name.removesuffix(".safetensors") + ".card.json")
