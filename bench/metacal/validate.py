"""Input checks of metacal: array shapes and values, object centres, noise fields, input files."""

from __future__ import annotations

import math
import os

import numpy as np

from ..arrays import device_of, to_numpy
from ..errors import BenchFileError, BenchKeyError, BenchTypeError, BenchValueError
from .config import FLAG_NONFINITE, FLAG_PSF_OFFCENTRE, FLAG_PSF_ZERO, PSF_CENTRE_TOLERANCE
from .noise import draw_fields, rotate_in


#: smallest stamp side metacal accepts: below it the weight (FWHM 6 pixels at 0.2") does not fit
MIN_STAMP = 8


def _real(dtype) -> bool:
    """Whether a NumPy, CuPy or torch dtype holds real numbers (not complex, strings or objects)."""
    name = str(dtype).removeprefix("torch.")
    try:
        return np.dtype(name).kind in "fiu"
    except TypeError:
        return name == "bfloat16"


def check_arrays(image, psf, pixel_scale, *, deconvolved=None):
    """Shapes and the pixel scale; returns *image* and *psf* as arrays (lists become NumPy)."""
    if isinstance(image, (list, tuple)) or np.isscalar(image):
        image = np.asarray(image)
    if isinstance(psf, (list, tuple)) or np.isscalar(psf):
        psf = np.asarray(psf)
    if image.ndim not in (3, 4):
        raise BenchTypeError(f"image must have 3 or 4 dimensions (N, [B,] n, n), got shape {tuple(image.shape)}")
    if tuple(psf.shape) != tuple(image.shape):
        raise BenchValueError(f"psf shape {tuple(psf.shape)} does not match image shape {tuple(image.shape)}")
    if image.shape[-1] != image.shape[-2]:
        raise BenchValueError(f"stamps must be square, got {tuple(image.shape[-2:])}")
    if image.shape[-1] < MIN_STAMP or image.shape[0] < 1:
        raise BenchValueError(f"need at least one stamp of at least {MIN_STAMP} x {MIN_STAMP} pixels, got "
                              f"shape {tuple(image.shape)}")
    for name, a in (("image", image), ("psf", psf)):
        if not _real(a.dtype):
            raise BenchTypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if not (isinstance(pixel_scale, (int, float, np.floating)) and math.isfinite(pixel_scale) and pixel_scale > 0):
        raise BenchValueError(f"pixel_scale must be a number > 0, got {pixel_scale!r}")
    if deconvolved is not None and tuple(deconvolved.shape) != tuple(image.shape):
        raise BenchValueError(f"deconvolved shape {tuple(deconvolved.shape)} does not match "
                              f"image shape {tuple(image.shape)}")
    return image, psf


def check_centres(row, col, N: int, n: int, B: int):
    """Offsets (x0, y0) of the object centres from the stamp centre, repeated per band."""
    c = (n - 1) / 2.0
    row = np.full(N, c) if row is None else to_numpy(row).astype(np.float64)
    col = np.full(N, c) if col is None else to_numpy(col).astype(np.float64)
    if row.shape != (N,) or col.shape != (N,):
        raise BenchValueError(f"row and col must have shape ({N},), got {row.shape} and {col.shape}")
    for name, v in (("row", row), ("col", col)):
        out = ~(np.isfinite(v) & (v >= 0) & (v <= n - 1))
        if out.any():
            i = int(np.argmax(out))
            raise BenchValueError(f"{name} must lie inside the {n} x {n} stamp, [0, {n - 1}], got {v[i]!r} "
                                  f"for object {i} ({int(out.sum())} objects outside)")
    return np.repeat(col - c, B), np.repeat(row - c, B)


