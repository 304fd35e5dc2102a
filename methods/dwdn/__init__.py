"""``dwdn``: Deep Wiener Deconvolution (Dong et al. 2020) with per-band Wiener modules (Wang et al.).

The network is in :mod:`methods.dwdn.model`, training in :mod:`methods.dwdn.train`
(``python -m methods.dwdn.train``), checkpoints in :mod:`methods.dwdn.checkpoint`. The
shipped weights (``weights/dwdn-small.safetensors``, with its model card) load by default.
torch is imported only when the method is built.
"""

from __future__ import annotations

import contextlib

from bench.errors import BenchValueError

from ..registry import Method, check_network_batch, register

DTYPES = ("float32", "bfloat16")


@register
class DWDNMethod(Method):
    name = "dwdn"
    framework = "torch"
    devices = ("cpu", "cuda")
    requires = ("torch", "safetensors")
    description = "Deep Wiener Deconvolution, per-band feature-space Wiener + U-Net (shipped small weights)"

    def __init__(self, checkpoint=None, *, dtype: str = "float32", batch: int = 256):
        """
        Parameters
        ----------
        checkpoint : path, optional
            A checkpoint written by ``python -m methods.dwdn.train``. [default: the shipped weights]
        dtype : {"float32", "bfloat16"}
            Inference precision; bfloat16 autocast is for GPUs. [default: "float32"]
        batch : int
            Objects per forward pass. [default: 256]
        """
        from .checkpoint import DEFAULT_CHECKPOINT, load

        if dtype not in DTYPES:
            from bench.errors import unknown_name
            raise unknown_name("dtype", dtype, DTYPES)
        if not (isinstance(batch, int) and batch >= 1):
            raise BenchValueError(f"batch must be a positive integer, got {batch!r}")
        self.checkpoint = checkpoint or DEFAULT_CHECKPOINT
        self.model, self.state, _ = load(self.checkpoint)
        self.model.eval()
        self.dtype, self.batch = dtype, batch

    def deconvolve(self, image, psf, noise_sigma):
        import torch

        cfg = self.model.cfg
        check_network_batch(self.name, self.checkpoint, cfg.bands, cfg.stamp_size, image, psf, noise_sigma,
                            xp=_torch_xp())
        dev = image.device
        if next(self.model.parameters()).device != dev:
            self.model.to(dev)
        out = torch.empty_like(image)
        autocast = (torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
                    if self.dtype == "bfloat16" else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            for s in range(0, image.shape[0], self.batch):
                sl = slice(s, s + self.batch)
                y = self.model(image[sl].float(), psf[sl].float(), noise_sigma[sl].float())
                out[sl] = y.to(image.dtype)
        return out


def _torch_xp():
    from array_api_compat import torch as xp
    return xp
