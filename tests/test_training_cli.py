"""The training commands refuse, before any work, what would damage the shipped weights or train on nothing."""

import pytest

from conftest import ROOT, invoke, run_module

SHIPPED = {"methods.train.dwdn": ROOT / "methods/dwdn/weights/dwdn-small.safetensors",
           "methods.train.resnet_jax": ROOT / "methods/resnet_jax/weights/resnet-jax-small.safetensors"}


@pytest.mark.parametrize("module", sorted(SHIPPED))
@pytest.mark.parametrize("args,words", [
    (["--epochs", "0", "0"], "epochs takes two integers >= 0"),
    (["--epochs", "-1", "3"], "epochs takes two integers >= 0"),
    (["--batch", "-1"], "batch must be an integer >= 1, got -1"),
    (["--lr", "nan", "1e-4"], "lr takes two finite learning rates > 0"),
    (["--lr", "1e-3", "inf"], "lr takes two finite learning rates > 0"),
    (["--dataset", "default"], "'default' is a benchmark dataset"),
    (["--resume"], "--resume: no checkpoint"),
    (["--init", "nowhere.safetensors"], "--init 'nowhere.safetensors': no such checkpoint file"),
    (["--init", "shipped", "--resume"], "--init and --resume exclude each other"),
    (["--data", "pixels"], "invalid choice: 'pixels'"),
])
def test_bad_training_options_exit_2(tmp_path, capsys, monkeypatch, module, args, words):
    # in this process (a new interpreter per case only repeats start-up); the real process's
    # exit code is checked by the test below
    monkeypatch.chdir(tmp_path)            # a relative path a command might write lands here
    out = tmp_path / "new.safetensors"
    rc, err = invoke(module, ["--out", out, "--no-progress", *args], capsys)
    assert rc == 2, err
    assert words in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("module", sorted(SHIPPED))
def test_shipped_and_existing_weights_are_not_overwritten(tmp_path, module):
    before = SHIPPED[module].read_bytes()
    r = run_module(module, "--out", SHIPPED[module], "--no-progress")
    assert r.returncode == 2 and "--replace-shipped" in r.stderr
    assert SHIPPED[module].read_bytes() == before
    beside = SHIPPED[module].parent / "another.safetensors"        # the folder holds the metacal weights too
    r = run_module(module, "--out", beside, "--no-progress")
    assert r.returncode == 2 and "--replace-shipped" in r.stderr and not beside.exists()
    mine = tmp_path / "mine.safetensors"
    mine.write_bytes(b"the user's")
    r = run_module(module, "--out", mine, "--no-progress")
    assert r.returncode == 2 and "--overwrite" in r.stderr
    assert mine.read_bytes() == b"the user's"


@pytest.mark.parametrize("args,words", [
    (["wiener-fftw", "--n", "0"], "--n must be >= 1, got 0"),
    (["wiener-fftw", "--dataset", "ci"], "'ci' is a benchmark dataset"),
    (["wiener"], "Did you mean"),
])
def test_bad_tuning_options_exit_2(args, words):
    r = run_module("methods.train.tune", *args)
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr
