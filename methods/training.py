"""Pieces the training commands of the neural methods share (PyTorch DWDN, JAX resnet).

The losses themselves are in :mod:`methods.losses`; this module holds the data split,
the dihedral augmentation and the hardware record of a model card.
"""

from __future__ import annotations

import platform

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
