"""The per-SNR-bin rows of a benchmark JSON (``extra_info["by_snr"]``): their columns and how they
are built from the metrics.

Each row covers one SNR bin of the dataset, or all of them (``snr_bin == "all"``): the bin
(``snr_bin``, ``snr_lo``, ``snr_hi``, the object count ``n``) and every registered metric's
columns (:func:`bench.metrics.metric_columns`), declared by the metric itself. The built-in ones:

* ``image-quality`` (methods that return images; null otherwise): ``psnr_db``, ``ssim`` (means
  over objects), their 16th and 84th percentiles ``psnr_p16`` ... ``ssim_p84`` and
  ``n_images_failed`` (objects with a non-finite output);
* ``shear-bias``: ``m``, ``m_err``, ``c`` (c1), ``c_err``, ``c2``, ``c2_err`` with jackknife
  errors, ``n_quads`` and ``n_quads_dropped``, and the leave-one-block-out replicates
  ``m_jackknife``, ``c1_jackknife``, ``c2_jackknife`` (one value per block, null for a block
  with no quad of the bin; blocks fixed by quad id, :func:`bench.shear.jackknife_blocks`), from
  which the regression gate forms the paired error of the difference between two runs.

NaN is written as null. :mod:`bench.results` checks a file's rows against :func:`bin_numbers`
and :func:`bin_series`.
"""

from __future__ import annotations

import math

from .metrics import metric_columns

#: the bin's own numeric columns
BASE_NUMBERS = ("snr_lo", "snr_hi", "n")
#: (row column, its error, its jackknife replicates, how a message names it) of each shear-bias figure
BIASES = (("m", "m_err", "m_jackknife", "m"), ("c", "c_err", "c1_jackknife", "c1"),
          ("c2", "c2_err", "c2_jackknife", "c2"))
#: significant digits kept of each replicate: a paired difference of 1e-4 in m keeps 5 digits
REPLICATE_DIGITS = 10


def bin_numbers() -> tuple:
    """Numeric columns of a bin row (null allowed): the bin's and every registered metric's."""
    return BASE_NUMBERS + tuple(c.name for c in metric_columns() if c.kind == "number")


def bin_series() -> tuple:
    """Columns holding a list of numbers (or nulls) per row."""
    return tuple(c.name for c in metric_columns() if c.kind == "series")


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


def snr_rows(edges, results) -> list[dict]:
    """The ``by_snr`` rows of one benchmark row: one per SNR bin, then ``all``.

    Parameters
    ----------
    edges : sequence of float, length K + 1
        The dataset's SNR bin edges (``spec.snr_bins``).
    results : list of dict
        Each metric's :meth:`bench.metrics.Metric.compute`: {bin label or ``"all"``: {column: value}}.

    Returns
    -------
    list of dict
        Rows with the bin's columns and every registered metric's number columns (null where
        not measured), and the series columns the metrics gave.
    """
    numbers = [c for c in bin_numbers() if c not in BASE_NUMBERS]
    series = set(bin_series())
    rows = []
    for label in list(range(len(edges) - 1)) + ["all"]:
        lo, hi = (edges[0], edges[-1]) if label == "all" else (edges[label], edges[label + 1])
        row = {"snr_bin": label, "snr_lo": lo, "snr_hi": hi, "n": 0, **dict.fromkeys(numbers)}
        for res in results:
            for k, v in (res.get(label) or {}).items():
                if k in series:
                    row[k] = _series(v)
                elif k == "n":
                    row["n"] = int(v)
                else:
                    row[k] = v if isinstance(v, int) and not isinstance(v, bool) else _num(v)
        if not row["n"] and row.get("n_quads"):
            row["n"] = 4 * int(row["n_quads"])           # no image metric: the quads' objects
        rows.append(row)
    return rows
