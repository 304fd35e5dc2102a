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
import os
import sys
from pathlib import Path

import numpy as np

from .figures import gallery, plots
from .results import (M_GOAL, NOT_METACAL, galsim_loop_time, load_run, reference_time, rows,  # noqa: F401
                      speedups)

CONVENTIONS = (
    "PSNR against the truth stamp with that stamp's data range (max - min); "
    "SSIM with an 11x11 Gaussian window (sigma 1.5, truncate 3.5), population covariances, "
    "K1 = 0.01, K2 = 0.03, averaged over bands; m and c from the paired +-g quads "
    "(g_obs = (1 + m) g + c) with jackknife errors over groups of whole quads, bands averaged "
    "with equal weights, over the whole dataset; an object metacal flags (including |e| >= 1, a "
    "noise-dominated stamp) drops its whole quad. Times are medians over rounds after a warm-up call, "
    "per 5000 samples, on the dataset's first 5000; warm-up and JIT compilation are reported apart. "
    "Peak memory is the GPU allocator's peak on a GPU and the increase in resident memory during one "
    "call on the CPU. Placement: NAME+metacal rows deconvolve, then shear (the method replaces "
    "metacal's exact deconvolution); NAME+metacal[shear-then-deconvolve] rows shear, then deconvolve "
    "(exact metacal draws the five images with the noise correction, the method deconvolves each with "
    "the reconvolution PSF, and the moments are measured on its output); their PSNR and SSIM are null, "
    "as the method never sees the observed stamps."
)


# --------------------------------------------------------------------------- tables
def _fmt(v, spec):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return format(v, spec)


def summary_table(df):
    """Per method: time, speed-up over the GalSim loop, memory, PSNR, SSIM, m, c (all SNR).

    The GalSim loop is timed per single-band stamp, so a row of B-band samples is
    compared with B times its time.
    """
    import pandas as pd

    t = df[df["time_per_5000_s"].notna() | df["m"].notna()].copy()
    t["speedup_vs_galsim_loop"] = speedups(t)
    t["peak_memory_mib"] = [v / 2 ** 20 if v else None for v in t["peak_memory_bytes"]]
    t["placement"] = [p if isinstance(p, str) else "-" for p in t["placement"]]
    cols = ["method", "placement", "framework", "device", "n_samples", "n_bands", "time_per_5000_s",
            "speedup_vs_galsim_loop",
            "warmup_s", "compile_s", "peak_memory_mib", "psnr_db", "ssim", "m", "m_err", "c", "c_err"]
    return pd.DataFrame(t[cols]).reset_index(drop=True)


FORMATS = {"time_per_5000_s": ".3g", "warmup_s": ".2g", "compile_s": ".2g", "speedup_vs_galsim_loop": ".0f",
           "peak_memory_mib": ".0f",
           "psnr_db": ".2f", "ssim": ".3f", "n": "d", "quads_dropped": "d", "m": "+.4f", "m_err": ".4f", "c": "+.5f", "c_err": ".5f",
           "n_samples": "d", "n_bands": "d", "time_ratio": ".2f"}


HEADERS = {"time_per_5000_s": "time / 5000 (s)", "speedup_vs_galsim_loop": "speed-up vs GalSim loop",
           "warmup_s": "warm-up (s)", "compile_s": "compile (s)", "peak_memory_mib": "peak memory (MiB)",
           "psnr_db": "PSNR (dB)", "ssim": "SSIM", "n_samples": "samples", "n_bands": "bands",
           "quads_dropped": "quads dropped", "m": "m", "c": "c"}


