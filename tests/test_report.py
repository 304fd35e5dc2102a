"""bench.report and the regression gate bench.compare on synthetic benchmark files."""

import copy
import json

import pytest

from bench.compare import PROBES
from conftest import run_main, run_module


def _row(method, time, psnr=None, m=None, m_err=None):
    by = [{"snr_bin": 0, "snr_lo": 10, "snr_hi": 40, "n": 8, "psnr_db": psnr, "ssim": 0.8 if psnr else None,
           "m": m, "m_err": m_err, "c": 0.0, "c_err": 1e-3, "c2": 0.0, "c2_err": 1e-3},
          {"snr_bin": "all", "snr_lo": 10, "snr_hi": 40, "n": 8, "psnr_db": psnr, "ssim": 0.8 if psnr else None,
           "m": m, "m_err": m_err, "c": 0.0, "c_err": 1e-3, "c2": 0.0, "c2_err": 1e-3}]
    return {"name": f"test[{method}]", "stats": {"median": time},
            "extra_info": {"method": method, "framework": "numpy", "device": "cpu", "n_samples": 5000,
                           "time_per_5000_s": time, "peak_memory_bytes": 2 ** 20, "by_snr": by}}


BASE = {"machine_info": {"cpu": {"brand_raw": "test cpu", "count": 2}, "python_version": "3.11"},
        "datetime": "2026-11-22", "deconvbench": {"dataset": "smoke", "versions": {"numpy": "2"},
                                                  "skipped": [{"test": "test_method[x]", "reason": "no GPU"}]},
        "benchmarks": [_row("reference-workload", 0.05), _row("galsim-loop[dilate]", 80.0),
                       _row("wiener-fftw", 0.4, psnr=31.0), _row("fourier+metacal", 1.5, m=0.001, m_err=0.002),
                       _row("simulation", 40.0)]}


def _write(tmp_path, name, data):
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return p


def _scaled(factor_method, factor_ref=1.0, **changes):
    d = copy.deepcopy(BASE)
    for b in d["benchmarks"]:
        e = b["extra_info"]
        if e["method"] in PROBES:
            e["time_per_5000_s"] *= factor_ref
        else:
            e["time_per_5000_s"] *= factor_method
        for k, v in changes.get(e["method"], {}).items():
            for r in e["by_snr"]:
                r[k] = v
    return d


def test_gate_passes_on_same_and_normalises_machines(tmp_path):
    base = _write(tmp_path, "base.json", BASE)
    # a machine twice as slow everywhere, reference workload included: no regression
    cur = _write(tmp_path, "cur.json", _scaled(2.0, 2.0))
    r = run_module("bench.compare", base, cur)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no regressions" in r.stdout


def _probe_times(data, **factors):
    """*data* with each probe's time multiplied by factors[kind] and every other row's by factors['rest']."""
    kind_of = {"reference-workload": "numpy", "galsim-loop[dilate]": "galsim", "simulation": "simulation"}
    for b in data["benchmarks"]:
        e = b["extra_info"]
        e["time_per_5000_s"] *= factors.get(kind_of.get(e["method"], "rest"), 1.0)
    return data


def test_gate_measures_the_machine_with_the_median_probe(tmp_path):
    """A busy machine that slows the GalSim loop 2x, the simulation and the methods 1.5x but not the
    NumPy workload: the median of the three probe kinds (1.5) absorbs it, and the probes are
    listed, not judged. A method slower than the machine still fails."""
    base = _write(tmp_path, "b.json", BASE)
    busy = _probe_times(copy.deepcopy(BASE), numpy=1.0, galsim=2.0, simulation=1.5, rest=1.5)
    r = run_module("bench.compare", base, _write(tmp_path, "c.json", busy))
    assert r.returncode == 0, r.stdout
    assert "machine factor 1.50" in r.stdout and "| galsim-loop[dilate] | machine probe | 2.00 |" in r.stdout
    for b in busy["benchmarks"]:
        if b["extra_info"]["method"] == "wiener-fftw":
            b["extra_info"]["time_per_5000_s"] *= 1.5
    r = run_module("bench.compare", base, _write(tmp_path, "c.json", busy))
    assert r.returncode == 1 and "wiener-fftw: time per 5000 samples +50%" in r.stdout, r.stdout


