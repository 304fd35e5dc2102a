"""Comparison report from benchmark JSON files: ``python -m bench.report FILE|DIR [...] --out DIR``.

Writes ``DIR/report.md`` and a self-contained ``DIR/report.html`` (plots embedded as
PNG data URIs, tables sortable by a click, no network): a headline generated from the data
with the best PSNR and SSIM per SNR bin, the summary in three tables by what a row measures
(:mod:`bench.tables`), the per-bin table, m against SNR per placement with error bars and
the requirement bands, PSNR and SSIM with their spread, time per 5000 samples and a
time-against-memory scatter, a gallery (observed, truth, each method and its residual), the
machine and library versions, and the skipped benchmarks with their reasons. With
``--scaling CSV`` (from ``python -m bench.scaling``) it adds the scaling study: time per 5000
samples and peak memory against the number of samples, as a table and a figure.

Up to three files (a CPU and a GPU run, or two commits) are compared side by side. Given a
directory (e.g. ``.ci/artifacts``) or more files, the sections describe the newest run and a
history section follows every run (:mod:`bench.history`): trends of normalised time, PSNR
and m, with the points the regression gate would fail marked.
"""

from __future__ import annotations

import base64
import html
import os
import sys
from pathlib import Path

from .figures import M_GOAL_PLACEMENT, gallery, history_plot, plots
from .history import expand, ordered, trend_table
from .results import (metric_columns_of, M_GOAL, NOT_METACAL, galsim_loop_time, load_run, reference_time, rows,  # noqa: F401
                      speedups)
from .tables import (SORT_SCRIPT, best_per_bin, by_snr_table, comparison_table, display,  # noqa: F401
                     grouped_tables, html_table, markdown_table, summary_table)

CONVENTIONS = (
    "PSNR against the truth stamp with that stamp's data range (max - min); "
    "SSIM with an 11x11 Gaussian window (sigma 1.5, truncate 3.5), population covariances, "
    "K1 = 0.01, K2 = 0.03, averaged over bands; m and c from the paired +-g quads "
    "(g_obs = (1 + m) g + c) with jackknife errors over 100 blocks of whole quads (fixed by quad id), bands averaged "
    "with equal weights, over the whole dataset; an object metacal flags (including |e| >= 1, a "
    "noise-dominated stamp) drops its whole quad. Times are medians over rounds after a warm-up call, "
    "per 5000 samples, on the dataset's first 5000; warm-up and JIT compilation are reported apart. "
    "Peak memory is the GPU allocator's peak on a GPU and the increase in resident memory during one "
    "call on the CPU. Placement: NAME+metacal rows deconvolve, then shear (the method replaces "
    "metacal's exact deconvolution); NAME+metacal[shear-then-deconvolve] rows shear, then deconvolve "
    "(exact metacal draws the five images with the noise correction, sheared about each object's "
    "centre, the method deconvolves each with the reconvolution PSF, and the moments are measured on "
    "its output); their PSNR and SSIM score the method's output on the noshear metacal image (whose "
    "noise includes the correction's field, so sqrt(2) times the stamp's) against the same truth. "
    "NAME-metacal methods are networks fine-tuned on metacal's images for the second placement only. "
    "The shapes are measured by the run's shear estimator (settings below); a row named [admom] by "
    "ngmix's adaptive moments on the drawn metacal images."
)


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
        ok, miss, additive, loose = [], [], [], []
        for _, r in sel.iterrows():
            bins = [b for b in r["by_snr"] if b.get("snr_bin") != "all"]
            known = bins and all(b.get("m") is not None and b.get("m_err") is not None for b in bins)
            high = [b for b in bins if b.get("snr_lo", 0) >= 20]
            good = known and all(abs(b["m"]) <= 3 * b["m_err"] for b in bins) and all(
                abs(b["m"]) <= M_GOAL_PLACEMENT for b in high)
            # a variant of a method's row (exact metacal measured with admom) is named by its variant
            variant = r["method"].rsplit("[", 1)[1].rstrip("]") if r["method"].endswith("[admom]") else ""
            name = r["base_method"] + (f" ({variant})" if variant else "")
            (ok if good else miss).append(f"`{name}`")
            if good:
                additive.extend(_additive_bias(r))
            if known:
                loose.extend(f"`{name}` (error {b['m_err']:.4f} at SNR {b.get('snr_lo', '?'):g}-"
                             f"{b.get('snr_hi', '?'):g})" for b in high if b["m_err"] > M_GOAL_PLACEMENT)
        out.append(f"{placement}: m within 3 sigma of 0 in every SNR bin and |m| <= 0.01 at SNR >= 20 for "
                   f"{', '.join(ok) or 'no method'}; missed by {', '.join(miss) or 'none'}.")
        if additive:
            # the goal is on m; an additive bias that metacal's response cannot remove is said beside it
            out.append(f"{placement}: of those, an additive bias more than 3 sigma from 0 (all SNR): "
                       f"{'; '.join(additive)}.")
        if loose and placement == "shear-then-deconvolve":
            # the goal is decided against m's point estimate: where its error is larger than the goal,
            # a verdict either way is at the one-sigma level and a larger dataset is needed
            out.append(f"{placement}: m's error exceeds the 0.01 goal itself in a bin at SNR >= 20 for "
                       f"{'; '.join(loose)}, so the verdict there is not significant at this sample size; "
                       f"a larger dataset decides it.")
    extra = run.get("deconvbench", {})
    out.append(f"Machine: {extra.get('gpu') or 'CPU only (' + str(extra.get('gpu_unavailable_reason')) + ')'}; "
               f"dataset `{extra.get('dataset', '?')}`.")
    return out


