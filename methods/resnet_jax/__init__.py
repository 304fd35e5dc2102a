"""``resnet-jax``: a residual encoder-decoder with a separate PSF encoder (ShearNet's DeconvNet design).

The network is in :mod:`methods.resnet_jax.model` (Flax NNX), training in
:mod:`methods.resnet_jax.train` (``python -m methods.resnet_jax.train``), checkpoints in
:mod:`methods.resnet_jax.checkpoint`. The shipped weights
(``weights/resnet-jax-small.safetensors``, with its model card) load by default. JAX is
imported only when the method is built; ``bench`` sets ``XLA_PYTHON_CLIENT_PREALLOCATE=false``
first, so JAX does not claim most of a GPU and starve the other frameworks.
"""

from __future__ import annotations

import time

from bench.devices import module_missing
from bench.errors import BenchValueError

from ..registry import Method, check_network_batch, register

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

    def __init__(self, checkpoint=None, *, batch: int = 256):
        """
        Parameters
        ----------
        checkpoint : path, optional
            A checkpoint written by ``python -m methods.resnet_jax.train``. [default: the shipped weights]
        batch : int
            Objects per compiled forward pass; the last chunk is padded to it, so one
            compilation serves every batch size. [default: 256]
        """
        from flax import nnx

        from .checkpoint import DEFAULT_CHECKPOINT, load
        from .model import make_predict

        if not (isinstance(batch, int) and batch >= 1):
            raise BenchValueError(f"batch must be a positive integer, got {batch!r}")
        self.checkpoint = checkpoint or DEFAULT_CHECKPOINT
        model, self.state, _ = load(self.checkpoint)
        self.cfg = model.cfg
        graphdef, self._params = nnx.split(model, nnx.Param)
        self._predict = make_predict(graphdef)
        self._compiled: dict = {}        # (chunk shape, dtype, device) -> compiled executable
        self._device_params: dict = {}
        self.batch = batch
        #: seconds spent compiling (tracing, lowering, XLA) in the last deconvolve call
        self.compile_s = 0.0

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
        outs = []
        for start in range(0, N, chunk):
            xs, ps, ss = x[start:start + chunk], p[start:start + chunk], s[start:start + chunk]
            pad = chunk - xs.shape[0]
            if pad:    # repeat the last object: a stamp of zeros would divide by a zero peak
                xs, ps, ss = (jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) for a in (xs, ps, ss))
            y = run(params, xs, ps, ss)
            outs.append(y[:chunk - pad] if pad else y)
        return jnp.concatenate(outs).astype(image.dtype)
