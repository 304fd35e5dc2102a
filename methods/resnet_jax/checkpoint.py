"""``resnet-jax``'s side of :mod:`methods.checkpoint`: its parameter pytree in, a built model out.

Keys are ``model.<path>`` for the network's parameters and, in training checkpoints,
``optim.<path>`` for the optimiser state (Adam moments and step count).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.errors import BenchValueError

from .. import checkpoint as ck

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_CHECKPOINT = WEIGHTS_DIR / "resnet-jax-small.safetensors"
#: the shipped weights fine-tuned on metacal's images, for the shear-then-deconvolve placement
METACAL_CHECKPOINT = WEIGHTS_DIR / "resnet-jax-small-metacal.safetensors"
card_path = ck.card_path


def _leaves(tree, prefix: str) -> dict:
    """*tree*'s leaves by their checkpoint key."""
    import jax
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        key = ".".join(str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p)))) for p in path)
        out[f"{prefix}.{key}"] = leaf
    return out


def _flat(tree, prefix: str) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(np.asarray(v)) for k, v in _leaves(tree, prefix).items()}


def _unflat(template, tensors: dict, prefix: str, path_name: str):
    """Fill *template*'s leaves (arrays, or shapes only) from *tensors* (keys as written by :func:`_flat`)."""
    import jax
    import jax.numpy as jnp
    want = _leaves(template, prefix)
    missing = sorted(set(want) - set(tensors))
    if missing:
        raise BenchValueError(f"{path_name!r} lacks {len(missing)} tensors of its configuration, "
                              f"e.g. {missing[:3]}")
    for k, v in want.items():
        if tensors[k].shape != tuple(v.shape):
            raise BenchValueError(f"{path_name!r}: tensor {k} has shape {tensors[k].shape}, "
                                  f"the configuration needs {v.shape}")
    leaves = [jnp.asarray(tensors[k]) for k in want]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), leaves)


def save(path, cfg, params, *, opt_state=None, state: dict | None = None) -> None:
    """Write a checkpoint atomically (temporary file, then rename)."""
    tensors = _flat(params, "model")
    if opt_state is not None:
        tensors.update(_flat(opt_state, "optim"))
    ck.save(path, tensors, config=cfg.to_dict(), state=state, framework="numpy")


def load(path, *, optimizer=None):
    """(model, state, opt_state or None) from a checkpoint.

    With *optimizer* (an optax transformation) the saved optimiser state is restored
    into ``optimizer.init(params)``'s structure, when the file has one.
    """
    from flax import nnx

    from .model import ResNetConfig, ResNetDeconv

    tensors, cfg_dict, state = ck.read(path, label="resnet-jax", framework="numpy")
    try:
        cfg = ResNetConfig(**cfg_dict)
    except (TypeError, ValueError) as err:
        raise BenchValueError(f"{str(path)!r} has an unusable resnet-jax configuration ({err})") from None
    # shapes only: drawing initial weights that the file replaces costs a compilation per layer
    model = nnx.eval_shape(lambda: ResNetDeconv(cfg, rngs=nnx.Rngs(0)))
    graphdef, params = nnx.split(model, nnx.Param)
    params = _unflat(params, tensors, "model", str(path))
    model = nnx.merge(graphdef, params)
    opt_state = None
    if optimizer is not None and any(k.startswith("optim.") for k in tensors):
        opt_state = _unflat(optimizer.init(params), tensors, "optim", str(path))
    return model, state, opt_state