def display(df):
    """The table as a reader sees it: values and their errors as '+0.0431 ± 0.0053', one number
    format per column (FORMATS), headers with units."""
    import pandas as pd

    out = pd.DataFrame(index=df.index)
    for col in df.columns:
        if col in ("m_err", "c_err"):
            continue
        vals = df[col]
        err = df.get(col + "_err") if col in ("m", "c") else None
        spec = FORMATS.get(col, ".4g")
        cells = []
        for i, v in enumerate(vals):
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                cell = _fmt(int(v) if spec == "d" and np.isfinite(v) else float(v), spec)
                e = None if err is None else err.iloc[i]
                if cell != "-" and e is not None and np.isfinite(e):
                    cell += " ± " + _fmt(float(e), FORMATS[col + "_err"])
            else:
                cell = "-" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
            cells.append(cell)
        out[HEADERS.get(col, col)] = cells
    return out


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
            out.append({"method": r["method"], "placement": r["placement"] if isinstance(r["placement"], str) else "-",
                        "snr": "all" if b.get("snr_bin") == "all"
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


def headline(run) -> list[str]:
    """A few sentences generated from the run: fastest image method, best PSNR and SSIM, which
    methods meet |m| <= 1e-2 (and within 3 sigma) in every bin at SNR >= 20, per placement."""
    df = rows(run)
    images = df[df["psnr_db"].notna() & (df["method"] == df["base_method"])]
    out = []
    if len(images):
        fast = images.loc[images["time_per_5000_s"].astype(float).idxmin()]
        best = images.loc[images["psnr_db"].astype(float).idxmax()]
        sharp = images.loc[images["ssim"].astype(float).idxmax()]
        out.append(f"Fastest deconvolution: `{fast['method']}`, {fast['time_per_5000_s']:.3g} s per 5000 samples "
                   f"({fast['device']}). Best PSNR: `{best['method']}` ({best['psnr_db']:.2f} dB); best SSIM: "
                   f"`{sharp['method']}` ({sharp['ssim']:.3f}).")
    for placement in ("deconvolve-then-shear", "shear-then-deconvolve"):
        sel = df[df["method"].str.contains("+metacal", regex=False) & ~df["method"].str.contains("no-correction")
                 & (df["placement"] == placement)]
        if not len(sel):
            continue
        ok, miss = [], []
        for _, r in sel.iterrows():
            bins = [b for b in r["by_snr"] if b.get("snr_bin") != "all"]
            known = bins and all(b.get("m") is not None and b.get("m_err") is not None for b in bins)
            good = known and all(abs(b["m"]) <= 3 * b["m_err"] for b in bins) and all(
                abs(b["m"]) <= 1e-2 for b in bins if b.get("snr_lo", 0) >= 20)
            (ok if good else miss).append(f"`{r['base_method']}`")
        out.append(f"{placement}: m within 3 sigma of 0 in every SNR bin and |m| <= 0.01 at SNR >= 20 for "
                   f"{', '.join(ok) or 'no method'}; missed by {', '.join(miss) or 'none'}.")
    extra = run.get("deconvbench", {})
    out.append(f"Machine: {extra.get('gpu') or 'CPU only (' + str(extra.get('gpu_unavailable_reason')) + ')'}; "
               f"dataset `{extra.get('dataset', '?')}`.")
    return out


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
        summary, per_bin = display(summary), display(per_bin) if len(per_bin) else per_bin
        sections.append((f"Summary: {run['label']}", markdown_table(summary), summary))
        if len(per_bin):
            sections.append((f"Per SNR bin: {run['label']}", markdown_table(per_bin), per_bin))
    if len(runs) > 1:
        comp = comparison_table(runs)
        sections.append(("Side by side: time per 5000 samples (s)", markdown_table(comp), comp))
    skipped = [(run["label"], s) for run in runs for s in run.get("deconvbench", {}).get("skipped", [])]
    heads = [ln for run in runs for ln in headline(run)]
    md = ["# Deconvolution benchmark report", ""] + [f"- {ln}" for ln in heads] + ["", f"Conventions: {CONVENTIONS}", ""]
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
             "<h1>Deconvolution benchmark report</h1>",
             "<ul>" + "".join(f"<li>{html.escape(ln).replace('`', '')}</li>" for ln in heads) + "</ul>",
             f"<p>Conventions: {html.escape(CONVENTIONS)}</p>"]
    for title, _, df in sections:
        parts += [f"<h2>{html.escape(title)}</h2>",
                  df.to_html(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}", classes="results")]
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
