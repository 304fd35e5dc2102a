"""The report's tables: rows grouped by what they measure, one number format per column, HTML.

A benchmark file mixes three kinds of rows, and one wide table of all of them runs off a
1280-pixel screen. :func:`grouped_tables` splits them:

* deconvolution alone (a method on the observed stamps: time, memory, PSNR, SSIM);
* a method inside metacal, in either placement (time, speed-up, memory, m, c);
* reference workloads (the fixed NumPy workload, simulation, the GalSim loop, exact metacal
  per kernel, Dask throughput).

:func:`display` formats values as a reader expects them (``+0.0431 ± 0.0053``, times to
three significant figures), :func:`markdown_table` and :func:`html_table` write them; the
HTML tables sort by a click on a header (:data:`SORT_SCRIPT`, no library).
"""

from __future__ import annotations

import html

import numpy as np

from .results import format_speedup, speedups

FORMATS = {"time_per_5000_s": ".3g", "warmup_s": ".2g", "compile_s": ".2g", "speedup_vs_galsim_loop": format_speedup,
           "peak_memory_mib": ".0f", "psnr_db": ".2f", "ssim": ".3f", "n": "d", "quads_dropped": "d",
           "m": "+.4f", "m_err": ".4f", "c": "+.5f", "c_err": ".5f", "n_samples": "d", "n_bands": "d",
           "time_ratio": ".2f", "psnr_change_db": "+.2f", "abs_m_change_sigma": "+.1f",
           "abs_c_change_sigma": "+.1f", "abs_c2_change_sigma": "+.1f",
           "m_change": "+.1e", "c1_change": "+.1e", "c2_change": "+.1e", "of_limit": ".2f"}

HEADERS = {"time_per_5000_s": "time / 5000 (s)", "speedup_vs_galsim_loop": "speed-up vs GalSim loop",
           "warmup_s": "warm-up (s)", "compile_s": "compile (s)", "peak_memory_mib": "peak memory (MiB)",
           "psnr_db": "PSNR (dB)", "ssim": "SSIM", "n_samples": "samples", "n_bands": "bands",
           "quads_dropped": "quads dropped", "m": "m", "c": "c",
           "m_change": "change of m (all SNR)", "c1_change": "change of c1", "c2_change": "change of c2",
           "worst_bias_change": "largest change (any bin)", "of_limit": "largest / its limit",
           "bias_rule": "shear-bias rule"}

#: (title, which rows, columns) of the summary, in reading order
GROUPS = (
    ("Deconvolution alone", "image",
     ["method", "framework", "device", "time_per_5000_s", "warmup_s", "compile_s", "peak_memory_mib",
      "psnr_db", "ssim"]),
    ("Method inside metacal", "metacal",
     ["method", "placement", "device", "n_bands", "time_per_5000_s", "speedup_vs_galsim_loop",
      "peak_memory_mib", "psnr_db", "ssim", "m", "m_err", "c", "c_err"]),
    ("Reference workloads", "reference",
     ["method", "framework", "device", "n_samples", "n_bands", "time_per_5000_s", "speedup_vs_galsim_loop",
      "peak_memory_mib"]),
)


def _fmt(v, spec):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    return spec(v) if callable(spec) else format(v, spec)


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


def row_kind(method: str, psnr, m) -> str:
    """'metacal' for a method inside metacal, 'image' for a deconvolution alone, else 'reference'."""
    if "+metacal" in method:
        return "metacal"
    if (psnr is not None and np.isfinite(psnr)) or (m is not None and np.isfinite(m)):
        return "image"
    return "reference"


def grouped_tables(df) -> list:
    """The summary split by what a row measures: [(title, DataFrame of raw values)], empty groups left out."""
    s = summary_table(df)
    kinds = [row_kind(m, p, mm) for m, p, mm in zip(s["method"], s["psnr_db"], s["m"])]
    out = []
    for title, kind, cols in GROUPS:
        part = s[[k == kind for k in kinds]]
        if len(part):
            out.append((title, part[cols].reset_index(drop=True)))
    return out


def _formats(columns=None):
    """(formats, headers): this module's, then each metric column's own (*columns*, or the registry's)."""
    from .metrics import metric_columns
    cols = metric_columns() if columns is None else columns
    return ({**{c.name: c.fmt for c in cols}, **FORMATS},
            {**{c.name: c.heading or c.name for c in cols}, **HEADERS})


def display(df, columns=None):
    """The table as a reader sees it: values and their errors as '+0.0431 ± 0.0053' (a column X
    beside X_err), one number format per column (FORMATS, then the metrics' own: *columns*, a run's
    declared :class:`bench.metrics.Column` list, or the registry's), headers with units."""
    import pandas as pd

    formats, headers = _formats(columns)
    out = pd.DataFrame(index=df.index)
    for col in df.columns:
        if col.endswith("_err") and col[:-4] in df.columns:
            continue
        vals = df[col]
        err = df.get(col + "_err")
        spec = formats.get(col, ".4g")
        cells = []
        for i, v in enumerate(vals):
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                cell = _fmt(int(v) if spec == "d" and np.isfinite(v) else float(v), spec)
                e = None if err is None else err.iloc[i]
                if cell != "-" and e is not None and np.isfinite(e):
                    cell += " ± " + _fmt(float(e), formats.get(col + "_err", ".4g"))
            else:
                cell = "-" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
            cells.append(cell)
        out[headers.get(col, col)] = cells
    return out


