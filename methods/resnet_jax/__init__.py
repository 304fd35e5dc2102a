"""``resnet-jax``: a residual encoder-decoder with a separate PSF encoder (ShearNet's DeconvNet design).

The network is in :mod:`methods.resnet_jax.model` (Flax NNX), training in
:mod:`methods.train.resnet_jax` (``python -m methods.train.resnet_jax``), checkpoints in
:mod:`methods.resnet_jax.checkpoint`. The shipped weights
(``weights/resnet-jax-small.safetensors``, with its model card) load by default;
``resnet-jax-metacal`` loads them fine-tuned on metacal's images, for the
shear-then-deconvolve placement only. JAX is
imported only when the method is built; ``bench`` sets ``XLA_PYTHON_CLIENT_PREALLOCATE=false``
first, so JAX does not claim most of a GPU and starve the other frameworks.
"""

from __future__ import annotations

import time

from bench.devices import module_missing
from bench.errors import BenchValueError

from ..registry import Method, check_network_batch, check_turns, register, turn_average

#: JAX's CUDA plugins (any one will do); found without importing JAX.
CUDA_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin")


@register
class ResNetJAXMethod(Method):
    name = "resnet-jax"
    framework = "jax"
    devices = ("cpu", "cuda")
    requires = ("jax", "flax", "safetensors")
    description = "residual encoder-decoder with a PSF encoder, Flax NNX (shipped small weights)"

    @classmethod
    def unavailable_reason(cls, device: str | None = None) -> str:
        why = super().unavailable_reason(device)
        if why or device != "cuda":
            return why
        if all(module_missing(m) for m in CUDA_PLUGINS):
            return "JAX has no CUDA plugin here (pip install 'jax[cuda12]')"
        return ""

    #: quarter turns the output is averaged over by default (:func:`methods.registry.turn_average`)
    default_turns = 1

    def __init__(self, checkpoint=None, *, batch: int = 256, turns: int | None = None):
        """
        Parameters
        ----------
        checkpoint : path, optional
            A checkpoint written by ``python -m methods.train.resnet_jax``. [default: the shipped weights]
        batch : int
            Objects per compiled forward pass; the last chunk is padded to it, so one
            compilation serves every batch size. [default: 256]
        turns : {1, 2, 4}, optional
            Average the output over this many quarter turns of the input
            (:func:`methods.registry.turn_average`). [default: 1; 2 for ``resnet-jax-metacal``]
        """
        from flax import nnx

        from .checkpoint import load
        from .model import make_predict

        if not (isinstance(batch, int) and batch >= 1):
            raise BenchValueError(f"batch must be a positive integer, got {batch!r}")
        self.checkpoint = checkpoint or self.default_checkpoint()
        model, self.state, _ = load(self.checkpoint)
        self.cfg = model.cfg
        graphdef, self._params = nnx.split(model, nnx.Param)
        self._predict = make_predict(graphdef)
        self._compiled: dict = {}        # (chunk shape, dtype, device) -> compiled executable
        self._device_params: dict = {}
        self.batch = batch
        self.turns = check_turns(self.default_turns if turns is None else turns)
        #: seconds spent compiling (tracing, lowering, XLA) in the last deconvolve call
        self.compile_s = 0.0

    @classmethod
    def default_checkpoint(cls):
        """The shipped weights this method loads without a *checkpoint*."""
        from .checkpoint import DEFAULT_CHECKPOINT
        return DEFAULT_CHECKPOINT

    def _executable(self, chunk_shape, sig_shape, dtype, device):
        import jax

        key = (chunk_shape, str(dtype), str(device))
        if key not in self._compiled:
            t0 = time.perf_counter()
            params = self._params_on(device)
            spec = jax.ShapeDtypeStruct(chunk_shape, dtype)
            self._compiled[key] = self._predict.lower(params, spec, spec,
                                                      jax.ShapeDtypeStruct(sig_shape, dtype)).compile()
            self.compile_s += time.perf_counter() - t0
        return self._compiled[key]

    def _params_on(self, device):
        import jax
        if str(device) not in self._device_params:
            self._device_params[str(device)] = jax.device_put(self._params, device)
        return self._device_params[str(device)]

    def deconvolve(self, image, psf, noise_sigma):
        import jax.numpy as jnp

        cfg = self.cfg
        check_network_batch(self.name, self.checkpoint, cfg.bands, cfg.stamp_size, image, psf, noise_sigma, xp=jnp)
        self.compile_s = 0.0
        device = next(iter(image.devices()))
        params = self._params_on(device)
        x, p, s = (jnp.asarray(a, dtype=jnp.float32) for a in (image, psf, noise_sigma))
        N = x.shape[0]
        chunk = min(self.batch, N)
        run = self._executable((chunk,) + x.shape[1:], (chunk,) + s.shape[1:], jnp.float32, device)

        def forward(x, p, s):
            outs = []
            for start in range(0, N, chunk):
                xs, ps, ss = x[start:start + chunk], p[start:start + chunk], s[start:start + chunk]
                pad = chunk - xs.shape[0]
                if pad:    # repeat the last object: a stamp of zeros would divide by a zero peak
                    xs, ps, ss = (jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) for a in (xs, ps, ss))
                y = run(params, xs, ps, ss)
                outs.append(y[:chunk - pad] if pad else y)
            return jnp.concatenate(outs)

        out = turn_average(forward, x, p, s, turns=self.turns, rot90=lambda a, k: jnp.rot90(a, k, axes=(-2, -1)))
        return out.astype(image.dtype)


@register
class ResNetJAXMetacalMethod(ResNetJAXMethod):
    name = "resnet-jax-metacal"
    placements = ("shear-then-deconvolve",)
    default_turns = 2
    description = ("resnet-jax fine-tuned on metacal's images of the train set, output averaged over 0 and 90 "
                   "degrees (shear-then-deconvolve placement only)")

    @classmethod
    def default_checkpoint(cls):
        from .checkpoint import METACAL_CHECKPOINT
        return METACAL_CHECKPOINT
