"""The benchmark's history: several benchmark JSON files (one per commit) as trends.

``python -m bench.report DIR`` (or several files) orders the runs by date and draws, per
method, time per 5000 samples divided by that run's reference workload (so runs on
different machines compare), PSNR and m (all SNR, with errors) against the run, labelled
by commit and date. Each run is passed through the regression gate
(:func:`bench.compare.compare`, default thresholds) against the run before it, and the
points the gate would fail are marked. ``.ci/run`` keeps the JSON of every CI run under
``.ci/artifacts/`` for this.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .compare import compare
from .errors import BenchFileError, BenchValueError
from .results import reference_time, rows

#: the rows a trend follows: everything timed except the normaliser itself
SKIP = ("reference-workload",)


def expand(paths) -> tuple[list[str], bool]:
    """Files named, with each directory replaced by the ``*.json`` files in it; and whether any was a directory."""
    out, had_dir = [], False
    for p in map(Path, paths):
        if p.is_dir():
            had_dir = True
            found = sorted(str(f) for f in p.glob("*.json"))
            if not found:
                raise BenchFileError(f"directory {str(p)!r} holds no .json benchmark files")
            out += found
        else:
            out.append(str(p))
    return out, had_dir


def _when(run) -> str:
    return str(run.get("commit_info", {}).get("time") or run.get("datetime") or "")


def ordered(runs: list) -> list:
    """Runs sorted by commit time (else run date), then label."""
    return sorted(runs, key=lambda r: (_when(r), r["label"]))


def run_label(run) -> str:
    """Commit (short) and date of a run, for an axis: 'a1b2c3d\\n2026-11-25'."""
    commit = (run.get("commit_info", {}).get("id") or "")[:7] or run["label"]
    return f"{commit}\n{_when(run)[:10]}"


def trend_table(runs: list):
    """One row per run and method: normalised time, PSNR, m, m_err and the gate's verdict against
    the previous run ("fail: reasons", "ok", or "-" for the first run)."""
    import pandas as pd

    runs = ordered(runs)
    out = []
    for k, run in enumerate(runs):
        df = rows(run).drop_duplicates("method")
        ref = reference_time(df)
        verdict = {}
        if k > 0:
            try:
                _, failures = compare(runs[k - 1], run, allow_missing=True)
            except BenchValueError as err:         # e.g. a run without the reference workload
                failures = [f"*: not comparable ({err})"]
            for f in failures:
                verdict.setdefault(f.split(":", 1)[0], []).append(f.split(":", 1)[1].strip())
        for _, r in df.iterrows():
            if r["method"] in SKIP:
                continue
            t = r["time_per_5000_s"]
            out.append({"run": run["label"], "order": k, "label": run_label(run), "method": r["method"],
                        "base_method": r["base_method"],
                        "time_norm": t / ref if (t is not None and np.isfinite(t) and ref) else None,
                        "psnr_db": r["psnr_db"], "m": r["m"], "m_err": r["m_err"],
                        "gate": "-" if k == 0 else ("fail: " + "; ".join(verdict[r["method"]])
                                                     if r["method"] in verdict else "ok")})
    return pd.DataFrame(out)


def line_style(method: str) -> str:
    """A method alone: solid; inside metacal: dashed; after the shear: dotted; other rows: dash-dot."""
    if "shear-then-deconvolve" in method:
        return ":"
    if "+metacal" in method:
        return "--"
    return "-" if "[" not in method and method not in ("simulation",) else "-."


def trend_figure(runs: list, colours: dict):
    """Time / reference workload, PSNR and m against the run, one line per method; gate failures circled red."""
    import matplotlib.pyplot as plt

    t = trend_table(runs)
    ticks = t.drop_duplicates("order").sort_values("order")
    panels = [("time_norm", "time per 5000 / reference workload", True), ("psnr_db", "PSNR (dB), all SNR", False),
              ("m", "m, all SNR", False)]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.6 * len(panels)), sharex=True)
    for ax, (col, ylabel, logy) in zip(axes, panels):
        for method, g in t.groupby("method", sort=True):
            g = g[g[col].notna()]
            if not len(g):
                continue
            base = g["base_method"].iloc[0]
            ls = line_style(method)
            y = g[col].astype(float).to_numpy()
            yerr = g["m_err"].astype(float).to_numpy() if col == "m" else None
            ax.errorbar(g["order"], y, yerr=yerr, marker="o", ms=3, lw=1, ls=ls, color=colours.get(base, "0.4"),
                        label=method, capsize=2 if yerr is not None else 0)
            bad = g[g["gate"].str.startswith("fail")]
            if len(bad):
                ax.scatter(bad["order"], bad[col].astype(float), s=90, facecolors="none", edgecolors="red",
                           linewidths=1.5, zorder=5)
        if logy:
            ax.set_yscale("log")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xticks(list(ticks["order"]))
    axes[-1].set_xticklabels(list(ticks["label"]), fontsize=7)
    axes[0].set_title("History (red circle: the regression gate fails this run against the one before)",
                      fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return fig


__all__ = ["expand", "ordered", "run_label", "trend_table", "trend_figure"]
