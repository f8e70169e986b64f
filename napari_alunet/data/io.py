"""Read the images and masks of the public blastocyst data layouts.

Images are decoded by :mod:`napari_alunet.imagefile` (:func:`read_image`,
:func:`read_image_size` and :class:`InputError` are re-exported here; the size limits live
there). Masks become ``uint8`` class indices (0 background, 1 ICM, 2 TE, 3 ZP, 4 BL), from one
binary mask per class (blastocoel derived) or from one colour mask (nearest palette colour
within a tolerance).

Every problem with an input file raises :class:`InputError`, naming the file, the problem and
what to do; sizes are checked from the header before any pixel is decoded.

Layout detection and name matching (:func:`scan_pool`, :class:`PoolItem`, :class:`PoolListing`)
live in :mod:`napari_alunet.data.naming` (which imports this module, not the other way).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from napari_alunet.config import DEFAULT_CLASS_COLOURS
from napari_alunet.imagefile import (  # noqa: F401 (re-exported: the readers of one place)
    IMAGE_EXTENSIONS,
    InputError,
    decode,
    read_image,
    read_image_size,
)

if TYPE_CHECKING:
    from napari_alunet.data.naming import PoolItem

__all__ = [
    "IMAGE_EXTENSIONS", "PALETTE", "InputError",
    "labels_from_binary",
    "labels_from_colour", "load_item_labels", "read_binary_mask", "read_colour_mask",
    "read_image", "read_image_size",
]  # pool scanning (scan_pool, PoolItem, PoolListing) is in naming.py, which imports this

#: Default class colours (RGB, index = class) of the public blastocyst colour masks.
PALETTE: tuple[tuple[int, int, int], ...] = DEFAULT_CLASS_COLOURS


def read_binary_mask(path: str | os.PathLike[str],
                     expected_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a one-class mask as ``bool``.

    Colour masks become one channel as the maximum of R, G, B (a pure red or white mask is all
    "on"). A mask with an alpha channel that varies is drawn in its alpha: a pixel is on when
    it is opaque (alpha > half) and its colour is on (so white everywhere with the shape in
    alpha reads as that shape). The threshold lies halfway between the smallest and the largest
    value the mask uses, so a foreground of any value (255, 1, 100 in 8 bit, 65535) is read and
    JPEG noise around both values is removed; a constant mask is all on when its value is
    positive, else empty.

    Raises
    ------
    InputError
        as :func:`read_image`, or when the size differs from ``expected_shape`` ``(h, w)``
        (the message gives both sizes; checked from the header).
    """
    dec = decode(path, expected_shape)
    data = dec.data
    if dec.kind == "palette":
        data = dec.palette[data]  # type: ignore[index]
    alpha = None
    if data.ndim == 3:
        if data.shape[-1] in (2, 4):
            alpha = data[..., -1]
        data = data[..., :3].max(axis=-1) if data.shape[-1] >= 3 else data[..., 0]
    on = _above_midpoint(data)
    if alpha is not None and alpha.size and alpha.min() != alpha.max():
        # Transparent pixels are off whatever their colour (a shape drawn in alpha).
        on &= _above_midpoint(alpha)
    return on


def _above_midpoint(values: np.ndarray) -> np.ndarray:
    """``values > (min + max) / 2``; a constant array is all True when positive."""
    if not values.size:
        return np.zeros(values.shape, dtype=bool)
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.full(values.shape, high > 0)
    return np.asarray(values > (low + high) / 2.0)


# -- label images ------------------------------------------------------------------------------
def _disk(radius: int) -> np.ndarray:
    yy, xx = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    return (yy * yy + xx * xx) <= radius * radius