def test_gate_is_not_fooled_by_one_outlying_probe(tmp_path):
    """As seen on CI against a baseline made on a busier machine: the GalSim loop 3.8x faster, the
    NumPy workload and the simulation 1.6x and 1.8x faster, the methods 1.25x to 3x faster. A
    geometric mean of the probes (0.35) made the slowest of them look 2.3x slower; the median
    kind (0.56) does not. Without the simulation row the two kinds left are averaged."""
    base = _write(tmp_path, "b.json", BASE)
    quiet = _probe_times(copy.deepcopy(BASE), numpy=0.62, galsim=0.26, simulation=0.56, rest=0.8)
    r = run_module("bench.compare", base, _write(tmp_path, "c.json", quiet), "--time-threshold", "1.0")
    assert r.returncode == 0, r.stdout
    assert "machine factor 0.56" in r.stdout
    quiet["benchmarks"] = [b for b in quiet["benchmarks"] if b["extra_info"]["method"] != "simulation"]
    r = run_module("bench.compare", base, _write(tmp_path, "c.json", quiet), "--time-threshold", "1.0",
                   "--allow-missing")
    assert "machine factor 0.40" in r.stdout, r.stdout     # sqrt(0.62 * 0.26)


@pytest.mark.parametrize("data,words", [
    (_scaled(1.4), "time per 5000"),
    (_scaled(1.0, **{"wiener-fftw": {"psnr_db": 30.2}}), "PSNR"),
    (_scaled(1.0, **{"fourier+metacal": {"m": 0.02}}), "fourier+metacal: |m| 0.0010 -> 0.0200"),
    (_scaled(1.0, **{"wiener-fftw": {"c": -0.005}}), "wiener-fftw: |c1| 0.0000 -> 0.0050"),
    (_scaled(1.0, **{"wiener-fftw": {"c2": 0.005, "c2_err": 1e-3}}), "wiener-fftw: |c2| 0.0000 -> 0.0050"),
])
def test_gate_fails_naming_method_and_metric(tmp_path, data, words, capsys):
    # the parametrised cases run main in this process; the other gate tests run real processes
    r = run_main(capsys, "bench.compare", _write(tmp_path, "b.json", BASE), _write(tmp_path, "c.json", data))
    assert r.returncode == 1
    assert words in r.stdout and "REGRESSIONS" in r.stdout


def _broken(method, field, value):
    d = copy.deepcopy(BASE)
    for b in d["benchmarks"]:
        e = b["extra_info"]
        if e["method"] == method:
            if field == "time_per_5000_s":
                e[field] = value
            else:
                for r in e["by_snr"]:
                    r[field] = value
    return d


@pytest.mark.parametrize("method,field,value", [
    ("fourier+metacal", "m", float("nan")), ("fourier+metacal", "m", None),
    ("fourier+metacal", "m_err", float("inf")), ("wiener-fftw", "time_per_5000_s", None),
    ("wiener-fftw", "time_per_5000_s", -1.0), ("wiener-fftw", "psnr_db", float("nan")),
    ("wiener-fftw", "c2", None), ("wiener-fftw", "c_err", float("nan")),
])
def test_gate_fails_when_a_number_stops_being_one(tmp_path, method, field, value, capsys):
    r = run_main(capsys, "bench.compare", _write(tmp_path, "b.json", BASE),
                 _write(tmp_path, "c.json", _broken(method, field, value)))
    assert r.returncode == 1, r.stdout
    assert f"{method}: {field}" in r.stdout


def test_gate_fails_when_more_images_fail(tmp_path):
    base = copy.deepcopy(BASE)
    for b in base["benchmarks"]:
        for r in b["extra_info"]["by_snr"]:
            r["n_images_failed"] = 0
    cur = copy.deepcopy(base)
    for b in cur["benchmarks"]:
        if b["extra_info"]["method"] == "wiener-fftw":
            b["extra_info"]["by_snr"][-1]["n_images_failed"] = 3
    r = run_module("bench.compare", _write(tmp_path, "b.json", base), _write(tmp_path, "c.json", cur))
    assert r.returncode == 1 and "wiener-fftw: objects with a non-finite output 0 -> 3" in r.stdout


def test_gate_fails_when_a_method_vanishes(tmp_path):
    d = copy.deepcopy(BASE)
    d["benchmarks"] = [b for b in d["benchmarks"] if b["extra_info"]["method"] != "wiener-fftw"]
    base, cur = _write(tmp_path, "b.json", BASE), _write(tmp_path, "c.json", d)
    r = run_module("bench.compare", base, cur)
    assert r.returncode == 1 and "wiener-fftw: in the baseline but missing" in r.stdout
    assert run_module("bench.compare", base, cur, "--allow-missing").returncode == 0
    # a method new in the current run is listed, not judged
    assert run_module("bench.compare", cur, base).returncode == 0