def _additive_bias(r) -> list[str]:
    """'`NAME` c1 = ... ± ...' for each component of the all-SNR additive bias beyond 3 sigma."""
    allb = next((b for b in r["by_snr"] if b.get("snr_bin") == "all"), {})
    out = []
    for key, label in (("c", "c1"), ("c2", "c2")):
        c, err = allb.get(key), allb.get(key + "_err")
        if c is not None and err is not None and abs(c) > 3 * err:
            out.append(f"`{r['base_method']}` {label} = {c:+.4f} ± {err:.4f}")
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
             "  - memory: " + _memory_line(extra),
             "  - libraries: " + ", ".join(f"{k} {v}" for k, v in extra.get("versions", {}).items())]
    if run.get("commit_info", {}).get("id"):
        lines.append(f"  - commit {run['commit_info']['id'][:10]}")
    return lines


def _memory_line(extra) -> str:
    """Whether the stamps were streamed from the cache, and the session's peak resident memory."""
    peak = extra.get("peak_rss_bytes")
    where = {True: "stamps streamed from the cache", False: "stamps loaded whole"}.get(extra.get("streamed"),
                                                                                       "loading not recorded")
    return where + (f", peak resident memory of the session {peak / 2 ** 30:.2f} GiB" if peak else "")


def _metacal_line(m) -> str:
    if not m:
        return "settings not recorded (a run before the noise correction: no correction)"
    corr = f"noise correction on (seed {m.get('noise_seed')})" if m.get("noise_correction") else "no noise correction"
    est = m.get("estimator", "gaussmom")              # files before the estimator was recorded used gaussmom
    how = (f"Gaussian-weighted moments (gaussmom), weight FWHM {m.get('weight_fwhm')} arcsec" if est == "gaussmom"
           else f"estimator {est}" + (" (ngmix's adaptive moments)" if est == "admom" else ""))
    return f"kernel {m.get('kernel')}, {corr}, step {m.get('step')}, shapes by {how}"


STYLE = ("body{font-family:sans-serif;max-width:1180px;margin:auto;padding:0 12px}"
         "table{border-collapse:collapse;font-size:12px;margin-bottom:8px}"
         "td,th{border:1px solid #ccc;padding:2px 5px;text-align:right}"
         "td:first-child,th:first-child{text-align:left}th{cursor:pointer;background:#f4f4f4}"
         "img{max-width:100%;height:auto}.wrap{overflow-wrap:anywhere}")


