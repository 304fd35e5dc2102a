"""Metacal and the measurement pass on dask.distributed: the single-process numbers (to float32 rounding), no lost shards."""

import os
import signal
import threading
import time

import numpy as np
import pytest

pytest.importorskip("dask.distributed")

from bench.distributed import (close, connect, gather_outputs, process_shard, run_shards, shard_bounds,  # noqa: E402
                               write_h5)
from bench.errors import BenchValueError  # noqa: E402
from bench.shear import ShearBiasMetric, combine_bands  # noqa: E402
from conftest import assert_same_to_rounding, run_module  # noqa: E402

import functools as _functools

from bench.metacal import metacal as _engine

# these tests check the engine without the noise correction (ngmix fixnoise=False)
metacal = _functools.partial(_engine, noise_correction=False)

SHARD = 8          # samples per shard; with 3 bands, 24 objects = 3 metacal chunks of 8
CHUNK = 8


@pytest.fixture(scope="module")
def client():
    c = connect(workers=2)
    yield c
    close(c)


@pytest.fixture(scope="module")
def source(smoke, tmp_path_factory):
    keys = ("image", "psf", "noise_sigma", "row", "col", "truth")
    path = tmp_path_factory.mktemp("src") / "smoke.h5"
    return write_h5(path, {**{k: smoke[k] for k in keys}, "pixel_scale": smoke.spec.pixel_scale})


def _single(smoke):
    return metacal(smoke["image"], smoke["psf"], pixel_scale=smoke.spec.pixel_scale, row=smoke["row"],
                   col=smoke["col"], chunk=CHUNK)


def _bias(smoke, res):
    m = ShearBiasMetric(smoke.spec.shear)
    m.update(combine_bands(res), quad_id=smoke["quad_id"], shear_sign=smoke["shear_sign"],
             snr_bin=smoke["snr_bin"])
    return m.compute()


def test_local_cluster_matches_single_process(client, smoke, source, tmp_path):
    paths = run_shards(client, source, len(smoke), tmp_path / "w", shard_size=SHARD,
                       metacal_kwargs={"noise_correction": False, "chunk": CHUNK})
    assert len(paths) == len(smoke) // SHARD and all(p.exists() for p in paths)
    dist, single = gather_outputs(paths), _single(smoke)
    for k in single:
        if k != "time_s":
            assert_same_to_rounding(dist[k], single[k], k)
    a, b = _bias(smoke, dist), _bias(smoke, single)
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-3, atol=2e-5)   # m, c and their jackknife errors


def test_measurement_pass_with_a_method_matches_single_process(client, smoke, source, tmp_path):
    from bench.metrics import psnr, ssim
    from methods import get_method
    paths = run_shards(client, source, len(smoke), tmp_path / "w", shard_size=SHARD,
                       metacal_kwargs={"noise_correction": False, "chunk": CHUNK}, method="wiener-fftw", quality=True)
    dist = gather_outputs(paths)
    m = get_method("wiener-fftw")
    dec = np.concatenate([m.deconvolve(smoke["image"][a:b], smoke["psf"][a:b], smoke["noise_sigma"][a:b])
                          for a, b in shard_bounds(len(smoke), SHARD)])
    single = metacal(smoke["image"], smoke["psf"], pixel_scale=smoke.spec.pixel_scale, row=smoke["row"],
                     col=smoke["col"], chunk=CHUNK, deconvolved=dec)
    assert_same_to_rounding(dist["R11"], single["R11"], "R11")
    np.testing.assert_array_equal(dist["psnr"], psnr(dec, smoke["truth"]).mean(axis=1))
    np.testing.assert_array_equal(dist["ssim"], ssim(dec, smoke["truth"]).mean(axis=1))


def test_finished_shards_are_kept_and_reused(client, smoke, source, tmp_path):
    work = tmp_path / "w"
    paths = run_shards(client, source, len(smoke), work, shard_size=SHARD, metacal_kwargs={"noise_correction": False, "chunk": CHUNK})
    stamps = {p: p.stat().st_mtime_ns for p in paths}
    paths[1].unlink()                                  # as if the run had stopped before this shard
    # ... because its worker was killed while writing it: a half-written temporary is left
    orphan = paths[1].with_name(paths[1].name + ".tmp999999.npz")
    orphan.write_bytes(b"PK\x03\x04 half a zip")
    mine = work / "notes.txt"                          # the user's file in the work directory stays
    mine.write_text("keep")
    again = run_shards(client, source, len(smoke), work, shard_size=SHARD, metacal_kwargs={"noise_correction": False, "chunk": CHUNK})
    assert again == paths and paths[1].exists()
    assert not orphan.exists() and mine.read_text() == "keep"
    assert all(p.stat().st_mtime_ns == stamps[p] for p in paths if p != paths[1])
    # other settings: the old shards are not mixed in
    run_shards(client, source, len(smoke), work, shard_size=SHARD, metacal_kwargs={"noise_correction": False, "chunk": CHUNK, "step": 0.02})
    assert paths[0].stat().st_mtime_ns != stamps[paths[0]]