def test_gate_threshold_is_configurable(tmp_path):
    r = run_module("bench.compare", _write(tmp_path, "b.json", BASE), _write(tmp_path, "c.json", _scaled(1.4)),
                   "--time-threshold", "0.5")
    assert r.returncode == 0


def test_gate_judges_additive_bias_against_its_errors(tmp_path):
    """c1 grown by 2.8 combined sigma passes, by 3.5 fails; --c-sigma moves the limit."""
    base = _write(tmp_path, "b.json", BASE)
    sigma = 2 ** 0.5 * 1e-3
    for grown, rc in ((2.8, 0), (3.5, 1)):
        cur = _write(tmp_path, "c.json", _scaled(1.0, **{"wiener-fftw": {"c": grown * sigma}}))
        r = run_module("bench.compare", base, cur)
        assert r.returncode == rc, r.stdout
    assert "wiener-fftw: |c1| 0.0000 -> 0.0049 (+3.5 sigma; limit 3.0 sigma)" in r.stdout
    assert run_module("bench.compare", base, cur, "--c-sigma", "4").returncode == 0


def test_bad_files_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    for args, words in (([bad, bad], "not a benchmark JSON"), ([tmp_path / "none.json", bad], "not found")):
        r = run_module("bench.compare", *args)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr
    out = tmp_path / "rep"
    r = run_module("bench.report", bad, "--out", out)
    assert r.returncode == 2 and not out.exists()


def test_report_writes_md_and_self_contained_html(tmp_path):
    a = _write(tmp_path, "cpu.json", BASE)
    b = _write(tmp_path, "gpu.json", _scaled(0.1))
    out = tmp_path / "rep"
    r = run_module("bench.report", a, b, "--out", out, "--no-gallery")
    assert r.returncode == 0, r.stderr
    md = (out / "report.md").read_text()
    assert "Side by side" in md and "wiener-fftw" in md and "no GPU" in md and "test cpu" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3


def test_report_shows_the_scaling_study(tmp_path):
    """--scaling adds bench.scaling's table, sorted by size, and its figure to both files."""
    a = _write(tmp_path, "cpu.json", BASE)
    csv = tmp_path / "scaling.csv"
    csv.write_text("dataset,n_samples,n_bands,metacal_s,wiener-fftw_s,metacal_per_5000_s,wiener-fftw_per_5000_s,"
                   "peak_rss_increase_mib,machine,n_cores,commit,date\n"
                   "paper,100000,3,30.7,5.08,1.533,0.254,301.5,Test CPU,2,0012345678,2026-12-01\n"
                   "ci,400,3,0.27,0.056,3.32,0.699,168.9,Test CPU,2,0012345678,2026-12-01\n")
    out = tmp_path / "rep"
    r = run_module("bench.report", a, "--scaling", csv, "--out", out, "--no-gallery")
    assert r.returncode == 0, r.stderr
    md = (out / "report.md").read_text()
    assert "## Scaling with the number of samples (python -m bench.scaling; Test CPU, 2 logical cores; " \
           "commit 0012345678; 2026-12-01)" in md
    section = md.split("## Scaling with the number of samples")[1].split("##")[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("| ")]
    assert "wiener-fftw, s / 5000" in lines[0]
    assert lines[1].startswith("| ci | 400 | 3 | 3.32 | 0.699 | 169 |")
    assert lines[2].startswith("| paper | 100000 | 3 | 1.533 | 0.254 | 302 |")
    assert (out / "scaling.png").stat().st_size > 1000 and "](scaling.png)" in md
    assert "<h2>Scaling: time per 5000" in (out / "report.html").read_text()


def test_speedups_count_every_band_and_per_bin_table():
    """A 3-band row is compared with 3 single-band GalSim-loop stamps; '+metacal' twins stay out of the bin table."""
    from bench.report import by_snr_table, rows, speedups, summary_table
    d = copy.deepcopy(BASE)
    d["benchmarks"][3]["extra_info"]["n_bands"] = 3
    df = rows(d)
    s = dict(zip(df["method"], speedups(df)))
    assert s["fourier+metacal"] == pytest.approx(80.0 * 3 / 1.5)
    assert s["wiener-fftw"] == pytest.approx(80.0 / 0.4)          # no n_bands recorded: one band
    assert s["reference-workload"] is None
    assert summary_table(df).set_index("method").loc["fourier+metacal", "speedup_vs_galsim_loop"] == \
        pytest.approx(160.0)
    d["benchmarks"].append(_row("wiener-fftw+metacal", 2.0, psnr=31.0))
    t = by_snr_table(rows(d))
    assert set(t["method"]) == {"wiener-fftw", "reference-workload", "galsim-loop[dilate]", "simulation"}
    assert list(t[t["method"] == "wiener-fftw"]["snr"]) == ["10-40", "all"]


