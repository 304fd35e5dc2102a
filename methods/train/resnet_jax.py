"""Train the JAX resnet: ``python -m methods.train.resnet_jax --dataset train --preset small --out PATH``.

The same two phases as DWDN: an L1 image loss, then L1 plus 0.1 times the astronomical
loss of :mod:`methods.losses` (flux, centroid, second moments per band; the same
array-API code PyTorch uses). Prediction and truth are compared in units of each
stamp's peak, the normalisation the network applies to its input. Adam through Optax;
one ``jax.jit``-compiled step per phase over the parameter pytree (Flax NNX split into
graph and parameters). Each batch gets one random rotation/mirror of the stamps
(:func:`methods.train.common.dihedral`), which keeps image, PSF and truth consistent.

The validation split is the last ``--val-fraction`` of the quads of the training
dataset; the benchmark datasets (other seeds) are never read. A checkpoint with the
Adam state is written after every epoch and ``--resume`` continues from it; the model
card (configuration, dataset hash, steps, wall time, hardware, validation PSNR/SSIM)
is written at the end.
"""

from __future__ import annotations

import sys
import time


def evaluate(predict, params, data, batch: int = 200):
    """Validation PSNR and SSIM (bench.metrics conventions) on NumPy arrays (img, psf, sig, truth)."""
    import numpy as np

    from bench.metrics import psnr, ssim
    img, psf, sig, truth = data
    out = np.concatenate([np.asarray(predict(params, img[s:s + batch], psf[s:s + batch], sig[s:s + batch]))
                          for s in range(0, len(img), batch)])
    return float(psnr(out, truth).mean()), float(ssim(out, truth).mean())