def test_worker_dying_mid_run_loses_no_results(smoke, source, tmp_path):
    """Kill one of two workers while shards are running: Dask reschedules its task, nothing is lost."""
    client = connect(workers=2)
    try:
        work = tmp_path / "w"
        result = {}

        def run():
            result["paths"] = run_shards(client, source, len(smoke), work, shard_size=4,
                                         metacal_kwargs={"noise_correction": False, "chunk": 4, "dtype": "float64"})

        t = threading.Thread(target=run)
        t.start()
        deadline = time.time() + 60
        while not any(work.glob("shard-*.npz")) and time.time() < deadline:
            time.sleep(0.01)
        victim = sorted(client.scheduler_info()["workers"])[0]
        os.kill(client.run(os.getpid, workers=[victim])[victim], signal.SIGKILL)
        t.join(timeout=240)
        assert not t.is_alive() and "paths" in result
        dist = gather_outputs(result["paths"])
    finally:
        close(client)
    single = metacal(smoke["image"], smoke["psf"], pixel_scale=smoke.spec.pixel_scale, row=smoke["row"],
                     col=smoke["col"], chunk=4, dtype="float64")
    assert_same_to_rounding(dist["R11"], single["R11"], "R11")
    assert not list(work.glob("*.tmp*"))               # no half-written shard left behind


def test_process_shard_returns_existing_file(source, tmp_path):
    first = process_shard(str(source), 0, 4, str(tmp_path), metacal_kwargs={"noise_correction": False})
    before = os.stat(first).st_mtime_ns
    assert process_shard(str(source), 0, 4, str(tmp_path), metacal_kwargs={"noise_correction": False}) == first
    assert os.stat(first).st_mtime_ns == before


@pytest.mark.parametrize("size", [0, 6, 2.5])
def test_bad_shard_size(size):
    with pytest.raises(BenchValueError, match=f"multiple of 4 .*got {size!r}"):
        shard_bounds(100, size)


def test_bad_connection_settings():
    with pytest.raises(BenchValueError, match="address like tcp://HOST:PORT, got 'localhost'"):
        connect("localhost")
    with pytest.raises(BenchValueError, match="workers must be a positive integer, got 0"):
        connect(workers=0)


def test_cli_with_local_workers_matches_single_process(smoke, tmp_path):
    inp = tmp_path / "in.npz"
    np.savez(inp, image=smoke["image"][:16, 1], psf=smoke["psf"][:16, 1], noise_sigma=smoke["noise_sigma"][:16, 1],
             pixel_scale=smoke.spec.pixel_scale, row=smoke["row"][:16], col=smoke["col"][:16])
    r1 = run_module("bench.metacal", inp, "--out", tmp_path / "one.npz")
    r2 = run_module("bench.metacal", inp, "--out", tmp_path / "two.npz", "--workers", 2, "--shard-size", 8)
    assert r1.returncode == 0 and r2.returncode == 0, r2.stderr
    a, b = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert_same_to_rounding(a["R11"], b["R11"], "R11")
    assert_same_to_rounding(a["noshear_e1"], b["noshear_e1"], "noshear_e1")
    assert not (tmp_path / "two.npz.parts").exists()   # shards removed once the output is written


@pytest.mark.parametrize("args,words", [
    (["--workers", 2, "--shard-size", 6], "shard_size must be a positive multiple of 4"),
    (["--workers", 2, "--scheduler", "tcp://127.0.0.1:1"], "not both"),
    (["--work-dir", "w"], "--work-dir needs --workers or --scheduler"),
    (["--scheduler", "nowhere"], "address like tcp://HOST:PORT"),
])
def test_cli_bad_dask_options_exit_2(smoke, tmp_path, args, words):
    inp = tmp_path / "in.npz"
    np.savez(inp, image=smoke["image"][:8, 1], psf=smoke["psf"][:8, 1], noise_sigma=smoke["noise_sigma"][:8, 1],
             pixel_scale=smoke.spec.pixel_scale)
    r = run_module("bench.metacal", inp, "--out", tmp_path / "o.npz", *args)
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o.npz").exists()


def test_noise_correction_equal_across_shardings(client, smoke, tmp_path):
    """With the correction on, shards of the dataset cache (fields keyed by quad, as the dataset's
    noise) give the single-process numbers, whatever the shard size (to float32 rounding)."""
    from bench.pipeline import paired_noise

    noise = paired_noise(smoke["quad_id"], smoke["rotation"], smoke["noise_sigma"], smoke["image"].shape[1:],
                         pairing=smoke.spec.noise_pairing)
    single = _engine(smoke["image"], smoke["psf"], pixel_scale=smoke.spec.pixel_scale, row=smoke["row"],
                     col=smoke["col"], chunk=CHUNK, noise=noise)
    for shard in (SHARD, 2 * SHARD):
        paths = run_shards(client, smoke.path, len(smoke), tmp_path / f"w{shard}", shard_size=shard,
                           metacal_kwargs={"chunk": CHUNK})
        sharded = gather_outputs(paths)
        assert bool(sharded["noise_correction"]) and int(sharded["noise_seed"]) == 0
        np.testing.assert_array_equal(sharded["flags"], single["flags"])
        for k in ("noshear_e1", "R11", "R22"):
            assert_same_to_rounding(sharded[k], single[k], k)


