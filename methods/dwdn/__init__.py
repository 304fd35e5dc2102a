"""``dwdn``: Deep Wiener Deconvolution (Dong et al. 2020) with per-band Wiener modules (Wang et al.).

The network is in :mod:`methods.dwdn.model`, training in :mod:`methods.train.dwdn`
(``python -m methods.train.dwdn``), checkpoints in :mod:`methods.dwdn.checkpoint`. The
shipped weights (``weights/dwdn-small.safetensors``, with its model card) load by default;
``dwdn-metacal`` loads the same network fine-tuned on metacal's images
(``weights/dwdn-small-metacal.safetensors``), for the shear-then-deconvolve placement only.
torch is imported only when the method is built.
"""

from __future__ import annotations

import contextlib

from bench.errors import BenchValueError

from ..registry import Method, check_network_batch, check_turns, register, turn_average

DTYPES = ("float32", "bfloat16")


@register
class DWDNMethod(Method):
    name = "dwdn"
    framework = "torch"
    devices = ("cpu", "cuda")
    requires = ("torch", "safetensors")
    description = "Deep Wiener Deconvolution, per-band feature-space Wiener + U-Net (shipped small weights)"

    #: quarter turns the output is averaged over by default (:func:`methods.registry.turn_average`)
    default_turns = 1

    def __init__(self, checkpoint=None, *, dtype: str = "float32", batch: int = 256, turns: int | None = None):
        """
        Parameters
        ----------
        checkpoint : path, optional
            A checkpoint written by ``python -m methods.train.dwdn``. [default: the shipped weights]
        dtype : {"float32", "bfloat16"}
            Inference precision; bfloat16 autocast is for GPUs. [default: "float32"]
        batch : int
            Objects per forward pass. [default: 256]
        turns : {1, 2, 4}, optional
            Average the output over this many quarter turns of the input, which cancels a
            constant spin-2 artefact (:func:`methods.registry.turn_average`); costs as many
            passes. [default: 1; 2 for ``dwdn-metacal``]
        """
        from .checkpoint import load

        if dtype not in DTYPES:
            from bench.errors import unknown_name
            raise unknown_name("dtype", dtype, DTYPES)
        if not (isinstance(batch, int) and batch >= 1):
            raise BenchValueError(f"batch must be a positive integer, got {batch!r}")
        self.checkpoint = checkpoint or self.default_checkpoint()
        self.model, self.state, _ = load(self.checkpoint)
        self.model.eval()
        self.dtype, self.batch = dtype, batch
        self.turns = check_turns(self.default_turns if turns is None else turns)

    @classmethod
    def default_checkpoint(cls):
        """The shipped weights this method loads without a *checkpoint*."""
        from .checkpoint import DEFAULT_CHECKPOINT
        return DEFAULT_CHECKPOINT

    def deconvolve(self, image, psf, noise_sigma):
        import torch

        cfg = self.model.cfg
        check_network_batch(self.name, self.checkpoint, cfg.bands, cfg.stamp_size, image, psf, noise_sigma,
                            xp=_torch_xp())
        dev = image.device
        if next(self.model.parameters()).device != dev:
            self.model.to(dev)
        autocast = (torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
                    if self.dtype == "bfloat16" else contextlib.nullcontext())

        def run(img, p, sig):
            out = torch.empty_like(img)
            for s in range(0, img.shape[0], self.batch):
                sl = slice(s, s + self.batch)
                out[sl] = self.model(img[sl].float(), p[sl].float(), sig[sl].float()).to(img.dtype)
            return out

        with torch.inference_mode(), autocast:
            return turn_average(run, image, psf, noise_sigma, turns=self.turns,
                                rot90=lambda a, k: torch.rot90(a, k, dims=(-2, -1)))


@register
class DWDNMetacalMethod(DWDNMethod):
    name = "dwdn-metacal"
    placements = ("shear-then-deconvolve",)
    default_turns = 2
    description = ("dwdn fine-tuned on metacal's images of the train set, output averaged over 0 and 90 degrees "
                   "(shear-then-deconvolve placement only)")

    @classmethod
    def default_checkpoint(cls):
        from .checkpoint import METACAL_CHECKPOINT
        return METACAL_CHECKPOINT


def _torch_xp():
    from array_api_compat import torch as xp
    return xp