@pytest.mark.parametrize("value,text", [(0.742, "0.74"), (1.29, "1.3"), (9.96, "10"), (82.4, "82"), (828.2, "828")])
def test_speedup_display_keeps_a_slower_row_below_one(value, text):
    """A row slower than the GalSim loop must not read as '1' (the whole-number format did)."""
    import pandas as pd

    from bench.tables import display
    assert display(pd.DataFrame({"speedup_vs_galsim_loop": [value]})).iloc[0, 0] == text


@pytest.mark.parametrize("module", ["bench.report", "bench.compare"])
@pytest.mark.parametrize("data,words", [
    ({"benchmarks": [{"name": "test_sort", "stats": {"median": 0.1}}]}, "holds no deconvbench benchmarks"),
    ({"benchmarks": [{"name": "t", "extra_info": {"method": "x", "time_per_5000_s": "fast"}}]},
     "time_per_5000_s must be a number or null, got 'fast'"),
    ({"benchmarks": [{"name": "t", "extra_info": {"method": "x", "by_snr": "oops"}}]}, "by_snr must be a list"),
    ({"benchmarks": [{"name": "t", "extra_info": {"method": "x", "by_snr": [{"m": "0.1"}]}}]},
     "by_snr m must be a number or null"),
])
def test_json_from_elsewhere_exits_2(tmp_path, module, data, words, capsys):
    f = _write(tmp_path, "other.json", data)
    args = [f, "--out", tmp_path / "rep"] if module == "bench.report" else [f, f]
    r = run_main(capsys, module, *args)
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "rep").exists()


def test_headline_is_generated_from_the_data():
    from bench.report import headline
    d = copy.deepcopy(BASE)
    d["benchmarks"].append(_row("dwdn", 30.0, psnr=38.0))
    for b in d["benchmarks"]:
        b["extra_info"].setdefault("base_method", b["extra_info"]["method"].split("+")[0])
        b["extra_info"]["placement"] = "deconvolve-then-shear"
    lines = headline(d)
    assert "Fastest deconvolution: `wiener-fftw`, 0.4 s" in lines[0] and "Best PSNR: `dwdn` (38.00 dB)" in lines[0]
    # fourier+metacal has m = 0.001 +- 0.002 in its one bin (SNR 10-40): within 3 sigma
    assert "deconvolve-then-shear: m within 3 sigma" in lines[1] and "for `fourier`" in lines[1]
    assert lines[-1].startswith("Machine:") and not any("additive" in ln for ln in lines)
    from bench.report import machine_lines
    d["deconvbench"].update(streamed=True, peak_rss_bytes=3 * 2 ** 30)
    assert "  - memory: stamps streamed from the cache, peak resident memory of the session 3.00 GiB" in \
        machine_lines({**d, "label": "x"})
    # an additive bias beside a good m is said: metacal's response cannot remove it
    for b in d["benchmarks"]:
        if b["extra_info"]["method"] == "fourier+metacal":
            b["extra_info"]["by_snr"][-1].update(c=0.01, c_err=1e-3)
    lines = headline(d)
    assert "for `fourier`" in lines[1]
    assert "additive bias more than 3 sigma from 0 (all SNR): `fourier` c1 = +0.0100 ± 0.0010" in lines[2], lines


def test_headline_says_where_the_error_on_m_exceeds_the_goal():
    """After the shear, a bin at SNR >= 20 whose m error is above 0.01 cannot decide the goal."""
    from bench.report import headline
    d = copy.deepcopy(BASE)
    d["benchmarks"] = [b for b in d["benchmarks"] if "+metacal" not in b["extra_info"]["method"]]
    for name, err in (("dwdn", 0.004), ("wiener-fftw", 0.015)):
        row = _row(f"{name}+metacal[shear-then-deconvolve]", 10.0, m=0.005, m_err=err)
        row["extra_info"].update(base_method=name, placement="shear-then-deconvolve")
        high = dict(row["extra_info"]["by_snr"][0], snr_bin=1, snr_lo=20, snr_hi=40)
        row["extra_info"]["by_snr"].insert(1, high)
        d["benchmarks"].append(row)
    lines = headline(d)
    assert "for `dwdn`, `wiener-fftw`; missed by none" in lines[1], lines
    loose = [ln for ln in lines if "exceeds the 0.01 goal" in ln]
    assert len(loose) == 1 and "`wiener-fftw` (error 0.0150 at SNR 20-40)" in loose[0] and "dwdn" not in loose[0], lines


