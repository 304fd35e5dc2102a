"""The report's figures: m against SNR per placement, PSNR and SSIM with their spread, time and
memory (bars and a time-against-memory scatter), the gallery, the history across runs.

Each function returns PNG bytes encoded in base64 (or a matplotlib figure), for
:mod:`bench.report` to write and embed.
"""

from __future__ import annotations

import base64
import io

import numpy as np

from .errors import BenchValueError
from .results import M_GOAL, format_speedup, rows, speedups

#: the goal for image-returning methods after the shear (SNR >= 20)
M_GOAL_PLACEMENT = 1e-2


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


PLACEMENT_TITLES = {"deconvolve-then-shear": "deconvolve, then shear (the method replaces metacal's deconvolution)",
                    "shear-then-deconvolve": "shear, then deconvolve (the method deconvolves each metacal image)"}


def _placement_of(r) -> str:
    p = r.get("placement")
    return p if isinstance(p, str) else "deconvolve-then-shear"


def _snr_axis(ax):
    """A log SNR axis labelled in plain numbers."""
    ax.set_xscale("log")
    ax.set_xticks([10, 20, 50, 100, 200])
    ax.set_xticklabels(["10", "20", "50", "100", "200"])
    ax.minorticks_off()
    ax.set_xlabel("SNR (bin centre)")


def method_colours(runs) -> dict[str, str]:
    """One colour per method (base name), the same in every figure of a report."""
    names = set()
    for run in runs:
        df = rows(run)
        plotted = df["method"].str.contains("+metacal", regex=False) | df["psnr_db"].notna()
        names |= set(df[plotted]["base_method"])
    names = sorted(names)            # the methods the figures draw, so ten colours go round them
    return {b: f"C{i % 10}" for i, b in enumerate(names)}


