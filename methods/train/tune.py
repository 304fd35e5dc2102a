"""Choose a classical method's default setting on the training split.

``python -m methods.train.tune wiener-fftw`` (or ``richardson-lucy``) deconvolves the
``train`` dataset (``datasets/train.toml``, whose seed differs from every benchmark
dataset) for each value on a grid and prints mean PSNR and SSIM against the truth;
the best mean PSNR is the default the method ships with.
"""

from __future__ import annotations

import sys

GRIDS = {
    "wiener-fftw": ("strength", [0.1, 0.2, 0.5, 1.0, 2.0, 5.0]),
    "richardson-lucy": ("iterations", [5, 10, 20, 30, 50, 80]),
}


def tune(name: str, *, dataset: str = "train", n: int | None = None):
    """A pandas table of mean PSNR and SSIM for each grid value of *name*'s parameter."""
    import pandas as pd

    from bench.dataset import load_dataset
    from bench.errors import unknown_name
    from bench.metrics import psnr, ssim
    from methods import get_method

    if name not in GRIDS:
        raise unknown_name("tunable method", name, GRIDS)
    ds = load_dataset(dataset, progress=False)
    n = min(n or len(ds), len(ds))
    img, psf, sig, truth = (ds[k][:n] for k in ("image", "psf", "noise_sigma", "truth"))
    key, grid = GRIDS[name]
    rows = []
    for value in grid:
        out = get_method(name, **{key: value}).deconvolve(img, psf, sig)
        rows.append({key: value, "psnr_mean": float(psnr(out, truth).mean()),
                     "ssim_mean": float(ssim(out, truth).mean())})
    return pd.DataFrame(rows).set_index(key)


def main(argv=None) -> int:
    from bench.cli import make_parser

    p = make_parser("python -m methods.train.tune", "Scan a classical method's setting on the training split.")
    p.add_argument("method", help=f"one of {', '.join(GRIDS)}")
    p.add_argument("--dataset", default="train", help="dataset spec [train]")
    p.add_argument("--n", type=int, default=None, help="use the first N samples [all]")
    p.add_argument("--allow-benchmark-dataset", action="store_true",
                   help="tune on a dataset the benchmark measures on")
    a = p.parse_args(argv)
    from bench.errors import BenchValueError
    from methods.train.common import BENCHMARK_DATASETS

    if a.n is not None and a.n < 1:
        raise BenchValueError(f"--n must be >= 1, got {a.n}")
    if a.dataset in BENCHMARK_DATASETS and not a.allow_benchmark_dataset:
        raise BenchValueError(f"--dataset {a.dataset!r} is a benchmark dataset: a setting tuned on it is judged "
                              f"on its own tuning data; use 'train' (or --allow-benchmark-dataset)")
    table = tune(a.method, dataset=a.dataset, n=a.n)
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"best by mean PSNR: {GRIDS[a.method][0]} = {table['psnr_mean'].idxmax()}")
    return 0


if __name__ == "__main__":
    from bench.cli import run_cli

    sys.exit(run_cli(main, prog="python -m methods.train.tune"))
