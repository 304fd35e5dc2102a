"""Comparison report from benchmark JSON files: ``python -m bench.report FILE [FILE ...] --out DIR``.

Writes ``DIR/report.md`` and a self-contained ``DIR/report.html`` (plots embedded as
PNG data URIs): a summary table per method, m against SNR with error bars and the
|m| < 2e-3 band, PSNR and SSIM against SNR, time per 5000 samples (log scale, with the
speed-up over the one-object GalSim loop) and peak memory, a gallery of example
stamps, the machine and library versions, and the skipped benchmarks with their
reasons. Several files (a CPU and a GPU run, or two commits) are compared side by side.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import sys
from pathlib import Path

import numpy as np

from .errors import BenchFileError, BenchValueError

M_GOAL = 2e-3
NOT_METACAL = ("reference-workload", "simulation", "wiener-fftw[pyfftw-vs-scipy]")   # no GalSim-loop speed-up
CONVENTIONS = (
    "PSNR against the truth stamp with that stamp's data range (max - min); "
    "SSIM with an 11x11 Gaussian window (sigma 1.5, truncate 3.5), population covariances, "
    "K1 = 0.01, K2 = 0.03, averaged over bands; m and c from the paired +-g quads "
    "(g_obs = (1 + m) g + c) with jackknife errors over groups of whole quads, bands averaged "
    "with equal weights, over the whole dataset; an object metacal flags (including |e| >= 1, a "
    "noise-dominated stamp) drops its whole quad. Times are medians over rounds after a warm-up call, "
    "per 5000 samples, on the dataset's first 5000; warm-up and JIT compilation are reported apart. "
    "Peak memory is the GPU allocator's peak on a GPU and the increase in resident memory during one "
    "call on the CPU."
)


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
    data["label"] = p.stem
    return data


def rows(run: dict):
    """One pandas row per benchmark with the fields the report and the gate use."""
    import pandas as pd

    out = []
    for b in run["benchmarks"]:
        e = b.get("extra_info", {})
        total = next((r for r in e.get("by_snr") or [] if r.get("snr_bin") == "all"), {})
        out.append({
            "name": b["name"], "method": e.get("method", b["name"]), "framework": e.get("framework"),
            "device": e.get("device"), "n_samples": e.get("n_samples"), "n_bands": e.get("n_bands") or 1,
            "time_per_5000_s": e.get("time_per_5000_s"), "peak_memory_bytes": e.get("peak_memory_bytes"),
            "warmup_s": e.get("warmup_s"), "compile_s": e.get("compile_s"),
            "psnr_db": total.get("psnr_db"), "ssim": total.get("ssim"),
            "m": total.get("m"), "m_err": total.get("m_err"), "c": total.get("c"), "c_err": total.get("c_err"),
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


# --------------------------------------------------------------------------- tables
def _fmt(v, spec):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return format(v, spec)


def speedups(df) -> list:
    """Speed-up of each row over the GalSim loop, per single-band stamp (None where meaningless)."""
    loop = galsim_loop_time(df)
    return [loop * nb / v if (loop and v and m not in NOT_METACAL) else None
            for m, v, nb in zip(df["method"], df["time_per_5000_s"], df["n_bands"])]


def summary_table(df):
    """Per method: time, speed-up over the GalSim loop, memory, PSNR, SSIM, m, c (all SNR).

    The GalSim loop is timed per single-band stamp, so a row of B-band samples is
    compared with B times its time.
    """
    import pandas as pd

    t = df[df["time_per_5000_s"].notna() | df["m"].notna()].copy()
    t["speedup_vs_galsim_loop"] = speedups(t)
    t["peak_memory_mib"] = [v / 2 ** 20 if v else None for v in t["peak_memory_bytes"]]
    cols = ["method", "framework", "device", "n_samples", "n_bands", "time_per_5000_s", "speedup_vs_galsim_loop",
            "warmup_s", "compile_s", "peak_memory_mib", "psnr_db", "ssim", "m", "m_err", "c", "c_err"]
    return pd.DataFrame(t[cols]).reset_index(drop=True)


FORMATS = {"time_per_5000_s": ".3g", "warmup_s": ".2g", "compile_s": ".2g", "speedup_vs_galsim_loop": ".0f",
           "peak_memory_mib": ".0f",
           "psnr_db": ".2f", "ssim": ".3f", "n": "d", "quads_dropped": "d", "m": "+.4f", "m_err": ".4f", "c": "+.5f", "c_err": ".5f",
           "n_samples": "d", "n_bands": "d", "time_ratio": ".2f"}


def markdown_table(df) -> str:
    head = "| " + " | ".join(df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    lines = [head, sep]
    for _, r in df.iterrows():
        cells = []
        for c in df.columns:
            v = r[c]
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                cells.append(_fmt(int(v) if FORMATS.get(c) == "d" else float(v), FORMATS.get(c, ".4g")))
            else:
                cells.append("-" if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def by_snr_table(df):
    """One row per method and SNR bin: PSNR, SSIM, m and c with errors (methods rows only, no '+metacal' twins)."""
    import pandas as pd

    out = []
    for _, r in df.iterrows():
        if not r["by_snr"] or r["method"].endswith("+metacal"):
            continue
        for b in r["by_snr"]:
            out.append({"method": r["method"], "snr": "all" if b.get("snr_bin") == "all"
                        else f"{b['snr_lo']:g}-{b['snr_hi']:g}", "n": b.get("n"),
                        "psnr_db": b.get("psnr_db"), "ssim": b.get("ssim"), "m": b.get("m"),
                        "m_err": b.get("m_err"), "c": b.get("c"), "c_err": b.get("c_err"),
                        "quads_dropped": b.get("n_quads_dropped")})
    return pd.DataFrame(out)


def comparison_table(runs):
    """Time per 5000 of every method in every run, side by side, and the ratio to the first."""
    import pandas as pd

    merged = None
    for run in runs:
        d = rows(run)[["method", "device", "time_per_5000_s"]].dropna(subset=["time_per_5000_s"])
        d = d.rename(columns={"time_per_5000_s": f"time_{run['label']}", "device": f"device_{run['label']}"})
        merged = d if merged is None else pd.merge(merged, d, on="method", how="outer")
    first = f"time_{runs[0]['label']}"
    for run in runs[1:]:
        merged[f"ratio_{run['label']}"] = merged[f"time_{run['label']}"] / merged[first]
    return merged


# --------------------------------------------------------------------------- plots
def _png(fig) -> str:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _snr_centres(by_snr):
    rs = [r for r in by_snr if r.get("snr_bin") != "all"]
    return rs, np.array([np.sqrt(r["snr_lo"] * r["snr_hi"]) for r in rs])


def plots(runs) -> dict[str, str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = {}
    # m against SNR (the full-loop rows carry m; image rows carry PSNR/SSIM)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.axhspan(-M_GOAL, M_GOAL, color="0.85", label=f"|m| < {M_GOAL:g}")
    for k, run in enumerate(runs):
        df = rows(run)
        # the rows through metacal, and exact metacal without the noise correction for comparison
        sel = df["method"].str.endswith("+metacal") | df["method"].str.contains(r"\[no-correction\]", regex=True)
        for _, r in df[sel].iterrows():
            rs, x = _snr_centres(r["by_snr"])
            if not rs:
                continue
            m = np.array([np.nan if q["m"] is None else q["m"] for q in rs])
            e = np.array([np.nan if q["m_err"] is None else q["m_err"] for q in rs])
            name = r["method"].removesuffix("+metacal").replace("+metacal[no-correction]", ", no noise correction")
            lbl = name + (f" ({run['label']})" if len(runs) > 1 else "")
            style = dict(linestyle="--", marker="s") if "no noise correction" in name else dict(marker="o")
            ax.errorbar(x * (1 + 0.03 * k), m, yerr=e, capsize=3, label=lbl, **style)
    ax.set_xscale("log")
    ax.set_xlabel("SNR (bin centre)")
    ax.set_ylabel("m")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=8)
    figs["m_vs_snr"] = _png(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for run in runs:
        df = rows(run)
        for _, r in df[df["psnr_db"].notna() & ~df["method"].str.endswith("+metacal")].iterrows():
            rs, x = _snr_centres(r["by_snr"])
            lbl = r["method"] + (f" ({run['label']})" if len(runs) > 1 else "")
            axes[0].plot(x, [q["psnr_db"] for q in rs], "o-", label=lbl)
            axes[1].plot(x, [q["ssim"] for q in rs], "o-", label=lbl)
    for ax, lab in zip(axes, ("PSNR (dB)", "SSIM")):
        ax.set_xscale("log")
        ax.set_xlabel("SNR (bin centre)")
        ax.set_ylabel(lab)
    axes[0].legend(fontsize=8)
    figs["quality_vs_snr"] = _png(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 + 0.35 * max(len(rows(r)) for r in runs)))
    for k, run in enumerate(runs):
        df = rows(run)
        t = df[df["time_per_5000_s"].notna() & (df["method"] != "reference-workload")]
        y = np.arange(len(t)) + 0.8 * k / max(len(runs), 1)
        axes[0].barh(y, t["time_per_5000_s"], height=0.8 / len(runs), label=run["label"])
        for yi, v, speed in zip(y, t["time_per_5000_s"], speedups(t)):
            if speed:
                axes[0].text(v, yi, f" {speed:.0f}x", va="center", fontsize=7)
        axes[0].set_yticks(np.arange(len(t)))
        axes[0].set_yticklabels(t["method"], fontsize=8)
        mem = df[df["peak_memory_bytes"].notna()]
        axes[1].barh(np.arange(len(mem)) + 0.8 * k / len(runs), mem["peak_memory_bytes"] / 2 ** 20,
                     height=0.8 / len(runs), label=run["label"])
        axes[1].set_yticks(np.arange(len(mem)))
        axes[1].set_yticklabels(mem["method"], fontsize=8)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("time per 5000 samples (s); label: speed-up over the GalSim loop")
    axes[1].set_xlabel("peak memory (MiB)")
    if len(runs) > 1:
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    figs["time_memory"] = _png(fig)
    return figs


def gallery(run) -> str | None:
    """Observed, truth, each method's output and its residual (output - truth), r band, one stamp
    per SNR bin, from the stamps the benchmark stored in its JSON (``deconvbench.gallery``).

    Estimates and residuals share the truth's colour scale per row, so methods compare by eye.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .gallery import decode

    g = run.get("deconvbench", {}).get("gallery")
    if not g:
        return None
    stamps = {k: decode(v) for k, v in g.get("stamps", {}).items()}
    if "observed" not in stamps or "truth" not in stamps:
        return None
    truth = stamps.pop("truth")
    cols = [("observed", stamps.pop("observed"), False), ("truth", truth, False)]
    for name, arr in stamps.items():
        if arr.shape != truth.shape:
            raise BenchValueError(f"gallery stamps of {name!r} have shape {arr.shape}, truth {truth.shape}")
        cols += [(name, arr, False), (f"{name} - truth", arr - truth, True)]
    n = truth.shape[0]
    snr = g.get("snr") or [None] * n
    fig, axes = plt.subplots(n, len(cols), figsize=(1.6 * len(cols), 1.7 * n), squeeze=False)
    for j, (title, arr, residual) in enumerate(cols):
        for i in range(n):
            ax = axes[i, j]
            # the blurred observation on its own scale; estimates on the truth's; residuals symmetric
            lim = float(np.abs(arr[i] if j == 0 else truth[i]).max()) or 1.0
            if residual:
                ax.imshow(arr[i], origin="lower", cmap="RdBu_r", vmin=-0.25 * lim, vmax=0.25 * lim)
            else:
                ax.imshow(arr[i], origin="lower", cmap="gray", vmin=-0.2 * lim, vmax=lim)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=7)
            if j == 0 and snr[i] is not None:
                ax.set_ylabel(f"SNR {snr[i]:.0f}", fontsize=8)
    fig.tight_layout()
    return _png(fig)