def m_vs_snr_figure(runs):
    """m against SNR with errors, one panel per placement, one colour per method in both."""
    import matplotlib.pyplot as plt

    curves = []          # (placement, label, base method, x, m, err, line style)
    for k, run in enumerate(runs):
        df = rows(run)
        # methods without an image of their own (fourier) are the exact engine in the first placement
        # and a noise-dominated inverse filter in the second, where they would hide the others' scale
        no_image = set(df[(df["method"] == df["base_method"]) & df["psnr_db"].isna()
                          & df["by_snr"].map(bool)]["method"])
        # rows through metacal (either placement), and exact metacal without the noise correction
        sel = (df["method"].str.contains("+metacal", regex=False))
        for _, r in df[sel].iterrows():
            rs, x = _snr_centres(r["by_snr"])
            if not rs:
                continue
            m = np.array([np.nan if q.get("m") is None else q["m"] for q in rs], float)
            e = np.array([np.nan if q.get("m_err") is None else q["m_err"] for q in rs], float)
            if _placement_of(r) == "shear-then-deconvolve" and (
                    r["base_method"] in no_image or all(q.get("psnr_db") is None for q in rs)):
                continue            # (a second-placement row scores its output's PSNR unless it has none)
            dashed = "[no-correction]" in r["method"]
            admom = "[admom]" in r["method"]
            label = r["base_method"] + (", no noise correction" if dashed else "") + (", admom" if admom else "")
            label += f" ({run['label']})" if len(runs) > 1 else ""
            style = "--" if dashed else ":" if admom else "-"
            curves.append((_placement_of(r), label, r["base_method"], x * (1 + 0.04 * k), m, e, style))
    placements = [p for p in PLACEMENT_TITLES if any(c[0] == p for c in curves)] or ["deconvolve-then-shear"]
    colour = method_colours(runs)
    fig, axes = plt.subplots(1, len(placements), figsize=(6.2 * len(placements), 4.2), squeeze=False)
    for ax, placement in zip(axes[0], placements):
        if placement == "shear-then-deconvolve":
            ax.axhspan(-M_GOAL_PLACEMENT, M_GOAL_PLACEMENT, color="0.94", label=f"|m| < {M_GOAL_PLACEMENT:g}")
        ax.axhspan(-M_GOAL, M_GOAL, color="0.85", label=f"|m| < {M_GOAL:g}")
        for i, (p, label, base, x, m, e, style) in enumerate(c for c in curves if c[0] == placement):
            ax.errorbar(x * (1 + 0.02 * (i % 5 - 2)), m, yerr=e, capsize=3, label=label, color=colour[base],
                        linestyle=style, marker={"--": "s", ":": "^"}.get(style, "o"), ms=4)
        _snr_axis(ax)
        ax.set_ylabel("m")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(PLACEMENT_TITLES[placement], fontsize=9)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def quality_figure(runs):
    """PSNR and SSIM against SNR per method: the mean, and the 16th-84th percentile band over objects."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    colours = method_colours(runs)
    for run in runs:
        df = rows(run)
        for _, r in _image_rows(df).iterrows():
            rs, x = _snr_centres(r["by_snr"])
            lbl = r["method"] + (f" ({run['label']})" if len(runs) > 1 else "")
            c = colours.get(r["base_method"])
            for ax, key, lo, hi in ((axes[0], "psnr_db", "psnr_p16", "psnr_p84"), (axes[1], "ssim", "ssim_p16", "ssim_p84")):
                ax.plot(x, [np.nan if q.get(key) is None else q[key] for q in rs], "o-", label=lbl, color=c, ms=4)
                if all(q.get(lo) is not None and q.get(hi) is not None for q in rs):
                    ax.fill_between(x, [q[lo] for q in rs], [q[hi] for q in rs], color=c, alpha=0.15, lw=0)
    for ax, lab in zip(axes, ("PSNR (dB)", "SSIM")):
        _snr_axis(ax)
        ax.set_ylabel(lab + "; band: 16th-84th percentile")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def _kind_marker(method: str) -> str:
    if "shear-then-deconvolve" in method:
        return "^"
    return "s" if "+metacal" in method else "o"


def time_memory_figure(runs):
    """Left: time per 5000 per row (log), labelled with the speed-up over the GalSim loop.
    Right: time against peak memory, one point per row that has both, one colour per method."""
    import matplotlib.pyplot as plt

    colours = method_colours(runs)
    n_rows = max(len(rows(r)) for r in runs)
    fig, axes = plt.subplots(1, 2, figsize=(11, max(3.8, 0.5 + 0.3 * n_rows)))
    labels = []
    for k, run in enumerate(runs):
        df = rows(run)
        t = df[df["time_per_5000_s"].notna() & (df["method"] != "reference-workload")]
        y = np.arange(len(t)) + 0.8 * k / max(len(runs), 1)
        axes[0].barh(y, t["time_per_5000_s"], height=0.8 / len(runs), label=run["label"],
                     color=[colours.get(b, "0.6") for b in t["base_method"]],
                     hatch=None if k == 0 else "//")
        for yi, v, speed in zip(y, t["time_per_5000_s"], speedups(t)):
            if speed:
                axes[0].text(v, yi, f" {format_speedup(speed)}x", va="center", fontsize=7)
        axes[0].set_yticks(np.arange(len(t)))
        axes[0].set_yticklabels(t["method"], fontsize=7)
        both = t[t["peak_memory_bytes"].notna() & (t["peak_memory_bytes"].astype(float) > 0)]
        for _, r in both.iterrows():
            mem = float(r["peak_memory_bytes"]) / 2 ** 20
            axes[1].scatter(mem, r["time_per_5000_s"], color=colours.get(r["base_method"], "0.6"),
                            marker=_kind_marker(r["method"]), s=36, edgecolors="k" if k else "none")
            # the marker says where the row sits, so the base name suffices
            labels.append((mem, float(r["time_per_5000_s"]),
                           r["base_method"] + (f" ({run['label']})" if len(runs) > 1 else "")))
    axes[0].invert_yaxis()
    axes[0].set_xscale("log")
    axes[0].set_xlabel("time per 5000 samples (s); label: speed-up over the GalSim loop")
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("peak memory (MiB)")
    axes[1].set_ylabel("time per 5000 samples (s)")
    axes[1].set_title("o: method alone, s: inside metacal, ^: after the shear", fontsize=8)
    axes[1].grid(alpha=0.3, which="both")
    if len(runs) > 1:
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    _annotate_apart(axes[1], labels, fontsize=6)
    return fig


def _annotate_apart(ax, labels, *, fontsize: float) -> None:
    """Label each point (x, y, text) beside it, moving a label down, a line at a time, while it
    would overlap one already placed: rows with nearly the same time and memory (metacal's
    kernels, a method's placements) otherwise print on top of each other."""
    ax.autoscale_view()
    fig = ax.figure
    line = fontsize * fig.dpi / 72 * 1.25                  # one line of text, in pixels
    char = fontsize * fig.dpi / 72 * 0.55                  # a typical character's width
    placed = []                                            # (x0, x1, y0, y1) in pixels
    for x, y, text in sorted(labels, key=lambda v: (-v[1], v[0])):
        px, py = ax.transData.transform((x, y))
        x0, x1 = px + 3, px + 3 + char * len(text)
        shift = 0.0
        while any(x0 < b1 and b0 < x1 and (py - shift) < c1 and c0 < (py - shift) + line
                  for b0, b1, c0, c1 in placed) and shift < 20 * line:
            shift += line
        placed.append((x0, x1, py - shift, py - shift + line))
        ax.annotate(text, (x, y), fontsize=fontsize, xytext=(3, 2 - shift * 72 / fig.dpi),
                    textcoords="offset points",
                    arrowprops=dict(arrowstyle="-", lw=0.4, color="0.5") if shift else None)


def plots(runs) -> dict[str, str]:
    import matplotlib
    matplotlib.use("Agg")

    figs = {"m_vs_snr": _png(m_vs_snr_figure(runs))}
    # a run of metacal rows only (e.g. -k shear_first) has no deconvolution-alone PSNR: no empty plot
    if any(_image_rows(rows(run)).size for run in runs):
        figs["quality_vs_snr"] = _png(quality_figure(runs))
    figs["time_memory"] = _png(time_memory_figure(runs))
    return figs


def _image_rows(df):
    """The deconvolution-alone rows that have a PSNR (the quality figure's)."""
    return df[df["psnr_db"].notna() & ~df["method"].str.contains("+metacal", regex=False)]


def history_plot(runs) -> str:
    import matplotlib
    matplotlib.use("Agg")

    from .history import trend_figure
    return _png(trend_figure(runs, method_colours(runs)))


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
