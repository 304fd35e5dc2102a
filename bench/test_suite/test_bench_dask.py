"""Throughput of metacal on dask.distributed with 1 and 2 local workers (or the --scheduler given).

Each round runs the exact metacal of all bands over the first (up to) 8192 samples,
as shards of 1024 samples that the workers read from the dataset's HDF5 cache and
write back as files; a fresh shard folder per round, so nothing is reused. Cluster
start-up is excluded; the first round (workers importing and planning) is the warm-up.
"""

import shutil
import tempfile
from pathlib import Path

import pytest

N_REF = 5000
N_DASK = 8192
SHARD = 1024
_TIMES: dict = {}


@pytest.mark.parametrize("workers", [1, 2])
def test_dask_metacal_throughput(benchmark, dataset, request, workers):
    pytest.importorskip("dask.distributed", reason="dask.distributed is not installed (pip install '.[dask]')")
    from bench.distributed import close, connect, dataset_params, run_shards

    scheduler = request.config.getoption("--scheduler")
    if scheduler and workers != 1:
        pytest.skip("with --scheduler the cluster's own workers are measured once")
    n = min(len(dataset), N_DASK)
    client = connect(scheduler, None if scheduler else workers)
    root = Path(tempfile.mkdtemp(prefix="deconvbench-dask-"))
    count = iter(range(10 ** 6))

    def run():
        work = root / f"round{next(count)}"
        run_shards(client, dataset.path, n, work, shard_size=SHARD, metacal_kwargs={},
                   dataset=dataset_params(dataset.spec))
        shutil.rmtree(work)

    try:
        benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
        n_workers = len(client.scheduler_info()["workers"])
    finally:
        close(client)
        shutil.rmtree(root, ignore_errors=True)
    per_5000 = benchmark.stats.stats.median * N_REF / n
    _TIMES[workers] = per_5000
    info = dict(method=f"metacal-dask[{n_workers} workers]", framework="numpy+dask", device="cpu",
                n_samples=n, n_bands=len(dataset.spec.bands), workers=n_workers, shard_size=SHARD,
                scheduler=scheduler or "LocalCluster", time_per_5000_s=per_5000, peak_memory_bytes=None,
                by_snr=[])
    if workers != 1 and 1 in _TIMES:
        info["speedup_vs_1_worker"] = _TIMES[1] / per_5000
    benchmark.extra_info.update(info)
