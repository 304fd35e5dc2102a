"""Fourier-space helpers shared by the simulation, the methods and metacal.

Convention (the same as GalSim's ``InterpolatedImage`` and ngmix): a stamp of
size n has its origin at the *true centre* ``c = (n - 1) / 2`` (23.5 for 48),
which for even n falls between pixels. A PSF image is therefore never exactly
on a pixel, and a discrete convolution with it needs the half-pixel phase that
:func:`centered_psf_ft` applies.
"""

from __future__ import annotations

import numpy as np
import scipy.fft as sfft


def padded_size(n: int) -> int:
    """FFT size used for linear (not circular) convolution of two n x n stamps."""
    return sfft.next_fast_len(2 * n)


def centered_psf_ft(psf: np.ndarray, m: int) -> np.ndarray:
    """rFFT of *psf* (..., n, n) on an m x m grid, phase-referenced to the stamp's true centre.

    Multiplying an image's rFFT by this and transforming back convolves the image
    with the PSF centred on ``(n - 1) / 2``, without the half-pixel shift that
    placing an even-sized kernel on the grid would otherwise introduce.
    """
    return sfft.rfft2(psf, s=(m, m)) * centring_phase(psf.shape[-1], m)


def centring_phase(n: int, m: int) -> np.ndarray:
    """(m, m // 2 + 1) phase that refers the rFFT of an n x n kernel on an m x m grid to (n - 1) / 2."""
    c = (n - 1) / 2.0
    ky = 2 * np.pi * sfft.fftfreq(m)
    kx = 2 * np.pi * sfft.rfftfreq(m)
    return np.exp(1j * c * (ky[:, None] + kx[None, :]))


def convolve(image: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Linear convolution of *image* with a centred *psf*, both (..., n, n); returns (..., n, n).

    This is the forward model of the simulated data: the noiseless observation is
    ``convolve(truth, psf)`` exactly.
    """
    n = image.shape[-1]
    m = padded_size(n)
    out = sfft.irfft2(sfft.rfft2(image, s=(m, m)) * centered_psf_ft(psf, m), s=(m, m))
    return out[..., :n, :n].astype(np.result_type(image.dtype, np.float32), copy=False)


def lanczos_ft(k, n: int = 15):
    """Fourier transform of the Lanczos-n kernel (GalSim's formula), k in rad/pixel."""
    from scipy.special import sici

    u = np.asarray(k) / (2 * np.pi)
    vp, vm = n * (2 * u + 1), n * (2 * u - 1)

    def si(z):
        return sici(np.pi * z)[0]

    return ((vm - 1) * si(vm - 1) - (vm + 1) * si(vm + 1)
            - (vp - 1) * si(vp - 1) + (vp + 1) * si(vp + 1)) / (2 * np.pi)


def pixel_ft(k):
    """Fourier transform of a unit pixel, sin(k/2) / (k/2), k in rad/pixel."""
    return np.sinc(np.asarray(k) / (2 * np.pi))
