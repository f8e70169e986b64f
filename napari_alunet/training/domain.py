"""Domain randomisation: photometric perturbations strong enough that a model trained on the
synthetic generator cannot lean on the generator's own fingerprints.

A model trained only on synthetic blastocysts learns whatever separates the classes *in the
generator*: its grain noise, its polygon cell outlines, one relief direction, one focus. Real
microscopes differ in all of these. :class:`DomainRandomiser` draws, per image, a gamma curve,
contrast and brightness, a smooth multiplicative illumination field, blur (focus) or
sharpening, an added texture of random grain size, a modulation-contrast relief of random
direction and strength, and noise; the geometry (flips, rotations, elastic deformation) stays
with :class:`~napari_alunet.training.augment.Augmenter`, which calls this on its output when
``TrainConfig.domain_randomisation`` is on. Everything is batched on the device, and the
parameters come from a CPU generator, so the same seed gives the same batches anywhere.

Images are standardised (mean 0, std 1 per image) before they get here; the perturbations are
in those units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from napari_alunet.training.augment import _gaussian_blur, _uniform, seeded_generators


@dataclass
class DomainSettings:
    """Strengths of the perturbations (probabilities per image; ranges drawn uniformly)."""

    gamma_range: tuple[float, float] = (0.6, 1.7)
    contrast_range: tuple[float, float] = (0.6, 1.5)
    brightness: float = 0.4
    illumination_p: float = 0.7
    illumination_strength: float = 0.35  # std of the log-field
    blur_p: float = 0.35
    blur_sigma: tuple[float, float] = (0.5, 2.5)  # pixels
    sharpen_p: float = 0.2
    sharpen_amount: tuple[float, float] = (0.3, 1.5)
    texture_p: float = 0.6
    texture_std: float = 0.5
    texture_grain: tuple[float, float] = (0.5, 3.0)  # correlation length, pixels
    relief_p: float = 0.5
    relief_strength: float = 1.0
    noise_p: float = 0.5
    noise_std: float = 0.3


class DomainRandomiser:
    """Callable ``images (B, C, H, W) -> images``: the perturbations of :class:`DomainSettings`.

    Parameters
    ----------
    settings : strengths (default :class:`DomainSettings`).
    seed : seeds the parameter generator (CPU) and, from it, the per-pixel one (device).
    device : where the batches live.
    """

    def __init__(self, settings: DomainSettings | None = None, *, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        self.settings = settings or DomainSettings()
        self.device = torch.device(device)
        self.gen, self.device_gen = seeded_generators(int(seed) + 104_729, self.device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        s, g = self.settings, self.gen
        given = images.dtype
        images = images.float()  # the logit and the standardisation need float32 headroom
        n, _, height, width = images.shape
        dev, dtype = images.device, images.dtype

        def per_image(values: torch.Tensor) -> torch.Tensor:
            return values.to(device=dev, dtype=dtype).view(n, 1, 1, 1)

        def chosen(p: float) -> torch.Tensor:
            return torch.rand(n, generator=g) < p

        def noise_like() -> torch.Tensor:
            return torch.randn(images.shape, generator=self.device_gen, device=dev, dtype=dtype)

        # Gamma through a sigmoid (bends mid-tones without NaN for negative values).
        unit = torch.sigmoid(images).clamp(1e-4, 1 - 1e-4) ** per_image(
            _uniform(g, n, *s.gamma_range))
        out = torch.log(unit / (1 - unit))
        # Focus: blur some images, sharpen (unsharp mask) others.
        blur = chosen(s.blur_p)
        if bool(blur.any()):
            out = _gaussian_blur(out, torch.where(blur, _uniform(g, n, *s.blur_sigma),
                                                  torch.zeros(n)))
        sharpen = chosen(s.sharpen_p) & ~blur
        if bool(sharpen.any()):
            amount = torch.where(sharpen, _uniform(g, n, *s.sharpen_amount), torch.zeros(n))
            soft = _gaussian_blur(out, torch.full((n,), 1.0))
            out = out + per_image(amount) * (out - soft)
        # A relief of random direction: the directional derivative of a smoothed image.
        relief = chosen(s.relief_p)
        if bool(relief.any()):
            angle = _uniform(g, n, 0.0, 2 * math.pi)
            strength = torch.where(relief, _uniform(g, n, -s.relief_strength, s.relief_strength),
                                   torch.zeros(n))
            smooth = _gaussian_blur(out, torch.full((n,), 1.5))
            gy, gx = torch.gradient(smooth, dim=(2, 3))
            out = out + per_image(strength) * (per_image(torch.cos(angle)) * gx
                                               + per_image(torch.sin(angle)) * gy)
        # Texture of a random grain, unlike the generator's own.
        texture = chosen(s.texture_p)
        if bool(texture.any()):
            grain = _gaussian_blur(noise_like(), _uniform(g, n, *s.texture_grain))
            grain = grain / grain.flatten(1).std(1).clamp(min=1e-6).view(n, 1, 1, 1)
            amp = torch.where(texture, _uniform(g, n, 0.0, s.texture_std), torch.zeros(n))
            out = out + grain * per_image(amp)
        # Illumination: a smooth multiplicative field (log-normal on a 4 x 4 control grid),
        # applied around the image's lowest grey level so it dims and brightens, never inverts.
        lit = chosen(s.illumination_p)
        if bool(lit.any()):
            coarse = torch.randn(n, 1, 4, 4, generator=g) * s.illumination_strength
            coarse = (coarse * lit.view(n, 1, 1, 1)).to(device=dev, dtype=dtype)
            field = torch.exp(F.interpolate(coarse, size=(height, width), mode="bicubic",
                                            align_corners=True))
            floor = out.flatten(1).amin(1).view(n, 1, 1, 1)
            out = floor + (out - floor) * field
        out = out * per_image(_uniform(g, n, *s.contrast_range))
        out = out + per_image(_uniform(g, n, -s.brightness, s.brightness))
        noisy = chosen(s.noise_p)
        if bool(noisy.any()):
            std = torch.where(noisy, _uniform(g, n, 0.0, s.noise_std), torch.zeros(n))
            out = out + noise_like() * per_image(std)
        # Back to the standardised scale the network expects (per image).
        flat = out.flatten(1)
        mean, scale = flat.mean(1), flat.std(1).clamp(min=1e-6)
        return ((out - mean.view(n, 1, 1, 1)) / scale.view(n, 1, 1, 1)).to(given)


__all__ = ["DomainRandomiser", "DomainSettings"]
