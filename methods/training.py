"""Pieces the training commands of the neural methods share (PyTorch DWDN, JAX resnet).

The losses are in :mod:`methods.losses` and checkpoints and model cards in
:mod:`methods.checkpoint`; this module holds the data split, the dihedral augmentation
and the command line.
"""

from __future__ import annotations

import json

import numpy as np


def split_quads(ds, val_fraction: float):
    """(train indices, validation indices): the last *val_fraction* of the quads validate.

    Whole quads stay on one side, so a galaxy's rotated or sheared copies never leak
    from the training set into the validation set.
    """
    from bench.errors import BenchValueError
    if not 0 < val_fraction < 0.5:
        raise BenchValueError(f"val_fraction must be in (0, 0.5), got {val_fraction!r}")
    q = np.asarray(ds["quad_id"])
    cut = np.quantile(np.unique(q), 1 - val_fraction)
    return np.nonzero(q <= cut)[0], np.nonzero(q > cut)[0]


def dihedral(arrays, k: int, flip: bool):
    """Rotate the last two axes of every array by ``90 k`` degrees, then mirror them if *flip*.

    The stamps' true centre (n - 1) / 2 is fixed by these maps, so a PSF centred there
    stays centred and image, PSF and truth stay consistent: an 8-fold augmentation.
    """
    out = []
    for a in arrays:
        a = np.rot90(a, k, axes=(-2, -1))
        out.append(np.ascontiguousarray(a[..., ::-1] if flip else a))
    return out


def write_card(path, *, ds, **fields) -> dict:
    """The model card of a training run on dataset *ds* (:func:`methods.checkpoint.write_card`)."""
    from bench.dataset import cache_key
    from methods.checkpoint import write_card as _write

    return _write(path, dataset=ds.spec.name, dataset_key=cache_key(ds.spec), **fields)


def main(train, *, prog: str, description: str, default_out, argv=None) -> int:
    """The training command line both networks share; calls ``train(**options)``."""
    from bench.cli import make_parser

    p = make_parser(prog, description)
    p.add_argument("--dataset", default="train", help="training dataset spec [train]")
    p.add_argument("--preset", default="small", help="small or full [small]")
    p.add_argument("--out", default=str(default_out), help="checkpoint path [the shipped one]")
    p.add_argument("--epochs", type=int, nargs=2, default=[40, 10], help="pre-training, fine-tuning [40 10]")
    p.add_argument("--lr", type=float, nargs=2, default=[1e-3, 1e-4], help="learning rates [1e-3 1e-4]")
    p.add_argument("--batch", type=int, default=32, help="batch size [32]")
    p.add_argument("--val-fraction", type=float, default=0.1, help="validation share of quads [0.1]")
    p.add_argument("--seed", type=int, default=0, help="seed [0]")
    p.add_argument("--resume", action="store_true", help="continue from --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    card = train(dataset=a.dataset, preset=a.preset, out=a.out, epochs=tuple(a.epochs), lr=tuple(a.lr),
                 batch=a.batch, val_fraction=a.val_fraction, seed=a.seed, resume=a.resume,
                 progress=not a.no_progress)
    print(json.dumps(card["validation"]), f"{card['wall_time_s']} s, {card['steps']} steps -> {a.out}")
    return 0
