"""The regression gate on shear bias: paired jackknife differences per SNR bin, and the dataset check.

The end-to-end cases run exact metacal on the ``ci`` dataset (the one CI gates on), build the
benchmark rows with the suite's own code (:func:`bench.schema.snr_rows`) and change the result
the way a regressed method would: a measured ellipticity 0.5 % rounder at the same response
(m moves by -0.005), or an additive shear of 1e-3 (c1 moves by 1e-3).
"""

import copy
import json

import numpy as np
import pytest

from bench.compare import compare, paired_bias_changes
from bench.errors import BenchValueError
from bench.schema import snr_rows
from bench.metrics import ShearBiasFromShapes
from bench.shear import bias_from_quad_sums, combine_bands, jackknife_blocks
from conftest import run_module


def _run(by_snr, dataset="ci", key="k1"):
    """A benchmark file with the reference workload and one metacal row."""
    def row(method, t, by):
        return {"name": f"test[{method}]", "stats": {"median": t},
                "extra_info": {"method": method, "framework": "numpy", "device": "cpu", "n_samples": 400,
                               "time_per_5000_s": t, "peak_memory_bytes": 2 ** 20, "by_snr": by}}
    return {"deconvbench": {"dataset": dataset, "dataset_name": dataset, "dataset_key": key},
            "benchmarks": [row("reference-workload", 0.05, []), row("fourier+metacal", 1.0, by_snr)]}


@pytest.fixture(scope="module")
def ci_metacal(tmp_path_factory):
    """Exact metacal (noise correction on) of the whole ci dataset, bands combined, with its labels."""
    from bench.dataset import load_dataset
    from bench.metacal import metacal
    from bench.pipeline import paired_noise

    ds = load_dataset("ci", progress=False, cache_dir=tmp_path_factory.mktemp("cache"))
    noise = paired_noise(ds["quad_id"][:], ds["rotation"][:], ds["noise_sigma"][:], ds["image"].shape[1:],
                         pairing=ds.spec.noise_pairing)
    out = metacal(ds["image"][:], ds["psf"][:], pixel_scale=ds.spec.pixel_scale, row=ds["row"][:],
                  col=ds["col"][:], noise=noise)
    labels = {k: np.asarray(ds[k][:]) for k in ("quad_id", "shear_sign", "snr_bin")}
    spec = ds.spec
    ds.close()
    return combine_bands(out), labels, spec


def _by_snr(out, labels, spec):
    metric = ShearBiasFromShapes(spec)
    metric.update(out, shapes=out, **labels)
    return snr_rows(spec.snr_bins, [metric.compute()])


def _changed(out, *, shrink=0.0, additive=0.0):
    """The method's measured noshear ellipticity made rounder by *shrink* at the same response, or
    moved by an additive shear (*additive* times the response)."""
    res = dict(out)
    res["noshear_e1"] = out["noshear_e1"] * (1 - shrink) + additive * out["R11"]
    res["noshear_e2"] = out["noshear_e2"] * (1 - shrink)
    return res


def test_gate_on_ci_passes_a_rerun_and_fails_small_shear_bias_changes(ci_metacal):
    out, labels, spec = ci_metacal
    base = _run(_by_snr(out, labels, spec))
    # an unchanged rerun (recomputed from scratch) passes
    table, failures = compare(base, _run(_by_snr(dict(out), labels, spec)))
    assert failures == []
    assert set(table["bias_rule"].dropna()) == {"paired"}
    all_snr = base["benchmarks"][1]["extra_info"]["by_snr"][-1]
    assert len(all_snr["m_jackknife"]) == 100 and all_snr["m_err"] > 0.004   # the runs' own errors are large

    # 0.5 % rounder: m moves by about -0.005 in every bin; named per bin
    table, failures = compare(base, _run(_by_snr(_changed(out, shrink=0.005), labels, spec)))
    m_fail = [f for f in failures if f.startswith("fourier+metacal: m at ")]
    assert len(m_fail) == len(spec.snr_bins), failures           # every bin and all SNR
    assert any("m at SNR 20-40 changed by -0.00" in f for f in m_fail), m_fail
    assert any("m at all SNR" in f for f in m_fail)
    assert not any(": c1 at" in f or ": c2 at" in f for f in failures), failures

    # an additive shear of 1e-3: c1 fails, m does not
    table, failures = compare(base, _run(_by_snr(_changed(out, additive=1e-3), labels, spec)))
    assert any(f.startswith("fourier+metacal: c1 at all SNR changed by +0.0010") for f in failures), failures
    assert not any(": m at" in f for f in failures), failures
    # half of it stays under --c-abs (5e-4) and passes
    _, failures = compare(base, _run(_by_snr(_changed(out, additive=4e-4), labels, spec)))
    assert failures == [], failures


