"""The regression gate: ``python -m bench.compare BASELINE CURRENT``.

Compares two benchmark JSON files method by method and exits 1, naming each method
and metric, when

* time per 5000 samples got more than ``--time-threshold`` (25%) worse, after dividing
  by the machine factor, so runs on different or differently loaded machines compare. The
  factor is the median, over three kinds of machine probe (:data:`PROBE_KINDS`: the fixed
  NumPy ``reference-workload``, required; the one-object GalSim loops, code this project does
  not own; the simulation, GalSim drawing on every core), of each kind's current/baseline
  time ratio. One probe is not enough and a mean is not robust: on the shared 2-core machine
  the GalSim loop once ran 2.0x slower than in the baseline while the NumPy workload ran at
  the same speed, and once 3.8x faster while the NumPy workload and the simulation were
  1.6x and 1.8x faster (scalar code and BLAS feel a busy neighbour core differently); the
  median of three kinds follows the two that agree. The probes are listed, not judged;
* PSNR (all SNR) dropped by more than ``--psnr-drop`` (0.5 dB);
* m changed, in any SNR bin or over all SNR, by more than max(``--m-abs`` (2e-3),
  ``--m-sigma`` (3) x the jackknife error of the difference); c1 and c2 likewise with
  ``--c-abs`` (5e-4) and ``--c-sigma`` (3): an additive bias is not removed by metacal's
  response, so it is judged like m. Both runs measure the same galaxies with the same noise,
  so the error that matters is that of the *paired* difference, formed from the two runs'
  leave-one-block-out replicates (``m_jackknife`` ..., blocks fixed by quad id): for a
  deterministic method it is almost nil, and a 0.5 % change of m is seen, where combining
  the two runs' own errors hid changes of 0.04 and more. A baseline written before the
  replicates were stored falls back to the former rule (|m|, |c1|, |c2| over all SNR may
  grow by ``--m-sigma``/``--c-sigma`` combined errors), and the output says so;
* more objects came back with a non-finite image (``n_images_failed``): PSNR and SSIM
  leave them out, so a method must not score better by failing on the hard ones.

Runs of different datasets (spec name or cache key), or of different shear estimators, are
refused, exit 2, unless ``--allow-other-dataset``: their PSNR, m and c are not comparable. It also fails when a
method of the baseline is missing from the current run (unless ``--allow-missing``), and when a figure the baseline has is null, NaN, infinite or (for a
time) not positive in the current run: a method that stopped producing numbers has
regressed. Exit 0 otherwise, printing the table either way; bad input exits 2. Methods
new in the current file, and the in-run backend comparison (:data:`INFORMATIONAL`), are listed
but not judged.
"""

from __future__ import annotations

import math
import numbers
import statistics
import sys

from .errors import BenchValueError
from .results import dataset_identity, load_run, reference_time, rows
from .schema import BIASES as BIAS_COLUMNS
from .schema import bin_label

#: rows that measure the machine, by kind of workload: within a kind the rows run the same code
#: (their ratios are averaged, geometrically); the median over the kinds divides every other
#: row's ratio. The reference workload is required in both files.
PROBE_KINDS = {"numpy": ("reference-workload",),
               "galsim-loop": ("galsim-loop[dilate]", "galsim-loop[gauss]"),
               "simulation": ("simulation",)}
PROBES = tuple(p for kind in PROBE_KINDS.values() for p in kind)
#: rows listed with their time ratio but not judged: a comparison made inside one run (pyFFTW against
#: scipy.fft on the same stamps, its own ``pyfftw_over_scipy``) of 20 ms calls, which a busy
#: neighbour core slows 2x; the methods' own rows judge the pyFFTW path
INFORMATIONAL = ("wiener-fftw[pyfftw-vs-scipy]",)


def machine_factor(b, c) -> tuple[float, list[str]]:
    """(the median over probe kinds of their current/baseline time ratios, the probes used).

    With two kinds present the median is their geometric mean; a kind with no usable row in
    both files is left out.
    """
    used, kind_logs = [], []
    for members in PROBE_KINDS.values():
        logs = []
        for probe in members:
            x, y = (t[t["method"] == probe]["time_per_5000_s"].dropna() for t in (b, c))
            if len(x) and len(y) and _num(x.iloc[0]) and _num(y.iloc[0]) and x.iloc[0] > 0 and y.iloc[0] > 0:
                used.append(probe)
                logs.append(math.log(y.iloc[0] / x.iloc[0]))
        if logs:
            kind_logs.append(sum(logs) / len(logs))
    return math.exp(statistics.median(kind_logs)), used


