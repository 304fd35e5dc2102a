"""Benchmarks of every registered method on the shared dataset.

Three rows per method, each with the ``extra_info`` schema the report and the gate read
(``method``, ``framework``, ``device``, ``n_samples``, ``time_per_5000_s``,
``peak_memory_bytes``, ``warmup_s``, ``compile_s``, ``placement``, ``by_snr``):

* ``test_method[NAME]``: ``deconvolve`` on all bands of the first (up to) 5000 samples;
* ``test_method_in_metacal[NAME]`` (``NAME+metacal``): placement "deconvolve-then-shear",
  ``deconvolve`` then metacal of all bands (for ``fourier``, the exact metacal alone);
* ``test_method_shear_first[NAME]`` (``NAME+metacal[shear-then-deconvolve]``): exact metacal
  draws the five images, the method deconvolves each with the reconvolution PSF and the
  moments are measured on its output (:mod:`bench.pipeline`). PSNR and SSIM in these rows
  score the method's output on the noshear metacal image (noise sqrt 2 times the stamp's,
  with the correction) against the truth. Peak memory is that of the first (warm-up) call,
  to spare the slow networks a third pass.

Times come from the first 5000 samples (the SNR bins are interleaved along the dataset,
so they have its mix); ``by_snr`` comes from one pass over the **whole** dataset in
chunks, accumulated per SNR bin: PSNR and SSIM against the truth (null for ``fourier``,
which has no image of its own) and m, c from metacal with bands averaged. Each method
runs on its best device (``cuda`` when it and the GPU are available). Methods that
cannot run here are skipped with the reason; times are medians over rounds after a
warm-up call, synchronised with the device (:func:`bench.arrays.synchronize`: a method's
time ends when the device has finished, without copying its images to the host; metacal
returns its per-object results on the host).

Every row uses metacal's noise correction (ngmix's ``fixnoise``, :mod:`bench.metacal.noise`):
a method that returns images also deconvolves the 90-degree-rotated noise field, exactly
ngmix's recipe for a linear method and its natural analogue for a nonlinear one. The fields
are keyed by quad like the dataset's own noise (:func:`bench.pipeline.paired_noise`).
``fourier+metacal[no-correction]`` is exact metacal without it, for comparison.
"""

import time
from dataclasses import replace

import numpy as np
import pytest

from bench.arrays import method_inputs, synchronize, to_numpy
from bench.distributed import SHARD_SIZE, shard_bounds
from bench.memory import measure_peak
from bench.metacal import metacal
from bench.metacal.noise import rotate_in
from bench.metrics import make_metrics
from bench.pipeline import PLACEMENTS, measure_dataset, paired_noise, shear_then_deconvolve
from bench.schema import snr_rows
from methods import get_method, get_method_class, list_methods
from methods.registry import best_device


N_REF = 5000
CHUNK = SHARD_SIZE           # samples per chunk (or Dask shard) of the quality pass: whole quads
_RESULTS: dict = {}          # per method: the by_snr table, shared by both rows


def _inputs(dataset, framework, device, sl):
    """image, psf, noise_sigma of samples *sl* as *framework* arrays on *device*."""
    return method_inputs([dataset[k][sl] for k in ("image", "psf", "noise_sigma")], framework, device)


def _noise(dataset, sl, config):
    """The correction's fields of samples *sl* (N, B, n, n), keyed by quad like the dataset's noise."""
    return paired_noise(dataset["quad_id"][sl], dataset["rotation"][sl], dataset["noise_sigma"][sl],
                        dataset["image"].shape[1:], seed=config.noise_seed, pairing=dataset.spec.noise_pairing)


def _method_or_skip(name, placement=None):
    """(class, device, instance) of *name*, or a skip saying why it cannot run here or in *placement*
    (None: deconvolution alone, which a method made for the second placement only skips too)."""
    cls = get_method_class(name)
    if cls.placements and (placement or PLACEMENTS[0]) not in cls.placements:
        pytest.skip(f"{name} is made for placement {' or '.join(cls.placements)} only")
    device = best_device(cls)
    why = cls.unavailable_reason(device)
    if why:
        pytest.skip(f"{name} unavailable: {why}")
    return cls, device, get_method(name, device=device)