def markdown_table(df) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    lines = [head, sep]
    for _, r in df.iterrows():
        cells = []
        for c in df.columns:
            v = r[c]
            if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                cells.append(_fmt(int(v) if FORMATS.get(c) == "d" and np.isfinite(v) else float(v),
                                  FORMATS.get(c, ".4g")))
            else:
                cells.append("-" if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def html_table(df) -> str:
    """A display table (strings) as HTML whose headers sort it (see :data:`SORT_SCRIPT`)."""
    head = "".join(f"<th title='sort'>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>"
                   for r in df.itertuples(index=False))
    return f"<table class='results sortable'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


#: sorts a table by the clicked column: numbers by value (the part before '±'), text otherwise
SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var idx = Array.prototype.indexOf.call(th.parentNode.children, th);
    var up = th.dataset.order !== 'up';
    th.parentNode.querySelectorAll('th').forEach(function (h) { delete h.dataset.order; });
    th.dataset.order = up ? 'up' : 'down';
    var key = function (tr) {
      var t = tr.children[idx].textContent.split('\\u00b1')[0].trim(), v = parseFloat(t);
      return isNaN(v) ? t : v;
    };
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b), s = (typeof x === typeof y) ? (x < y ? -1 : x > y ? 1 : 0)
                                                               : (typeof x === 'number' ? -1 : 1);
      return up ? s : -s;
    }).forEach(function (tr) { body.appendChild(tr); });
  });
});
"""


def by_snr_table(df, columns=None):
    """One row per method and SNR bin with every metric's table columns (PSNR, SSIM, m and c with
    errors, and any metric a user registers: :func:`bench.metrics.register_metric`); methods rows
    only, no '+metacal' twins. *columns*: the run's declared :class:`bench.metrics.Column` list
    (:func:`bench.results.metric_columns_of`). [default: the registry's]"""
    import pandas as pd

    from .metrics import metric_columns
    columns = metric_columns() if columns is None else columns
    cols = [c.name for c in columns if c.kind == "number" and c.table]
    out = []
    for _, r in df.iterrows():
        if not r["by_snr"] or r["method"].endswith("+metacal"):
            continue
        for b in r["by_snr"]:
            out.append({"method": r["method"], "placement": r["placement"] if isinstance(r["placement"], str) else "-",
                        "snr": "all" if b.get("snr_bin") == "all"
                        else f"{b['snr_lo']:g}-{b['snr_hi']:g}", "n": b.get("n"),
                        **{c: b.get(c) for c in cols}})
    table = pd.DataFrame(out)
    # a column no row has (a metric of images in a run of metacal rows only) is left out
    return table[[c for c in table.columns if c not in cols or table[c].notna().any()]] if len(table) else table


def best_per_bin(df):
    """Per SNR bin, the method with the best PSNR and the one with the best SSIM (deconvolution rows)."""
    import pandas as pd

    best = {}
    for _, r in df.iterrows():
        if row_kind(r["method"], r["psnr_db"], None) != "image":
            continue
        for b in r["by_snr"]:
            if b.get("snr_bin") == "all" or b.get("psnr_db") is None:
                continue
            key = (b["snr_lo"], b["snr_hi"])
            cur = best.setdefault(key, {"SNR": f"{b['snr_lo']:g}-{b['snr_hi']:g}", "psnr": None, "ssim": None})
            if cur["psnr"] is None or b["psnr_db"] > cur["psnr"][1]:
                cur["psnr"] = (r["method"], b["psnr_db"])
            if b.get("ssim") is not None and (cur["ssim"] is None or b["ssim"] > cur["ssim"][1]):
                cur["ssim"] = (r["method"], b["ssim"])
    out = [{"SNR": v["SNR"], "best PSNR (dB)": f"{v['psnr'][0]} ({v['psnr'][1]:.2f})",
            "best SSIM": f"{v['ssim'][0]} ({v['ssim'][1]:.3f})" if v["ssim"] else "-"}
           for _, v in sorted(best.items())]
    return pd.DataFrame(out)


def comparison_table(runs):
    """Time per 5000 of every method in every run, side by side, and the ratio to the first."""
    import pandas as pd

    from .results import rows

    merged = None
    for run in runs:
        d = rows(run)[["method", "device", "time_per_5000_s"]].dropna(subset=["time_per_5000_s"])
        d = d.drop_duplicates("method")
        d = d.rename(columns={"time_per_5000_s": f"time_{run['label']}", "device": f"device_{run['label']}"})
        merged = d if merged is None else pd.merge(merged, d, on="method", how="outer")
    first = f"time_{runs[0]['label']}"
    for run in runs[1:]:
        merged[f"ratio_{run['label']}"] = merged[f"time_{run['label']}"] / merged[first]
    return merged
