"""Benchmark JSON files as tables: loading, one row per benchmark, reference times, speed-ups.

Shared by :mod:`bench.report`, :mod:`bench.figures` and :mod:`bench.compare`.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import BenchFileError, BenchValueError
from .schema import bin_numbers, bin_series

M_GOAL = 2e-3
NOT_METACAL = ("reference-workload", "simulation", "wiener-fftw[pyfftw-vs-scipy]")   # no GalSim-loop speed-up


# --------------------------------------------------------------------------- loading
def load_run(path: str) -> dict:
    """A benchmark JSON file written by ``pytest bench/ --benchmark-json``."""
    p = Path(path)
    if not p.exists():
        raise BenchFileError(f"benchmark file not found: {path!r}")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BenchValueError(f"{path!r} is not a benchmark JSON file ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list) or not data["benchmarks"]:
        raise BenchValueError(f"{path!r} holds no benchmarks (write it with pytest bench/ --benchmark-json)")
    _check_schema(data, path)
    data["label"] = p.stem
    return data


_NUMBERS = ("time_per_5000_s", "peak_memory_bytes", "warmup_s", "compile_s", "n_samples", "n_bands")


def _check_schema(data: dict, path) -> None:
    """Every benchmark row must carry this harness's extra_info, with numbers where numbers belong."""
    import numbers

    def number(v):
        return v is None or (isinstance(v, numbers.Real) and not isinstance(v, bool))

    # the columns a bin row may hold: the registry's and the file's own declarations, found once
    declared = metric_columns_of(data)
    bin_number_keys = tuple(dict.fromkeys(bin_numbers() + tuple(c.name for c in declared if c.kind == "number")))
    bin_series_keys = tuple(dict.fromkeys(bin_series() + tuple(c.name for c in declared if c.kind == "series")))
    ours = 0
    for b in data["benchmarks"]:
        e = b.get("extra_info") if isinstance(b, dict) else None
        if not isinstance(e, dict) or "method" not in e:
            continue
        ours += 1
        where = f"{path!r}, benchmark {b.get('name', '?')!r}"
        for k in _NUMBERS:
            if not number(e.get(k)):
                raise BenchValueError(f"{where}: {k} must be a number or null, got {e.get(k)!r}")
        by = e.get("by_snr", [])
        if by is not None and not (isinstance(by, list) and all(isinstance(r, dict) for r in by)):
            raise BenchValueError(f"{where}: by_snr must be a list of objects, got {type(by).__name__}")
        for r in by or []:
            for k in bin_number_keys:
                if not number(r.get(k)):
                    raise BenchValueError(f"{where}: by_snr {k} must be a number or null, got {r.get(k)!r}")
            for k in bin_series_keys:
                v = r.get(k)
                if v is not None and not (isinstance(v, list) and all(number(x) for x in v)):
                    raise BenchValueError(f"{where}: by_snr {k} must be a list of numbers or null, "
                                          f"got {str(v)[:60]!r}")
    if not ours:
        raise BenchValueError(f"{path!r} holds no deconvbench benchmarks (no extra_info.method): "
                              f"write it with pytest bench/ --benchmark-json")


def metric_columns_of(run: dict) -> list:
    """The per-bin columns a run's metrics declared (``deconvbench.metrics`` in the file), as
    :class:`bench.metrics.Column`; the registry's for a file written before they were recorded.
    A metric registered by a plugin the reader never imports is shown all the same."""
    from .metrics import Column, metric_columns

    declared = (run.get("deconvbench") or {}).get("metrics")
    if not isinstance(declared, list):
        return metric_columns()
    fields = set(Column.__dataclass_fields__)
    out = []
    for m in declared:
        for c in (m.get("columns") or []) if isinstance(m, dict) else []:
            if isinstance(c, dict) and isinstance(c.get("name"), str):
                out.append(Column(**{k: v for k, v in c.items() if k in fields}))
    return out


def dataset_identity(run: dict) -> tuple[str | None, str | None]:
    """(spec name, cache key) of the dataset a run measured; None where the file does not say.

    Files written before the key was recorded give the spec name from their rows (or the
    ``--dataset`` option) and no key.
    """
    info = run.get("deconvbench") or {}
    name, key = info.get("dataset_name"), info.get("dataset_key")
    if name is None:
        names = {b.get("extra_info", {}).get("dataset") for b in run["benchmarks"]} - {None}
        name = names.pop() if len(names) == 1 else info.get("dataset")
    return (None if name is None else str(name)), (None if key is None else str(key))


def rows(run: dict):
    """One pandas row per benchmark with the fields the report and the gate use."""
    import pandas as pd

    out = []
    for b in run["benchmarks"]:
        e = b.get("extra_info", {})
        total = next((r for r in e.get("by_snr") or [] if r.get("snr_bin") == "all"), {})
        out.append({
            "name": b["name"], "method": e.get("method", b["name"]), "placement": e.get("placement"),
            "base_method": e.get("base_method") or e.get("method", b["name"]), "framework": e.get("framework"),
            "device": e.get("device"), "n_samples": e.get("n_samples"), "n_bands": e.get("n_bands") or 1,
            "time_per_5000_s": e.get("time_per_5000_s"), "peak_memory_bytes": e.get("peak_memory_bytes"),
            "warmup_s": e.get("warmup_s"), "compile_s": e.get("compile_s"),
            "psnr_db": total.get("psnr_db"), "ssim": total.get("ssim"),
            "m": total.get("m"), "m_err": total.get("m_err"), "c": total.get("c"), "c_err": total.get("c_err"),
            "c2": total.get("c2"), "c2_err": total.get("c2_err"),
            "n_images_failed": total.get("n_images_failed"),
            "by_snr": e.get("by_snr") or [],
        })
    return pd.DataFrame(out)


def reference_time(df) -> float | None:
    """Median time of the reference workload row (normalises times across machines)."""
    sel = df[df["method"] == "reference-workload"]["time_per_5000_s"].dropna()
    return float(sel.iloc[0]) if len(sel) else None


def galsim_loop_time(df) -> float | None:
    sel = df[df["method"] == "galsim-loop[dilate]"]["time_per_5000_s"].dropna()
    return float(sel.iloc[0]) if len(sel) else None


def speedups(df) -> list:
    """Speed-up of each row over the GalSim loop, per single-band stamp (None where meaningless)."""
    loop = galsim_loop_time(df)
    return [loop * nb / v if (loop and v and m not in NOT_METACAL) else None
            for m, v, nb in zip(df["method"], df["time_per_5000_s"], df["n_bands"])]


def format_speedup(v: float) -> str:
    """A speed-up as a reader compares it: whole numbers from 10 up, two significant figures
    below, so that a row slower than the GalSim loop reads 0.74, not 1."""
    return f"{v:.0f}" if v >= 9.95 else f"{v:.2g}"
