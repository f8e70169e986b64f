"""Domain randomisation (issue 13): strong photometric perturbations of training batches."""

from __future__ import annotations

import numpy as np
import torch

from napari_alunet.config import TrainConfig, model_preset
from napari_alunet.data.dataset import prepare_image
from napari_alunet.data.synthetic import generate_blastocyst
from napari_alunet.events import drain
from napari_alunet.model import build_model
from napari_alunet.training.augment import Augmenter
from napari_alunet.training.domain import DomainRandomiser, DomainSettings
from napari_alunet.training.engine import fit


def _batch(n=6, size=64):
    images, labels = [], []
    for i in range(n):
        image, label, _ = generate_blastocyst(np.random.default_rng([7, i]), shape=(90, 100))
        x, box = prepare_image(image, size)
        images.append(x)
        labels.append(box.apply_labels(label).astype(np.int64))
    return torch.from_numpy(np.stack(images))[:, None], torch.from_numpy(np.stack(labels))


def test_perturbed_images_stay_standardised_finite_and_reproducible():
    x, _ = _batch()
    a = DomainRandomiser(seed=4)(x)
    b = DomainRandomiser(seed=4)(x)
    c = DomainRandomiser(seed=5)(x)
    assert a.shape == x.shape and bool(torch.isfinite(a).all())
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.allclose(a.flatten(1).mean(1), torch.zeros(len(x)), atol=1e-4)
    assert torch.allclose(a.flatten(1).std(1), torch.ones(len(x)), atol=1e-3)
    # Strong: the images change far more than the default augmentation's noise would.
    assert float((a - x).abs().mean()) > 0.2


def test_each_perturbation_alone_changes_the_image_and_nothing_is_nan():
    x, _ = _batch(n=4)
    off = DomainSettings(gamma_range=(1.0, 1.0), contrast_range=(1.0, 1.0), brightness=0.0,
                         illumination_p=0.0, blur_p=0.0, sharpen_p=0.0, texture_p=0.0,
                         relief_p=0.0, noise_p=0.0)
    identity = DomainRandomiser(off, seed=1)(x)
    assert torch.allclose(identity, x, atol=1e-3)  # all off: only re-standardised
    for name, value in [("illumination_p", 1.0), ("blur_p", 1.0), ("sharpen_p", 1.0),
                        ("texture_p", 1.0), ("relief_p", 1.0), ("noise_p", 1.0)]:
        one = DomainSettings(**{**off.__dict__, name: value})
        out = DomainRandomiser(one, seed=2)(x)
        assert bool(torch.isfinite(out).all()), name
        assert float((out - x).abs().mean()) > 0.01, name


def test_the_augmenter_keeps_masks_aligned_with_domain_randomisation():
    x, y = _batch(n=4)
    plain = Augmenter(seed=3)(x, y)
    randomised = Augmenter(seed=3, domain=DomainRandomiser(seed=3))(x, y)
    # Same geometry (same seed): the masks and weights are identical, only the pixels differ.
    assert torch.equal(plain[1], randomised[1]) and torch.equal(plain[2], randomised[2])
    assert not torch.allclose(plain[0], randomised[0])


def test_a_fit_with_domain_randomisation_runs_and_is_recorded():
    x, y = _batch(n=4, size=32)
    config = TrainConfig(steps=3, batch_size=2, seed=0, device="cpu", health_min_dice=0.0,
                         semi_supervised=False, domain_randomisation=True)
    model = build_model(model_preset("tiny"))
    result = drain(fit(model, x, y % 5, None, None, config, n_classes=5))
    assert result.steps_run == 3
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