def test_replicates_of_two_runs_share_their_blocks(ci_metacal):
    """A quad flagged in one run only moves its own block's replicate: the others pair."""
    out, labels, spec = ci_metacal
    a = _by_snr(out, labels, spec)[-1]
    res = dict(out)
    res["flags"] = out["flags"].copy()
    res["flags"][0] = 8                        # quad 0, block 0
    b = _by_snr(res, labels, spec)[-1]
    assert b["n_quads"] == a["n_quads"] - 1
    same = [x == y for x, y in zip(a["m_jackknife"][1:], b["m_jackknife"][1:])]
    assert b["m_jackknife"][0] is None and a["m_jackknife"][0] is not None
    assert not all(same)                       # the estimate without quad 0 differs...
    ja, jb = (np.array(r["m_jackknife"][1:], dtype=float) for r in (a, b))      # null: a block of flagged quads
    d = (jb - ja)[np.isfinite(ja)]
    assert np.ptp(d) < 0.1 * np.nanstd(ja)      # ...by nearly the same amount in every block


def test_paired_rule_uses_the_larger_of_floor_and_sigma():
    def rows(ms, m):
        return [{"snr_bin": "all", "snr_lo": 10, "snr_hi": 200, "m": m, "m_jackknife": ms}]
    rng = np.random.default_rng(1)
    base = rng.normal(0, 0.01, 50)
    # a noisy change (paired error 0.01): 0.02 is within 3 sigma, so it passes
    noisy = base + rng.normal(0, 0.01 / np.sqrt(49), 50)
    records, failures = paired_bias_changes(rows(list(base), 0.0), rows(list(noisy), 0.02))
    assert failures == [] and records[0]["limit"] > 0.02
    # noiseless: the floor --m-abs decides
    records, failures = paired_bias_changes(rows(list(base), 0.0), rows(list(base), 0.0025))
    assert records[0]["limit"] == pytest.approx(2e-3) and failures
    assert paired_bias_changes(rows(list(base), 0.0), rows(list(base), 0.0025), m_abs=3e-3)[1] == []
    # no replicates in either: None (the caller falls back)
    assert paired_bias_changes(rows(None, 0.0), rows(None, 0.1)) is None


def test_jackknife_blocks_follow_quad_ids():
    assert jackknife_blocks([0, 9, 10, 99], 100, 10).tolist() == [0, 0, 1, 9]
    sums = {k: np.ones(4) for k in ("e1_p", "R11_p", "n_p", "e1_m", "R11_m", "n_m", "e2", "R22", "n")}
    with pytest.raises(BenchValueError, match=r"blocks must be 4 integers in \[0, 3\)"):
        bias_from_quad_sums(sums, 0.02, n_jackknife=3, blocks=[0, 1, 2, 3])


def test_gate_refuses_runs_of_different_datasets(tmp_path):
    by = [{"snr_bin": "all", "snr_lo": 10, "snr_hi": 200, "m": 0.0, "m_err": 0.01}]
    b, c = tmp_path / "b.json", tmp_path / "c.json"
    b.write_text(json.dumps(_run(by, "ci")))
    c.write_text(json.dumps(_run(by, "default")))
    r = run_module("bench.compare", b, c)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "'ci'" in lines[0] and "'default'" in lines[0], r.stderr
    assert "--allow-other-dataset" in lines[0]
    assert run_module("bench.compare", b, c, "--allow-other-dataset").returncode == 0
    # one spec name, two cache keys: the spec changed under the same name
    c.write_text(json.dumps(_run(by, "ci", key="k2")))
    r = run_module("bench.compare", b, c)
    assert r.returncode == 2 and "cache key k1" in r.stderr and "cache key k2" in r.stderr
    # one dataset, two shear estimators
    admom = _run(by, "ci")
    admom["deconvbench"]["metacal"] = {"estimator": "admom"}
    c.write_text(json.dumps(admom))
    r = run_module("bench.compare", b, c)
    assert r.returncode == 2 and "'gaussmom' estimator" in r.stderr and "'admom'" in r.stderr, r.stderr


def test_baseline_without_replicates_falls_back_and_says_so(tmp_path):
    by = [{"snr_bin": "all", "snr_lo": 10, "snr_hi": 200, "m": 0.0, "m_err": 0.01, "m_jackknife": [0.0] * 5}]
    old = copy.deepcopy(by)
    del old[0]["m_jackknife"]
    b, c = tmp_path / "b.json", tmp_path / "c.json"
    b.write_text(json.dumps(_run(old)))
    c.write_text(json.dumps(_run(by)))
    r = run_module("bench.compare", b, c)
    assert r.returncode == 0 and "judged by the growth of |m|" in r.stdout, r.stdout
    assert "| combined |" in r.stdout


def test_the_backend_comparison_row_is_listed_not_judged():
    """pyFFTW against scipy.fft inside one run: 20 ms calls a busy neighbour core slows 2x."""
    def run(t):
        r = _run([])
        r["benchmarks"].append({"name": "test_wiener_pyfftw_vs_scipy", "stats": {"median": t},
                                "extra_info": {"method": "wiener-fftw[pyfftw-vs-scipy]", "time_per_5000_s": t}})
        return r
    table, failures = compare(run(0.25), run(0.6))
    assert failures == []
    row = table[table["method"] == "wiener-fftw[pyfftw-vs-scipy]"].iloc[0]
    assert row["status"] == "informational" and row["time_ratio"] == pytest.approx(2.4)