def labels_from_binary(icm: np.ndarray, te: np.ndarray, zp: np.ndarray, *,
                       closing_radii: Sequence[int] = (2, 4, 8)) -> np.ndarray:
    """Class-index labels from the ICM, TE and ZP binary masks, with the blastocoel derived.

    Priority where masks overlap: ICM over TE over ZP (the smaller, inner structure wins, as
    annotators draw it on top). The blastocoel (BL, 4) is the inside of the zona that is none
    of the others: ``binary_fill_holes(zp) & ~zp & ~icm & ~te``. Real zona rings are not always
    closed; if filling adds nothing but ``zp`` is not empty, ``zp`` is first closed with a disk
    of each radius in ``closing_radii`` in turn (the image border padded so that closing does
    not erode there) until filling finds an inside; the pixels only the closing added stay
    background. A ring cut by the image border cannot be closed and gives no blastocoel.

    Parameters
    ----------
    icm, te, zp : (H, W) arrays, nonzero = in the class.

    Returns
    -------
    (H, W) uint8 with 0 background, 1 ICM, 2 TE, 3 ZP, 4 BL.
    """
    icm, te, zp = (np.asarray(m).astype(bool) for m in (icm, te, zp))
    if not icm.shape == te.shape == zp.shape or icm.ndim != 2:
        raise ValueError(f"ICM, TE and ZP masks must be 2-D and of one shape, got {icm.shape}, "
                         f"{te.shape} and {zp.shape}")
    ring = zp
    inside = ndimage.binary_fill_holes(ring) & ~ring
    for radius in closing_radii if zp.any() and not inside.any() else ():
        padded = np.pad(zp, radius, mode="edge")
        ring = ndimage.binary_closing(padded, _disk(radius))[radius:-radius, radius:-radius]
        inside = ndimage.binary_fill_holes(ring) & ~ring
        if inside.any():
            break
    labels = np.zeros(zp.shape, np.uint8)
    labels[inside & ~icm & ~te] = 4
    labels[zp] = 3
    labels[te] = 2
    labels[icm] = 1
    return labels


def labels_from_colour(rgb: np.ndarray, colours: Sequence[Sequence[int]] = PALETTE, *,
                       tolerance: float = 40, path: str | os.PathLike[str] | None = None
                       ) -> np.ndarray:
    """Map a colour mask to class indices by the nearest palette colour.

    Each distinct colour is matched once (``np.unique(return_inverse=True)``) and spread back
    with a look-up table: one sort of the pixels, whatever the number of colours.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 colour mask.
    colours : (C, 3) RGB per class, index = class (default :data:`PALETTE`).
    tolerance : largest Euclidean RGB distance accepted from the nearest class colour (absorbs
        JPEG and antialiasing noise).
    path : the mask's file, named in errors.

    Returns
    -------
    (H, W) uint8 class indices (ties go to the lower index).

    Raises
    ------
    InputError
        if pixels lie farther than ``tolerance`` from every class colour; the message lists up
        to five such colours (most frequent first) with pixel counts, and the palette.
    """
    rgb = np.asarray(rgb)
    pal = np.asarray(colours, dtype=np.float64).reshape(-1, 3)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if not 1 <= len(pal) <= 256 or tolerance < 0:
        raise ValueError(f"need 1-256 colours and tolerance >= 0, got {len(pal)} and {tolerance}")
    px = rgb.astype(np.uint32)
    packed = (px[..., 0] << 16) | (px[..., 1] << 8) | px[..., 2]
    uniq, inverse, counts = np.unique(packed.ravel(), return_inverse=True, return_counts=True)
    ucol = np.stack([(uniq >> 16) & 255, (uniq >> 8) & 255, uniq & 255], axis=1).astype(float)
    dist = np.sqrt(((ucol[:, None, :] - pal[None, :, :]) ** 2).sum(-1))  # (U, C)
    lut = dist.argmin(axis=1).astype(np.uint8)
    bad = np.flatnonzero(dist.min(axis=1) > tolerance)
    if bad.size:
        bad = bad[np.argsort(-counts[bad], kind="stable")]
        listed = ", ".join(f"{tuple(int(v) for v in ucol[i])} x {counts[i]:,} px"
                           for i in bad[:5])
        more = f" and {bad.size - 5:,} more colour(s)" if bad.size > 5 else ""
        lossy = str(path).lower().endswith((".jpg", ".jpeg"))
        hint = (" (JPEG compression mixes colours at class borders: export masks as PNG or "
                "BMP)") if lossy else ""
        palette = ", ".join(f"{i}: {tuple(int(v) for v in c)}" for i, c in enumerate(pal))
        raise InputError(
            f"{path if path is not None else 'colour mask'}: {int(counts[bad].sum()):,} pixel(s) "
            f"are farther than {tolerance:g} (RGB distance) from every class colour: "
            f"{listed}{more}. Palette (class: RGB): {palette}. Recolour the mask, "
            f"give the data set's palette, or raise the tolerance{hint}"
        )
    return lut[inverse].reshape(rgb.shape[:2])