def _chunk_results(dataset, name, cls, device, method, client, config, placement=PLACEMENTS[0]):
    """(slice, metacal output with the metrics' per-object values) for each chunk, in sample order.

    In this process, or as shards on a Dask cluster (``--scheduler`` / ``--dask-workers``)
    reading the dataset's HDF5 cache; both give the same numbers (tests/test_distributed.py).
    """
    if client is not None:
        bounds = shard_bounds(len(dataset), CHUNK)
        import shutil

        from bench.distributed import dataset_params, run_shards
        work = dataset.path.with_suffix(f".{name}.{placement}.shards")
        shutil.rmtree(work, ignore_errors=True)      # never results of an earlier run (other weights)
        from dataclasses import asdict
        kwargs = {k: v for k, v in asdict(config).items() if k != "chunk"}
        paths = run_shards(client, dataset.path, len(dataset), work, shard_size=CHUNK, metacal_kwargs=kwargs,
                           method=name, device=device, quality=True,
                           placement=placement, dataset=dataset_params(dataset.spec))
        for (a, b), path in zip(bounds, paths):
            with np.load(path) as f:
                res = {k: f[k] for k in f.files}
            yield slice(a, b), res
        shutil.rmtree(work, ignore_errors=True)
        return
    runs = method if (cls.produces_image or placement != PLACEMENTS[0]) else None
    yield from measure_dataset(dataset, runs, config=config, device=device, placement=placement, quality=True,
                               chunk=CHUNK)


def _turned(noise):
    """rot90(noise, k=1) of (N, B, n, n) fields: what a method deconvolves for the correction."""
    return np.ascontiguousarray(rotate_in(np, noise))


def _by_snr(dataset, name, cls, device, method, client, config, placement=PLACEMENTS[0]):
    """Every registered metric per SNR bin over the whole dataset (PSNR/SSIM if the method makes
    images; m, c; any metric a user registers, :func:`bench.metrics.register_metric`).

    One pass in chunks of CHUNK samples; the metrics accumulate (update) and aggregate
    at the end (compute). Returns (rows, number of flagged objects).
    """
    metrics = make_metrics(dataset.spec, images=cls.produces_image)
    nflag = 0
    for sl, res in _chunk_results(dataset, name, cls, device, method, client, config, placement):
        labels = {k: dataset[k][sl] for k in ("snr_bin", "quad_id", "shear_sign")}
        for metric in metrics:
            metric.update(res, shapes=res, **labels)
        nflag += int(np.count_nonzero(res["flags"]))
    rows = snr_rows(dataset.spec.snr_bins, [metric.compute() for metric in metrics])
    return rows, nflag


def _keep_gallery(name, dataset, cls, device, method):
    """The method's output on the gallery's stamps (one per SNR bin), for the report."""
    from bench import gallery

    idx = gallery.indices(dataset["snr_bin"])
    b = gallery.band_index(dataset.spec.bands)
    if "observed" not in gallery._STAMPS:
        gallery.add("observed", dataset["image"][idx, b], snr=dataset["snr"][idx])
        gallery.add("truth", dataset["truth"][idx, b])
    if cls.produces_image:
        arrays = method_inputs([dataset[k][idx] for k in ("image", "psf", "noise_sigma")], cls.framework, device)
        gallery.add(name, to_numpy(method.deconvolve(*arrays))[:, b])


def _quality_rows(name, dataset, cls, device, method, client, config):
    if name not in _RESULTS:
        _keep_gallery(name, dataset, cls, device, method)
        rows, nflag = _by_snr(dataset, name, cls, device, method, client, config)
        _RESULTS[name] = dict(by_snr=rows, n_flagged=nflag)
    return _RESULTS[name]


def _common(cls, device, dataset, n, config, placement=PLACEMENTS[0]):
    return dict(framework=cls.framework, device=device, n_samples=n, n_bands=len(dataset.spec.bands),
                dataset=dataset.spec.name, n_samples_quality=len(dataset), kernel=config.kernel,
                placement=placement,
                noise_correction=config.noise_correction, estimator=config.estimator,
                noise_seed=config.noise_seed if config.noise_correction else None)


def _warm_up(run, method):
    """Time the first call (compilation, FFT plans, caches) and the compilation inside it, if reported."""
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0, getattr(method, "compile_s", None)


@pytest.mark.parametrize("name", list_methods())
def test_method(benchmark, dataset, dask_client, metacal_config, name):
    """``deconvolve`` alone, all bands."""
    cls, device, method = _method_or_skip(name)
    n = min(len(dataset), N_REF)
    info = dict(method=name, **_common(cls, device, dataset, n, metacal_config))
    if not cls.produces_image:
        benchmark.pedantic(lambda: None, rounds=1, iterations=1)
        info.update(time_per_5000_s=None, peak_memory_bytes=None, warmup_s=None,
                    note="no stand-alone image: see test_method_in_metacal")
        info.update(_quality_rows(name, dataset, cls, device, method, dask_client, metacal_config))
        benchmark.extra_info.update(info)
        return
    img, psf, sig = _inputs(dataset, cls.framework, device, slice(0, n))

    def run():
        return synchronize(method.deconvolve(img, psf, sig))   # waits for the device, copies nothing

    info["warmup_s"], info["compile_s"] = _warm_up(run, method)
    benchmark.pedantic(run, rounds=1 if info["warmup_s"] > 3 else 3, iterations=1)
    info["time_per_5000_s"] = benchmark.stats.stats.median * N_REF / n
    info["peak_memory_bytes"], info["peak_memory_kind"] = measure_peak(run, cls.framework, device)
    info.update(_quality_rows(name, dataset, cls, device, method, dask_client, metacal_config))
    benchmark.extra_info.update(info)


