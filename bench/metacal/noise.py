"""Noise fields of metacal's noise correction (ngmix's ``fixnoise``).

Shearing a noisy image shears its noise: the noise picks up anisotropic correlations
that leak into the response. ngmix cancels them by adding a second, independent noise
field of the same variance, rotated by 90 degrees (``np.rot90(noise, k=1)``) before
metacal and rotated back (``k=3``) after it: its sheared correlations are rotated by 90
degrees, opposite in spin 2, and cancel the image's on average. The pixel noise doubles.

This engine never draws the added images. Metacal is linear and the moments are linear
in the image, so the field enters as a second batch of stamps in the same transforms, and
rotating its metacal image back is a relabelling of its moments (:func:`rotate_back`):
for ``F = rot90(X, k=3)`` measured about ``(x0, y0)`` (x along columns, y along rows,
from the stamp's true centre) the moments are those of ``X`` about ``(y0, -x0)`` with
``Mxx`` and ``Myy`` swapped and ``Mxy`` negated.

Fields are either given (an input ``noise`` array, ngmix's ``use_noise_image``) or drawn
by :func:`draw_fields` from one generator per object, keyed by ``(seed, key)``, so a field
does not depend on chunking, sharding, worker count or device.
"""

from __future__ import annotations

import numpy as np

from ..errors import BenchValueError


def draw_fields(keys, shape: tuple[int, ...], *, seed: int = 0, dtype=np.float64) -> np.ndarray:
    """Unit-variance Gaussian fields, one per key: ``(len(keys),) + shape``.

    Field *i* comes from ``numpy.random.default_rng(SeedSequence(seed, spawn_key=(keys[i],)))``
    alone, so equal keys give equal fields and nothing depends on how objects are batched.
    """
    keys = np.asarray(keys)
    if keys.ndim != 1 or not np.issubdtype(keys.dtype, np.integer):
        raise BenchValueError(f"noise keys must be a 1-d integer array, got dtype {keys.dtype} and "
                              f"shape {keys.shape}")
    if len(keys) and keys.min() < 0:
        raise BenchValueError(f"noise keys must be >= 0, got {int(keys.min())}")
    out = np.empty((len(keys),) + tuple(shape), dtype=dtype)
    for i, k in enumerate(keys.tolist()):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(k,))))
        out[i] = rng.standard_normal(shape, dtype=np.float32 if dtype == np.float32 else np.float64)
    return out


def rotate_in(xp, noise):
    """``np.rot90(noise, k=1)`` over the last two axes, for any array namespace and leading axes."""
    axes = tuple(range(noise.ndim - 2)) + (noise.ndim - 1, noise.ndim - 2)
    return xp.flip(xp.permute_dims(noise, axes), axis=-2)


def rotated_centres(x0, y0):
    """Where the weight sits on the rotated field's metacal image: ``(y0, -x0)``."""
    return y0, -x0


def rotate_back(m):
    """Moments (…, 4) = (M0, Mxx, Myy, Mxy) of X as those of ``rot90(X, k=3)`` (see the module docstring)."""
    return np.stack([m[..., 0], m[..., 2], m[..., 1], -m[..., 3]], axis=-1)