def noise_fields(xp, dev, image, config, *, noise=None, noise_sigma=None, keys=None, deconvolved=None,
                 deconvolved_noise=None):
    """The stamps the correction adds, already rotated by 90 degrees: (N, [B,] n, n).

    With *deconvolved*, the method's deconvolution of the rotated field (*deconvolved_noise*);
    otherwise ``rot90(noise, k=1)``, *noise* given or drawn (unit fields times *noise_sigma*).
    """
    shape = tuple(image.shape)
    if deconvolved is not None:
        if deconvolved_noise is None:
            raise BenchValueError("with deconvolved images and the noise correction on, give deconvolved_noise "
                                  "(the method's deconvolution of rot90(noise, k=1)), or noise_correction=False")
        if tuple(deconvolved_noise.shape) != shape:
            raise BenchValueError(f"deconvolved_noise shape {tuple(deconvolved_noise.shape)} does not match "
                                  f"image shape {shape}")
        return deconvolved_noise
    if noise is None:
        noise = draw_noise(shape, noise_sigma, keys=keys, seed=config.noise_seed)
    elif tuple(noise.shape) != shape:
        raise BenchValueError(f"noise shape {tuple(noise.shape)} does not match image shape {shape}")
    if isinstance(noise, np.ndarray) and not isinstance(image, np.ndarray):
        noise = xp.asarray(noise, device=dev)
    return rotate_in(xp, noise)


def draw_noise(shape, noise_sigma, *, keys=None, seed: int = 0) -> np.ndarray:
    """Fields of the stamps' noise level for an (N, [B,] n, n) batch, one generator per object key."""
    N = shape[0]
    if noise_sigma is None:
        raise BenchValueError("the noise correction needs noise_sigma (or a noise field); "
                              "pass noise_sigma=... or noise_correction=False")
    sig = np.asarray(to_numpy(noise_sigma), dtype=np.float64)
    if sig.shape not in ((N,), tuple(shape[:-2])):
        raise BenchValueError(f"noise_sigma must have shape ({N},) or {tuple(shape[:-2])}, got {sig.shape}")
    if not (np.isfinite(sig).all() and (sig > 0).all()):
        raise BenchValueError(f"noise_sigma must be positive and finite, got min {sig.min()!r}")
    keys = np.arange(N) if keys is None else np.asarray(to_numpy(keys))
    if keys.shape != (N,):
        raise BenchValueError(f"noise_keys must have shape ({N},), got {keys.shape}")
    z = draw_fields(keys, tuple(shape[1:]), seed=seed, dtype=np.float32)
    sig = sig.reshape(sig.shape + (1,) * (len(shape) - sig.ndim))
    return (z * sig).astype(np.float32)


def flag_inputs(xp, img, ps, dec=None, nse=None):
    """Flags 1 (non-finite), 2 (PSF sum <= 0) and 32 (PSF off-centre) per stamp, and the indices
    of the stamps metacal measures (all but 1 and 2)."""
    finite = xp.all(xp.isfinite(img), axis=(1, 2)) & xp.all(xp.isfinite(ps), axis=(1, 2))
    for extra in (dec, nse):
        if extra is not None:
            finite = finite & xp.all(xp.isfinite(extra), axis=(1, 2))
    finite = to_numpy(finite)
    flags = np.zeros(img.shape[0], np.int32)
    flags[~finite] |= FLAG_NONFINITE
    psf_sum = xp.sum(ps, axis=(1, 2))
    psf_ok = to_numpy(psf_sum > 0)
    flags[finite & ~psf_ok] |= FLAG_PSF_ZERO
    # the engine divides by a PSF centred on the stamp's true centre; one centred elsewhere
    # shifts the deconvolved galaxy by its offset, so the weight misses it: flag, keep values
    n = ps.shape[-1]
    pos = xp.asarray(np.arange(n) - (n - 1) / 2.0, device=device_of(ps), dtype=ps.dtype)
    flux = xp.where(psf_sum > 0, psf_sum, 1)
    cx = xp.sum(xp.sum(ps, axis=1) * pos, axis=1) / flux
    cy = xp.sum(xp.sum(ps, axis=2) * pos, axis=1) / flux
    off = to_numpy((xp.abs(cx) > PSF_CENTRE_TOLERANCE) | (xp.abs(cy) > PSF_CENTRE_TOLERANCE))
    flags[finite & psf_ok & off] |= FLAG_PSF_OFFCENTRE
    return flags, np.nonzero(finite & psf_ok)[0]


