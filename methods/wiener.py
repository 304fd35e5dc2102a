"""Wiener deconvolution, batched, each object with its own PSF per band.

``X(k) = conj(H) Y / (|H|^2 + strength * N(k) / S(k))`` on the stamp's own n x n
grid (circular convolution; a galaxy whose light reaches the stamp edge wraps
around, which is negligible for the 48 x 48 stamps here and keeps the transforms
at the stamp size). H is the PSF transfer function phase-referenced to the
stamp's true centre; N = n^2 sigma^2 is the white-noise power of the unnormalised
DFT; S(k) is the signal power, estimated per stamp and band from the observation
itself: the periodogram |Y|^2 averaged over rings of integer |k| (in DFT units),
minus N, floored at ``1e-3 N``. So the filter adapts to each object's size and
SNR, and ``strength`` is the only tunable. Its default, 0.5, was chosen on the
``train`` split with ``python -m methods.train.tune wiener-fftw`` (mean PSNR against the
truth), never on the test data.

``wiener-fftw`` runs on pyFFTW (scipy.fft when pyFFTW is missing) and
``wiener-cupy`` on ``cupyx.scipy.fft``: the same :func:`wiener` on two back-ends.
``regulariser="laplacian"`` replaces N/S by scikit-image's default, ``|Laplacian|^2``,
for a like-for-like check against ``skimage.restoration.wiener``.

References
----------
Wiener 1949, *Extrapolation, Interpolation and Smoothing of Stationary Time Series*;
scikit-image ``restoration.wiener`` (Orieux et al. 2010).
"""

from __future__ import annotations

import math

import numpy as np

from bench.devices import module_missing
from bench.errors import BenchValueError, unknown_name

from .fft import centred_transfer, default_cpu_backend, prepare_batch
from .registry import Method, register

REGULARISERS = ("nsr", "laplacian")
SIGNAL_FLOOR = 1e-3


def _rings(n: int):
    """Ring index (integer |k| in DFT units) of each rfft-grid pixel, the sort order that
    groups rings, the start of each ring in that order, and the ring sizes."""
    ky = np.fft.fftfreq(n) * n
    kx = np.fft.rfftfreq(n) * n
    ring = np.rint(np.hypot(ky[:, None], kx[None, :])).astype(np.intp).ravel()
    order = np.argsort(ring, kind="stable")
    counts = np.bincount(ring)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return ring, order, starts, counts


def _ring_average(power, rings, xp):
    """Mean of power (M, npix) over each ring, broadcast back to (M, npix).

    Sorted segments and ``add.reduceat`` rather than a matrix product: BLAS would start its
    own threads inside each worker thread and oversubscribe the cores.
    """
    ring, order, starts, counts = rings
    if xp is np:
        sums = np.add.reduceat(power[:, order], starts, axis=1)
    else:   # GPU: a one-hot matrix product
        onehot = (ring[:, None] == xp.arange(len(counts))[None, :]).astype(power.dtype)
        sums = power @ onehot
    return (sums / counts.astype(power.dtype))[:, ring]


def laplacian_transfer(n: int) -> np.ndarray:
    """rFFT of scikit-image's default regulariser (the 2-D Laplacian) on the n x n grid."""
    lap = np.zeros((n, n))
    lap[0, 0] = 4.0
    lap[0, 1] = lap[1, 0] = lap[0, -1] = lap[-1, 0] = -1.0
    return np.fft.rfft2(lap)


def _check_settings(strength, regulariser):
    if not (isinstance(strength, (int, float)) and math.isfinite(strength) and strength > 0):
        raise BenchValueError(f"strength must be a finite number > 0, got {strength!r}")
    if regulariser not in REGULARISERS:
        raise unknown_name("regulariser", regulariser, REGULARISERS)


def wiener(image, psf, noise_sigma, *, strength: float = 0.5, regulariser: str = "nsr",
           backend: str | None = None, chunk: int = 256):
    """Wiener deconvolution of a batch.

    Parameters
    ----------
    image : array, shape (N, B, n, n)
        Observed stamps (NumPy for CPU back-ends, CuPy for ``cupy``); dtype is preserved.
    psf : array, shape (N, B, n, n)
        PSF images centred on the stamp's true centre (unit sum).
    noise_sigma : array, shape (N, B)
        Per-pixel noise standard deviation.
    strength : float
        Multiplies the regulariser. [default: 0.5]
    regulariser : {"nsr", "laplacian"}
        N/S from the noise and the ring-averaged periodogram, or scikit-image's Laplacian
        (then ``strength`` is skimage's ``balance``). [default: "nsr"]
    backend : {"pyfftw", "scipy", "cupy"}, optional
        FFT back-end. [default: pyfftw if installed, else scipy]
    chunk : int
        Stamps per unit of work (CPU back-ends spread them over threads). [default: 256]

    Returns
    -------
    array, shape (N, B, n, n)
        The deconvolved stamps, same array module and dtype as *image*.
    """
    _check_settings(strength, regulariser)
    be, xp, (N, B, n), dtype, img, ps, sig = prepare_batch(image, psf, noise_sigma, backend)
    sig2 = sig ** 2 * (n * n)
    if regulariser == "nsr":
        rings = tuple(xp.asarray(a) for a in _rings(n))
    else:
        lap2 = xp.asarray((np.abs(laplacian_transfer(n)) ** 2).astype(dtype))
    out = xp.empty_like(img)

    def run(sl, fft):
        Y = fft.rfft2(img[sl])
        H = centred_transfer(ps[sl], fft)
        H2 = H.real ** 2 + H.imag ** 2
        if regulariser == "nsr":
            noise = sig2[sl][:, None]
            power = (Y.real ** 2 + Y.imag ** 2).reshape(Y.shape[0], -1)
            signal = xp.maximum(_ring_average(power, rings, xp) - noise, SIGNAL_FLOOR * noise)
            H2 += (strength * noise / signal).reshape(H2.shape)
        else:
            H2 += strength * lap2
        H = xp.conj(H, out=H)
        H *= Y
        H *= 1 / H2
        out[sl] = fft.irfft2(H, n)

    be.map_chunks(N * B, chunk, run)
    return out.reshape(N, B, n, n)


class _Wiener(Method):
    description = "Wiener filter, N/S from the noise and the ring-averaged periodogram"

    def __init__(self, strength: float = 0.5, regulariser: str = "nsr"):
        _check_settings(strength, regulariser)
        self.strength = float(strength)
        self.regulariser = regulariser

    def deconvolve(self, image, psf, noise_sigma):
        return wiener(image, psf, noise_sigma, strength=self.strength, regulariser=self.regulariser,
                      backend=self.fft_backend())


@register
class WienerFFTW(_Wiener):
    name = "wiener-fftw"
    framework = "numpy"
    devices = ("cpu",)

    @staticmethod
    def fft_backend():
        return default_cpu_backend()

    description = ("Wiener filter on pyFFTW (scipy.fft if pyFFTW is missing: "
                   + ("pyFFTW missing here" if module_missing("pyfftw") else "pyFFTW here") + ")")


@register
class WienerCupy(_Wiener):
    name = "wiener-cupy"
    framework = "cupy"
    devices = ("cuda",)
    requires = ("cupy",)
    description = "the wiener-fftw code on cupyx.scipy.fft (GPU)"

    @staticmethod
    def fft_backend():
        return "cupy"