# --------------------------------------------------------------------------- writing
def machine_lines(run) -> list[str]:
    mi = run.get("machine_info", {})
    cpu = mi.get("cpu", {})
    extra = run.get("deconvbench", {})
    lines = [f"- run `{run['label']}`: {run.get('datetime', '?')}, dataset `{extra.get('dataset', '?')}`",
             f"  - CPU: {cpu.get('brand_raw', mi.get('processor', '?'))}, {cpu.get('count', '?')} logical cores; "
             f"Python {mi.get('python_version', '?')} on {mi.get('system', '?')} {mi.get('release', '')}",
             f"  - GPU: {extra.get('gpu') or 'none (' + str(extra.get('gpu_unavailable_reason')) + ')'}",
             "  - metacal: " + _metacal_line(extra.get("metacal")),
             "  - libraries: " + ", ".join(f"{k} {v}" for k, v in extra.get("versions", {}).items())]
    if run.get("commit_info", {}).get("id"):
        lines.append(f"  - commit {run['commit_info']['id'][:10]}")
    return lines


def _metacal_line(m) -> str:
    if not m:
        return "settings not recorded (a run before the noise correction: no correction)"
    corr = f"noise correction on (seed {m.get('noise_seed')})" if m.get("noise_correction") else "no noise correction"
    return f"kernel {m.get('kernel')}, {corr}, step {m.get('step')}, weight FWHM {m.get('weight_fwhm')} arcsec"


