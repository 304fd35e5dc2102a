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


@pytest.fixture(scope="session")
def smoke(tmp_path_factory):
    from bench.dataset import load_dataset
    return load_dataset("smoke", cache_dir=tmp_path_factory.mktemp("cache"), progress=False, workers=2)


def run_module(module, *args, env=None, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)
