"""The method registry: one abstract base, a decorator, lookup with suggestions.

Methods declare their framework, devices and required modules as class
attributes, so availability is known without importing torch, JAX or CuPy.
Third-party packages register through the ``deconvbench.methods`` entry-point
group (the entry point names a module or a :class:`Method` subclass).
"""

from __future__ import annotations

import abc
import fnmatch
import re
from importlib.metadata import entry_points
from typing import ClassVar

from bench.arrays import method_inputs, to_numpy  # noqa: F401  (method_inputs: part of the API)
from bench.devices import cuda_unavailable_reason, module_missing
from bench.errors import BenchValueError, MethodUnavailableError, unknown_name

ENTRY_POINT_GROUP = "deconvbench.methods"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.+\[\]-]*")
_REGISTRY: dict[str, type["Method"]] = {}
_PLUGINS_LOADED = False
_PLUGIN_ERRORS: dict[str, str] = {}


class Method(abc.ABC):
    """Base class of a deconvolution method.

    Subclasses implement :meth:`deconvolve` and set the class attributes.

    Attributes
    ----------
    name : str
        Registry name (lower case, dashes).
    framework : str
        ``numpy``, ``torch``, ``jax`` or ``cupy``: the array type ``deconvolve`` takes and returns.
    devices : tuple of str
        Devices it can run on (``cpu``, ``cuda``).
    requires : tuple of str
        Importable modules it needs (checked with ``importlib.util.find_spec``, no import).
    produces_image : bool
        False for methods that are exact inside metacal but return no useful image
        (``fourier``): their PSNR and SSIM are reported as null.
    placements : tuple of str or None
        The places in metacal the method is made for (``"deconvolve-then-shear"``,
        ``"shear-then-deconvolve"``; :mod:`bench.pipeline`), e.g. a network trained on
        metacal's images; None for any. The harness refuses the others, and the benchmark
        skips them (and the deconvolution-alone rows, unless the first is listed).
    """

    name: ClassVar[str] = ""
    framework: ClassVar[str] = "numpy"
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    requires: ClassVar[tuple[str, ...]] = ()
    produces_image: ClassVar[bool] = True
    placements: ClassVar[tuple[str, ...] | None] = None
    description: ClassVar[str] = ""

    @classmethod
    def unavailable_reason(cls, device: str | None = None) -> str:
        """'' if the method can run (on *device*, or on any of its devices), else why not."""
        missing = [m for m in cls.requires if module_missing(m)]
        if missing:
            return f"missing module(s): {', '.join(missing)}"
        wanted = [device] if device else list(cls.devices)
        if device and device not in cls.devices:
            return f"runs on {', '.join(cls.devices)}, not {device}"
        reasons = []
        for d in wanted:
            if d == "cuda":
                why = cuda_unavailable_reason()
                if not why:
                    return ""
                reasons.append(why)
            else:
                return ""
        return "; ".join(reasons)

    @classmethod
    def available(cls, device: str | None = None) -> bool:
        return not cls.unavailable_reason(device)

    @abc.abstractmethod
    def deconvolve(self, image, psf, noise_sigma):
        """Estimate the pre-PSF image.

        Parameters
        ----------
        image : array, shape (N, B, n, n)
            Observed stamps.
        psf : array, shape (N, B, n, n)
            PSF images (unit sum, centred on the stamp's true centre).
        noise_sigma : array, shape (N, B)
            Per-pixel noise standard deviation.

        Returns
        -------
        array, shape (N, B, n, n)
            Same framework, device and dtype as *image*.

        Notes
        -----
        With metacal's noise correction on, the harness also calls this on the 90-degree-rotated
        noise field with the same PSF and noise level (:mod:`bench.pipeline`): exactly ngmix's
        recipe for a linear method, its natural analogue for a nonlinear one.
        """


