"""GalSim simulation of the shared g/r/i dataset.

Forward model (exact, by construction)::

    noiseless[b] = fourier.convolve(truth[b], psf[b])
    image[b]     = noiseless[b] + noise_sigma * z[b]

* ``truth`` is the sheared, rotated, offset bulge + disk galaxy before the PSF,
  band-limited to the pixel grid's Nyquist frequency: GalSim evaluates the
  profile in Fourier space and the stamp is its inverse transform. It is what a
  perfect deconvolver returns, and it carries no pixel kernel of its own, so
  metacalibration on these images is not biased by an unsheared pixel.
* ``psf`` is the pixel-convolved PSF drawn by GalSim at the stamp's true centre,
  normalised to unit sum (Moffat or Kolmogorov, its own FWHM and small shear per
  object and band).
* Noise is Gaussian with one sigma per object shared by all bands, set so the
  matched-filter SNR of the noiseless stack, ``sqrt(sum(noiseless**2)) / sigma``,
  equals the drawn target. The +g and -g members of a pair share the noise field.
  With ``noise_pairing = "antithetic"`` the 90-degree pair uses minus the 90-degree
  rotation of the 0-degree pair's field, and the rotated sub-pixel offset: the part of
  the metacal response that is linear in the noise then cancels within the quad.

Quads: sample ``4 q + 2 r + s`` is galaxy q rotated by ``90 r`` degrees and sheared
by ``(+g, 0)`` for s = 0 or ``(-g, 0)`` for s = 1.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from . import fourier
from .errors import BenchValueError
from .spec import DatasetSpec

#: Arrays produced per sample, with their trailing shape ("B" = bands, "n" = stamp side).
ARRAYS = {
    "image": "B n n", "psf": "B n n", "truth": "B n n", "noiseless": "B n n",
    "noise_sigma": "B", "snr": "", "snr_band": "B", "target_snr": "", "row": "", "col": "",
    "g1": "", "g2": "", "quad_id": "", "rotation": "", "shear_sign": "", "snr_bin": "",
    "psf_fwhm": "B",
}


def _bandlimited_stamp(obj, n: int, scale: float) -> np.ndarray:
    """Inverse FT of GalSim's k-space profile on a 2n grid, origin at (n-1)/2, cropped to n x n."""
    m = 2 * n
    dk = 2 * math.pi / (m * scale)
    kim = obj.drawKImage(nx=m, ny=m, scale=dk).array          # k = 0 at index [m/2, m/2]
    k = 2 * math.pi * np.fft.fftfreq(m)                        # rad / pixel, FFT order
    c = (n - 1) / 2.0
    phase = np.exp(-1j * c * (k[:, None] + k[None, :]))        # move the origin to the true centre
    img = np.fft.ifft2(np.fft.ifftshift(kim) * phase).real
    return img[:n, :n]


def _simulate_quads(args) -> dict[str, np.ndarray]:
    spec, q0, q1 = args
    import galsim  # imported in the worker: keeps `import bench` light

    n, scale, B = spec.stamp_size, spec.pixel_scale, len(spec.bands)
    gal_p, psf_p = spec.galaxy, spec.psf
    bins = spec.snr_bins
    quad_bin = spec.quad_bins()
    out = {k: [] for k in ARRAYS}
    for q in range(q0, q1):
        rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(q,)))
        ibin = int(quad_bin[q])
        target = math.exp(rng.uniform(math.log(bins[ibin]), math.log(bins[ibin + 1])))
        hlr_d = rng.uniform(*gal_p["hlr_disk"])
        hlr_b = hlr_d * rng.uniform(*gal_p["bulge_size_ratio"])
        fb = rng.uniform(*gal_p["bulge_fraction"])
        emag = rng.uniform(0, gal_p["ellipticity_max"])
        theta = rng.uniform(0, math.pi)
        e1, e2 = emag * math.cos(2 * theta), emag * math.sin(2 * theta)
        for r in range(2):
            off = rng.uniform(-gal_p["offset_max"], gal_p["offset_max"], size=2)  # (dx, dy) px
            z = rng.standard_normal((B, n, n))                                   # shared by +g/-g
            if r == 0:
                off0, z0 = off, z
            elif spec.noise_pairing == "antithetic":
                # GalSim's rotate() is counter-clockwise in (x, y) with y along rows; so is
                # rot90(k=-1) on [row, col] arrays. Minus the field flips the linear terms.
                off = np.array([-off0[1], off0[0]])
                z = -np.rot90(z0, k=-1, axes=(-2, -1))
            psfs = []
            for s in range(2):
                beta = rng.uniform(*psf_p["beta"])
                fwhm = [rng.uniform(*psf_p["fwhm"][b]) for b in spec.bands]
                pg = rng.uniform(-psf_p["shear_max"], psf_p["shear_max"], size=(B, 2))
                psfs.append((beta, fwhm, pg))
            # the draws above are always made, so the random streams do not depend on sharing
            if psf_p["shared"] == "quad":
                quad_psf = quad_psf if r else psfs[0]
                psfs = [quad_psf, quad_psf]
            elif psf_p["shared"] == "pair":
                psfs = [psfs[0], psfs[0]]
            sigma = None
            for s in range(2):
                g1 = spec.shear if s == 0 else -spec.shear
                beta, fwhm, pg = psfs[s]
                truth = np.empty((B, n, n))
                psf = np.empty((B, n, n))
                for ib, band in enumerate(spec.bands):
                    bulge = galsim.DeVaucouleurs(
                        half_light_radius=hlr_b, flux=fb * gal_p["bulge_color"][band])
                    disk = galsim.Exponential(
                        half_light_radius=hlr_d * gal_p["disk_size_color"][band],
                        flux=(1 - fb) * gal_p["disk_color"][band])
                    gal = (bulge + disk).shear(e1=e1, e2=e2)
                    gal = gal.rotate(90 * r * galsim.degrees).shear(g1=g1, g2=0.0)
                    gal = gal.shift(off[0] * scale, off[1] * scale)
                    truth[ib] = _bandlimited_stamp(gal, n, scale)
                    if psf_p["model"] == "moffat":
                        p = galsim.Moffat(beta=beta, fwhm=fwhm[ib])
                    else:
                        p = galsim.Kolmogorov(fwhm=fwhm[ib])
                    p = p.shear(g1=pg[ib, 0], g2=pg[ib, 1])
                    pim = p.drawImage(nx=n, ny=n, scale=scale).array
                    psf[ib] = pim / pim.sum()
                noiseless = fourier.convolve(truth, psf)
                if sigma is None:  # the pair's noise level is set on its +g member
                    sigma = math.sqrt(float(np.sum(noiseless ** 2))) / target
                c = (n - 1) / 2.0
                out["image"].append(noiseless + sigma * z)
                out["psf"].append(psf)
                out["truth"].append(truth)
                out["noiseless"].append(noiseless)
                out["noise_sigma"].append(np.full(B, sigma))
                out["snr"].append(math.sqrt(float(np.sum(noiseless ** 2))) / sigma)
                out["snr_band"].append(np.sqrt(np.sum(noiseless ** 2, axis=(1, 2))) / sigma)
                out["target_snr"].append(target)
                out["row"].append(c + off[1])
                out["col"].append(c + off[0])
                out["g1"].append(g1)
                out["g2"].append(0.0)
                out["quad_id"].append(q)
                out["rotation"].append(90 * r)
                out["shear_sign"].append(1 if s == 0 else -1)
                out["snr_bin"].append(ibin)
                out["psf_fwhm"].append(np.asarray(fwhm))
    res = {}
    for k, v in out.items():
        arr = np.asarray(v)
        if ARRAYS[k].startswith("B n n"):
            arr = arr.astype(np.float32)
        elif k in ("quad_id", "rotation", "shear_sign", "snr_bin"):
            arr = arr.astype(np.int32)
        res[k] = arr
    return res