def train(*, dataset: str = "train", preset: str = "small", out: str, epochs=(40, 10), lr=(1e-3, 1e-4),
          batch: int = 32, val_fraction: float = 0.1, seed: int = 0, resume: bool = False,
          progress: bool = True, data: str = "stamps", init=None) -> dict:
    """Train and write the checkpoint *out* and its model card; returns the card.

    *data* and *init* as in :func:`methods.train.dwdn.train`.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx
    from tqdm import tqdm

    from bench.dataset import load_dataset
    from bench.errors import BenchValueError
    from methods.losses import astro_loss, l1_loss
    from methods.checkpoint import hardware
    from methods.train.common import (check_options, data_description, dihedral, init_description, split_quads,
                                  training_arrays, write_card)

    from methods.resnet_jax import checkpoint as ck
    from methods.resnet_jax.model import ResNetConfig, ResNetDeconv, make_predict, n_parameters

    check_options(epochs, lr, batch, val_fraction)
    if not (isinstance(batch, int) and batch >= 1):
        raise BenchValueError(f"batch must be a positive integer, got {batch!r}")
    ResNetConfig.preset(preset)            # an unknown preset fails before any data is simulated
    ds = load_dataset(dataset, progress=progress)
    tr, va = split_quads(ds, val_fraction)
    (img, psf, sig, truth), val_data = training_arrays(ds, tr, va, data=data, seed=seed)
    B, n = len(ds.spec.bands), ds.spec.stamp_size

    state = {"phase": 0, "epoch": 0, "step": 0, "elapsed_s": 0.0}
    optimizers = [optax.adam(lr[0]), optax.adam(lr[1])]
    opt_state = None
    if resume:
        model, state, _ = ck.load(out)
        _, _, opt_state = ck.load(out, optimizer=optimizers[min(state["phase"], 1)])
    elif init is not None:
        model, _, _ = ck.load(init)
    else:
        model = ResNetDeconv(ResNetConfig.preset(preset, bands=B, stamp_size=n), rngs=nnx.Rngs(seed))
    cfg = model.cfg
    if cfg.bands != B or cfg.stamp_size != n:
        raise BenchValueError(f"checkpoint is for {cfg.bands} bands of {cfg.stamp_size} px, "
                              f"dataset {dataset!r} has {B} of {n}")
    graphdef, params = nnx.split(model, nnx.Param)

    def loss_fn(params, x, p, s, t, astro_weight):
        y, norm = nnx.merge(graphdef, params).normalised(x, p, s)
        target = t / norm
        loss = l1_loss(y, target)
        return loss + astro_weight * astro_loss(y, target) if astro_weight else loss

    def make_step(opt, astro_weight):
        @jax.jit
        def step(params, opt_state, x, p, s, t):
            loss, grads = jax.value_and_grad(loss_fn)(params, x, p, s, t, astro_weight)
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss
        return step

    # a resumed run continues the epoch count of the phase it stopped in
    phase0, epoch0 = state["phase"], state["epoch"]
    if phase0 < 2 and epoch0 >= epochs[phase0]:
        phase0, epoch0, opt_state = phase0 + 1, 0, None
    rng = np.random.default_rng(seed + 1000 * phase0 + epoch0)
    t_start = time.perf_counter() - state["elapsed_s"]
    for phase in range(phase0, 2):
        opt = optimizers[phase]
        if opt_state is None or phase != phase0:
            opt_state = opt.init(params)
        step = make_step(opt, 0.0 if phase == 0 else 0.1)
        for epoch in range(epoch0 if phase == phase0 else 0, epochs[phase]):
            order = rng.permutation(len(img))
            starts = range(0, len(order) - batch + 1, batch)     # full batches: one compiled shape
            bar = tqdm(starts, disable=not progress,
                       desc=f"{'pretrain' if phase == 0 else 'finetune'} {epoch + 1}/{epochs[phase]}")
            for s in bar:
                idx = order[s:s + batch]
                x, p, t = dihedral((img[idx], psf[idx], truth[idx]), int(rng.integers(4)), bool(rng.integers(2)))
                params, opt_state, loss = step(params, opt_state, jnp.asarray(x), jnp.asarray(p),
                                               jnp.asarray(sig[idx]), jnp.asarray(t))
                state["step"] += 1
                if state["step"] % 10 == 0:
                    bar.set_postfix(loss=f"{float(loss):.4f}")
            state.update(phase=phase, epoch=epoch + 1, elapsed_s=time.perf_counter() - t_start)
            ck.save(out, cfg, params, opt_state=opt_state, state=state)
    wall = time.perf_counter() - t_start
    vpsnr, vssim = evaluate(make_predict(graphdef), params, val_data)
    ck.save(out, cfg, params, state={**state, "elapsed_s": wall})   # final: weights only
    schedule = {"epochs": list(epochs), "lr": list(lr), "batch": batch, "optimizer": "Adam (optax)",
                "losses": ["L1", "L1 + 0.1 astro (flux, centroid, moments)"],
                "augmentation": "random rotation by 90 k degrees and mirror per batch", "seed": seed,
                "data": data_description(data), "init": init_description(init)}
    hw = hardware(jax=jax.__version__, jax_backend=jax.default_backend(),
                  devices=[str(d.device_kind) for d in jax.devices()])
    card = write_card(ck.card_path(out), model="resnet-jax", preset=preset, config=cfg.to_dict(),
                      parameters=n_parameters(nnx.merge(graphdef, params)), ds=ds, n_train=len(tr),
                      n_val=len(va), val_fraction=val_fraction, schedule=schedule, state=state, wall=wall,
                      validation=(vpsnr, vssim), hardware_info=hw, module="methods.train.resnet_jax")
    return card


def main(argv=None) -> int:
    from methods.train.common import main as training_main

    from methods.resnet_jax.checkpoint import DEFAULT_CHECKPOINT
    return training_main(train, prog="python -m methods.train.resnet_jax",
                         description="Train the JAX residual encoder-decoder.", default_out=DEFAULT_CHECKPOINT,
                         argv=argv)


if __name__ == "__main__":
    from bench.cli import run_cli

    sys.exit(run_cli(main, prog="python -m methods.train.resnet_jax"))
