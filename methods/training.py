"""Pieces the training commands of the neural methods share (PyTorch DWDN, JAX resnet).

The losses themselves are in :mod:`methods.losses`; this module holds the data split,
the dihedral augmentation, the common part of a model card and the command line.
"""

from __future__ import annotations

import json
import platform
import sys

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


def hardware(**framework_info) -> dict:
    """The machine part of a model card."""
    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            **framework_info}


def write_card(path, *, model: str, preset: str, config: dict, parameters: int, ds, n_train: int,
               n_val: int, val_fraction: float, schedule: dict, state: dict, wall: float,
               validation: tuple[float, float], hardware_info: dict, module: str) -> dict:
    """Write the model card (JSON) of a training run and return it."""
    from bench.dataset import cache_key

    card = {
        "model": model, "preset": preset, "config": config, "parameters": int(parameters),
        "dataset": ds.spec.name, "dataset_key": cache_key(ds.spec), "train_samples": int(n_train),
        "validation_samples": int(n_val), "validation_split": f"last {val_fraction:.0%} of quads",
        "schedule": schedule, "steps": state["step"], "wall_time_s": round(wall, 1),
        "hardware": hardware_info,
        "validation": {"psnr_db": round(validation[0], 3), "ssim": round(validation[1], 4)},
        # the command that made it, when it was made from the command line
        "recipe": f"python -m {module} " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("train.py") else None,
    }
    path.write_text(json.dumps(card, indent=2) + "\n")
    return card


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