#: (column, its error, how the failure names it) of the shear-bias figures the gate judges
BIASES = tuple((col, err, f"|{label}|") for col, err, _, label in BIAS_COLUMNS)


def check_same_dataset(baseline: dict, current: dict) -> None:
    """Raise a BenchValueError naming both when the two runs are of different datasets, or measured
    their shapes with different shear estimators."""
    eb, ec = ((r.get("deconvbench") or {}).get("metacal", {}).get("estimator", "gaussmom") for r in (baseline, current))
    if eb != ec:
        raise BenchValueError(f"the baseline {baseline.get('label', '')!r} measured shapes with the {eb!r} estimator and "
                              f"the current {current.get('label', '')!r} with {ec!r}: their m and c are not comparable "
                              f"(--allow-other-dataset compares them anyway)")
    (nb, kb), (nc, kc) = dataset_identity(baseline), dataset_identity(current)
    if nb is None or nc is None:
        return               # a file that does not say: nothing to compare
    if nb != nc or (kb and kc and kb != kc):
        def name(n, k):
            return repr(n) + (f" (cache key {k})" if k else "")
        raise BenchValueError(
            f"the baseline {baseline.get('label', '')!r} is a run of dataset {name(nb, kb)} and the current "
            f"{current.get('label', '')!r} of {name(nc, kc)}: PSNR, m and c of different datasets are not "
            f"comparable (--allow-other-dataset compares them anyway)")


def paired_bias_changes(before: list, after: list, *, m_abs: float = 2e-3, c_abs: float = 5e-4,
                        m_sigma: float = 3.0, c_sigma: float = 3.0):
    """Changes of m, c1, c2 per SNR bin (and all SNR) between two runs of one dataset, judged paired.

    Parameters
    ----------
    before, after : list of dict
        The two runs' ``by_snr`` rows (:mod:`bench.schema`), matched by ``snr_bin``.
    m_abs, c_abs : float
        The smallest change that fails, for m and for c1, c2. [default: 2e-3, 5e-4]
    m_sigma, c_sigma : float
        Changes within this many paired jackknife errors pass. [default: 3, 3]

    Returns
    -------
    (list of dict, list of str) or None
        One record per bin and figure (``bin``, ``figure``, ``change``, ``error``, ``limit``,
        ``failed``) and the failure messages; None when the rows lack replicates (a baseline
        written before they were stored), so that the caller falls back to the combined rule.
    """
    new = {r.get("snr_bin"): r for r in after}
    records, failures = [], []
    have_replicates = False
    for old in before:
        now = new.get(old.get("snr_bin"))
        if now is None:
            continue
        where = bin_label(old)
        for col, _, reps, label in BIAS_COLUMNS:
            x, y = old.get(col), now.get(col)
            if not _num(x):
                continue
            if not _num(y):
                if old.get("snr_bin") != "all":     # all SNR: compare() checks every figure's number
                    failures.append(f"{label} at {where} was {x:.4g}, now {y!r}")
                continue
            rx, ry = old.get(reps), now.get(reps)
            if not (isinstance(rx, list) and isinstance(ry, list) and len(rx) == len(ry) and rx):
                continue
            have_replicates = True
            d = [b - a for a, b in zip(rx, ry) if _num(a) and _num(b)]
            k = len(d)
            error = (math.sqrt((k - 1) / k * sum((v - sum(d) / k) ** 2 for v in d)) if k >= 2 else float("nan"))
            floor, n_sigma = (m_abs, m_sigma) if col == "m" else (c_abs, c_sigma)
            limit = max(floor, n_sigma * error) if math.isfinite(error) else floor
            change = y - x
            failed = abs(change) > limit
            records.append(dict(bin=where, figure=label, change=change, error=error, limit=limit, failed=failed))
            if failed:
                failures.append(f"{label} at {where} changed by {change:+.4f} ({x:.4f} -> {y:.4f}; limit "
                                f"{limit:.4f} = max({floor:g}, {n_sigma:g} x paired jackknife error {error:.1e}))")
    return (records, failures) if have_replicates else None


