"""The per-SNR-bin rows of a benchmark JSON (``extra_info["by_snr"]``): their columns, declared once,
and how they are built from the accumulated metrics.

Each row covers one SNR bin of the dataset, or all of them (``snr_bin == "all"``):

* the bin: ``snr_bin``, ``snr_lo``, ``snr_hi`` and the object count ``n``;
* image quality against the truth, for a method that returns images (null otherwise):
  ``psnr_db``, ``ssim`` (means over objects), their 16th and 84th percentiles
  ``psnr_p16`` ... ``ssim_p84`` and ``n_images_failed`` (objects with a non-finite output);
* shear bias: ``m``, ``m_err``, ``c`` (c1), ``c_err``, ``c2``, ``c2_err`` with jackknife
  errors, ``n_quads`` and ``n_quads_dropped``, and the leave-one-block-out replicates
  ``m_jackknife``, ``c1_jackknife``, ``c2_jackknife`` (one value per block, null for a block
  with no quad of the bin; blocks fixed by quad id, :func:`bench.shear.jackknife_blocks`), from
  which the regression gate forms the paired error of the difference between two runs.

NaN is written as null. :mod:`bench.results` checks a file's rows against :data:`BIN_NUMBERS`
and :data:`BIN_SERIES`.
"""

from __future__ import annotations

import math

#: numeric columns of a bin row (null allowed)
BIN_NUMBERS = ("snr_lo", "snr_hi", "n", "psnr_db", "ssim", "m", "m_err", "c", "c_err", "c2", "c2_err",
               "n_images_failed", "psnr_p16", "psnr_p84", "ssim_p16", "ssim_p84", "n_quads", "n_quads_dropped")
#: (row column, its error, its jackknife replicates, how a message names it) of each shear-bias figure
BIASES = (("m", "m_err", "m_jackknife", "m"), ("c", "c_err", "c1_jackknife", "c1"),
          ("c2", "c2_err", "c2_jackknife", "c2"))
#: columns holding one number (or null) per jackknife block
BIN_SERIES = tuple(b[2] for b in BIASES)
#: significant digits kept of each replicate: a paired difference of 1e-4 in m keeps 5 digits
REPLICATE_DIGITS = 10


def _num(v):
    """A float, or None for NaN, infinity or a missing value."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _series(values) -> list:
    return [None if (x := _num(v)) is None else float(f"{x:.{REPLICATE_DIGITS}g}") for v in values]


def bin_label(row: dict) -> str:
    """How messages and tables name a row's bin: ``SNR 20-40`` or ``all SNR``."""
    if row.get("snr_bin") == "all":
        return "all SNR"
    return f"SNR {row.get('snr_lo', '?'):g}-{row.get('snr_hi', '?'):g}"


def snr_rows(edges, *, quality=None, shear=None) -> list[dict]:
    """The ``by_snr`` rows of one benchmark row: one per SNR bin, then ``all``.

    Parameters
    ----------
    edges : sequence of float, length K + 1
        The dataset's SNR bin edges (``spec.snr_bins``).
    quality : pandas.DataFrame, optional
        :meth:`bench.metrics.ImageQualityMetric.compute`, indexed by bin and ``"all"``.
        [default: None, no image of the method's own]
    shear : pandas.DataFrame, optional
        :meth:`bench.shear.ShearBiasMetric.compute`, indexed likewise. [default: None]

    Returns
    -------
    list of dict
        Rows with every column of the module docstring (null where not measured).
    """
    rows = []
    for label in list(range(len(edges) - 1)) + ["all"]:
        lo, hi = (edges[0], edges[-1]) if label == "all" else (edges[label], edges[label + 1])
        row = {"snr_bin": label, "snr_lo": lo, "snr_hi": hi, "n": 0, "psnr_db": None, "ssim": None,
               "m": None, "m_err": None, "c": None, "c_err": None, "c2": None, "c2_err": None}
        if quality is not None and label in quality.index:
            q = quality.loc[label]
            row.update(n=int(q["n"]), psnr_db=float(q["psnr_mean"]), ssim=float(q["ssim_mean"]),
                       n_images_failed=int(q["n_failed"]))
            for k in ("psnr_p16", "psnr_p84", "ssim_p16", "ssim_p84"):      # the spread over objects
                row[k] = _num(q[k])
        if shear is not None and label in shear.index:
            b = shear.loc[label]
            # NaN (a bin with fewer than 2 usable quads) is written as null
            row.update(m=_num(b.m), m_err=_num(b.m_err), c=_num(b.c1), c_err=_num(b.c1_err),
                       c2=_num(b.c2), c2_err=_num(b.c2_err), n_quads=int(b.n_quads),
                       n_quads_dropped=int(b.n_dropped))
            for name in BIN_SERIES:
                row[name] = _series(b[name])
            row["n"] = row["n"] or 4 * int(b.n_quads)
        rows.append(row)
    return rows
