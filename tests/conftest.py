import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"


@pytest.fixture(scope="session")
def reference():
    with np.load(DATA / "ngmix_metacal_moffat_100.npz") as f:
        return {k: f[k] for k in f.files}


#: where a command run without a temporary folder would leave files in the checkout
WATCHED = ("datasets", "reports", "methods/dwdn/weights", "methods/resnet_jax/weights")


def _checkout_files() -> set[Path]:
    return {p for d in WATCHED for p in (ROOT / d).rglob("*") if p.is_file()} | {
        p for p in ROOT.iterdir() if p.is_file()}


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """One temporary cache for the session, in this process and every process it starts: the
    tests never write datasets into the checkout (nor FFTW wisdom into the home folder), and a
    dataset is still simulated once however many tests (or training commands) load it. A file
    that appears in the checkout meanwhile fails the session."""
    from bench.dataset import CACHE_ENV
    before = _checkout_files()
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(path))
        mp.setenv("DECONVBENCH_CACHE", str(path))
        yield path
    new = sorted(str(p.relative_to(ROOT)) for p in _checkout_files() - before)
    if new:
        pytest.fail(f"the tests wrote into the checkout: {', '.join(new[:10])}")


@pytest.fixture(scope="session")
def smoke(session_cache):
    from bench.dataset import load_dataset
    return load_dataset("smoke", progress=False, workers=2)        # the session cache: the one train() reads


def run_module(module, *args, env=None, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def run_main(capsys, module, *args) -> subprocess.CompletedProcess:
    """What :func:`run_module` returns, with ``python -m module ARGS`` run in this process: what
    ``python -m`` runs (:func:`bench.cli.run_cli` around ``main``) without a new interpreter's
    start-up. Keep a real process where the exit status of the interpreter itself is tested."""
    import importlib

    from bench.cli import run_cli

    mod = importlib.import_module(module)
    if not hasattr(mod, "main"):
        mod = importlib.import_module(module + ".__main__")
    capsys.readouterr()
    try:
        rc = run_cli(mod.main, [str(a) for a in args], prog=f"python -m {module}")
    except SystemExit as e:            # argparse's own usage errors
        rc = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess([module, *map(str, args)], rc, out, err)


def invoke(module: str, args, capsys) -> tuple[int, str]:
    """(exit code, stderr) of :func:`run_main`."""
    r = run_main(capsys, module, *args)
    return r.returncode, r.stderr


def assert_same_to_rounding(actual, desired, key=""):
    """Metacal outputs of two runs agree to float32 rounding.

    The engine's transforms are matrix products; BLAS sums them in an order that depends on
    its thread count, so a Dask worker (one BLAS thread) and a two-thread driver differ in the
    last bits (about 1e-7 in e, amplified 50x in R = de / 0.02).
    """
    atol = 1e-4 if str(key).startswith("R") else 1e-6
    np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=atol, err_msg=str(key))
