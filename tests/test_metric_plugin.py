"""A metric added from outside the harness (tests/plugins/toy_metric.py, loaded as a pytest plugin)
reaches the benchmark JSON and the report's per-bin table, no file of the harness changed."""

import json
import os

import pytest

from conftest import ROOT, run_module

pytestmark = pytest.mark.slow


def test_a_plugin_metric_reaches_the_json_and_the_report(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "plugins"), str(ROOT)])}
    out = tmp_path / "run.json"
    r = run_module("pytest", "bench/", "--dataset", "smoke", "-q", "-p", "toy_metric", "-p", "no:cacheprovider",
                   "-k", "reference_workload or (test_method and wiener-fftw and not shear_first and not pyfftw)",
                   f"--benchmark-json={out}", env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = json.loads(out.read_text())
    row = next(b["extra_info"] for b in run["benchmarks"] if b["extra_info"]["method"] == "wiener-fftw")
    ratios = [b["toy_flux_ratio"] for b in row["by_snr"]]
    assert len(ratios) == 5 and all(0.5 < v < 1.5 for v in ratios), ratios      # Wiener keeps most of the flux
    declared = {m["name"]: m["columns"] for m in run["deconvbench"]["metrics"]}
    assert declared["toy-flux"][0]["heading"] == "toy flux ratio"
    # the report runs without the plugin, and shows the column from the file's declaration
    r = run_module("bench.report", out, "--out", tmp_path / "report")
    assert r.returncode == 0, r.stderr
    md = (tmp_path / "report" / "report.md").read_text()
    assert "toy flux ratio" in md and f"{ratios[-1]:.5f}" in md
