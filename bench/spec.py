"""Named dataset specifications (TOML files in ``datasets/``) and their validation.

A spec fixes everything the simulation draws from, so ``(spec, seed, GalSim
version)`` determines the dataset to the byte. See ``datasets/default.toml`` for
every key with its meaning.
"""

from __future__ import annotations

import re

import dataclasses
import hashlib
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from .errors import BenchFileError, BenchKeyError, BenchTypeError, BenchValueError, unknown_name

def _datasets_dir(code: Path, prefix: str) -> Path:
    """The checkout's ``datasets/`` beside the *code* folder; for an installed wheel, which has
    none, the specs it installs under ``PREFIX/share/deconvbench/datasets``."""
    here = code.parent / "datasets"
    installed = Path(prefix) / "share" / "deconvbench" / "datasets"
    return installed if not here.is_dir() and installed.is_dir() else here


#: Folder holding the named specs and (git-ignored) the cache.
DATASETS_DIR = _datasets_dir(Path(__file__).resolve().parent, sys.prefix)

KNOWN_BANDS = ("u", "g", "r", "i", "z", "y")
PSF_MODELS = ("moffat", "kolmogorov")
PSF_SHARING = ("none", "pair", "quad")
NOISE_PAIRINGS = ("independent", "antithetic")

_TOP_KEYS = {
    "name", "description", "seed", "n_quads", "bands", "stamp_size", "pixel_scale",
    "shear", "snr_bins", "snr_bin_weights", "noise_pairing", "galaxy", "psf",
}
_GALAXY_KEYS = {
    "hlr_disk", "bulge_size_ratio", "bulge_fraction", "ellipticity_max", "offset_max",
    "bulge_color", "disk_color", "disk_size_color",
}
_PSF_KEYS = {"model", "beta", "fwhm", "shear_max", "shared"}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A validated dataset specification.

    Parameters
    ----------
    name : str
        Spec name (the TOML file's stem).
    seed : int
        Master seed; every object draws from ``numpy.random.SeedSequence(seed)``
        spawned per quad, so the result does not depend on the worker count.
    n_quads : int
        Number of quads. Each quad is one galaxy at rotations 0 and 90 degrees,
        each sheared by +g and -g, so there are ``4 * n_quads`` samples.
    bands : tuple of str
        Band names, e.g. ``("g", "r", "i")``.
    stamp_size : int
        Stamp side in pixels (even, >= 16). [default: 48]
    pixel_scale : float
        Arcsec per pixel. [default: 0.2]
    shear : float
        Magnitude of the applied shear g (g1 = +-g, g2 = 0). [default: 0.02]
    snr_bins : tuple of float
        Edges of the SNR bins; quads are shared equally among bins and their SNR is
        log-uniform inside the bin. [default: (10, 20, 40, 80, 200)]
    snr_bin_weights : tuple of float or None
        Relative numbers of quads per SNR bin (one per bin); the bins are interleaved
        along the quad index in these proportions, so any prefix of the dataset has
        the same mix. Low-SNR bins need many more quads for the same error on m.
        [default: None, equal numbers]
    noise_pairing : str
        How the two rotations of a quad draw their noise. ``"independent"``: each its
        own field. ``"antithetic"``: the 90-degree member gets minus the 90-degree
        rotation of the 0-degree member's field and the rotated sub-pixel offset, so the
        part of the metacal response that is linear in the noise cancels within the quad
        (every image still has white Gaussian noise of its own sigma; only the pairing
        changes). It cut fourier's m error at SNR 10-20 about 6-fold for the same number
        of quads. [default: "independent"]
    galaxy : dict
        Galaxy population (see ``datasets/default.toml``).
    psf : dict
        PSF population: ``model`` (moffat or kolmogorov), ``beta`` range (Moffat),
        ``fwhm`` range per band (arcsec), ``shear_max`` (each of g1, g2 uniform in +-),
        ``shared``: which samples share a PSF, ``"none"`` (every sample its own), ``"pair"``
        (the +g and -g copies of a galaxy, so their difference cancels noise and PSF alike)
        or ``"quad"`` (all four members).
    """

    name: str
    seed: int
    n_quads: int
    bands: tuple[str, ...]
    stamp_size: int = 48
    pixel_scale: float = 0.2
    shear: float = 0.02
    snr_bins: tuple[float, ...] = (10.0, 20.0, 40.0, 80.0, 200.0)
    snr_bin_weights: tuple[float, ...] | None = None
    noise_pairing: str = "independent"
    galaxy: dict = dataclasses.field(default_factory=dict)
    psf: dict = dataclasses.field(default_factory=dict)
    description: str = ""

    @property
    def n_samples(self) -> int:
        return 4 * self.n_quads

    def quad_bins(self):
        """SNR bin index of every quad, (n_quads,) int.

        Equal weights give ``q % n_bins``. Otherwise each bin gets its share of the
        quads (largest remainder) and quad q goes to the bin furthest behind its share
        so far, which interleaves the bins evenly: the merge, in order, of each bin's
        ideal positions ``(j + 0.5) / count``, ties to the lower bin.
        """
        import numpy as np

        nb = len(self.snr_bins) - 1
        w = self.snr_bin_weights
        if w is None or len(set(w)) == 1:
            return np.arange(self.n_quads) % nb
        w = np.asarray(w, dtype=float) / sum(w)
        share = w * self.n_quads
        counts = np.floor(share).astype(int)
        counts[np.argsort(-(share - counts), kind="stable")[: self.n_quads - counts.sum()]] += 1
        position = np.concatenate([(np.arange(c) + 0.5) / max(c, 1) for c in counts])
        label = np.repeat(np.arange(nb), counts)
        return label[np.lexsort((label, position))]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self, extra: str = "") -> str:
        """Hash of everything that determines the data (the description excluded)."""
        d = self.to_dict()
        d.pop("description", None)
        # keys added later are left out at their old defaults, so older specs keep their keys
        if d["noise_pairing"] == "independent":
            d.pop("noise_pairing")
        if d["snr_bin_weights"] is None:
            d.pop("snr_bin_weights")
        blob = json.dumps(d, sort_keys=True, default=list) + extra
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def with_overrides(self, **kw: Any) -> "DatasetSpec":
        d = self.to_dict()
        d.update(kw)
        return validate(d, source=f"{self.name} (overridden)")


_GALAXY_DEFAULTS = {
    "hlr_disk": [0.3, 1.0],          # arcsec, uniform
    "bulge_size_ratio": [0.2, 0.6],  # bulge hlr / disk hlr, uniform
    "bulge_fraction": [0.0, 0.6],    # bulge share of the flux in the reference band, uniform
    "ellipticity_max": 0.6,          # |e| uniform in [0, max], random angle
    "offset_max": 0.5,               # pixels, each axis uniform in [-max, max]
    "bulge_color": {"g": 0.45, "r": 1.0, "i": 1.35},   # flux relative to r
    "disk_color": {"g": 0.85, "r": 1.0, "i": 1.1},
    "disk_size_color": {"g": 1.08, "r": 1.0, "i": 0.96},  # disk hlr relative to r
}
_PSF_DEFAULTS = {
    "model": "moffat",
    "beta": [2.5, 4.0],
    "fwhm": {"g": [0.75, 1.05], "r": [0.65, 0.95], "i": [0.6, 0.9]},
    "shear_max": 0.05,
    "shared": "none",
}


def _range(section: str, key: str, value: Any, *, positive: bool = True) -> list[float]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) for v in value)):
        raise BenchTypeError(f"{section}{key} must be a [low, high] pair of numbers, got {value!r}")
    lo, hi = float(value[0]), float(value[1])
    if lo > hi or (positive and lo < 0):
        raise BenchValueError(
            f"{section}{key} must satisfy 0 <= low <= high, got {value!r}")
    return [lo, hi]


def _check_keys(section: str, d: dict, allowed: set[str]) -> None:
    for k in d:
        if k not in allowed:
            raise unknown_name(f"key {section}", k, allowed)


def validate(raw: dict[str, Any], source: str = "<dict>") -> DatasetSpec:
    """Validate a raw spec mapping and fill defaults; raises a ``BenchError`` naming the bad key."""
    if not isinstance(raw, dict):
        raise BenchTypeError(f"{source}: a spec must be a table, got {type(raw).__name__}")
    _check_keys("in spec", raw, _TOP_KEYS)
    for req in ("name", "seed", "n_quads", "bands"):
        if req not in raw:
            raise BenchKeyError(f"{source}: missing required key {req!r}")
    seed = raw["seed"]
    if not isinstance(seed, int) or seed < 0:
        raise BenchValueError(f"{source}: seed must be a non-negative integer, got {seed!r}")
    n_quads = raw["n_quads"]
    if not isinstance(n_quads, int) or n_quads < 1:
        raise BenchValueError(f"{source}: n_quads must be a positive integer, got {n_quads!r}")
    bands = raw["bands"]
    if not isinstance(bands, (list, tuple)) or not bands:
        raise BenchTypeError(f"{source}: bands must be a non-empty list, got {bands!r}")
    for b in bands:
        if b not in KNOWN_BANDS:
            raise BenchValueError(
                f"{source}: unknown band {b!r}; allowed: {', '.join(KNOWN_BANDS)}")
    if len(set(bands)) != len(bands):
        raise BenchValueError(f"{source}: bands repeat: {bands!r}")
    n = raw.get("stamp_size", 48)
    if not isinstance(n, int) or n < 16 or n % 2:
        raise BenchValueError(
            f"{source}: stamp_size must be an even integer >= 16, got {n!r}")
    scale = raw.get("pixel_scale", 0.2)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not 1e-3 <= scale <= 10:
        raise BenchValueError(f"{source}: pixel_scale must be a number of arcsec per pixel in [0.001, 10], "
                              f"got {scale!r}")
    shear = raw.get("shear", 0.02)
    if not isinstance(shear, (int, float)) or not 0 <= shear < 0.2:
        raise BenchValueError(f"{source}: shear must be in [0, 0.2), got {shear!r}")
    bins = raw.get("snr_bins", [10, 20, 40, 80, 200])
    if (not isinstance(bins, (list, tuple)) or len(bins) < 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bins)):
        raise BenchTypeError(f"{source}: snr_bins must be a list of at least 2 numbers, got {bins!r}")
    if any(not (0 < v < float("inf")) for v in bins):       # also refuses NaN
        raise BenchValueError(f"{source}: snr_bins must be positive and finite, got {list(bins)!r}")
    if any(hi <= lo for lo, hi in zip(bins, bins[1:])):
        raise BenchValueError(f"{source}: snr_bins must increase, got {list(bins)!r}")
    weights = raw.get("snr_bin_weights")
    if weights is not None:
        if (not isinstance(weights, (list, tuple)) or len(weights) != len(bins) - 1
                or not all(isinstance(v, (int, float)) for v in weights)):
            raise BenchTypeError(f"{source}: snr_bin_weights must be a list of {len(bins) - 1} numbers "
                                 f"(one per SNR bin), got {weights!r}")
        if any(not v > 0 for v in weights):
            raise BenchValueError(f"{source}: snr_bin_weights must all be > 0, got {list(weights)!r}")
        weights = tuple(float(v) for v in weights)
    pairing = raw.get("noise_pairing", "independent")
    if pairing not in NOISE_PAIRINGS:
        raise BenchValueError(
            f"{source}: unknown noise_pairing {pairing!r}; allowed: {', '.join(NOISE_PAIRINGS)}")

    gal = dict(_GALAXY_DEFAULTS)
    graw = raw.get("galaxy", {})
    _check_keys("in [galaxy]", graw, _GALAXY_KEYS)
    gal.update(graw)
    for key in ("hlr_disk", "bulge_size_ratio", "bulge_fraction"):
        gal[key] = _range("galaxy.", key, gal[key])
    if gal["hlr_disk"][0] <= 0:
        raise BenchValueError(f"{source}: galaxy.hlr_disk must be > 0, got {gal['hlr_disk']!r}")
    if gal["bulge_fraction"][1] > 1:
        raise BenchValueError(
            f"{source}: galaxy.bulge_fraction must lie in [0, 1], got {gal['bulge_fraction']!r}")
    if not 0 <= gal["ellipticity_max"] < 1:
        raise BenchValueError(
            f"{source}: galaxy.ellipticity_max must be in [0, 1), got {gal['ellipticity_max']!r}")
    if not 0 <= gal["offset_max"] <= 2:
        raise BenchValueError(
            f"{source}: galaxy.offset_max must be in [0, 2] pixels, got {gal['offset_max']!r}")
    for key in ("bulge_color", "disk_color", "disk_size_color"):
        table = gal[key]
        for b in bands:
            if b not in table:
                raise BenchKeyError(f"{source}: galaxy.{key} has no entry for band {b!r}")
            if not table[b] > 0:
                raise BenchValueError(f"{source}: galaxy.{key}.{b} must be > 0, got {table[b]!r}")

    psf = dict(_PSF_DEFAULTS)
    praw = raw.get("psf", {})
    _check_keys("in [psf]", praw, _PSF_KEYS)
    psf.update(praw)
    if psf["model"] not in PSF_MODELS:
        raise BenchValueError(
            f"{source}: unknown psf.model {psf['model']!r}; allowed: {', '.join(PSF_MODELS)}")
    psf["beta"] = _range("psf.", "beta", psf["beta"])
    if psf["beta"][0] <= 1.1:
        raise BenchValueError(f"{source}: psf.beta must exceed 1.1, got {psf['beta']!r}")
    fwhm = {}
    for b in bands:
        if b not in psf["fwhm"]:
            raise BenchKeyError(f"{source}: psf.fwhm has no range for band {b!r}")
        fwhm[b] = _range("psf.fwhm.", b, psf["fwhm"][b])
        if fwhm[b][0] <= 0:
            raise BenchValueError(f"{source}: psf.fwhm.{b} must be > 0, got {fwhm[b]!r}")
    psf["fwhm"] = fwhm
    if psf["shared"] not in PSF_SHARING:
        raise BenchValueError(f"{source}: unknown psf.shared {psf['shared']!r}; allowed: {', '.join(PSF_SHARING)}")
    if not 0 <= psf["shear_max"] < 0.3:
        raise BenchValueError(f"{source}: psf.shear_max must be in [0, 0.3), got {psf['shear_max']!r}")
    for key in ("bulge_color", "disk_color", "disk_size_color"):
        gal[key] = {b: float(gal[key][b]) for b in bands}

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(raw["name"])) or ".." in str(raw["name"]):
        raise BenchValueError(f"{source}: name must be letters, digits, '.', '_' or '-' (it names the cache "
                              f"file), got {raw['name']!r}")
    return DatasetSpec(
        name=str(raw["name"]), seed=seed, n_quads=n_quads, bands=tuple(bands),
        stamp_size=n, pixel_scale=float(scale), shear=float(shear),
        snr_bins=tuple(float(v) for v in bins), snr_bin_weights=weights,
        noise_pairing=pairing, galaxy=gal, psf=psf,
        description=str(raw.get("description", "")),
    )


def available_specs() -> list[str]:
    return sorted(p.stem for p in DATASETS_DIR.glob("*.toml"))


def load_spec(name_or_path: str | Path) -> DatasetSpec:
    """Load a named spec from ``datasets/`` or a TOML file path."""
    p = Path(name_or_path)
    if p.suffix != ".toml":
        p = DATASETS_DIR / f"{name_or_path}.toml"
        if not p.exists():
            raise unknown_name("dataset spec", str(name_or_path), available_specs())
    if not p.exists():
        raise BenchFileError(f"dataset spec file not found: {str(p)!r}")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as err:
        raise BenchValueError(f"{p}: not valid TOML ({err})") from None
    return validate(raw, source=str(p.name))
