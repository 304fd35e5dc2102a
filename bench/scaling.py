"""How time and memory grow with the dataset: ``python -m bench.scaling smoke ci default [paper]``.

For each dataset, exact metacal with the noise correction (every band) and one method's
deconvolution run over all samples, chunk by chunk, with the stamps streamed from the cache
(:func:`bench.dataset.load_dataset` with ``stream=True``), so memory stays that of a chunk.
Writes ``OUT/scaling.csv`` (samples, seconds and seconds per 5000 for each stage, the peak
resident-memory increase of the whole pass) and ``OUT/scaling.png`` (time per 5000 samples
and peak memory against the number of samples). Time per sample should stay flat (a linear
total cost) and memory bounded.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

CHUNK = 1024


def measure(name: str, method_name: str = "wiener-fftw", *, chunk: int = CHUNK) -> dict:
    """One row: the whole dataset *name* through exact metacal and *method_name*, streamed."""
    from methods import get_method

    from .dataset import load_dataset
    from .memory import peak_rss_increase
    from .metacal import metacal
    from .pipeline import paired_noise

    ds = load_dataset(name, stream=True, progress=True)
    method = get_method(method_name)
    times = {"metacal": 0.0, "method": 0.0}

    def run():
        for a in range(0, len(ds), chunk):
            sl = slice(a, min(a + chunk, len(ds)))
            img, psf, sig = ds["image"][sl], ds["psf"][sl], ds["noise_sigma"][sl]
            noise = paired_noise(ds["quad_id"][sl], ds["rotation"][sl], sig, img.shape[1:],
                                 pairing=ds.spec.noise_pairing)
            t0 = time.perf_counter()
            metacal(img, psf, pixel_scale=ds.spec.pixel_scale, row=ds["row"][sl], col=ds["col"][sl], noise=noise)
            t1 = time.perf_counter()
            method.deconvolve(img, psf, sig)
            times["metacal"] += t1 - t0
            times["method"] += time.perf_counter() - t1

    try:
        method.deconvolve(ds["image"][:4], ds["psf"][:4], ds["noise_sigma"][:4])   # warm-up: plans, caches
        _, peak = peak_rss_increase(run)
    finally:
        ds.close()
    n = len(ds)
    return {"dataset": name, "n_samples": n, "n_bands": len(ds.spec.bands), "metacal_s": times["metacal"],
            f"{method_name}_s": times["method"], "metacal_per_5000_s": times["metacal"] * 5000 / n,
            f"{method_name}_per_5000_s": times["method"] * 5000 / n, "peak_rss_increase_mib": (peak or 0) / 2 ** 20}


def provenance() -> dict:
    """Where and when the study ran: CPU model, logical cores, the project's commit (if a git
    checkout), UTC date; written as columns of the table, so that a report can say so."""
    import datetime
    import os
    import platform
    import subprocess

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True,
                                timeout=10, cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"machine": cpu, "n_cores": os.cpu_count() or 0, "commit": commit or "unknown",
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")}


#: text columns of a scaling table (the rest are numbers)
TEXT_COLUMNS = ("dataset", "machine", "commit", "date")

#: columns every scaling table has, beside one ``METHOD_s`` and ``METHOD_per_5000_s`` pair
COLUMNS = ("dataset", "n_samples", "n_bands", "metacal_s", "metacal_per_5000_s", "peak_rss_increase_mib")


def load_table(path):
    """Read and check a ``scaling.csv`` written by this command; returns (table, method name).

    Raises :class:`bench.errors.BenchValueError` naming the file and the bad column or value.
    """
    import pandas as pd

    from .errors import BenchValueError

    try:
        table = pd.read_csv(path, dtype={c: str for c in TEXT_COLUMNS})
    except FileNotFoundError:
        raise BenchValueError(f"scaling table {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise BenchValueError(f"scaling table {str(path)!r} is not a CSV file ({type(err).__name__})") from None
    missing = [c for c in COLUMNS if c not in table.columns]
    methods = [c[: -len("_per_5000_s")] for c in table.columns
               if c.endswith("_per_5000_s") and c != "metacal_per_5000_s"]
    if missing or len(methods) != 1:
        raise BenchValueError(f"scaling table {str(path)!r} is not from python -m bench.scaling: "
                              + (f"missing columns {missing}" if missing else
                                 f"expected one METHOD_per_5000_s column, found {methods}"))
    if not len(table):
        raise BenchValueError(f"scaling table {str(path)!r} has no rows")
    for col in [c for c in table.columns if c not in TEXT_COLUMNS]:
        values = pd.to_numeric(table[col], errors="coerce")
        bad = table[col][~(values.notna() & (values >= 0) & values.abs().lt(float("inf")))]
        if len(bad):
            raise BenchValueError(f"scaling table {str(path)!r}: column {col!r} holds {bad.iloc[0]!r}, "
                                  "expected a finite number >= 0")
        table[col] = values
    return table, methods[0]


def figure(table, method_name: str):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = table.sort_values("n_samples")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    axes[0].plot(t["n_samples"], t["metacal_per_5000_s"], "o-", label="exact metacal, noise correction")
    axes[0].plot(t["n_samples"], t[f"{method_name}_per_5000_s"], "s-", label=method_name)
    axes[0].set_ylabel("time per 5000 samples (s)")
    axes[1].plot(t["n_samples"], t["peak_rss_increase_mib"], "o-", color="C2")
    axes[1].set_ylabel("peak resident memory increase (MiB)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("samples (all bands)")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    import pandas as pd

    from .cli import make_parser
    from .errors import BenchValueError
    from .spec import load_spec

    p = make_parser("python -m bench.scaling", "Time and memory against the number of samples.")
    p.add_argument("datasets", nargs="+", help="dataset specs, e.g. smoke ci default paper")
    p.add_argument("--method", default="wiener-fftw", help="the method timed beside metacal [wiener-fftw]")
    p.add_argument("--out", required=True, help="output directory (scaling.csv, scaling.png)")
    a = p.parse_args(argv)
    for name in a.datasets:
        load_spec(name)                                   # every name is checked before any work
    from methods import get_method_class
    if not get_method_class(a.method).produces_image:
        raise BenchValueError(f"--method must return images, {a.method!r} does not")
    rows = [measure(name, a.method) for name in a.datasets]
    table = pd.DataFrame(rows).assign(**provenance())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "scaling.csv", index=False, float_format="%.4g")
    fig = figure(table, a.method)
    fig.savefig(out / "scaling.png", dpi=110, bbox_inches="tight")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"wrote {out / 'scaling.csv'} and {out / 'scaling.png'}")
    return 0


if __name__ == "__main__":
    from .cli import run_cli

    sys.exit(run_cli(main, prog="python -m bench.scaling"))


__all__ = ["COLUMNS", "TEXT_COLUMNS", "figure", "load_table", "main", "measure", "provenance"]