def compare(baseline: dict, current: dict, *, time_threshold: float = 0.25, psnr_drop: float = 0.5,
            m_sigma: float = 3.0, c_sigma: float = 3.0, m_abs: float = 2e-3, c_abs: float = 5e-4,
            allow_missing: bool = False, allow_other_dataset: bool = False):
    """(table, failures): a pandas table per method and a list of failure messages.

    The table's ``attrs`` hold the machine factor, the probes used and ``combined_rule``: the
    methods whose shear bias was judged by the fallback rule (no replicates in both runs).
    Raises a BenchValueError for runs of different datasets unless *allow_other_dataset*.
    """
    import pandas as pd

    if not allow_other_dataset:
        check_same_dataset(baseline, current)
    b, c = rows(baseline), rows(current)
    rb, rc = reference_time(b), reference_time(c)
    if not rb or not rc:
        raise BenchValueError("both files need the reference-workload benchmark "
                              "(bench/test_suite/test_bench_core.py::test_reference_workload) to normalise times")
    factor, probes = machine_factor(b, c)
    b = b.drop_duplicates("method").set_index("method")
    c = c.drop_duplicates("method").set_index("method")
    out, failures, combined = [], [], []
    for method in sorted(set(b.index) | set(c.index)):
        if method in probes or (method in INFORMATIONAL and method in b.index and method in c.index):
            out.append({"method": method, "status": "machine probe" if method in probes else "informational",
                        "time_ratio": c.loc[method, "time_per_5000_s"] / b.loc[method, "time_per_5000_s"]})
            continue
        if method not in b.index or method not in c.index:
            where = "current" if method in c.index else "baseline"
            out.append({"method": method, "status": "only in " + where})
            if where == "baseline" and not allow_missing:
                failures.append(f"{method}: in the baseline but missing from the current run")
            continue
        x, y = b.loc[method], c.loc[method]
        row = {"method": method, "status": "ok"}
        for name in ("time_per_5000_s", "psnr_db", *(k for bias in BIASES for k in bias[:2])):
            good_before, now = _num(x[name]), y[name]
            if name == "time_per_5000_s":
                good_before = good_before and x[name] > 0
            bad_now = not _num(now) or (name == "time_per_5000_s" and now <= 0) or (name.endswith("_err") and now < 0)
            if good_before and bad_now:
                failures.append(f"{method}: {name} was {x[name]:.4g}, now {now!r}")
        if _num(x.time_per_5000_s) and _num(y.time_per_5000_s):
            ratio = (y.time_per_5000_s / x.time_per_5000_s) / factor
            row["time_ratio"] = ratio
            if ratio > 1 + time_threshold:
                failures.append(f"{method}: time per 5000 samples {100 * (ratio - 1):+.0f}% "
                                f"(normalised; limit +{100 * time_threshold:.0f}%)")
        if _num(x.psnr_db) and _num(y.psnr_db):
            row["psnr_change_db"] = y.psnr_db - x.psnr_db
            if x.psnr_db - y.psnr_db > psnr_drop:
                failures.append(f"{method}: PSNR {x.psnr_db:.2f} -> {y.psnr_db:.2f} dB (limit -{psnr_drop} dB)")
        has_bias = any(_num(x[k]) or _num(y[k]) for k, _, _ in BIASES)
        paired = paired_bias_changes(x.by_snr, y.by_snr, m_abs=m_abs, c_abs=c_abs, m_sigma=m_sigma,
                                     c_sigma=c_sigma)
        if paired is not None:
            records, bias_failures = paired
            failures += [f"{method}: {f}" for f in bias_failures]
            for r in records:
                if r["bin"] == "all SNR":
                    row[f"{r['figure']}_change"] = r["change"]
            if records:
                worst = max(records, key=lambda r: abs(r["change"]) / r["limit"])
                row["worst_bias_change"] = f"{worst['figure']} {worst['change']:+.1e} at {worst['bin']}"
                row["of_limit"] = abs(worst["change"]) / worst["limit"]
            bias_rule = "paired"
        elif has_bias:
            combined.append(method)
            bias_rule = "combined"
            for name, err, label in BIASES:
                if not all(_num(v) for v in (x[name], x[err], y[name], y[err])):
                    continue
                limit = m_sigma if name == "m" else c_sigma
                sigma = math.hypot(x[err], y[err])
                change = (abs(y[name]) - abs(x[name])) / sigma if sigma > 0 else 0.0
                row[f"abs_{name}_change_sigma"] = change
                if abs(y[name]) - abs(x[name]) > limit * sigma:
                    failures.append(f"{method}: {label} {abs(x[name]):.4f} -> {abs(y[name]):.4f} "
                                    f"(+{change:.1f} sigma; limit {limit} sigma)")
        if has_bias:
            row["bias_rule"] = bias_rule
        before, now = x.get("n_images_failed"), y.get("n_images_failed")
        if _num(before) and _num(now) and now > before:
            failures.append(f"{method}: objects with a non-finite output {int(before)} -> {int(now)}")
        if any(f.startswith(method + ":") for f in failures):
            row["status"] = "REGRESSED"
        out.append(row)
    table = pd.DataFrame(out)
    table.attrs.update(machine_factor=factor, probes=probes, combined_rule=combined)
    return table, failures