def register(cls: type[Method]) -> type[Method]:
    """Class decorator adding a :class:`Method` subclass to the registry under ``cls.name``."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"register expects a Method subclass, got {cls!r}")
    if not (isinstance(cls.name, str) and NAME_PATTERN.fullmatch(cls.name)):
        raise BenchValueError(f"{cls.__name__} needs a name of lower-case letters, digits and '-', '_', '.', "
                              f"'[', ']', '+', got {cls.name!r}")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise BenchValueError(
            f"method name {cls.name!r} is already registered by {existing.__module__}.{existing.__name__}")
    _REGISTRY[cls.name] = cls
    return cls


def _load_plugins() -> None:
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        before = set(_REGISTRY)
        try:
            obj = ep.load()
            if isinstance(obj, type) and issubclass(obj, Method):
                if _REGISTRY.get(obj.name) not in (None, obj):
                    raise BenchValueError(f"its method name {obj.name!r} is already registered by "
                                          f"{_REGISTRY[obj.name].__module__}; it was not loaded")
                register(obj)
        except (Exception, SystemExit) as err:  # a broken plugin (even one calling sys.exit) must not break the harness
            _PLUGIN_ERRORS[ep.name] = f"{type(err).__name__}: {err}"
            for name in set(_REGISTRY) - before:     # nothing half-registered stays
                del _REGISTRY[name]
            continue


def list_methods(pattern: str | None = None) -> list[str]:
    """Registered method names, sorted, optionally filtered by a shell-style *pattern*."""
    _load_plugins()
    names = sorted(_REGISTRY)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def get_method_class(name: str) -> type[Method]:
    _load_plugins()
    if name not in _REGISTRY:
        raise unknown_name("method", name, _REGISTRY)
    return _REGISTRY[name]


def get_method(name: str, *, device: str | None = None, **kwargs) -> Method:
    """Instantiate method *name*; raises MethodUnavailableError (with the reason) if it cannot run."""
    cls = get_method_class(name)
    why = cls.unavailable_reason(device)
    if why:
        raise MethodUnavailableError(f"method {name!r} is unavailable here: {why}")
    return cls(**kwargs)


def best_device(cls: type[Method]) -> str:
    """'cuda' when the method and a GPU are both available, else the first device it can use."""
    for d in ("cuda", "cpu"):
        if d in cls.devices and cls.available(d):
            return d
    return cls.devices[0]


def plugin_errors() -> dict[str, str]:
    _load_plugins()
    return dict(_PLUGIN_ERRORS)


def check_batch(image, psf, noise_sigma=None, *, xp=None):
    """Validate a (N, B, n, n) batch for :meth:`Method.deconvolve`; raises naming the bad value.

    Checks dimensions, that the PSF has the image's band count and stamp size, that
    ``noise_sigma`` is (N, B) and positive, and that no PSF is all zero.
    """
    import numpy as np

    xp = xp or np
    if image.ndim != 4:
        raise BenchValueError(f"image must be (N, B, n, n), got shape {tuple(image.shape)}")
    if psf.ndim != 4 or psf.shape[0] != image.shape[0]:
        raise BenchValueError(f"psf must be (N, B, n, n) like image {tuple(image.shape)}, got {tuple(psf.shape)}")
    if psf.shape[1] != image.shape[1]:
        raise BenchValueError(f"psf has {psf.shape[1]} bands but image has {image.shape[1]}")
    if psf.shape[2:] != image.shape[2:]:
        raise BenchValueError(f"psf stamps are {tuple(psf.shape[2:])} but image stamps are {tuple(image.shape[2:])}")
    flat = psf.reshape(psf.shape[0] * psf.shape[1], -1)
    # einsum needs no temporary where the array module has it (NumPy, CuPy)
    power = xp.einsum("ij,ij->i", flat, flat) if hasattr(xp, "einsum") else xp.sum(flat * flat, axis=1)
    zero = power.reshape(tuple(psf.shape[:2])) == 0
    if bool(xp.any(zero)):
        i = [int(v) for v in np.argwhere(to_numpy(zero))[0]]
        raise BenchValueError(f"psf of object {i[0]} band {i[1]} is all zero")
    if noise_sigma is not None:
        if tuple(noise_sigma.shape) != tuple(image.shape[:2]):
            raise BenchValueError(f"noise_sigma must have shape {tuple(image.shape[:2])}, got {tuple(noise_sigma.shape)}")
        if not bool(xp.all(noise_sigma > 0)):
            raise BenchValueError(f"noise_sigma must be > 0, got min {float(xp.min(noise_sigma))!r}")


#: quarter-turn averages a network may take (:func:`turn_average`)
TURNS = (1, 2, 4)


def check_turns(turns) -> int:
    if turns not in TURNS or isinstance(turns, bool):
        raise BenchValueError(f"turns must be one of {TURNS} (quarter turns the output is averaged over), "
                              f"got {turns!r}")
    return int(turns)


def turn_average(run, image, psf, noise_sigma, *, turns: int, rot90):
    """The mean over k < *turns* of ``rot90(run(rot90(image, k), rot90(psf, k), sigma), -k)``.

    A network's convolutions are not exactly rotation-equivariant, so on a round galaxy and
    PSF its output can carry a constant spin-2 ellipticity: an additive shear bias c that
    metacal cannot calibrate. A quarter turn flips the sign of a spin-2 quantity, so the
    mean over 0 and 90 degrees (``turns=2``) cancels that constant; ``turns=4`` averages
    over the whole rotation group. Costs *turns* passes. *rot90(a, k)* turns the last two
    axes of the framework's array by k quarter turns.
    """
    out = run(image, psf, noise_sigma)
    for k in range(1, turns):
        out = out + rot90(run(rot90(image, k), rot90(psf, k), noise_sigma), -k)
    return out / turns if turns > 1 else out


def check_network_batch(name: str, checkpoint, bands: int, stamp_size: int, image, psf, noise_sigma, *, xp):
    """:func:`check_batch`, then what a trained network also needs: its checkpoint's band count and
    stamp size, and finite inputs. Raises naming the checkpoint, the method and the bad value."""
    check_batch(image, psf, noise_sigma, xp=xp)
    if image.shape[1] != bands or tuple(image.shape[-2:]) != (stamp_size, stamp_size):
        raise BenchValueError(
            f"checkpoint {str(checkpoint)!r} expects {bands} bands of {stamp_size}x{stamp_size} stamps, "
            f"got {image.shape[1]} bands of {image.shape[-2]}x{image.shape[-1]}")
    for label, a in (("image", image), ("psf", psf), ("noise_sigma", noise_sigma)):
        if not bool(xp.all(xp.isfinite(a))):
            raise BenchValueError(f"{label} has non-finite values; {name} needs finite inputs")
