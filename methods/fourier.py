"""``fourier``: exact Fourier deconvolution, the reference method of metacal.

Inside :mod:`bench.metacal` this method is not run as an image-to-image step:
metacal divides the image's transform by the PSF's at the sheared wavevectors
exactly (see that module). As a stand-alone deconvolver it is the unregularised
inverse filter, band-limited to where the PSF transform exceeds ``floor`` of its
peak, so its images are noise-dominated and the benchmark reports no PSNR/SSIM.
"""

from __future__ import annotations

import numpy as np

from bench.errors import BenchValueError
from bench.fourier import centered_psf_ft, padded_size

from .registry import Method, register


@register
class FourierDeconvolution(Method):
    name = "fourier"
    framework = "numpy"
    devices = ("cpu",)
    produces_image = False
    description = "exact Fourier division (metacal reference; inverse filter as an image)"
    #: stamps transformed at a time (memory about 1 MiB per stamp at n = 48)
    chunk_stamps = 512

    def __init__(self, floor: float = 1e-3):
        if not (np.isfinite(floor) and 0 < floor < 1):
            raise BenchValueError(f"floor must be in (0, 1), got {floor!r}")
        self.floor = float(floor)

    def deconvolve(self, image, psf, noise_sigma=None):
        image = np.asarray(image)
        psf = np.asarray(psf)
        n = image.shape[-1]
        m = padded_size(n)
        flat_image = image.reshape(-1, n, n)
        flat_psf = np.broadcast_to(psf, image.shape[:-2] + psf.shape[-2:]).reshape(-1, *psf.shape[-2:])
        out = np.empty(flat_image.shape, dtype=image.dtype)
        # float64 transforms on the padded grid take ~40 times the stamps' float32 size: in
        # chunks, the second placement's 5 x 3 x 5000 stamps would otherwise need several GiB
        for lo in range(0, len(flat_image), self.chunk_stamps):
            sl = slice(lo, lo + self.chunk_stamps)
            out[sl] = self._inverse_filter(flat_image[sl], flat_psf[sl], n, m)
        return out.reshape(image.shape)

    def _inverse_filter(self, image, psf, n, m):
        H = centered_psf_ft(psf.astype(np.float64), m)
        Y = np.fft.rfft2(image.astype(np.float64), s=(m, m))
        mag = np.abs(H)
        keep = mag > self.floor * mag.max(axis=(-2, -1), keepdims=True)
        X = np.where(keep, Y / np.where(keep, H, 1.0), 0.0)
        return np.fft.irfft2(X, s=(m, m))[..., :n, :n]