def _num(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def main(argv=None) -> int:
    from .cli import make_parser
    from .tables import markdown_table

    p = make_parser("python -m bench.compare", "Fail (exit 1) on speed, PSNR or shear-bias regressions.")
    p.add_argument("baseline", help="baseline benchmark JSON (e.g. reports/baseline-ci.json)")
    p.add_argument("current", help="current benchmark JSON")
    p.add_argument("--time-threshold", type=float, default=0.25, help="allowed slow-down, fraction [0.25]")
    p.add_argument("--psnr-drop", type=float, default=0.5, help="allowed PSNR drop, dB [0.5]")
    p.add_argument("--m-abs", type=float, default=2e-3,
                   help="smallest change of m that fails, in any SNR bin or over all SNR [0.002]")
    p.add_argument("--m-sigma", type=float, default=3.0,
                   help="changes of m within this many paired jackknife errors pass [3]")
    p.add_argument("--c-abs", type=float, default=5e-4, help="smallest change of c1 or c2 that fails [0.0005]")
    p.add_argument("--c-sigma", type=float, default=3.0,
                   help="changes of c1, c2 within this many paired jackknife errors pass [3]")
    p.add_argument("--allow-missing", action="store_true",
                   help="do not fail when a baseline method is missing from the current run")
    p.add_argument("--allow-other-dataset", action="store_true",
                   help="compare runs of different datasets (their PSNR, m and c mean nothing side by side)")
    a = p.parse_args(argv)
    for name in ("time_threshold", "psnr_drop", "m_sigma", "c_sigma", "m_abs", "c_abs"):
        v = getattr(a, name)
        if not (math.isfinite(v) and v > 0):
            raise BenchValueError(f"--{name.replace('_', '-')} must be a positive number, got {v!r}")
    table, failures = compare(load_run(a.baseline), load_run(a.current), time_threshold=a.time_threshold,
                              psnr_drop=a.psnr_drop, m_sigma=a.m_sigma, c_sigma=a.c_sigma, m_abs=a.m_abs,
                              c_abs=a.c_abs, allow_missing=a.allow_missing,
                              allow_other_dataset=a.allow_other_dataset)
    print(markdown_table(table))
    print(f"\ntimes divided by the machine factor {table.attrs['machine_factor']:.2f} (the median over probe "
          f"kinds of their current/baseline time ratios: {', '.join(table.attrs['probes'])}; their rows above)")
    if table.attrs["combined_rule"]:
        print(f"\nshear bias of {', '.join(table.attrs['combined_rule'])} judged by the growth of |m|, |c1|, |c2| "
              f"over all SNR in combined errors: the baseline or the current run has no jackknife replicates "
              f"(a file written before they were stored); rerun the baseline to judge every SNR bin, paired")
    if failures:
        print("\nREGRESSIONS:\n" + "\n".join(f"- {f}" for f in failures))
        return 1
    print("\nno regressions")
    return 0


if __name__ == "__main__":
    from .cli import run_cli

    sys.exit(run_cli(main, prog="python -m bench.compare"))