def build(runs, out: Path, *, with_gallery: bool = True, history: list | None = None,
          scaling=None) -> tuple[Path, Path]:
    """Write report.md and report.html for *runs* (side by side) and, if given, the *history* runs
    and the *scaling* study, a (table, method name) pair from :func:`bench.scaling.load_table`."""
    import pandas as pd

    figs = plots(runs)
    if scaling is not None:
        from .figures import _png
        from .scaling import figure as scaling_figure
        figs["scaling"] = _png(scaling_figure(*scaling))
    if with_gallery:
        try:
            g = gallery(runs[0])
        except Exception as err:      # the report must not fail for want of a dataset cache
            g = None
            print(f"gallery skipped: {type(err).__name__}: {err}", file=sys.stderr)
        if g:
            figs["gallery"] = g
    if history and len(history) > 1:
        figs["history"] = history_plot(history)
    sections = []        # (title, display table, open by default)
    for run in runs:
        suffix = f": {run['label']}" if len(runs) > 1 else ""
        for title, part in grouped_tables(rows(run)):
            sections.append((title + suffix, display(part), True))
        declared = metric_columns_of(run)
        per_bin = by_snr_table(rows(run), declared)
        if len(per_bin):
            sections.append(("Per SNR bin" + suffix, display(per_bin, declared), False))
    if len(runs) > 1:
        sections.append(("Side by side: time per 5000 samples (s)", display(comparison_table(runs)), True))
    if history and len(history) > 1:
        trend = trend_table(history)
        fails = trend[trend["gate"].str.startswith("fail")][["run", "method", "gate"]]
        if not len(fails):
            fails = pd.DataFrame([{"run": "-", "method": "-", "gate": "no run fails the gate against the one before"}])
        sections.append(("History: gate failures against the previous run", fails, True))
    if scaling is not None:
        sections.append((_scaling_title(scaling[0]), _scaling_table(*scaling), True))
    skipped = [(run["label"], s) for run in runs for s in run.get("deconvbench", {}).get("skipped", [])]
    heads = [ln for run in runs for ln in headline(run)]
    best = [(run["label"], best_per_bin(rows(run))) for run in runs]
    best = [(lab, b) for lab, b in best if len(b)]
    md = ["# Deconvolution benchmark report", ""] + [f"- {ln}" for ln in heads] + [""]
    for lab, b in best:
        md += [f"Best per SNR bin{': ' + lab if len(runs) > 1 else ''}:", "", markdown_table(b), ""]
    md += [f"Conventions: {CONVENTIONS}", ""]
    for title, table, _ in sections:
        md += [f"## {title}", "", markdown_table(table), ""]
    for key, title in FIGURES:
        if key in figs:
            md += [f"## {title}", "", f"![{title}]({key}.png)", ""]
    md += ["## Machine", ""] + [ln for run in runs for ln in machine_lines(run)] + [""]
    md += ["## Skipped", ""] + ([f"- `{lab}` {s['test']}: {s['reason']}" for lab, s in skipped] or ["- none"])
    out.mkdir(parents=True, exist_ok=True)
    for key, data in figs.items():
        (out / f"{key}.png").write_bytes(base64.b64decode(data))
    md_path = out / "report.md"
    _atomic_write(md_path, "\n".join(md) + "\n")

    parts = ["<!doctype html><html><head><meta charset='utf-8'>"
             "<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>Deconvolution benchmark report</title><style>{STYLE}</style></head><body>",
             "<h1>Deconvolution benchmark report</h1>",
             "<ul class='wrap'>" + "".join(f"<li>{html.escape(ln).replace('`', '')}</li>" for ln in heads) + "</ul>"]
    for lab, b in best:
        parts += [f"<p>Best per SNR bin{': ' + html.escape(lab) if len(runs) > 1 else ''}:</p>", html_table(b)]
    parts.append(f"<details><summary>Conventions</summary><p class='wrap'>{html.escape(CONVENTIONS)}</p></details>")
    for title, table, is_open in sections:
        body = f"<h2>{html.escape(title)}</h2>" + html_table(table)
        parts.append(body if is_open else f"<details><summary><b>{html.escape(title)}</b> "
                                           f"({len(table)} rows)</summary>{html_table(table)}</details>")
    for key, title in FIGURES:
        if key in figs:
            parts.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' "
                         f"src='data:image/png;base64,{figs[key]}'>")
    parts += ["<h2>Machine</h2><pre class='wrap' style='white-space:pre-wrap'>"
              + html.escape("\n".join(ln for run in runs for ln in machine_lines(run))) + "</pre>", "<h2>Skipped</h2><ul>"]
    parts += [f"<li>{html.escape(lab)} {html.escape(s['test'])}: {html.escape(s['reason'])}</li>"
              for lab, s in skipped] or ["<li>none</li>"]
    parts.append(f"</ul><script>{SORT_SCRIPT}</script></body></html>")
    html_path = out / "report.html"
    _atomic_write(html_path, "\n".join(parts))
    return md_path, html_path


