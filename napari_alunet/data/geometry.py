"""Aspect-preserving resize and pad ("letter-box") to the square model input, and its inverse.

An image of shape ``(h, w)`` is scaled by ``s = size / max(h, w)`` to ``(round(h*s), round(w*s))``
and centred on a ``size x size`` canvas. :class:`Letterbox` records that so that predictions made
on the canvas map back to the original pixel grid exactly (labels with nearest neighbour, maps
with linear interpolation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Letterbox:
    """The transform from an original ``(orig_h, orig_w)`` image to a ``size``² canvas.

    Attributes
    ----------
    orig_h, orig_w : original image shape.
    size : side of the square canvas.
    new_h, new_w : shape of the resized image inside the canvas.
    top, left : offset of the resized image in the canvas.
    """

    orig_h: int
    orig_w: int
    size: int
    new_h: int
    new_w: int
    top: int
    left: int

    @classmethod
    def fit(cls, orig_h: int, orig_w: int, size: int) -> Letterbox:
        if orig_h <= 0 or orig_w <= 0:
            raise ValueError(f"image shape must be positive, got {orig_h}x{orig_w}")
        scale = size / max(orig_h, orig_w)
        new_h = max(1, min(size, int(round(orig_h * scale))))
        new_w = max(1, min(size, int(round(orig_w * scale))))
        return cls(orig_h, orig_w, size, new_h, new_w, (size - new_h) // 2, (size - new_w) // 2)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    # -- forward ----------------------------------------------------------------------------
    def apply_image(self, image: np.ndarray, fill: float | None = None) -> np.ndarray:
        """Resize (bilinear, antialiased when shrinking) and pad a 2-D image.

        Parameters
        ----------
        image : (orig_h, orig_w) array, any real dtype.
        fill : value of the padding; default the median of the image border, so the pad looks
            like background rather than a black frame the network would learn to find.

        Returns
        -------
        (size, size) float32 array.
        """
        self._check(image)
        src = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
        resized = F.interpolate(
            src, size=(self.new_h, self.new_w), mode="bilinear", align_corners=False,
            antialias=self.new_h < self.orig_h,
        )[0, 0].numpy()
        if fill is None:
            border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
            fill = float(np.median(border))
        canvas = np.full((self.size, self.size), fill, dtype=np.float32)
        canvas[self.top : self.top + self.new_h, self.left : self.left + self.new_w] = resized
        return canvas

    def apply_labels(self, labels: np.ndarray, fill: int = 0) -> np.ndarray:
        """Resize (nearest neighbour) and pad a 2-D label image; returns (size, size) uint8."""
        self._check(labels)
        rows = self._nearest_index(self.new_h, self.orig_h)
        cols = self._nearest_index(self.new_w, self.orig_w)
        canvas = np.full((self.size, self.size), fill, dtype=np.uint8)
        canvas[self.top : self.top + self.new_h, self.left : self.left + self.new_w] = labels[
            np.ix_(rows, cols)
        ]
        return canvas

    # -- inverse ----------------------------------------------------------------------------
    def invert_labels(self, labels: np.ndarray) -> np.ndarray:
        """Crop a (size, size) label canvas and resize it back to (orig_h, orig_w), nearest."""
        crop = self._crop(labels)
        rows = self._nearest_index(self.orig_h, self.new_h)
        cols = self._nearest_index(self.orig_w, self.new_w)
        return np.ascontiguousarray(crop[np.ix_(rows, cols)])

    def invert_map(self, values: np.ndarray) -> np.ndarray:
        """Crop a (..., size, size) float map and resize it back bilinearly to the original."""
        crop = self._crop(values)
        lead = crop.shape[:-2]
        src = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32)).reshape(
            1, -1, self.new_h, self.new_w
        )
        out = F.interpolate(src, size=(self.orig_h, self.orig_w), mode="bilinear",
                            align_corners=False)
        return out.reshape(*lead, self.orig_h, self.orig_w).numpy()

    # -- helpers ----------------------------------------------------------------------------
    def _crop(self, canvas: np.ndarray) -> np.ndarray:
        if canvas.shape[-2:] != (self.size, self.size):
            raise ValueError(
                f"expected a {self.size}x{self.size} canvas, got shape {canvas.shape}"
            )
        return canvas[..., self.top : self.top + self.new_h, self.left : self.left + self.new_w]

    def _check(self, image: np.ndarray) -> None:
        if image.shape[-2:] != (self.orig_h, self.orig_w):
            raise ValueError(
                f"expected an image of {self.orig_h}x{self.orig_w} pixels, got {image.shape}"
            )

    @staticmethod
    def _nearest_index(n_out: int, n_in: int) -> np.ndarray:
        # Pixel-centre sampling: output pixel i looks at input coordinate (i + 0.5) * n_in/n_out.
        index = np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.intp)
        return np.clip(index, 0, n_in - 1)
