"""The DWDN network in PyTorch: features, per-band Wiener deconvolution in feature space, refinement.

Follows Dong, Roth & Schiele (NeurIPS 2020) with the per-band modules of Wang, Lin,
Slosar et al.:

1. A feature extractor shared by the bands (a 5x5 convolution to ``feat`` channels and
   ``feat_blocks`` residual blocks) applied to each band's normalised image.
2. Wiener deconvolution of every feature channel with that band's PSF, on the stamp's
   own grid with ``torch.fft`` (the PSF transfer function is phase-referenced to the
   stamp's true centre, as everywhere in this project). The noise-to-signal term is per
   channel: ``nsr="handcrafted"`` uses the band's noise variance over the channel's
   ring-averaged power (the estimate of :mod:`methods.wiener`, on features), scaled by a
   learned per-channel factor; ``nsr="learned"`` is a learned per-channel constant times
   the noise variance. ``window`` (Wang et al.) multiplies the filter by a Gaussian in k
   of learned width.
3. The deconvolved features of all bands, concatenated, go through a U-Net refinement
   (encoder ``widths`` with ``blocks`` residual blocks per stage, decoder with skips),
   at ``scales`` resolutions coarse to fine (the coarse output, upsampled, joins the
   fine input), and come out as one image per band, added to the mean of each band's
   deconvolved features (a global residual).

Inputs are normalised per stamp and band by their peak absolute value, which is undone
exactly on output, so fluxes come back in the input's units.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

NSR_MODES = ("handcrafted", "learned")


@dataclass
class DWDNConfig:
    """Network configuration. ``full`` is the paper's size (about 7 M parameters); ``small``
    trains on two CPU cores in minutes."""

    bands: int = 3
    stamp_size: int = 48
    feat: int = 16
    feat_blocks: int = 3
    kernel: int = 5
    widths: tuple = (32, 64, 128)
    blocks: int = 3
    scales: int = 2
    nsr: str = "handcrafted"
    window: bool = True

    @classmethod
    def preset(cls, name: str, **kw):
        presets = {
            "full": {},
            "small": dict(feat=8, feat_blocks=1, kernel=3, widths=(8, 16, 32), blocks=1, scales=1),
        }
        if name not in presets:
            from bench.errors import unknown_name
            raise unknown_name("DWDN preset", name, presets)
        return cls(**{**presets[name], **kw})

    def to_dict(self):
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d


class ResBlock(nn.Module):
    def __init__(self, ch: int, k: int):
        super().__init__()
        self.c1 = nn.Conv2d(ch, ch, k, padding=k // 2)
        self.c2 = nn.Conv2d(ch, ch, k, padding=k // 2)

    def forward(self, x):
        return x + self.c2(F.relu(self.c1(x)))


def _stage(ch, k, n):
    return nn.Sequential(*[ResBlock(ch, k) for _ in range(n)])


class UNet(nn.Module):
    def __init__(self, cin: int, cout: int, widths, blocks: int, k: int):
        super().__init__()
        self.inp = nn.Conv2d(cin, widths[0], k, padding=k // 2)
        self.enc = nn.ModuleList([_stage(w, k, blocks) for w in widths])
        self.down = nn.ModuleList([nn.Conv2d(a, b, k, stride=2, padding=k // 2)
                                   for a, b in zip(widths[:-1], widths[1:])])
        self.up = nn.ModuleList([nn.ConvTranspose2d(b, a, 4, stride=2, padding=1)
                                 for a, b in zip(widths[:-1], widths[1:])])
        self.dec = nn.ModuleList([_stage(w, k, blocks) for w in widths[:-1]])
        self.out = nn.Conv2d(widths[0], cout, k, padding=k // 2)

    def forward(self, x):
        h = self.enc[0](self.inp(x))
        skips = [h]
        for down, enc in zip(self.down, self.enc[1:]):
            h = enc(down(h))
            skips.append(h)
        for i in range(len(self.up) - 1, -1, -1):
            h = self.dec[i](self.up[i](h) + skips[i])
        return self.out(h)


def centred_transfer(psf: torch.Tensor) -> torch.Tensor:
    """rFFT of psf (..., n, n) on the n x n grid, phase-referenced to the true centre (n - 1) / 2."""
    from bench.fourier import centring_phase

    n = psf.shape[-1]
    H = torch.fft.rfft2(psf)
    return H * torch.as_tensor(centring_phase(n, n), device=psf.device).to(H.dtype)


class DWDN(nn.Module):
    def __init__(self, cfg: DWDNConfig):
        super().__init__()
        if cfg.nsr not in NSR_MODES:
            from bench.errors import unknown_name
            raise unknown_name("nsr mode", cfg.nsr, NSR_MODES)
        self.cfg = cfg
        k = cfg.kernel
        self.feat_in = nn.Conv2d(1, cfg.feat, 5, padding=2)
        self.feat_blocks = _stage(cfg.feat, 5, cfg.feat_blocks)
        self.log_nsr = nn.Parameter(torch.zeros(cfg.feat))           # per-channel factor
        self.log_window = nn.Parameter(torch.tensor(math.log(1.5)))   # Gaussian window width, rad/px
        cin = cfg.bands * cfg.feat
        self.refine = nn.ModuleList()
        for s in range(cfg.scales):
            extra = cfg.bands if s > 0 else 0
            self.refine.append(UNet(cin + extra, cfg.bands, cfg.widths, cfg.blocks, k))
        n = cfg.stamp_size
        from methods.wiener import _rings
        self.register_buffer("ring", torch.as_tensor(_rings(n)[0]).reshape(n, n // 2 + 1), persistent=False)
        onehot = F.one_hot(self.ring.reshape(-1)).float()
        self.register_buffer("ring_avg", onehot / onehot.sum(0), persistent=False)   # ring means by GEMM
        ky = 2 * math.pi * torch.fft.fftfreq(n)
        kx = 2 * math.pi * torch.fft.rfftfreq(n)
        self.register_buffer("ksq", ky[:, None] ** 2 + kx[None, :] ** 2, persistent=False)

    def wiener_features(self, feats, psf, sig2):
        """feats (N, B, C, n, n), psf (N, B, n, n), sig2 (N, B) normalised noise variance."""
        N, B, C, n, _ = feats.shape
        H = centred_transfer(psf)[:, :, None]                        # (N, B, 1, n, n/2+1)
        Y = torch.fft.rfft2(feats)
        H2 = H.real ** 2 + H.imag ** 2
        noise = (sig2 * n * n)[:, :, None, None, None]
        scale = torch.exp(self.log_nsr)[None, None, :, None, None]
        if self.cfg.nsr == "handcrafted":
            power = Y.real ** 2 + Y.imag ** 2
            ring = self.ring.reshape(-1)
            avg = ((power.reshape(N * B * C, -1) @ self.ring_avg)[:, ring]).reshape(power.shape)
            signal = torch.clamp(avg - noise, min=1e-3) + 1e-3 * noise
            reg = scale * noise / signal
        else:
            reg = scale * noise
        W = torch.conj(H) / (H2 + reg)
        if self.cfg.window:
            W = W * torch.exp(-self.ksq / (2 * torch.exp(self.log_window) ** 2))
        return torch.fft.irfft2(W * Y, s=(n, n))

    def forward(self, image, psf, noise_sigma):
        """image, psf (N, B, n, n) float32; noise_sigma (N, B). Returns (N, B, n, n) in input units."""
        N, B, n, _ = image.shape
        norm = image.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        x = image / norm
        sig2 = (noise_sigma / norm[..., 0, 0]) ** 2
        f = self.feat_blocks(self.feat_in(x.reshape(N * B, 1, n, n)))
        f = f.reshape(N, B, self.cfg.feat, n, n)
        d = self.wiener_features(f, psf, sig2)                      # (N, B, C, n, n)
        base = d.mean(dim=2)                                        # global residual per band
        z = d.reshape(N, B * self.cfg.feat, n, n)
        out = None
        for s, net in enumerate(self.refine):
            factor = 2 ** (self.cfg.scales - 1 - s)
            zs = F.avg_pool2d(z, factor) if factor > 1 else z
            if out is not None:
                zs = torch.cat([zs, F.interpolate(out, size=zs.shape[-2:], mode="bilinear",
                                                  align_corners=False)], dim=1)
            out = net(zs)
        return (base + out) * norm

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def count_parameters(preset: str) -> int:
    return DWDN(DWDNConfig.preset(preset)).n_parameters()


__all__ = ["DWDN", "DWDNConfig", "centred_transfer", "count_parameters"]