def read_colour_mask(path: str | os.PathLike[str], colours: Sequence[Sequence[int]] = PALETTE,
                     *, tolerance: float = 40,
                     expected_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a multi-class mask as ``uint8`` class indices.

    Rule: a one-channel mask (grayscale, 16-bit) whose values are all integers below
    ``len(colours)`` is taken as class indices as stored. A palette (indexed-colour) image is
    read through its palette: its colours are mapped to classes, so the order of the palette
    does not matter; only a palette of grays (R = G = B, as tools write index masks) is read as
    those gray values, which must then be class indices. Colour images are mapped by
    :func:`labels_from_colour`; RGBA pixels with alpha 0 are background.

    Raises
    ------
    InputError
        as :func:`read_image`; for a size other than ``expected_shape``; for colours off the
        palette (see :func:`labels_from_colour`); for a grayscale mask with values that are not
        class indices.
    """
    n = len(colours)
    dec = decode(path, expected_shape)
    data = dec.data
    if dec.kind == "gray_alpha":
        data = data[..., 0]
    if dec.kind == "palette":
        # Through the palette, never the raw indices: a palette in another order than the
        # classes would otherwise give every pixel the wrong class.
        assert dec.palette is not None  # _decode gives every "palette" image its palette
        used = np.unique(data)
        entries = dec.palette[used]
        if (entries == entries[:, :1]).all():
            data = dec.palette[data][..., 0]  # a gray palette: its values are the classes
        else:
            lut = np.zeros(256, dtype=np.uint8)
            lut[used] = labels_from_colour(entries[None], colours, tolerance=tolerance,
                                           path=path)[0]
            return lut[data]
    if data.ndim == 2:
        vals = np.unique(data)
        if vals.size and vals.min() >= 0 and vals.max() < n and np.all(vals == np.round(vals)):
            return data.astype(np.uint8)
        odd = vals[(vals < 0) | (vals >= n) | (vals != np.round(vals))]
        shown = ", ".join(f"{v:g}" for v in odd[:5])
        what = "palette of grays" if dec.kind == "palette" else "one-channel mask"
        raise InputError(
            f"{path}: {what} with values {shown} (not class indices 0-{n - 1}); "
            "a grayscale mask must hold class indices. If it is one class's binary mask, "
            "use the GT_ICM/GT_TE/GT_ZP layout; otherwise export the mask in colour"
        )
    if data.dtype != np.uint8 and (data.min() < 0 or data.max() > 255):
        raise InputError(f"{path}: colour mask with values outside 0-255 ({data.dtype}); "
                         "export colour masks as 8-bit RGB")
    rgb = np.ascontiguousarray(data[..., :3]).astype(np.uint8)
    if data.shape[-1] == 4:
        rgb[data[..., 3] == 0] = np.asarray(colours[0], dtype=np.uint8)
    return labels_from_colour(rgb, colours, tolerance=tolerance, path=path)


# -- pool items --------------------------------------------------------------------------------
def load_item_labels(item: PoolItem, layout: str, colours: Sequence[Sequence[int]], *,
                     tolerance: float = 40) -> np.ndarray | None:
    """Ground-truth labels of one scanned item, checked against its image's size.

    ``colours`` are used by the ``'rgb'`` layout; the ``'binary'`` layout always gives the
    default classes 0-4. Returns (H, W) uint8 class indices, or None for the ``'images'``
    layout and for an item whose masks are missing (``scan_pool`` listed it in ``unmatched``).
    Raises :class:`InputError` from the image header or the masks (size mismatch, colours ...).
    """
    if layout not in ("binary", "rgb", "images"):
        raise ValueError(f"layout must be 'binary', 'rgb' or 'images', got {layout!r}")
    if layout == "images" or (layout == "rgb" and item.mask_path is None) or (
            layout == "binary" and not all(c in item.masks for c in ("ICM", "TE", "ZP"))):
        return None
    shape = read_image_size(item.image_path)
    if layout == "rgb":
        assert item.mask_path is not None  # returned None above without one
        return read_colour_mask(item.mask_path, colours, tolerance=tolerance,
                                expected_shape=shape)
    icm, te, zp = (read_binary_mask(item.masks[c], shape) for c in ("ICM", "TE", "ZP"))
    return labels_from_binary(icm, te, zp)
