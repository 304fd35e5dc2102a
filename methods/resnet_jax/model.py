"""The residual encoder-decoder with a PSF encoder (ShearNet's DeconvNet design), in Flax NNX.

Layout (NHWC inside; the harness's (N, B, n, n) outside):

* **Galaxy encoder.** The observed bands, each normalised by its stamp's peak, plus one
  constant channel per band holding that band's normalised noise sigma (so the network
  knows how noisy each stamp is), go through a convolution and ``blocks`` residual
  blocks per scale, with stride-2 convolutions between ``len(widths)`` scales.
* **PSF encoder.** A separate, smaller stack of the same shape reads the PSF images
  (each band scaled to unit peak) and gives one feature map per scale.
* **Conditioning by concatenation.** At the bottleneck and at every decoder scale the
  PSF features are concatenated with the galaxy features, then fused by a 1x1
  convolution. Concatenation rather than FiLM: a PSF's anisotropy and orientation are
  spatial, and both stamps are centred on the same pixel, so its feature maps line up
  with the galaxy's; FiLM would have to squeeze them into per-channel scales and shifts
  of a pooled vector.
* **Decoder.** Nearest-neighbour upsampling and a convolution (no checkerboard of
  transposed convolutions), the encoder skip of that scale, the PSF features, residual
  blocks; a final convolution to one image per band is **added to the normalised input**
  (the global residual), and the per-stamp scale is undone exactly.

References
----------
ShearNet (DeconvNet: residual encoder-decoder with a PSF encoder); He et al. 2016
(residual blocks); Ronneberger et al. 2015 (encoder-decoder with skips).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
from flax import nnx


@dataclass
class ResNetConfig:
    """Network configuration. ``full`` has about 7 M parameters; ``small`` trains on two CPU cores
    in minutes and is what ships."""

    bands: int = 3
    stamp_size: int = 48
    widths: tuple = (64, 128, 256)
    psf_widths: tuple = (32, 64, 128)
    blocks: int = 2
    kernel: int = 3

    @classmethod
    def preset(cls, name: str, **kw):
        presets = {
            "full": {},
            "small": dict(widths=(16, 32, 64), psf_widths=(8, 16, 32), blocks=1),
        }
        if name not in presets:
            from bench.errors import unknown_name
            raise unknown_name("resnet-jax preset", name, presets)
        return cls(**{**presets[name], **kw})

    def __post_init__(self):
        from bench.errors import BenchValueError
        self.widths, self.psf_widths = tuple(self.widths), tuple(self.psf_widths)
        if len(self.widths) != len(self.psf_widths) or not self.widths:
            raise BenchValueError(f"widths {self.widths} and psf_widths {self.psf_widths} need the same, "
                                  "non-zero number of scales")
        if self.stamp_size % 2 ** (len(self.widths) - 1):
            raise BenchValueError(f"stamp_size {self.stamp_size} must be divisible by "
                                  f"2**{len(self.widths) - 1} for {len(self.widths)} scales")

    def to_dict(self):
        d = asdict(self)
        d["widths"], d["psf_widths"] = list(self.widths), list(self.psf_widths)
        return d


def _conv(cin, cout, k, rngs, stride=1):
    return nnx.Conv(cin, cout, kernel_size=(k, k), strides=(stride, stride), padding="SAME", rngs=rngs)


class ResBlock(nnx.Module):
    def __init__(self, ch: int, k: int, rngs: nnx.Rngs):
        self.c1 = _conv(ch, ch, k, rngs)
        self.c2 = _conv(ch, ch, k, rngs)

    def __call__(self, x):
        return x + self.c2(jax.nn.relu(self.c1(x)))


class Stage(nnx.Module):
    """An optional stride-2 entry convolution, then residual blocks."""

    def __init__(self, cin: int, cout: int, k: int, blocks: int, rngs: nnx.Rngs, *, down: bool):
        self.entry = _conv(cin, cout, k, rngs, stride=2 if down else 1)
        self.blocks = nnx.List([ResBlock(cout, k, rngs) for _ in range(blocks)])

    def __call__(self, x):
        x = self.entry(x)
        for b in self.blocks:
            x = b(x)
        return x


class ResNetDeconv(nnx.Module):
    def __init__(self, cfg: ResNetConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        k, B, W, P = cfg.kernel, cfg.bands, cfg.widths, cfg.psf_widths
        S = len(W)
        self.enc = nnx.List([Stage(2 * B if s == 0 else W[s - 1], W[s], k, cfg.blocks, rngs, down=s > 0)
                             for s in range(S)])
        self.psf_enc = nnx.List([Stage(B if s == 0 else P[s - 1], P[s], k, cfg.blocks, rngs, down=s > 0)
                                 for s in range(S)])
        self.fuse_bottom = _conv(W[-1] + P[-1], W[-1], 1, rngs)
        self.up = nnx.List([_conv(W[s + 1], W[s], k, rngs) for s in range(S - 1)])
        self.fuse = nnx.List([_conv(2 * W[s] + P[s], W[s], 1, rngs) for s in range(S - 1)])
        self.dec = nnx.List([nnx.List([ResBlock(W[s], k, rngs) for _ in range(cfg.blocks)])
                             for s in range(S - 1)])
        self.out = _conv(W[0], B, k, rngs)

    def __call__(self, image, psf, noise_sigma):
        """image, psf (N, B, n, n); noise_sigma (N, B). Returns (N, B, n, n) in the input's units.

        Also returns nothing else: training calls :meth:`normalised` to get the prediction
        and the scale separately.
        """
        y, norm = self.normalised(image, psf, noise_sigma)
        return y * norm

    def normalised(self, image, psf, noise_sigma):
        """(prediction / scale, scale): the prediction in units of each stamp's peak, and that peak."""
        N, B, n, _ = image.shape
        norm = jnp.maximum(jnp.max(jnp.abs(image), axis=(-2, -1), keepdims=True), 1e-12)
        x = image / norm
        sig = jnp.broadcast_to((noise_sigma[..., None, None] / norm), x.shape)
        h = jnp.concatenate([x, sig], axis=1).transpose(0, 2, 3, 1)              # NHWC
        pn = psf / jnp.maximum(jnp.max(psf, axis=(-2, -1), keepdims=True), 1e-12)
        p = pn.transpose(0, 2, 3, 1)
        skips, pfeat = [], []
        for enc, penc in zip(self.enc, self.psf_enc):
            h, p = enc(h), penc(p)
            skips.append(h)
            pfeat.append(p)
        h = jax.nn.relu(self.fuse_bottom(jnp.concatenate([h, pfeat[-1]], axis=-1)))
        for s in range(len(self.up) - 1, -1, -1):
            Nh, Hh, Wh, Ch = h.shape
            h = jax.image.resize(h, (Nh, 2 * Hh, 2 * Wh, Ch), method="nearest")
            h = self.up[s](h)
            h = jax.nn.relu(self.fuse[s](jnp.concatenate([h, skips[s], pfeat[s]], axis=-1)))
            for b in self.dec[s]:
                h = b(h)
        out = self.out(h).transpose(0, 3, 1, 2)
        return x + out, norm


def n_parameters(model: nnx.Module) -> int:
    return int(sum(v.size for v in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))))


__all__ = ["ResNetConfig", "ResNetDeconv", "n_parameters"]


def make_predict(graphdef):
    """A jitted ``predict(params, image, psf, noise_sigma)`` for a model's graph definition."""
    import jax
    from flax import nnx

    @jax.jit
    def predict(params, image, psf, noise_sigma):
        return nnx.merge(graphdef, params)(image, psf, noise_sigma)
    return predict
