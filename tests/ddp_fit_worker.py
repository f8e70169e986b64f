"""A fit on fixed tensors, run by tests/test_distributed.py as one process or as the ranks of
a ``torchrun`` launch; rank 0 saves the kept weights.

    python tests/ddp_fit_worker.py OUT.pt BATCH_SIZE STEPS [recipe|separable]

Dropout, augmentation, EMA and the consistency term are off. With the recipe's network and
loss, N ranks with batch B differ from one process with batch N * B in two ways that data
parallelism always has: BatchNorm takes its batch statistics per rank, and a loss that is not
a mean of per-image terms (class-weighted cross-entropy, Tversky) is averaged per rank.
``separable`` removes both (BatchNorm replaced by the identity, unweighted cross-entropy):
what is left is the order of the floating-point sums.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import torch

from napari_alunet import distributed
from napari_alunet.config import TrainConfig, model_preset
from napari_alunet.events import drain
from napari_alunet.model import build_model
from napari_alunet.training.engine import fit, reset_parameters


def training_tensors(n: int = 12, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, size, size) images and (n, size, size) labels of 5 classes, fixed by a seed."""
    gen = torch.Generator().manual_seed(20261203)
    images = torch.nn.functional.avg_pool2d(torch.randn(n, 1, size, size, generator=gen), 5,
                                            stride=1, padding=2)
    cuts = torch.quantile(images.flatten(), torch.tensor([0.2, 0.4, 0.6, 0.8]))
    labels = torch.bucketize(images[:, 0], cuts)
    return images * 3, labels


def main(out: str, batch_size: int, steps: int, separable: bool) -> None:
    config = TrainConfig(steps=steps, batch_size=batch_size, augment=False, ema_decay=0.0,
                         semi_supervised=False, seed=5, device="cpu", learning_rate=3e-3,
                         health_min_dice=0.0, eval_every=steps)
    if separable:
        config = replace(config, loss="ce", class_weighting="none")
    model = reset_parameters(build_model(model_preset("tiny", dropout=0.0)), seed=11)
    if separable:
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, torch.nn.BatchNorm2d):
                    setattr(module, name, torch.nn.Identity())
    images, labels = training_tensors()
    with distributed.process_group("cpu") as (rank, _size):
        drain(fit(model, images, labels, None, None, config, n_classes=5))
        if rank == 0:
            torch.save(model.state_dict(), out)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
         len(sys.argv) > 4 and sys.argv[4] == "separable")