def _ignore_interrupts() -> None:
    """Worker initializer: Ctrl-C at a terminal reaches the whole process group; only the parent
    should handle it (and say so in one line), not every worker with a traceback."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def simulate(spec: DatasetSpec, *, workers: int | None = None, progress: bool = True,
             chunk_quads: int = 16, sink=None, start_quad: int = 0) -> dict[str, np.ndarray] | None:
    """Simulate *spec*.

    Parameters
    ----------
    spec : DatasetSpec
        What to simulate.
    workers : int, optional
        Processes to use. [default: all cores, ``os.cpu_count()``]
    progress : bool
        Show a tqdm progress bar. [default: True]
    chunk_quads : int
        Quads per task handed to a worker. [default: 16]
    sink : callable, optional
        Called as ``sink(start_sample, arrays)`` for each finished chunk, in order;
        when given nothing is accumulated and None is returned (used to stream into
        HDF5). [default: None]
    start_quad : int
        First quad to simulate: a resumed build passes the quads it already holds (a multiple
        of *chunk_quads*); samples are numbered as in a whole run. [default: 0]

    Returns
    -------
    dict of str to ndarray or None
        Arrays of :data:`ARRAYS`, the first axis running over ``spec.n_samples``.
        The result depends only on ``spec`` and the GalSim version, not on *workers*.
    """
    from tqdm.auto import tqdm

    workers = workers or os.cpu_count() or 1
    if start_quad % chunk_quads and start_quad != spec.n_quads:
        raise BenchValueError(f"start_quad must be a multiple of chunk_quads ({chunk_quads}), got {start_quad}")
    tasks = [(spec, q, min(q + chunk_quads, spec.n_quads))
             for q in range(start_quad, spec.n_quads, chunk_quads)]
    parts = []
    bar = tqdm(total=spec.n_samples, initial=4 * start_quad, desc=f"simulating {spec.name}", unit="sample",
               disable=not progress)
    start = 4 * start_quad

    def handle(res):
        nonlocal start
        if sink is None:
            parts.append(res)
        else:
            sink(start, res)
        start += len(res["snr"])
        bar.update(len(res["snr"]))

    if workers == 1:
        for t in tasks:
            handle(_simulate_quads(t))
    else:
        import multiprocessing as mp
        # workers start from a clean server process, not a fork of this one: a fork copies no
        # threads, so locks held by JAX's, torch's or FFTW's threads here could deadlock it
        methods = mp.get_all_start_methods()
        ctx = mp.get_context("forkserver" if "forkserver" in methods else None)
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_ignore_interrupts)
        try:
            for res in pool.map(_simulate_quads, tasks):  # map keeps the order
                handle(res)
        except BaseException:
            # Ctrl-C or a failure: drop the queued tasks instead of waiting for all of them
            pool.shutdown(wait=False, cancel_futures=True)
            bar.close()
            raise
        pool.shutdown()
    bar.close()
    if sink is not None:
        return None
    return {k: np.concatenate([p[k] for p in parts]) for k in ARRAYS}
