"""Batched data augmentation on the training device, image and mask kept aligned.

Every geometric change of a batch (flip, 90-degree rotation, affine, elastic) is composed into
one sampling grid per image and applied with a single ``grid_sample`` call: bilinear for the
image (and the optional per-pixel weight map), nearest for the mask, so class indices are never
blended. Pixels that come from outside the image get image value 0 (the mean of a standardised
image), class 0, and weight 0; the returned weight map therefore also marks them as padding
that the loss ignores.

Randomness: per-image parameters come from a CPU ``torch.Generator`` (small tensors, identical
on every device); per-pixel noise comes from a generator on the device, seeded from the first.
The same seed gives the same augmented batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from napari_alunet.training.domain import DomainRandomiser


@dataclass
class AugmentSettings:
    """What :class:`Augmenter` does; probabilities are per image."""

    flip: bool = True
    rot90: bool = True
    affine_p: float = 0.5
    max_rotation_deg: float = 90.0
    max_shift: float = 0.1  # fraction of the image side
    scale_range: tuple[float, float] = (0.8, 1.2)
    elastic_p: float = 0.3
    elastic_alpha: float = 0.04  # control-point displacement, in units of the half side
    elastic_points: int = 6  # control points per side of the coarse displacement grid
    intensity_p: float = 0.5
    brightness: float = 0.2  # shift in units of the image standard deviation
    contrast_range: tuple[float, float] = (0.8, 1.2)
    noise_p: float = 0.3
    noise_std: float = 0.1  # maximum noise standard deviation


def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def seeded_generators(seed: int, device: torch.device) -> tuple[torch.Generator, torch.Generator]:
    """(per-image parameter generator on the CPU, per-pixel generator on ``device`` seeded
    from the first): the same seed gives the same batches on any device."""
    gen = torch.Generator().manual_seed(int(seed))
    device_gen = torch.Generator(device=device)
    device_gen.manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
    return gen, device_gen


class Augmenter:
    """Callable ``(images, masks, weights=None) -> (images, masks, weights)``.

    Parameters
    ----------
    settings : what to apply (default :class:`AugmentSettings`).
    seed : seeds both generators.
    device : where the batches live (the per-pixel noise generator is created there).
    domain : a :class:`~napari_alunet.training.domain.DomainRandomiser` applied after the
        intensity changes (``TrainConfig.domain_randomisation``), or None.
    """

    def __init__(
        self,
        settings: AugmentSettings | None = None,
        *,
        seed: int = 0,
        device: torch.device | str = "cpu",
        domain: DomainRandomiser | None = None,
    ) -> None:
        self.domain = domain
        self.settings = settings or AugmentSettings()
        self.device = torch.device(device)
        self.gen, self.device_gen = seeded_generators(seed, self.device)

    def _linear_part(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, 2, 2) output->input maps in pixel-scaled coordinates (x, y)."""
        s = self.settings
        g = self.gen
        m = torch.eye(2).repeat(n, 1, 1)
        if s.flip:
            fx = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
            fy = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
            m = torch.diag_embed(torch.stack([fx, fy], dim=1)) @ m
        if s.rot90:
            # Exact integer matrices (not cos/sin of pi/2) so these rotations move pixel
            # centres exactly onto pixel centres.
            k = torch.randint(4, (n,), generator=g)
            c = torch.tensor([1.0, 0.0, -1.0, 0.0])[k]
            si = torch.tensor([0.0, 1.0, 0.0, -1.0])[k]
            rot = torch.stack([torch.stack([c, -si], 1), torch.stack([si, c], 1)], 1)
            m = rot @ m
        apply = torch.rand(n, generator=g) < s.affine_p
        angle = _uniform(g, n, -s.max_rotation_deg, s.max_rotation_deg) * math.pi / 180
        scale = _uniform(g, n, *s.scale_range)
        angle = torch.where(apply, angle, torch.zeros_like(angle))
        scale = torch.where(apply, scale, torch.ones_like(scale))
        c, si = torch.cos(angle) / scale, torch.sin(angle) / scale
        aff = torch.stack([torch.stack([c, -si], 1), torch.stack([si, c], 1)], 1)
        shift = _uniform(g, 2 * n, -s.max_shift, s.max_shift).reshape(n, 2) * 2  # normalised
        shift = shift * apply[:, None]
        return aff @ m, shift

    def _grid(self, n: int, height: int, width: int) -> torch.Tensor:
        """(n, H, W, 2) sampling grid in grid_sample's normalised coordinates."""
        s = self.settings
        linear, shift = self._linear_part(n)
        # Rotate in pixel units, then back to normalised units, so a non-square image is not
        # sheared: theta = D^-1 M D with D = diag(W, H).
        d = torch.tensor([float(width), float(height)])
        linear = linear * d[None, None, :] / d[None, :, None]
        theta = torch.cat([linear, shift[:, :, None]], dim=2).to(self.device)
        grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
        apply = torch.rand(n, generator=self.gen) < s.elastic_p
        if s.elastic_p > 0 and bool(apply.any()):
            # Smooth random displacement: uniform noise on a coarse control grid, upsampled
            # bicubically (a smoothed random field, as in TorchIO's elastic deformation).
            p = s.elastic_points
            coarse = (torch.rand(n, 2, p, p, generator=self.gen) * 2 - 1) * s.elastic_alpha
            coarse = coarse * apply[:, None, None, None]
            field = F.interpolate(
                coarse.to(self.device), size=(height, width), mode="bicubic", align_corners=True
            )
            grid = grid + field.permute(0, 2, 3, 1)
        return grid

    def _intensity(self, images: torch.Tensor) -> torch.Tensor:
        s = self.settings
        n = images.shape[0]
        g = self.gen
        on = (torch.rand(n, generator=g) < s.intensity_p).float()
        contrast = 1 + on * (_uniform(g, n, *s.contrast_range) - 1)
        brightness = on * _uniform(g, n, -s.brightness, s.brightness)
        noisy = (torch.rand(n, generator=g) < s.noise_p).float()
        sigma = noisy * _uniform(g, n, 0.0, s.noise_std)
        shape = (n,) + (1,) * (images.dim() - 1)
        images = images * contrast.to(images.device).view(shape)
        images = images + brightness.to(images.device).view(shape)
        if s.noise_p > 0 and bool(noisy.any()):
            noise = torch.randn(
                images.shape, generator=self.device_gen, device=images.device, dtype=images.dtype
            )
            images = images + noise * sigma.to(images.device).view(shape)
        return images

    @torch.no_grad()
    def __call__(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        weights: torch.Tensor | None = None,
        *,
        intensity: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Augment a batch.

        Parameters
        ----------
        images : (B, C, H, W) float on ``self.device``.
        masks : (B, H, W) integer class indices.
        weights : (B, H, W) float per-pixel loss weights, or None for all ones.
        intensity : also apply brightness/contrast/noise (False for alignment checks).

        Returns
        -------
        images (B, C, H, W) float, masks (B, H, W) int64, weights (B, H, W) float; weights are
        0 where the sample came from outside the image.
        """
        n, _, height, width = images.shape
        grid = self._grid(n, height, width).to(images.dtype)
        out_images = F.grid_sample(images, grid, mode="bilinear", align_corners=False)
        out_masks = F.grid_sample(
            masks[:, None].to(images.dtype), grid, mode="nearest", align_corners=False
        )
        w = torch.ones_like(masks, dtype=images.dtype) if weights is None else weights
        out_w = F.grid_sample(w[:, None].to(images.dtype), grid, align_corners=False)[:, 0]
        if intensity:
            out_images = self._intensity(out_images)
            if self.domain is not None:
                out_images = self.domain(out_images)
        return out_images, out_masks[:, 0].round().long(), out_w


@dataclass
class StrongSettings:
    """The strong view of the semi-supervised term (:class:`StrongAugmenter`); per image."""

    contrast_range: tuple[float, float] = (0.5, 1.5)
    brightness: float = 0.5  # shift in units of the image standard deviation
    gamma_range: tuple[float, float] = (0.7, 1.5)
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.5, 2.0)  # pixels
    noise_p: float = 0.5
    noise_std: float = 0.3
    cutout_p: float = 0.5
    cutout_size: tuple[float, float] = (0.1, 0.4)  # side of the square, fraction of the image


class StrongAugmenter:
    """Photometric strong augmentation for consistency training, geometry unchanged.

    Callable ``images (B, C, H, W) -> (images, keep (B, H, W) bool)``. Intensity (contrast,
    brightness, a gamma-like curve), Gaussian blur, noise and a cut-out square per image, as in
    FixMatch / UniMatch's strong view, all vectorised over the batch. The geometry is left
    alone so the teacher's prediction on the weak view stays aligned pixel for pixel; ``keep``
    is False inside the cut-out, where there is nothing to predict from, and the consistency
    loss ignores those pixels.
    """

    def __init__(self, settings: StrongSettings | None = None, *, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        self.settings = settings or StrongSettings()
        self.device = torch.device(device)
        self.gen, self.device_gen = seeded_generators(int(seed) + 7919, self.device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, g = self.settings, self.gen
        n, _, height, width = images.shape
        shape = (n, 1, 1, 1)
        dev, dtype = images.device, images.dtype

        def per_image(values: torch.Tensor) -> torch.Tensor:
            return values.to(device=dev, dtype=dtype).view(shape)

        # Gamma on the standardised image: map through a sigmoid, apply the power, map back,
        # so the curve bends mid-tones without producing NaN for negative values.
        gamma = per_image(_uniform(g, n, *s.gamma_range))
        unit = torch.sigmoid(images).clamp(1e-4, 1 - 1e-4) ** gamma
        out = torch.log(unit / (1 - unit))
        out = out * per_image(_uniform(g, n, *s.contrast_range))
        out = out + per_image(_uniform(g, n, -s.brightness, s.brightness))
        blur = torch.rand(n, generator=g) < s.blur_p
        if bool(blur.any()):
            sigma = torch.where(blur, _uniform(g, n, *s.blur_sigma), torch.zeros(n))
            out = _gaussian_blur(out, sigma)
        noisy = (torch.rand(n, generator=g) < s.noise_p).float()
        if bool(noisy.any()):
            std = per_image(noisy * _uniform(g, n, 0.0, s.noise_std))
            out = out + torch.randn(out.shape, generator=self.device_gen, device=dev,
                                    dtype=dtype) * std
        inside = random_boxes(g, n, height, width, s.cutout_p, s.cutout_size).to(dev)
        out = out.masked_fill(inside[:, None], 0.0)  # 0 is the mean of a standardised image
        return out, ~inside


def random_boxes(gen: torch.Generator, n: int, height: int, width: int, p: float,
                 size: tuple[float, float]) -> torch.Tensor:
    """(n, H, W) bool: a random square per image with probability ``p`` (else all False);
    ``size`` bounds its side as a fraction of the image side; centres anywhere (clipped)."""
    on = torch.rand(n, generator=gen) < p
    side = _uniform(gen, n, *size)
    half_h, half_w = side * height / 2, side * width / 2
    cy, cx = torch.rand(n, generator=gen) * height, torch.rand(n, generator=gen) * width
    yy = torch.arange(height, dtype=torch.float32)[None, :, None]
    xx = torch.arange(width, dtype=torch.float32)[None, None, :]
    return ((yy - cy[:, None, None]).abs() < half_h[:, None, None]) & (
        (xx - cx[:, None, None]).abs() < half_w[:, None, None]) & on[:, None, None]


def _gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image with its own sigma (0: unchanged); separable, one grouped conv per axis.

    images (B, C, H, W), sigma (B,) pixels.
    """
    n, c, height, width = images.shape
    radius = max(1, int(math.ceil(3 * float(sigma.max()))))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    safe = sigma.clamp(min=1e-3)[:, None]
    kernel = torch.exp(-0.5 * (offsets[None] / safe) ** 2)
    kernel = torch.where(sigma[:, None] > 0, kernel, (offsets[None] == 0).float())
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)
    kernel = kernel.to(device=images.device, dtype=images.dtype)
    flat = images.reshape(1, n * c, height, width)
    flat = F.pad(flat, (radius, radius, 0, 0), mode="reflect" if width > radius else "replicate")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=n * c)
    flat = F.pad(flat, (0, 0, radius, radius), mode="reflect" if height > radius else "replicate")
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=n * c)
    return flat.reshape(n, c, height, width)