# --------------------------------------------------------------------------- input files
INPUT_KEYS = ("image", "psf", "noise_sigma", "pixel_scale")

#: the arrays of an input file with one entry per object (the required ones and the optional)
PER_OBJECT_KEYS = ("image", "psf", "noise_sigma", "row", "col", "noise")


H5_SUFFIXES = (".h5", ".hdf5")


def open_h5_input(path: str) -> tuple[int, float]:
    """(number of objects, pixel scale) of an HDF5 input, checked without reading its stamps.

    The file holds datasets ``image``, ``psf``, ``noise_sigma`` (optional ``row``, ``col``,
    ``noise``) with the npz input's shapes, and ``pixel_scale`` as an attribute (or in the
    ``spec`` attribute of a dataset cache, which is such a file). The values are checked
    chunk by chunk as they are read (:func:`validate_input` with an offset).
    """
    import json

    import h5py

    if not os.path.exists(path):
        raise BenchFileError(f"input file not found: {path!r}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise BenchValueError(f"{path!r} is not a readable HDF5 file ({err})") from None
    with f:
        for key in INPUT_KEYS[:3]:
            if key not in f or not isinstance(f[key], h5py.Dataset):
                raise BenchKeyError(f"{path!r} has no dataset {key!r} (needs {', '.join(INPUT_KEYS[:3])}, "
                                    f"and a pixel_scale attribute)")
        shapes = {k: f[k].shape for k in PER_OBJECT_KEYS if k in f}
        dtypes = {k: f[k].dtype for k in shapes}
        scale = f.attrs.get("pixel_scale")
        if scale is None and "spec" in f.attrs:
            scale = json.loads(f.attrs["spec"]).get("pixel_scale")
    if scale is None:
        raise BenchKeyError(f"{path!r} has no pixel_scale attribute")
    return check_layout(shapes, dtypes, scale), float(scale)


def open_npz_input(path: str):
    """(reader, number of objects, pixel scale) of an npz input, checked without reading its stamps.

    The reader (:class:`bench.metacal.npz.NpzRows`) gives the objects a slice at a time, whose
    values are checked as they are read (:func:`validate_input` with an offset).
    """
    from .npz import NpzRows

    reader = NpzRows(path)
    try:
        for key in INPUT_KEYS:
            if key not in reader:
                raise BenchKeyError(f"{path!r} has no key {key!r} (needs {', '.join(INPUT_KEYS)})")
        shapes = {k: reader.shapes[k] for k in PER_OBJECT_KEYS if k in reader}
        dtypes = {k: reader.dtypes[k] for k in shapes}
        scale = reader.whole("pixel_scale")
        n_objects = check_layout(shapes, dtypes, scale)        # a bad scale is named here
        return reader, n_objects, float(scale.reshape(()))
    except BaseException:
        reader.close()
        raise


def check_layout(shapes: dict, dtypes: dict, scale) -> int:
    """Check an input file's shapes and dtypes (and its pixel scale) before its values are read;
    returns the number of objects."""
    for k in PER_OBJECT_KEYS:
        if k in shapes and not _real(dtypes[k]):
            raise BenchTypeError(f"{k} must hold real numbers, got dtype {dtypes[k]}")
    N = shapes["image"][0] if shapes["image"] else 0
    if N < 1:
        raise BenchValueError(f"image must hold at least one square stamp of at least {MIN_STAMP} x {MIN_STAMP} "
                              f"pixels, got shape {shapes['image']}")
    # dimensions, stamp size and pixel scale on a one-object probe of the same layout
    probe = {"image": np.zeros((1,) + shapes["image"][1:]), "psf": np.ones((1,) + shapes["image"][1:]),
             "noise_sigma": np.ones((1,) + shapes["noise_sigma"][1:]), "pixel_scale": np.asarray(scale)}
    validate_input(probe)
    want = {"psf": shapes["image"], "noise": shapes["image"], "row": (N,), "col": (N,)}
    for k, shp in shapes.items():
        if shp[:1] != (N,):
            raise BenchValueError(f"image has {N} objects but {k} has {shp[0] if shp else 0} (shape {shp})")
    for k, shp in shapes.items():
        if k in want and shp != want[k]:
            raise BenchValueError(f"{k} shape {shp} does not match image shape {shapes['image']} (must be {want[k]})")
    if shapes["noise_sigma"] not in ((N,), shapes["image"][:2]):
        raise BenchValueError(f"noise_sigma must have shape ({N},) or {shapes['image'][:2]}, got "
                              f"{shapes['noise_sigma']}")
    return N


def validate_input(d: dict[str, np.ndarray], *, offset: int = 0) -> None:
    """Check the arrays of an input file; raises naming the bad key and value.

    *offset* is the index of ``d``'s first object in the file, for messages about a chunk.
    """
    img, psf = d["image"], d["psf"]
    for key in ("image", "psf", "noise_sigma", "pixel_scale", "row", "col", "noise"):
        if key in d and not _real(d[key].dtype):
            raise BenchTypeError(f"{key} must hold real numbers, got dtype {d[key].dtype}")
    if img.ndim not in (3, 4):
        raise BenchTypeError(f"image must have 3 or 4 dimensions (N, [B,] n, n), got shape {img.shape}")
    if psf.ndim != img.ndim:
        raise BenchTypeError(f"psf must have {img.ndim} dimensions like image, got shape {psf.shape}")
    if psf.shape[0] != img.shape[0]:
        raise BenchValueError(f"image has {img.shape[0]} objects but psf has {psf.shape[0]}")
    if psf.shape != img.shape:
        raise BenchValueError(f"psf shape {psf.shape} does not match image shape {img.shape}")
    if img.shape[0] < 1 or img.shape[-1] != img.shape[-2] or img.shape[-1] < MIN_STAMP:
        raise BenchValueError(f"image must hold at least one square stamp of at least {MIN_STAMP} x {MIN_STAMP} "
                              f"pixels, got shape {img.shape}")
    for key in ("image", "psf"):
        bad = ~np.isfinite(d[key])
        if bad.any():
            i = np.argwhere(bad)[0]
            at = (int(i[0]) + offset,) + tuple(int(v) for v in i[1:])
            raise BenchValueError(f"{key} has a non-finite pixel ({d[key][tuple(i)]}) at index {at}")
    s = psf.reshape(psf.shape[0], -1, psf.shape[-2] * psf.shape[-1]).sum(axis=-1)
    if (s <= 0).any():
        i = np.argwhere(s <= 0)[0]
        raise BenchValueError(f"psf of object {int(i[0]) + offset} sums to {float(s[tuple(i)])}; it must be > 0")
    scale = np.asarray(d["pixel_scale"])
    if scale.size != 1 or not np.isfinite(scale).all() or float(scale) <= 0:
        raise BenchValueError(f"pixel_scale must be a positive number, got {scale!r}")
    ns = np.asarray(d["noise_sigma"])
    if ns.shape not in ((img.shape[0],), img.shape[:2]):
        raise BenchValueError(f"noise_sigma must have shape ({img.shape[0]},) or {img.shape[:2]}, got {ns.shape}")
    if not np.isfinite(ns).all() or (ns <= 0).any():
        raise BenchValueError(f"noise_sigma must be positive and finite, got min {ns.min()!r}")
    for key in ("row", "col"):
        if key in d and np.asarray(d[key]).shape != (img.shape[0],):
            raise BenchValueError(f"{key} must have shape ({img.shape[0]},), got {np.asarray(d[key]).shape}")


    if "noise" in d:
        nz = np.asarray(d["noise"])
        if nz.shape != img.shape:
            raise BenchValueError(f"noise must have the image's shape {img.shape}, got {nz.shape}")
        if not np.isfinite(nz).all():
            raise BenchValueError("noise has a non-finite pixel")
