"""python -m bench.doctor: one line and exit 0 without a GPU; its checks run with the CPU standing in."""

import json

import pytest

from bench.devices import cuda_unavailable_reason
from conftest import run_main, run_module

NO_GPU = cuda_unavailable_reason()


@pytest.mark.skipif(not NO_GPU, reason="a GPU is here: the no-GPU message does not apply")
def test_no_gpu_one_line_exit_0():
    r = run_module("bench.doctor")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().count("\n") == 0 and "no GPU here" in r.stdout


@pytest.mark.slow
def test_checks_run_with_the_cpu_standing_in(tmp_path, capsys):
    # in this process, so the frameworks' start-up and compilations are the session's, not a new
    # interpreter's; the tests on either side run the command as a real process
    out = tmp_path / "doctor.json"
    r = run_main(capsys, "bench.doctor", "--cpu-dry-run", "--dataset", "smoke", "--n", "8", "--json", out)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {row["check"]: row for row in json.loads(out.read_text())["rows"]}
    assert rows["metacal on torch"]["status"] == "ok"
    assert rows["metacal images (shear, then deconvolve) on torch"]["status"] == "ok"
    assert rows["metacal on CuPy"]["status"] == "skip" and "GPU" in rows["metacal on CuPy"]["detail"]
    assert all(row["status"] != "FAIL" for row in rows.values()), rows
    # the speed goals are the GPU's: shown with the CPU standing in, never judged there
    assert rows["metacal on torch"]["goal_s"] == 0.02 and rows["metacal on torch"]["goal"] is None
    assert "<= 0.02 " in r.stdout


def test_table_says_whether_a_speed_goal_was_met():
    from bench.doctor import table
    base = {"status": "ok", "detail": "", "peak_memory_mib": 10.0}
    out = table([dict(base, check="metacal on CuPy", time_per_5000_s=0.012, goal_s=0.02, goal="met"),
                 dict(base, check="wiener-cupy", time_per_5000_s=0.031, goal_s=0.01, goal="missed", bands=3),
                 dict(base, check="dwdn", time_per_5000_s=1.5, goal_s=None, goal=None)]).splitlines()
    assert "goal (H100)" in out[0]
    assert "<= 0.02: met" in out[2] and "<= 0.01 per band: missed" in out[3] and " - " in out[4]


def test_bad_n_exits_2():
    r = run_module("bench.doctor", "--cpu-dry-run", "--n", "0")
    assert r.returncode == 2 and "--n must be" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.gpu
@pytest.mark.skipif(bool(NO_GPU), reason=f"needs a GPU: {NO_GPU}")
def test_every_gpu_path_matches_the_cpu():
    from bench.doctor import run_checks
    rows = run_checks("smoke", 32, "cuda")
    failed = [r for r in rows if r["status"] == "FAIL"]
    assert not failed, failed


def test_synchronize_returns_the_array_it_waited_for():
    """bench.arrays.synchronize hands back its argument for every CPU framework (the timers use its result)."""
    import numpy as np

    from bench.arrays import method_inputs, synchronize
    a = np.arange(12.0).reshape(3, 4)
    assert synchronize(a) is a
    for framework in ("torch", "jax"):
        pytest.importorskip(framework)
        x, = method_inputs([a], framework, "cpu")
        assert synchronize(x) is x and np.array_equal(np.asarray(x), a)
