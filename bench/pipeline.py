"""A method with the metacal engine and a shear estimator: the one place that joins :mod:`methods` and
:mod:`bench.metacal`. :func:`measure_chunk` (one chunk) and :func:`measure_dataset` (a dataset, a
chunk at a time) are the one measurement path of the command line, the Dask shards, the
benchmark suite and the kernel study; ``time_s`` is the method + metacal + measurement time
in both placements.

The noise correction for a method that returns images: the method deconvolves the rotated
noise field ``rot90(noise, k=1)`` with the object's PSF, as it deconvolves the image, and the
engine shears and reconvolves both. For a linear method (``wiener-fftw``, ``fourier``) this
is exactly ngmix's recipe; for a nonlinear one (Richardson-Lucy, the networks) it is the
natural analogue, not a proof of cancellation.

Where the method sits (``placement``, :data:`PLACEMENTS`):

* ``"deconvolve-then-shear"``: the method replaces metacal's own deconvolution; metacal
  shears and reconvolves its output. Only an exact linear deconvolution is unbiased here:
  the artificial shear also shears what the method leaves of the PSF (for Wiener,
  W(k) P(k) != 1) and its prior, which the real shear does not.
* ``"shear-then-deconvolve"``: exact metacal draws the five images (noise correction
  added, :func:`bench.metacal.render.metacal_images`), the method deconvolves each with
  the reconvolution PSF, and the moments are measured on its outputs. The method is
  then part of the shape measurement, which metacal calibrates however nonlinear it is
  (Sheldon & Huff 2017); it costs five deconvolutions per stamp instead of two.

Correction fields for the simulated datasets follow the dataset's own noise pairing
(:func:`paired_noise`): the +g and -g members of a pair share their field, and with
``noise_pairing = "antithetic"`` the 90-degree pair gets minus the 90-degree-rotated field,
so the correction's own noise cancels within a quad as the image noise does.
"""

from __future__ import annotations

import time

import numpy as np

from .arrays import method_inputs, to_numpy
from .errors import BenchValueError, unknown_name
from .metacal import TYPES, MetacalConfig, draw_fields, metacal
from .metacal.noise import rotate_in
from .metacal.render import measure, metacal_images
from .metacal.validate import draw_noise

#: where a method sits in metacal; the first is the default
PLACEMENTS = ("deconvolve-then-shear", "shear-then-deconvolve")


def check_placement(method, placement: str) -> None:
    """Raise a BenchValueError when *method* (an instance or class) is not made for *placement*."""
    if placement not in PLACEMENTS:
        raise unknown_name("placement", placement, PLACEMENTS)
    allowed = getattr(method, "placements", None)
    if allowed and placement not in allowed:
        raise BenchValueError(f"method {getattr(method, 'name', method)!r} is made for placement "
                              f"{' or '.join(map(repr, allowed))} only (it was trained there), not {placement!r}")


def deconvolve_numpy(method, image, psf, noise_sigma, *, device: str = "cpu"):
    """Run *method* on NumPy (N, B, n, n) inputs on *device*; the result comes back as NumPy."""
    arrays = [np.ascontiguousarray(a) for a in (image, psf, noise_sigma)]
    out = method.deconvolve(*method_inputs(arrays, method.framework, device))
    if not hasattr(out, "shape") or tuple(out.shape) != tuple(arrays[0].shape):
        raise BenchValueError(f"method {getattr(method, 'name', method)!r} returned "
                              f"{'shape ' + str(tuple(out.shape)) if hasattr(out, 'shape') else type(out).__name__} "
                              f"for stamps of shape {tuple(arrays[0].shape)}; deconvolve must return the input's shape")
    return to_numpy(out)