@pytest.mark.parametrize("name", list_methods())
def test_method_in_metacal(benchmark, dataset, dask_client, metacal_config, name):
    """The full loop: ``deconvolve`` (if the method makes an image) then metacal of every band."""
    cls, device, method = _method_or_skip(name, PLACEMENTS[0])
    n = min(len(dataset), N_REF)
    img, psf, sig = _inputs(dataset, cls.framework, device, slice(0, n))
    noise = _noise(dataset, slice(0, n), metacal_config)
    # the fields are drawn outside the timed call, as a dataset's own noise images would be given
    noise_dev, turned = method_inputs([noise, _turned(noise)], cls.framework, device)
    kw = dict(pixel_scale=dataset.spec.pixel_scale, row=dataset["row"][:n], col=dataset["col"][:n], config=metacal_config)

    def run():
        if not cls.produces_image:
            return metacal(img, psf, noise=noise_dev, **kw)
        # the method deconvolves the image and the rotated field; metacal shears and reconvolves both
        dec, dec_noise = method.deconvolve(img, psf, sig), method.deconvolve(turned, psf, sig)
        return metacal(img, psf, deconvolved=dec, deconvolved_noise=dec_noise, **kw)

    warm, compile_s = _warm_up(run, method)
    benchmark.pedantic(run, rounds=1 if warm > 3 else 3, iterations=1)
    info = dict(method=f"{name}+metacal", base_method=name, **_common(cls, device, dataset, n, metacal_config),
                warmup_s=warm, compile_s=compile_s, time_per_5000_s=benchmark.stats.stats.median * N_REF / n)
    info["peak_memory_bytes"], info["peak_memory_kind"] = measure_peak(run, cls.framework, device)
    info.update(_quality_rows(name, dataset, cls, device, method, dask_client, metacal_config))
    benchmark.extra_info.update(info)


@pytest.mark.parametrize("name", list_methods())
def test_method_shear_first(benchmark, dataset, dask_client, metacal_config, name):
    """Placement "shear-then-deconvolve": exact metacal's five images, each deconvolved, moments on the output."""
    placement = PLACEMENTS[1]
    cls, device, method = _method_or_skip(name, placement)
    n = min(len(dataset), N_REF)
    sl = slice(0, n)
    noise = _noise(dataset, sl, metacal_config)
    args = [dataset[k][sl] for k in ("image", "psf", "noise_sigma")]
    kw = dict(pixel_scale=dataset.spec.pixel_scale, row=dataset["row"][sl], col=dataset["col"][sl],
              config=metacal_config, noise=noise, device=device)

    def run():
        return shear_then_deconvolve(method, *args, **kw)

    t0 = time.perf_counter()
    peak, kind = measure_peak(run, cls.framework, device)     # the warm-up call, timed too
    warm = time.perf_counter() - t0
    benchmark.pedantic(run, rounds=1 if warm > 3 else 3, iterations=1)
    rows, nflag = _by_snr(dataset, name, cls, device, method, dask_client, metacal_config, placement)
    info = dict(method=f"{name}+metacal[{placement}]", base_method=name, **_common(cls, device, dataset, n,
                                                                                   metacal_config, placement),
                warmup_s=warm, compile_s=getattr(method, "compile_s", None),
                time_per_5000_s=benchmark.stats.stats.median * N_REF / n, peak_memory_bytes=peak,
                peak_memory_kind=kind, peak_memory_call="first", by_snr=rows, n_flagged=nflag)
    benchmark.extra_info.update(info)


def test_exact_metacal_uncorrected(benchmark, dataset, dask_client, metacal_config):
    """`fourier` (exact metacal) without the noise correction: the engine's own noise bias, for the
    report's m-vs-SNR comparison with the corrected rows."""
    cls, device, method = _method_or_skip("fourier")
    config = replace(metacal_config, noise_correction=False)
    n = min(len(dataset), N_REF)
    img, psf, _ = _inputs(dataset, cls.framework, device, slice(0, n))
    kw = dict(pixel_scale=dataset.spec.pixel_scale, row=dataset["row"][:n], col=dataset["col"][:n], config=config)
    benchmark.pedantic(lambda: metacal(img, psf, **kw), rounds=3, iterations=1, warmup_rounds=1)
    rows, nflag = _by_snr(dataset, "fourier", cls, device, method, dask_client, config)
    info = dict(method="fourier+metacal[no-correction]", base_method="fourier", **_common(cls, device, dataset, n, config),
                time_per_5000_s=benchmark.stats.stats.median * N_REF / n, peak_memory_bytes=None,
                by_snr=rows, n_flagged=nflag)
    benchmark.extra_info.update(info)


