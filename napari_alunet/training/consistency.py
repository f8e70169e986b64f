"""The semi-supervised term of a fit: FixMatch-style consistency on unlabelled images.

The teacher (the EMA model, in eval mode) labels a weakly (geometrically) augmented view of an
unlabelled batch; the pixels it is sure of become targets for the student on a strongly
augmented copy of that same view (:class:`~.augment.StrongAugmenter`). The term starts after
the learning-rate warm-up and reaches full weight at a quarter of the budget: until then the
teacher is close to its initialisation and confidently wrong pixels would be learnt as targets.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from napari_alunet.config import TrainConfig
from napari_alunet.training.augment import Augmenter, StrongAugmenter
from napari_alunet.training.device import autocast
from napari_alunet.training.ema import batchnorm_statistics_frozen
from napari_alunet.training.losses import consistency_loss


class ConsistencyTerm:
    """The consistency loss of one fit, step by step.

    Parameters
    ----------
    images : (M, 1, S, S) unlabelled images on the training device.
    batches : endless index batches into ``images`` (``unlabelled_batch_size`` each).
    config : ``seed``, ``warmup_fraction``, ``unlabelled_weight``, ``confidence_threshold``,
        ``precision``.
    steps : the fit's budget (for the ramp).
    """

    def __init__(self, images: torch.Tensor, batches: Iterator[torch.Tensor],
                 config: TrainConfig, steps: int) -> None:
        self.images = images
        self.batches = batches
        self.config = config
        dev = images.device
        self.weak = Augmenter(seed=config.seed + 2, device=dev)
        self.strong = StrongAugmenter(seed=config.seed + 3, device=dev)
        self.ramp_start = max(1, round(config.warmup_fraction * steps))
        self.ramp_end = max(self.ramp_start + 1, round(0.25 * steps))

    def weight(self, step: int) -> float:
        """The term's weight at optimiser step ``step`` (0 before the ramp starts)."""
        ramp = (step - self.ramp_start) / (self.ramp_end - self.ramp_start)
        return self.config.unlabelled_weight * min(1.0, max(0.0, ramp))

    def __call__(self, student: nn.Module, teacher: nn.Module,
                 fmt: torch.memory_format) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss with gradient through ``student``, confident fraction) on the next batch."""
        dev, precision = self.images.device, self.config.precision
        images = self.images[next(self.batches).to(dev)]
        blank = torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.long, device=dev)
        weak_view, _, inside = self.weak(images, blank, None, intensity=False)
        with torch.no_grad():
            was_training = teacher.training
            teacher.eval()  # the EMA teacher always is; a teacher without EMA is the student
            with autocast(dev, precision):
                teacher_logits = teacher(weak_view.contiguous(memory_format=fmt))
            teacher.train(was_training)
            probs = torch.softmax(teacher_logits.float(), dim=1)
        strong_view, keep = self.strong(weak_view)
        # The strong batch normalises with its own statistics but must not move the running
        # ones (they are what mc_predict and every prediction use).
        with batchnorm_statistics_frozen(student), autocast(dev, precision):
            student_logits = student(strong_view.contiguous(memory_format=fmt))
        return consistency_loss(student_logits, probs, self.config.confidence_threshold,
                                (inside > 0.5) & keep)