def test_a_run_of_metacal_rows_only_has_no_empty_quality_plot():
    """-k shear_first gives no deconvolution-alone rows: no PSNR figure; the figures that apply stay."""
    from bench.figures import plots
    d = dict(copy.deepcopy(BASE), label="metacal-only")
    d["benchmarks"] = [b for b in d["benchmarks"] if "+metacal" in b["extra_info"]["method"]]
    assert d["benchmarks"]
    assert set(plots([d])) == {"m_vs_snr", "time_memory"}
    assert "quality_vs_snr" in plots([dict(BASE, label="all")])


def _commit(data, i):
    d = copy.deepcopy(data)
    d["commit_info"] = {"id": f"{i:07d}abcdef", "time": f"2026-11-{10 + i:02d}T12:00:00"}
    return d


def test_history_orders_runs_and_marks_what_the_gate_fails(tmp_path):
    """Three commits in a directory: the third slows wiener-fftw 1.6x; the trend table and the report say so."""
    from bench.history import trend_table
    from bench.results import load_run

    hist = tmp_path / "artifacts"
    hist.mkdir()
    # written out of order: the history sorts by commit time, not by file name
    _write(hist, "c.json", _commit(_scaled(1.0, **{}), 1))
    _write(hist, "a.json", _commit(_scaled(1.0), 2))
    slow = _commit(_scaled(1.0), 3)
    next(b for b in slow["benchmarks"] if b["extra_info"]["method"] == "wiener-fftw")["extra_info"][
        "time_per_5000_s"] *= 1.6
    _write(hist, "b.json", slow)
    t = trend_table([load_run(p) for p in sorted(hist.glob("*.json"))])
    assert list(t.drop_duplicates("run")["run"]) == ["c", "a", "b"]
    w = t[t["method"] == "wiener-fftw"].set_index("run")
    assert w.loc["c", "gate"] == "-" and w.loc["a", "gate"] == "ok"
    assert w.loc["b", "gate"].startswith("fail: time per 5000 samples +60%")
    assert w.loc["b", "time_norm"] == pytest.approx(0.4 * 1.6 / 0.05)         # normalised by the workload
    assert (t[t["method"] != "wiener-fftw"]["gate"] != "fail").all()
    out = tmp_path / "rep"
    r = run_module("bench.report", hist, "--out", out, "--no-gallery")
    assert r.returncode == 0, r.stderr
    md = (out / "report.md").read_text()
    assert (out / "history.png").exists() and "History across runs" in md
    assert "| b | wiener-fftw | fail: time per 5000 samples +60%" in md
    assert "Side by side" not in md                 # a history details the newest run only


def test_history_of_an_empty_directory_exits_2(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_module("bench.report", tmp_path / "empty", "--out", tmp_path / "rep")
    assert r.returncode == 2 and "holds no .json benchmark files" in r.stderr and "Traceback" not in r.stderr


def test_summary_is_grouped_by_what_a_row_measures_and_best_per_bin():
    from bench.report import best_per_bin, grouped_tables, rows
    d = copy.deepcopy(BASE)
    d["benchmarks"].append(_row("dwdn", 30.0, psnr=38.0))
    groups = dict(grouped_tables(rows(d)))
    assert set(groups) == {"Deconvolution alone", "Method inside metacal", "Reference workloads"}
    assert list(groups["Deconvolution alone"]["method"]) == ["wiener-fftw", "dwdn"]
    assert list(groups["Method inside metacal"]["method"]) == ["fourier+metacal"]
    assert set(groups["Reference workloads"]["method"]) == {"reference-workload", "galsim-loop[dilate]", "simulation"}
    assert "m" not in groups["Deconvolution alone"]       # m belongs to the metacal rows only
    best = best_per_bin(rows(d))
    assert best.to_dict("records") == [{"SNR": "10-40", "best PSNR (dB)": "dwdn (38.00)",
                                        "best SSIM": "wiener-fftw (0.800)"}]