def paired_noise(quad_id, rotation, noise_sigma, shape, *, seed: int = 0, pairing: str = "antithetic"):
    """Correction fields keyed like a simulated dataset's noise: (N, B, n, n) float32.

    Parameters
    ----------
    quad_id, rotation : array_like, shape (N,)
        Each sample's quad and its rotation (0 or 90 degrees), from the dataset.
    noise_sigma : array_like, shape (N, B)
        Per-pixel noise sigma.
    shape : tuple
        ``(B, n, n)``.
    seed : int
        [default: 0]
    pairing : {"antithetic", "independent"}
        The dataset's ``noise_pairing``. [default: "antithetic"]
    """
    quad_id, rotation = np.asarray(quad_id), np.asarray(rotation)
    r = (rotation // 90).astype(np.int64)
    if pairing == "antithetic":
        z = draw_fields(quad_id.astype(np.int64), shape, seed=seed, dtype=np.float32)
        turned = r == 1
        # the dataset's convention: minus the field rotated by rot90(k=-1)
        z[turned] = -np.rot90(z[turned], k=-1, axes=(-2, -1))
    else:
        z = draw_fields(2 * quad_id.astype(np.int64) + r, shape, seed=seed, dtype=np.float32)
    sig = np.asarray(noise_sigma, dtype=np.float32)
    return z * sig.reshape(sig.shape + (1,) * (z.ndim - sig.ndim))


def run(method, image, psf, noise_sigma, *, pixel_scale: float, row=None, col=None,
        config: MetacalConfig | None = None, noise=None, noise_keys=None, device: str = "cpu",
        placement: str = "deconvolve-then-shear"):
    """Metacal of a batch with *method* (a :class:`methods.Method`, or None for exact metacal).

    Parameters
    ----------
    method : Method or None
        A method that returns images deconvolves them (and the rotated noise field, with the
        correction on); ``None`` or a method without images (``fourier``) runs exact metacal.
    image, psf : ndarray, shape (N, n, n) or (N, B, n, n)
    noise_sigma : array_like, shape (N,) or (N, B)
    pixel_scale : float
    row, col : array_like, shape (N,), optional
    config : MetacalConfig, optional
        [default: MetacalConfig()]
    noise : ndarray, optional
        The correction's noise fields, same shape as *image*. [default: drawn per object key]
    noise_keys : array_like of int, optional
        Keys of the drawn fields. [default: the object's index]
    device : str
        Where the method runs. [default: "cpu"]
    placement : {"deconvolve-then-shear", "shear-then-deconvolve"}
        Where the method sits (module docstring). In the second, ``None`` measures the
        metacal images themselves (exact metacal, in pixels) and any method with a
        ``deconvolve`` runs, ``fourier`` included. [default: "deconvolve-then-shear"]

    Returns
    -------
    (dict, ndarray or None)
        The metacal output (with ``placement``) and the method's deconvolved images, shaped
        like *image*: of the observed stamps in the first placement, of the noshear metacal
        images in the second (their target is the same truth; the benchmark scores both).
        None without a method that returns images.
    """
    check_placement(method, placement)
    config = config or MetacalConfig()
    if placement == "shear-then-deconvolve":
        res = shear_then_deconvolve(method, image, psf, noise_sigma, pixel_scale=pixel_scale, row=row, col=col,
                                    config=config, noise=noise, noise_keys=noise_keys, device=device,
                                    keep_noshear=True)
        return res, res.pop("deconvolved_noshear", None)
    produces = method is not None and getattr(method, "produces_image", False)
    if not produces:
        res = metacal(image, psf, pixel_scale=pixel_scale, row=row, col=col, config=config, noise=noise,
                      noise_sigma=noise_sigma, noise_keys=noise_keys)
        res["placement"] = np.str_(placement)
        return res, None
    shape = tuple(image.shape)
    four = len(shape) == 4

    def as4(a):
        return a if four else a[:, None]

    sig = np.asarray(to_numpy(noise_sigma), dtype=np.float32)
    sig4 = sig if sig.ndim == 2 else sig[:, None]
    psf4 = to_numpy(as4(psf))

    def run_method(stamps):
        return deconvolve_numpy(method, to_numpy(as4(stamps)), psf4, sig4, device=device).reshape(shape)

    t0 = time.perf_counter()
    dec = run_method(image)
    dec_noise = None
    drawn = noise is None
    if config.noise_correction:
        if drawn:
            noise = draw_noise(shape, sig, keys=noise_keys, seed=config.noise_seed)
        turned = rotate_in(np, np.asarray(to_numpy(noise), dtype=np.float32))
        dec_noise = run_method(turned)
    res = metacal(image, psf, pixel_scale=pixel_scale, row=row, col=col, config=config, deconvolved=dec,
                  deconvolved_noise=dec_noise, noise=noise)
    if config.noise_correction and drawn:
        res["noise_seed"] = np.int64(config.noise_seed)
    res["time_s"] = np.float64(time.perf_counter() - t0)       # method + metacal + measurement, as after the shear
    res["placement"] = np.str_(placement)
    return res, dec


#: samples per chunk of :func:`measure_dataset` (whole quads)
CHUNK = 4096


def measure_chunk(data: dict, *, pixel_scale: float, config: MetacalConfig | None = None, method=None,
                  device: str = "cpu", placement: str = "deconvolve-then-shear", noise_pairing: str = "independent",
                  start: int = 0, quality: bool = False, validate: bool = False) -> dict:
    """The per-object table of one chunk of stamps through *method*, metacal and the shear estimator.

    The one measurement path: the benchmark suite, ``python -m bench.metacal`` (in one process
    or as Dask shards) and the kernel study all measure through it.

    Parameters
    ----------
    data : dict of ndarray
        The chunk's arrays by key: ``image``, ``psf`` (N, [B,] n, n), ``noise_sigma``, and
        optionally ``row``, ``col``, ``noise`` (the correction's fields), ``quad_id`` and
        ``rotation`` (a simulated dataset: the fields are then paired as its noise,
        :func:`paired_noise`) and ``truth`` (for *quality*).
    pixel_scale : float
    config : MetacalConfig, optional
        Kernel, estimator, noise correction... [default: MetacalConfig()]
    method : Method or None
        A :class:`methods.Method` instance, or None for exact metacal. [default: None]
    device : str
        [default: "cpu"]
    placement : str
        :data:`PLACEMENTS`. [default: "deconvolve-then-shear"]
    noise_pairing : {"independent", "antithetic"}
        The dataset's pairing of its noise, for the drawn correction fields. [default: "independent"]
    start : int
        Index of the chunk's first object in the whole input: drawn fields are keyed by it,
        so the result does not depend on the chunking; messages name objects by it. [default: 0]
    quality : bool
        Add every registered metric's per-object values (:meth:`bench.metrics.Metric.per_object`:
        ``psnr`` and ``ssim``, band means of the method's output against ``truth``, and any
        other). [default: False]
    validate : bool
        Check the chunk's values first. [default: False]

    Returns
    -------
    dict
        :func:`run`'s metacal output (per object, with ``time_s`` the chunk's method +
        metacal + measurement time), and the metrics' per-object values with *quality*.
    """
    config = config or MetacalConfig()
    n = len(data["image"])
    if validate:
        from .metacal.validate import validate_input
        validate_input({**data, "pixel_scale": np.asarray(pixel_scale)}, offset=start)
    noise = data.get("noise")
    if config.noise_correction and noise is None and "quad_id" in data:
        noise = paired_noise(data["quad_id"], data["rotation"], data["noise_sigma"], data["image"].shape[1:],
                             seed=config.noise_seed, pairing=noise_pairing)
    res, dec = run(method, data["image"], data["psf"], data["noise_sigma"], pixel_scale=pixel_scale,
                   row=data.get("row"), col=data.get("col"), config=config, noise=noise,
                   noise_keys=np.arange(start, start + n), device=device, placement=placement)
    if config.noise_correction and data.get("noise") is None:
        res["noise_seed"] = np.int64(config.noise_seed)        # the fields were drawn from this seed
    if quality:
        from .metrics import get_metric_class, list_metrics
        truth = data.get("truth")
        four = None if dec is None else (dec if dec.ndim == 4 else dec[:, None])
        truth4 = None if truth is None else (truth if truth.ndim == 4 else truth[:, None])
        for name in list_metrics():
            cls = get_metric_class(name)
            if cls.needs_image and (four is None or truth4 is None):
                continue
            res.update(cls.per_object(deconvolved=four, truth=truth4, shapes=res))
    return res


def measure_dataset(dataset, method=None, *, config: MetacalConfig | None = None, device: str = "cpu",
                    placement: str = "deconvolve-then-shear", quality: bool = False, chunk: int = CHUNK,
                    start: int = 0, stop: int | None = None):
    """Samples [start, stop) of a simulated dataset through :func:`measure_chunk`, a chunk at a time.

    Parameters
    ----------
    dataset : bench.dataset.Dataset
        A loaded (or streamed) dataset.
    method, config, device, placement, quality
        As :func:`measure_chunk`.
    chunk : int
        Samples per chunk, a multiple of 4 (whole quads). [default: 4096]
    start, stop : int, optional
        The slice measured. [default: the whole dataset]

    Yields
    ------
    (slice, dict)
        Each chunk's samples and its per-object table, in order.
    """
    stop = len(dataset) if stop is None else stop
    keys = ["image", "psf", "noise_sigma", "row", "col", "quad_id", "rotation"] + (["truth"] if quality else [])
    for a in range(start, stop, chunk):
        sl = slice(a, min(a + chunk, stop))
        data = {k: dataset[k][sl] for k in keys}
        yield sl, measure_chunk(data, pixel_scale=dataset.spec.pixel_scale, config=config, method=method,
                                device=device, placement=placement, noise_pairing=dataset.spec.noise_pairing,
                                start=a, quality=quality)


def shear_then_deconvolve(method, image, psf, noise_sigma, *, pixel_scale: float, row=None, col=None,
                          config: MetacalConfig | None = None, noise=None, noise_keys=None, device: str = "cpu",
                          keep_noshear: bool = False):
    """Metacal with *method* after the shear: the second placement of :func:`run` (same parameters).

    With *keep_noshear* the result also holds ``deconvolved_noshear``, the method's output on
    the noshear image (shaped like *image*; absent without a method), whose target is the
    truth: the image quality of a method in this placement. [default: False]

    The method gets each metacal image (noise correction added), the reconvolution PSF
    drawn on the stamp, and the metacal image's per-pixel noise sigma (the stamp's times
    the rms gain of T/P, times sqrt 2 with the correction); its noise is correlated,
    unlike the stamps a network was trained on. With *row*, *col* the shears are about
    each object's centre (:func:`bench.metacal.render.metacal_images`), so that metacal
    does not move the object under a method that sees its sub-pixel position.
    """
    check_placement(method, "shear-then-deconvolve")
    config = config or MetacalConfig()
    t0 = time.perf_counter()
    image, psf = to_numpy(image), to_numpy(psf)
    sig_in = None if noise_sigma is None else np.asarray(to_numpy(noise_sigma))
    noise = None if noise is None else to_numpy(noise)
    N = len(image)
    keys = np.arange(N) if noise_keys is None else np.asarray(to_numpy(noise_keys))

    def part(a, sl):
        return None if a is None else np.asarray(a)[sl]

    # config.chunk objects at a time: the five images and the method's five outputs of the
    # whole batch at once were what the memory peak was made of
    parts, noshear = [], []
    for a in range(0, N, config.chunk):
        sl = slice(a, min(a + config.chunk, N))
        mc = metacal_images(image[sl], psf[sl], pixel_scale=pixel_scale, config=config, noise=part(noise, sl),
                            noise_sigma=part(sig_in, sl), noise_keys=keys[sl], row=part(row, sl), col=part(col, sl))
        images = mc["images"]
        if method is not None:
            shape = tuple(images["noshear"].shape)
            four = len(shape) == 4

            def as4(a):
                return a if four else a[:, None]

            tpsf = as4(mc["target_psf"])
            sig = mc["noise_sigma"]
            sig4 = as4(np.where(np.isfinite(sig), sig, 0.0).astype(np.float32))
            images = {t: deconvolve_numpy(method, as4(images[t]), tpsf, sig4, device=device).reshape(shape)
                      for t in TYPES}
            if keep_noshear:
                noshear.append(images["noshear"])
        parts.append(measure(images, pixel_scale=pixel_scale, row=part(row, sl), col=part(col, sl), config=config,
                             flags=mc["flags"]))
    res = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if keep_noshear and method is not None:
        res["deconvolved_noshear"] = np.concatenate(noshear)
    res["time_s"] = np.float64(time.perf_counter() - t0)
    res["noise_correction"] = np.bool_(config.noise_correction)
    res["noise_seed"] = np.int64(config.noise_seed if config.noise_correction and noise is None else -1)
    res["placement"] = np.str_("shear-then-deconvolve")
    return res


__all__ = ["CHUNK", "PLACEMENTS", "check_placement", "deconvolve_numpy", "measure_chunk", "measure_dataset",
           "paired_noise", "run", "shear_then_deconvolve"]