def build(runs, out: Path, *, with_gallery: bool = True) -> tuple[Path, Path]:
    figs = plots(runs)
    if with_gallery:
        try:
            g = gallery(runs[0])
        except Exception as err:      # the report must not fail for want of a dataset cache
            g = None
            print(f"gallery skipped: {type(err).__name__}: {err}", file=sys.stderr)
        if g:
            figs["gallery"] = g
    sections = []
    for run in runs:
        summary, per_bin = summary_table(rows(run)), by_snr_table(rows(run))
        sections.append((f"Summary: {run['label']}", markdown_table(summary), summary))
        if len(per_bin):
            sections.append((f"Per SNR bin: {run['label']}", markdown_table(per_bin), per_bin))
    if len(runs) > 1:
        comp = comparison_table(runs)
        sections.append(("Side by side: time per 5000 samples (s)", markdown_table(comp), comp))
    skipped = [(run["label"], s) for run in runs for s in run.get("deconvbench", {}).get("skipped", [])]
    md = ["# Deconvolution benchmark report", "", f"Conventions: {CONVENTIONS}", ""]
    for title, table_md, _ in sections:
        md += [f"## {title}", "", table_md, ""]
    for key, title in (("m_vs_snr", "m against SNR"), ("quality_vs_snr", "PSNR and SSIM against SNR"),
                       ("time_memory", "Time and memory"), ("gallery", "Examples (r band)")):
        if key in figs:
            md += [f"## {title}", "", f"![{title}]({key}.png)", ""]
    md += ["## Machine", ""] + [ln for run in runs for ln in machine_lines(run)] + [""]
    md += ["## Skipped", ""] + ([f"- `{lab}` {s['test']}: {s['reason']}" for lab, s in skipped] or ["- none"])
    out.mkdir(parents=True, exist_ok=True)
    for key, data in figs.items():
        (out / f"{key}.png").write_bytes(base64.b64decode(data))
    md_path = out / "report.md"
    _atomic_write(md_path, "\n".join(md) + "\n")

    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Deconvolution benchmark report</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
             "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}</style></head><body>",
             "<h1>Deconvolution benchmark report</h1>", f"<p>Conventions: {html.escape(CONVENTIONS)}</p>"]
    for title, _, df in sections:
        parts += [f"<h2>{html.escape(title)}</h2>",
                  df.to_html(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}")]
    for key, data in figs.items():
        parts.append(f"<h2>{key.replace('_', ' ')}</h2><img src='data:image/png;base64,{data}'>")
    parts += ["<h2>Machine</h2><pre>" + html.escape("\n".join(ln for run in runs for ln in machine_lines(run)))
              + "</pre>", "<h2>Skipped</h2><ul>"]
    parts += [f"<li>{html.escape(lab)} {html.escape(s['test'])}: {html.escape(s['reason'])}</li>"
              for lab, s in skipped] or ["<li>none</li>"]
    parts.append("</ul></body></html>")
    html_path = out / "report.html"
    _atomic_write(html_path, "\n".join(parts))
    return md_path, html_path


def _atomic_write(path: Path, text: str):
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    from .cli import make_parser

    p = make_parser("python -m bench.report", "Write report.md and report.html from benchmark JSON files.")
    p.add_argument("files", nargs="+", help="benchmark JSON files (pytest bench/ --benchmark-json=FILE)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-gallery", action="store_true", help="skip the example stamps")
    a = p.parse_args(argv)
    runs = [load_run(f) for f in a.files]          # all inputs are checked before anything is written
    seen: dict[str, int] = {}
    for run in runs:                               # the same file name twice: label them apart
        k = seen[run["label"]] = seen.get(run["label"], 0) + 1
        if k > 1:
            run["label"] = f"{run['label']}-{k}"
    md, ht = build(runs, Path(a.out), with_gallery=not a.no_gallery)
    print(f"wrote {md} and {ht}")
    return 0


if __name__ == "__main__":
    from .cli import run_cli

    sys.exit(run_cli(main, prog="python -m bench.report"))