FIGURES = (("m_vs_snr", "m against SNR"), ("quality_vs_snr", "PSNR and SSIM against SNR"),
           ("time_memory", "Time and memory"), ("gallery", "Examples (r band): outputs and residuals"),
           ("history", "History across runs"),
           ("scaling", "Scaling: time per 5000 samples and peak memory against the number of samples"))


def _scaling_title(table) -> str:
    """The section's title, with where and when the study ran when its table says so."""
    where = []
    if "machine" in table.columns:
        cores = f", {int(table['n_cores'].iloc[0])} logical cores" if "n_cores" in table.columns else ""
        where.append(f"{table['machine'].iloc[0]}{cores}")
    where += [f"{label}{table[k].iloc[0]}" for k, label in (("commit", "commit "), ("date", "")) if k in table.columns]
    return "Scaling with the number of samples (python -m bench.scaling" + "".join(f"; {w}" for w in where) + ")"


def _scaling_table(table, method_name: str):
    """The scaling study as shown: one row per dataset, time per 5000 and the memory increase."""
    t = table.sort_values("n_samples").astype({"n_samples": int, "n_bands": int})
    t = t[["dataset", "n_samples", "n_bands", "metacal_per_5000_s", f"{method_name}_per_5000_s",
           "peak_rss_increase_mib"]].round({"metacal_per_5000_s": 3, f"{method_name}_per_5000_s": 3,
                                             "peak_rss_increase_mib": 0})
    return display(t).rename(columns={
        "metacal_per_5000_s": "exact metacal with correction, s / 5000",
        f"{method_name}_per_5000_s": f"{method_name}, s / 5000",
        "peak_rss_increase_mib": "peak memory increase (MiB)"})


def _atomic_write(path: Path, text: str):
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


#: at most this many runs are compared side by side; more (or a directory) make a history
SIDE_BY_SIDE = 3


def main(argv=None) -> int:
    from .cli import make_parser

    p = make_parser("python -m bench.report", "Write report.md and report.html from benchmark JSON files.")
    p.add_argument("files", nargs="+", help="benchmark JSON files (pytest bench/ --benchmark-json=FILE), or "
                                            "directories of them (a history, e.g. .ci/artifacts)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-gallery", action="store_true", help="skip the example stamps")
    p.add_argument("--scaling", metavar="CSV", help="add the scaling study, a scaling.csv written by "
                                                    "python -m bench.scaling")
    a = p.parse_args(argv)
    files, had_dir = expand(a.files)
    runs = [load_run(f) for f in files]          # all inputs are checked before anything is written
    scaling = None
    if a.scaling:
        from .scaling import load_table
        scaling = load_table(a.scaling)
    seen: dict[str, int] = {}
    for run in runs:                               # the same file name twice: label them apart
        k = seen[run["label"]] = seen.get(run["label"], 0) + 1
        if k > 1:
            run["label"] = f"{run['label']}-{k}"
    history = None
    if had_dir or len(runs) > SIDE_BY_SIDE:
        history = ordered(runs)
        runs = history[-1:]                                     # details of the newest run
    elif len(runs) > 1:
        history = runs
    md, ht = build(runs, Path(a.out), with_gallery=not a.no_gallery, history=history, scaling=scaling)
    print(f"wrote {md} and {ht}")
    return 0


if __name__ == "__main__":
    from .cli import run_cli

    sys.exit(run_cli(main, prog="python -m bench.report"))
