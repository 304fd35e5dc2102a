"""Pieces the training commands of the neural methods share (PyTorch DWDN, JAX resnet).

The losses are in :mod:`methods.losses` and checkpoints and model cards in
:mod:`methods.checkpoint`; this module holds the data split, the dihedral augmentation
and the command line.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

#: datasets the benchmark measures on: a network trained on one would be judged on its training data
BENCHMARK_DATASETS = ("smoke", "ci", "default", "paper", "bias-kolmogorov")


def check_options(epochs, lr, batch, val_fraction: float = 0.1) -> None:
    """Raise a BenchValueError naming the value for epochs, learning rates, batch size or validation
    share that cannot train (before any dataset is loaded or simulated)."""
    from bench.errors import BenchValueError

    epochs, lr = tuple(epochs), tuple(lr)
    if len(epochs) != 2 or not all(isinstance(e, (int, np.integer)) and e >= 0 for e in epochs) or sum(epochs) < 1:
        raise BenchValueError(f"epochs takes two integers >= 0 (pre-training, fine-tuning) with at least one "
                              f"epoch in all, got {epochs}")
    if len(lr) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in lr):
        raise BenchValueError(f"lr takes two finite learning rates > 0, got {lr}")
    if not (isinstance(batch, (int, np.integer)) and batch >= 1):
        raise BenchValueError(f"batch must be an integer >= 1, got {batch!r}")
    if not (isinstance(val_fraction, (int, float)) and 0 < val_fraction < 0.5):
        raise BenchValueError(f"val_fraction must be in (0, 0.5), got {val_fraction!r}")


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
    tr, va = np.nonzero(q <= cut)[0], np.nonzero(q > cut)[0]
    if not len(tr) or not len(va):
        raise BenchValueError(f"dataset {ds.spec.name!r} has {len(np.unique(q))} quads: too few to keep "
                              f"{val_fraction:g} of them for validation and train on the rest")
    return tr, va


#: what a network is trained on: the observed stamps, or metacal's five images of them
DATA_KINDS = ("stamps", "metacal")


def metacal_pairs(ds, idx, *, seed: int = 0, progress: bool = False):
    """Training pairs for a network that sits after metacal's shear (``shear-then-deconvolve``).

    For each sample of *idx* and each of the five metacal types: the metacal image drawn
    by :func:`bench.metacal.render.metacal_images` with the benchmark's settings (``gauss``
    kernel, noise correction on, its fields drawn from *seed* with the dataset's noise
    pairing), the reconvolution PSF, the image's per-pixel noise sigma (counting the added
    field), and the target ``S_t(truth)``
    (:func:`bench.metacal.render.sheared_stamps`). Returns (image, psf, sigma, target)
    as float32 arrays, type by type (5 rows per sample); objects metacal flags are left out.
    """
    from bench.metacal import TYPES, MetacalConfig
    from bench.metacal.render import metacal_images, sheared_stamps
    from bench.pipeline import paired_noise

    idx = np.asarray(idx)
    config = MetacalConfig()
    img, psf, sig = ds["image"][idx], ds["psf"][idx], ds["noise_sigma"][idx]
    noise = paired_noise(ds["quad_id"][idx], ds["rotation"][idx], sig, img.shape[1:], seed=seed,
                         pairing=ds.spec.noise_pairing)
    centre = dict(row=ds["row"][idx], col=ds["col"][idx])        # shears about the object, as the benchmark's
    mc = metacal_images(img, psf, pixel_scale=ds.spec.pixel_scale, config=config, noise=noise, noise_sigma=sig,
                        **centre)
    targets = sheared_stamps(ds["truth"][idx], step=config.step, **centre)
    good = np.all(np.asarray(mc["flags"]).reshape(len(idx), -1) == 0, axis=1)   # flagged objects hold zeros
    s = np.where(np.isfinite(mc["noise_sigma"]), mc["noise_sigma"], 0.0).astype(np.float32)
    k = len(TYPES)
    return (np.concatenate([mc["images"][t][good] for t in TYPES]).astype(np.float32),
            np.concatenate([mc["target_psf"][good]] * k).astype(np.float32),
            np.concatenate([s[good]] * k),
            np.concatenate([targets[t][good] for t in TYPES]).astype(np.float32))


def training_arrays(ds, tr, va, *, data: str = "stamps", seed: int = 0):
    """(train, validation): each [image, psf, noise_sigma, target] float32 arrays of one *data* kind.

    ``"stamps"``: the observed stamps, their PSFs and ``truth``; ``"metacal"``: the five
    metacal images of each sample (:func:`metacal_pairs`), for the second placement.
    """
    from bench.errors import unknown_name

    if data not in DATA_KINDS:
        raise unknown_name("data", data, DATA_KINDS)
    if data == "metacal":
        return list(metacal_pairs(ds, tr, seed=seed)), list(metacal_pairs(ds, va, seed=seed))
    arrays = [np.asarray(ds[k], dtype=np.float32) for k in ("image", "psf", "noise_sigma", "truth")]
    return [a[tr] for a in arrays], [a[va] for a in arrays]


def data_description(data: str) -> str:
    """What a model card says the network was trained on."""
    if data == "metacal":
        return ("metacal's five images (gauss kernel, noise correction on) of each sample, with the "
                "reconvolution PSF, to the sheared truth: for the shear-then-deconvolve placement")
    return "the observed stamps with their PSFs, to the truth"


def init_description(init) -> dict | None:
    """The checkpoint a fine-tuning started from: its file name and SHA-256, for the model card."""
    if init is None:
        return None
    import hashlib
    from pathlib import Path

    return {"file": Path(init).name, "sha256": hashlib.sha256(Path(init).read_bytes()).hexdigest()}


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
    p.add_argument("--preset", default="small", choices=("small", "full"), help="small or full [small]")
    p.add_argument("--out", default=None,
                   help="checkpoint to write; an existing file only with --overwrite or --resume "
                        "[NAME-PRESET-DATASET.safetensors here]")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--replace-shipped", action="store_true",
                   help="allow --out in the shipped weights' folder (they change only through this flag)")
    p.add_argument("--allow-benchmark-dataset", action="store_true",
                   help=f"train on a dataset the benchmark measures on ({', '.join(BENCHMARK_DATASETS)})")
    p.add_argument("--epochs", type=int, nargs=2, default=[40, 10], help="pre-training, fine-tuning [40 10]")
    p.add_argument("--lr", type=float, nargs=2, default=[1e-3, 1e-4], help="learning rates [1e-3 1e-4]")
    p.add_argument("--batch", type=int, default=32, help="batch size [32]")
    p.add_argument("--val-fraction", type=float, default=0.1, help="validation share of quads [0.1]")
    p.add_argument("--seed", type=int, default=0, help="seed [0]")
    p.add_argument("--resume", action="store_true", help="continue from --out")
    p.add_argument("--data", default="stamps", choices=DATA_KINDS,
                   help="train on the observed stamps, or on metacal's five images of them (for the "
                        "shear-then-deconvolve placement) [stamps]")
    p.add_argument("--init", default=None,
                   help="start from this checkpoint's weights (fine-tuning; 'shipped' for the shipped "
                        "weights) [a new network]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    from bench.errors import BenchFileError, BenchValueError

    check_options(a.epochs, a.lr, a.batch, a.val_fraction)
    if a.init is not None and a.resume:
        raise BenchValueError("--init and --resume exclude each other: --resume continues --out itself")
    if a.dataset in BENCHMARK_DATASETS and not a.allow_benchmark_dataset:
        raise BenchValueError(f"--dataset {a.dataset!r} is a benchmark dataset: a network trained on it is "
                              f"judged on its own training data; use 'train' (or --allow-benchmark-dataset)")
    shipped = os.path.realpath(os.path.dirname(str(default_out)))      # every shipped checkpoint
    if a.out is None:
        from pathlib import Path
        stem = Path(str(default_out)).stem.rsplit("-", 1)[0]
        a.out = f"{stem}-{a.preset}-{Path(a.dataset).stem}{'-metacal' * (a.data == 'metacal')}.safetensors"
    if os.path.dirname(os.path.realpath(a.out)) == shipped and not a.replace_shipped:
        raise BenchFileError(f"--out {a.out!r} is in the shipped weights' folder; pass --replace-shipped to "
                             f"retrain them")
    if os.path.exists(a.out) and not (a.overwrite or a.resume or a.replace_shipped):
        raise BenchFileError(f"--out {a.out!r} exists; pass --overwrite to replace it or --resume to continue it")
    if a.resume and not os.path.exists(a.out):
        raise BenchFileError(f"--resume: no checkpoint at --out {a.out!r}")
    if a.init == "shipped":
        a.init = str(default_out)
    if a.init is not None and not os.path.isfile(a.init):
        raise BenchFileError(f"--init {a.init!r}: no such checkpoint file")
    card = train(dataset=a.dataset, preset=a.preset, out=a.out, epochs=tuple(a.epochs), lr=tuple(a.lr),
                 batch=a.batch, val_fraction=a.val_fraction, seed=a.seed, resume=a.resume,
                 progress=not a.no_progress, data=a.data, init=a.init)
    print(json.dumps(card["validation"]), f"{card['wall_time_s']} s, {card['steps']} steps -> {a.out}")
    return 0
