"""Train DWDN: ``python -m methods.train.dwdn --dataset train --preset small --out PATH``.

Two phases as in Wang et al.: pre-training with an L1 image loss, then fine-tuning with
the astronomical loss of :mod:`methods.losses` (flux, centroid, second moments of each
band) plus the L1 term. Adam. The paper's schedule is 80 epochs at 1e-4 then 10 at 1e-5
with batch 128 (``--epochs 80 10 --lr 1e-4 1e-5 --batch 128``); the shipped small model
used the faster CPU recipe in its model card. Losses compare prediction and truth
divided by the same per-stamp scale the network normalises its input with.

The validation split is the last ``--val-fraction`` of the quads of the training
dataset, so whole quads stay on one side; the benchmark datasets (other seeds) are
never read. A checkpoint (weights, Adam moments, phase/epoch/step) is written after
every epoch; ``--resume`` continues from it. The model card is written at the end.
"""

from __future__ import annotations

import sys
import time


def evaluate(model, data, batch=256):
    """Validation PSNR and SSIM (bench.metrics conventions) of *model* on tensors (img, psf, sig, truth)."""
    import numpy as np
    import torch

    from bench.metrics import psnr, ssim
    img, psf, sig, truth = data
    outs = []
    model.eval()
    with torch.inference_mode():
        for s in range(0, len(img), batch):
            outs.append(model(img[s:s + batch], psf[s:s + batch], sig[s:s + batch]).numpy())
    model.train()
    out = np.concatenate(outs)
    t = truth.numpy()
    return float(psnr(out, t).mean()), float(ssim(out, t).mean())


def train(*, dataset: str = "train", preset: str = "small", out: str, epochs=(40, 10), lr=(1e-3, 1e-4),
          batch: int = 32, val_fraction: float = 0.1, seed: int = 0, resume: bool = False,
          threads: int | None = None, progress: bool = True, data: str = "stamps", init=None) -> dict:
    """Train and write the checkpoint *out* and its model card; returns the card.

    *data* is ``"stamps"`` (observed stamps to ``truth``) or ``"metacal"`` (metacal's five
    images to the sheared truth, :func:`methods.train.common.metacal_pairs`); *init* starts
    from a checkpoint's weights (a fresh optimiser), as a fine-tuning does.
    """
    import numpy as np
    import torch
    from tqdm import tqdm

    from bench.dataset import load_dataset
    from bench.errors import BenchValueError
    from methods.losses import astro_loss, l1_loss
    from methods.checkpoint import hardware
    from methods.train.common import data_description, init_description
    from methods.train.common import check_options, split_quads, training_arrays, write_card

    from methods.dwdn import checkpoint as ck
    from methods.dwdn.model import DWDN, DWDNConfig

    check_options(epochs, lr, batch, val_fraction)
    if threads:
        torch.set_num_threads(threads)
    ds = load_dataset(dataset, progress=progress)
    tr, va = split_quads(ds, val_fraction)
    train_data, val_data = ([torch.as_tensor(a) for a in part] for part in training_arrays(ds, tr, va, data=data,
                                                                                           seed=seed))
    B, n = len(ds.spec.bands), ds.spec.stamp_size
    torch.manual_seed(seed)
    state = {"phase": 0, "epoch": 0, "step": 0, "elapsed_s": 0.0}
    if resume:
        model, state, optim_tensors = ck.load(out)
    elif init is not None:
        model, _, _ = ck.load(init)
        optim_tensors = {}
    else:
        model, optim_tensors = DWDN(DWDNConfig.preset(preset, bands=B, stamp_size=n)), {}
    if model.cfg.bands != B or model.cfg.stamp_size != n:
        raise BenchValueError(f"checkpoint is for {model.cfg.bands} bands of {model.cfg.stamp_size} px, "
                              f"dataset {dataset!r} has {B} of {n}")
    model.train()
    rng = np.random.default_rng(seed + 1000 * state["phase"] + state["epoch"])
    t_start = time.perf_counter() - state["elapsed_s"]
    img, psf, sig, truth = train_data
    for phase in range(state["phase"], 2):
        opt = torch.optim.Adam(model.parameters(), lr=lr[phase])
        if optim_tensors and phase == state["phase"]:
            ck.restore_optimizer(opt, optim_tensors)
        first = state["epoch"] if phase == state["phase"] else 0
        for epoch in range(first, epochs[phase]):
            order = rng.permutation(len(img))
            bar = tqdm(range(0, len(order), batch), disable=not progress,
                       desc=f"{'pretrain' if phase == 0 else 'finetune'} {epoch + 1}/{epochs[phase]}")
            for s in bar:
                idx = torch.as_tensor(order[s:s + batch])
                x, p, g, t = img[idx], psf[idx], sig[idx], truth[idx]
                if data == "metacal":      # the shipped recipe has none; metacal images get the dihedral maps
                    k, flip = int(rng.integers(4)), bool(rng.integers(2))
                    x, p, t = (torch.rot90(a, k, dims=(-2, -1)) for a in (x, p, t))
                    if flip:
                        x, p, t = (torch.flip(a, dims=(-1,)) for a in (x, p, t))
                scale = x.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
                pred = model(x, p, g) / scale
                target = t / scale
                loss = l1_loss(pred, target)
                if phase == 1:
                    loss = loss + 0.1 * astro_loss(pred, target)
                opt.zero_grad()
                loss.backward()
                opt.step()
                state["step"] += 1
                bar.set_postfix(loss=f"{loss.item():.4f}")
            state.update(phase=phase, epoch=epoch + 1, elapsed_s=time.perf_counter() - t_start)
            ck.save(out, model, optimizer=opt, state=state)
    # the state names the last finished epoch, so --resume with more epochs continues from there
    wall = time.perf_counter() - t_start
    vpsnr, vssim = evaluate(model, val_data)
    ck.save(out, model, state={**state, "elapsed_s": wall})   # final: no Adam moments (resume restarts Adam)
    schedule = {"epochs": list(epochs), "lr": list(lr), "batch": batch, "optimizer": "Adam",
                "losses": ["L1", "L1 + 0.1 astro (flux, centroid, moments)"], "seed": seed,
                "data": data_description(data), "init": init_description(init),
                "augmentation": ("random rotation by 90 k degrees and mirror per batch" if data == "metacal"
                                 else None)}
    hw = hardware(torch_threads=torch.get_num_threads(), torch=torch.__version__,
                  cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    card = write_card(ck.card_path(out), model="dwdn", preset=preset, config=model.cfg.to_dict(),
                      parameters=model.n_parameters(), ds=ds, n_train=len(tr), n_val=len(va),
                      val_fraction=val_fraction, schedule=schedule, state=state, wall=wall,
                      validation=(vpsnr, vssim), hardware_info=hw, module="methods.train.dwdn")
    return card


def main(argv=None) -> int:
    from methods.train.common import main as training_main

    from methods.dwdn.checkpoint import DEFAULT_CHECKPOINT
    return training_main(train, prog="python -m methods.train.dwdn", description="Train DWDN on a training dataset.",
                         default_out=DEFAULT_CHECKPOINT, argv=argv)


if __name__ == "__main__":
    from bench.cli import run_cli

    sys.exit(run_cli(main, prog="python -m methods.train.dwdn"))
