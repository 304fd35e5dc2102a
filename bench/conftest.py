"""Fixtures of the benchmark suite (``pytest bench/ --benchmark-json=FILE``).

The dataset (``--dataset``, default ``default``) is loaded once per session.
"""

import pytest


def pytest_addoption(parser):
    parser.addoption("--dataset", default="default",
                     help="dataset spec to benchmark on (smoke, ci, default, paper or a TOML path)")


@pytest.fixture(scope="session")
def dataset(request):
    from bench.dataset import load_dataset
    return load_dataset(request.config.getoption("--dataset"), progress=False)