def test_exact_metacal_admom(benchmark, dataset, dask_client, metacal_config):
    """Exact metacal measured by ngmix's adaptive moments (``fourier+metacal[admom]``): the five images
    drawn and measured on pixels. Left out when the session's estimator is admom already."""
    if metacal_config.estimator == "admom":
        pytest.skip("every row of this run is measured with admom (--estimator admom)")
    cls, device, method = _method_or_skip("fourier")
    config = replace(metacal_config, estimator="admom")
    n = min(len(dataset), N_REF)
    img, psf, sig = _inputs(dataset, cls.framework, device, slice(0, n))
    noise = method_inputs([_noise(dataset, slice(0, n), config)], cls.framework, device)[0]
    kw = dict(pixel_scale=dataset.spec.pixel_scale, row=dataset["row"][:n], col=dataset["col"][:n], config=config)

    def run():
        return metacal(img, psf, noise=noise, **kw)

    t0 = time.perf_counter()
    peak, kind = measure_peak(run, cls.framework, device)     # the warm-up call, timed too
    warm = time.perf_counter() - t0
    benchmark.pedantic(run, rounds=1 if warm > 3 else 3, iterations=1)
    rows, nflag = _by_snr(dataset, "fourier", cls, device, method, dask_client, config)
    info = dict(method="fourier+metacal[admom]", base_method="fourier", **_common(cls, device, dataset, n, config),
                warmup_s=warm, time_per_5000_s=benchmark.stats.stats.median * N_REF / n, peak_memory_bytes=peak,
                peak_memory_kind=kind, by_snr=rows, n_flagged=nflag)
    benchmark.extra_info.update(info)


def test_ngmix_metacal(benchmark, dataset):
    """ngmix's own metacal on the same stamps, when ngmix is importable (never required)."""
    ngmix = pytest.importorskip("ngmix", reason="ngmix is not installed (conda-forge only)")
    from ngmix.metacal import get_all_metacal

    k = 8
    b = dataset.spec.bands.index("r") if "r" in dataset.spec.bands else 0
    scale = dataset.spec.pixel_scale

    def run():
        for i in range(k):
            jac = ngmix.DiagonalJacobian(row=dataset["row"][i], col=dataset["col"][i], scale=scale)
            pjac = ngmix.DiagonalJacobian(row=(dataset.spec.stamp_size - 1) / 2,
                                          col=(dataset.spec.stamp_size - 1) / 2, scale=scale)
            psf_obs = ngmix.Observation(dataset["psf"][i, b].astype("f8"), jacobian=pjac)
            obs = ngmix.Observation(dataset["image"][i, b].astype("f8"), jacobian=jac, psf=psf_obs,
                                    weight=np.full((dataset.spec.stamp_size,) * 2,
                                                   1 / dataset["noise_sigma"][i, b] ** 2))
            mobs = get_all_metacal(obs, psf="dilate", step=0.01, fixnoise=False)
            for o in mobs.values():
                ngmix.gaussmom.GaussMom(1.2).go(o)

    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(method="ngmix-metacal", framework="ngmix", device="cpu", n_samples=k,
                                time_per_5000_s=benchmark.stats.stats.median * N_REF / k,
                                peak_memory_bytes=None, by_snr=[])


def test_wiener_pyfftw_vs_scipy(benchmark, dataset):
    """The pyFFTW and scipy.fft back-ends of the same Wiener code, timed in the same run."""
    import statistics

    from bench.devices import module_missing
    from methods.wiener import wiener

    if module_missing("pyfftw"):
        pytest.skip("pyFFTW is not installed")
    n = min(len(dataset), N_REF)
    img, psf, sig = dataset["image"][:n], dataset["psf"][:n], dataset["noise_sigma"][:n]
    wiener(img, psf, sig, backend="scipy")
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        wiener(img, psf, sig, backend="scipy")
        times.append(time.perf_counter() - t0)
    benchmark.pedantic(wiener, args=(img, psf, sig), kwargs={"backend": "pyfftw"}, rounds=5,
                       iterations=1, warmup_rounds=1)
    fftw, sp = benchmark.stats.stats.median, statistics.median(times)
    benchmark.extra_info.update(method="wiener-fftw[pyfftw-vs-scipy]", framework="numpy", device="cpu",
                                n_samples=n, time_per_5000_s=fftw * N_REF / n,
                                scipy_time_per_5000_s=sp * N_REF / n, pyfftw_over_scipy=fftw / sp)
