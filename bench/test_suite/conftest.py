"""Fixtures and JSON additions of the benchmark suite (``pytest bench/ --benchmark-json=FILE``).

The dataset (``--dataset``, default ``default``; up to ``paper``) is loaded once per session.
The JSON gains ``deconvbench``: the dataset (the ``--dataset`` option, the spec's name and its
cache key, which the regression gate compares), library versions, the GPU if any, every
skipped benchmark with its reason (the report lists them), whether the stamps were streamed
from the cache (``--stream``) and the session's peak resident memory (``peak_rss_bytes``).
"""

import pytest

import numpy as np

#: the suite streams the stamps above this size (default's 870 MiB of image, psf and truth too):
#: the timed calls read their 5000 samples first, and the measurement pass a chunk at a time
SUITE_STREAM_BYTES = 512 * 2 ** 20

_SKIPPED: list = []
_SESSION: dict = {}


def pytest_addoption(parser):
    parser.addoption("--dataset", default="default",
                     help="dataset spec to benchmark on (smoke, ci, default, paper or a TOML path)")
    parser.addoption("--scheduler", default=None,
                     help="Dask scheduler address (tcp://HOST:PORT): run the measurement pass there")
    parser.addoption("--dask-workers", type=int, default=None,
                     help="run the measurement pass on a local Dask cluster of this many workers")
    parser.addoption("--estimator", default="gaussmom",
                     help="shear estimator of every metacal row: gaussmom or admom (bench.metacal.estimators); "
                          "with gaussmom an extra row, fourier+metacal[admom], measures exact metacal with "
                          "admom [gaussmom]")
    parser.addoption("--stream", default="auto", choices=("auto", "on", "off"),
                     help="read the stamps from the dataset cache per slice instead of loading them "
                          "(auto: when they exceed 512 MiB, as for default and paper) [auto]")


@pytest.fixture(scope="session")
def dask_client(request):
    """A Dask client when --scheduler or --dask-workers is given, else None (one process)."""
    scheduler, workers = request.config.getoption("--scheduler"), request.config.getoption("--dask-workers")
    if workers is not None and workers < 1:
        raise pytest.UsageError(f"--dask-workers must be >= 1, got {workers}")
    if not (scheduler or workers):
        yield None
        return
    from bench.devices import cuda_unavailable_reason, module_missing
    from bench.distributed import close, connect
    # one worker per GPU where there are GPUs and dask-cuda to start them
    gpus = not cuda_unavailable_reason() and not module_missing("dask_cuda")
    client = connect(scheduler, workers, device="cuda" if gpus else "cpu")
    yield client
    close(client)


@pytest.fixture(scope="session")
def metacal_config(request):
    """The engine's settings for every metacal row: ngmix's noise correction on (its fields paired as
    the dataset pairs its noise), the --estimator."""
    from bench.metacal import MetacalConfig
    return MetacalConfig(estimator=request.config.getoption("--estimator"))


def pytest_configure(config):
    from bench.errors import BenchError
    from bench.metacal import MetacalConfig
    try:
        MetacalConfig(estimator=config.getoption("--estimator"))
    except BenchError as err:                  # an unknown name stops the run before any work
        raise pytest.UsageError(f"--estimator: {err}") from None


@pytest.fixture(scope="session")
def dataset(request):
    from bench.dataset import expected_layout, load_dataset
    from bench.spec import load_spec
    spec = load_spec(request.config.getoption("--dataset"))
    layout = expected_layout(spec)
    # the suite never reads the noiseless stamps; the others are streamed above SUITE_STREAM_BYTES
    keys = tuple(k for k in layout if k != "noiseless")
    stamps = sum(int(np.prod(layout[k][0])) * 4 for k in keys if len(layout[k][0]) == 4)
    stream = {"auto": stamps > SUITE_STREAM_BYTES, "on": True, "off": False}[request.config.getoption("--stream")]
    ds = load_dataset(spec, progress=False, stream=stream, keys=keys)
    from bench.dataset import cache_key
    _SESSION.update(streamed=ds.streamed, dataset_name=ds.spec.name, dataset_key=cache_key(ds.spec))
    yield ds
    ds.close()


def pytest_runtest_logreport(report):
    if report.skipped and report.when in ("setup", "call"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED.append({"test": report.nodeid.split("::")[-1], "reason": reason.removeprefix("Skipped: ")})


def _versions():
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for pkg in ("numpy", "scipy", "galsim", "pyfftw", "torch", "jax", "flax", "optax", "cupy-cuda12x",
                "scikit-image", "array-api-compat", "pytest-benchmark", "dask", "distributed"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def pytest_benchmark_update_json(config, benchmarks, output_json):
    from bench.devices import cuda_unavailable_reason
    gpu = None
    if not cuda_unavailable_reason():
        try:
            import subprocess
            gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            gpu = None
    from dataclasses import asdict

    from bench.memory import process_peak_rss
    from bench.metacal import MetacalConfig
    output_json["deconvbench"] = {
        "metacal": {k: v for k, v in asdict(MetacalConfig(estimator=config.getoption("--estimator"))).items()
                    if k != "chunk"},
        "dataset": config.getoption("--dataset"), "scheduler": config.getoption("--scheduler"),
        "dask_workers": config.getoption("--dask-workers"), "versions": _versions(), "gpu": gpu,
        "gpu_unavailable_reason": cuda_unavailable_reason() or None, "skipped": list(_SKIPPED),
        "dataset_name": _SESSION.get("dataset_name"), "dataset_key": _SESSION.get("dataset_key"),
        "streamed": _SESSION.get("streamed"), "peak_rss_bytes": process_peak_rss(),
    }
    from bench.metrics import get_metric_class, list_metrics
    # each metric's columns, declared once, travel with the file: the report shows a plugin's metric
    # without importing the plugin
    output_json["deconvbench"]["metrics"] = [{"name": n, "columns": [asdict(c) for c in get_metric_class(n).columns]}
                                             for n in list_metrics()]
    from bench import gallery
    if gallery.payload() is not None:
        output_json["deconvbench"]["gallery"] = gallery.payload()