def test_cli_work_dir_keeps_what_the_user_had_and_never_reuses_another_input(smoke, tmp_path):
    """--work-dir: only the command's own files are removed; a copy made from another input is not trusted."""
    work = tmp_path / "mine"
    work.mkdir()
    (work / "notes.txt").write_text("the user's")
    kept = work / "shards"
    inp = tmp_path / "in.npz"

    def write(k):
        np.savez(inp, image=smoke["image"][k:k + 8, 1], psf=smoke["psf"][k:k + 8, 1],
                 noise_sigma=smoke["noise_sigma"][k:k + 8, 1], pixel_scale=smoke.spec.pixel_scale)

    write(0)
    r = run_module("bench.metacal", inp, "--out", tmp_path / "a.npz", "--workers", 1, "--shard-size", 8,
                   "--work-dir", work)
    assert r.returncode == 0, r.stderr
    assert (work / "notes.txt").read_text() == "the user's" and not kept.exists()
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]
    # an interrupted run on stamps 0-8 left its copy and shards; the next run is on other stamps
    from bench.distributed import write_h5
    d = dict(np.load(inp))
    write_h5(work / "input.h5", d)
    (work / "input.json").write_text("{}")
    write(8)
    r = run_module("bench.metacal", inp, "--out", tmp_path / "b.npz", "--workers", 1, "--shard-size", 8,
                   "--work-dir", work)
    assert r.returncode == 0, r.stderr
    single = run_module("bench.metacal", inp, "--out", tmp_path / "c.npz")
    assert single.returncode == 0
    assert_same_to_rounding(np.load(tmp_path / "b.npz")["R11"], np.load(tmp_path / "c.npz")["R11"], "R11")
    # an input.h5 the command did not write is refused, and left alone
    (work / "input.h5").write_bytes(b"theirs")
    r = run_module("bench.metacal", inp, "--out", tmp_path / "d.npz", "--workers", 1, "--work-dir", work)
    assert r.returncode == 2 and "did not write" in r.stderr and "Traceback" not in r.stderr
    assert (work / "input.h5").read_bytes() == b"theirs" and not (tmp_path / "d.npz").exists()


def test_a_shard_takes_the_pixel_scale_from_the_runs_spec_and_refuses_a_changed_cache(smoke, tmp_path):
    """One source of truth: a dataset cache whose spec attribute was edited is refused, not used."""
    import json
    import shutil

    import h5py

    from bench.distributed import dataset_params

    params = dataset_params(smoke.spec)
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    with np.load(process_shard(str(smoke.path), 0, 4, str(tmp_path / "a"), metacal_kwargs={}, dataset=params)) as f:
        assert np.isfinite(f["R11"]).all()
    tampered = tmp_path / "tampered.h5"
    shutil.copy(smoke.path, tampered)
    with h5py.File(tampered, "r+") as f:
        spec = json.loads(f.attrs["spec"])
        spec["pixel_scale"] = 0.3
        f.attrs["spec"] = json.dumps(spec)
    with pytest.raises(BenchValueError, match="pixel_scale = 0.3, the run's spec 0.2"):
        process_shard(str(tampered), 0, 4, str(tmp_path / "b"), metacal_kwargs={}, dataset=params)
    assert not list((tmp_path / "b").iterdir())


def test_ctrl_c_at_a_terminal_ends_a_dask_run_with_one_line_and_the_rerun_continues(smoke, tmp_path):
    """SIGINT to the whole process group (what a terminal sends): exit 130, one line, no output,
    no worker messages; the finished shards are reused by the same command."""
    import subprocess
    import sys

    from conftest import ROOT

    n = 64
    inp = tmp_path / "in.npz"
    np.savez(inp, image=np.tile(smoke["image"][:, 1], (4, 1, 1))[:n], psf=np.tile(smoke["psf"][:, 1], (4, 1, 1))[:n],
             noise_sigma=np.tile(smoke["noise_sigma"][:, 1], 4)[:n], pixel_scale=smoke.spec.pixel_scale)
    out = tmp_path / "out.npz"
    cmd = [sys.executable, "-m", "bench.metacal", str(inp), "--out", str(out), "--workers", "2",
           "--shard-size", "4", "--method", "richardson-lucy", "--placement", "shear-then-deconvolve"]
    # a terminal's shell starts a job with SIGINT at its default; a test runner started in the
    # background of a non-interactive shell passes it on ignored, which would make Ctrl-C a no-op
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    shards = tmp_path / "out.npz.parts" / "shards"
    deadline = time.time() + 120
    while not list(shards.glob("shard-*.npz")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    t0 = time.time()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    took = time.time() - t0
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [err.strip()] and "interrupted" in err and "Traceback" not in err, err
    assert "continues from them" in err and not out.exists() and took < 30
    kept = {p.name for p in shards.glob("shard-*.npz")}
    assert kept
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert np.isfinite(np.load(out)["R11"]).mean() > 0.5 and not (tmp_path / "out.npz.parts").exists()
