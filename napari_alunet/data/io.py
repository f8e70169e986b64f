"""Read the images and masks of the public blastocyst data layouts.

Images become one float32 channel at their original intensity scale: 8-bit files give 0-255,
16-bit files 0-65535 (not rescaled; ``data.dataset.normalise`` standardises each image anyway).
Colour images become luminance (ITU-R 601: 0.299 R + 0.587 G + 0.114 B, alpha ignored). Masks
become ``uint8`` class indices (0 background, 1 ICM, 2 TE, 3 ZP, 4 BL), from one binary mask per
class (blastocoel derived) or from one colour mask (nearest palette colour within a tolerance).

Every problem with an input file raises :class:`InputError`, naming the file, the problem and
what to do. Sizes are checked against :data:`MAX_PIXELS` from the header, before any pixel is
decoded: a file whose header claims 50,000 x 50,000 pixels is refused at once.

Layout detection and name matching (:func:`scan_pool`, :class:`PoolItem`, :class:`PoolListing`)
live in :mod:`napari_alunet.data.naming` (which imports this module, not the other way).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage

from napari_alunet.config import DEFAULT_CLASS_COLOURS

if TYPE_CHECKING:
    from napari_alunet.data.naming import PoolItem

__all__ = [
    "IMAGE_EXTENSIONS", "MAX_FILE_BYTES", "MAX_PIXELS", "PALETTE", "InputError",
    "labels_from_binary",
    "labels_from_colour", "load_item_labels", "read_binary_mask", "read_colour_mask",
    "read_image", "read_image_size",
]  # pool scanning (scan_pool, PoolItem, PoolListing) is in naming.py, which imports this

#: Largest image (height x width) accepted. Read at call time: assign a new value to change it.
MAX_PIXELS = 64_000_000
#: Largest image file read, in bytes: 64 M pixels of 16-bit RGBA uncompressed (8 bytes a
#: pixel) plus headers. A small image padded with a gigabyte of trailing junk would otherwise be
#: read whole into memory and copied into the project.
MAX_FILE_BYTES = 8 * MAX_PIXELS + (16 << 20)

#: File extensions taken as images (compared lower-case).
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".bmp", ".png", ".tif", ".tiff", ".jpg", ".jpeg"})

#: Default class colours (RGB, index = class) of the public blastocyst colour masks.
PALETTE: tuple[tuple[int, int, int], ...] = DEFAULT_CLASS_COLOURS

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PIL_FORMATS = ("BMP", "DIB", "PNG", "JPEG")
_PIL_LOCK = threading.Lock()
# PIL.ImageFile.LOAD_TRUNCATED_IMAGES is left at its default, False: a cut file then fails in
# img.load() instead of decoding as half an image (we never set it, so as not to change others).


class InputError(ValueError):
    """An input file or folder cannot be used; the message names it and says what to do."""


class _Decoded(NamedTuple):
    """Pixels as stored. ``kind``: gray (H,W), rgb (H,W,3), rgba (H,W,4), gray_alpha (H,W,2),
    palette (H,W) indices with ``palette`` (N,3) uint8 colours."""

    data: np.ndarray
    kind: str
    palette: np.ndarray | None = None


# -- files and headers -------------------------------------------------------------------------
def _open_checked(path: str | os.PathLike[str]) -> tuple[Path, Any]:
    """Open a regular, non-empty, readable file for binary reading, or raise InputError."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        if os.path.islink(p):
            raise InputError(f"{p}: broken symbolic link (its target does not exist); "
                             "replace it with the real file") from None
        raise InputError(f"{p}: file not found; check the path") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{p}: symbolic link loop; replace the link with the real file") \
                from None
        raise InputError(f"{p}: cannot be accessed ({exc.strerror}); check the path and "
                         "its permissions") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{p}: is a folder, not an image file; give the path of a file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{p}: is not a regular file (device, pipe or socket); give an image file")
    if st.st_size == 0:
        raise InputError(f"{p}: file is empty (0 bytes), probably an interrupted copy; "
                         "copy it again or remove it")
    if st.st_size > MAX_FILE_BYTES:
        raise InputError(f"{p}: file is {st.st_size:,} bytes, more than the limit of "
                         f"{MAX_FILE_BYTES:,} for an image of at most {MAX_PIXELS:,} pixels; "
                         "save it again without extra data, or raise "
                         "napari_alunet.data.io.MAX_FILE_BYTES")
    try:
        return p, open(p, "rb")  # closed by the caller
    except PermissionError:
        raise InputError(f"{p}: cannot be read (permission denied); make it readable "
                         "(chmod u+r) or copy it somewhere you can read") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot be opened ({exc.strerror})") from None


def _check_size(p: Path, h: int, w: int, expected_shape: tuple[int, int] | None = None) -> None:
    if h <= 0 or w <= 0:
        raise InputError(f"{p}: header gives an empty image ({h} x {w}); the file is corrupt")
    if h * w > MAX_PIXELS:
        raise InputError(
            f"{p}: image is {h} x {w} pixels (height x width) = {h * w:,} pixels, more than the "
            f"limit of {MAX_PIXELS:,}; downscale it, or raise "
            "napari_alunet.data.io.MAX_PIXELS if you really have the memory"
        )
    if expected_shape is not None and (h, w) != tuple(expected_shape):
        eh, ew = expected_shape
        raise InputError(
            f"{p}: mask is {h} x {w} pixels (height x width) but its image is {eh} x {ew}; a "
            "mask must have exactly its image's size: check that it belongs to this image, or "
            "re-export it at the image's size"
        )


@contextmanager
def _pil_opener(fh: Any, p: Path) -> Iterator[Image.Image]:
    """``Image.open`` (lazy: header only) with PIL's decompression-bomb check replaced by ours.

    PIL warns above ``Image.MAX_IMAGE_PIXELS`` and refuses above twice that, in ``Image.open``;
    :data:`MAX_PIXELS` (set higher or lower) must be the only limit, so PIL's is off while the
    header is parsed, under a lock, and ours runs right after.
    """
    with _PIL_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            img = Image.open(fh, formats=_PIL_FORMATS)
        except Image.UnidentifiedImageError:
            raise InputError(f"{p}: not a BMP, PNG, TIFF or JPEG image (the content is not "
                             "recognised; it may be another format, text or corrupt)") from None
        except Exception as exc:  # noqa: BLE001 - a broken header raises many types
            raise InputError(f"{p}: corrupt image header ({exc}); export the file again") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    with img:
        yield img


def _tiff_page(tif: Any, p: Path) -> Any:
    """The single 2-D page of a TIFF; multi-page and 3-D stacks other than (1, H, W) refused."""
    page = tif.pages[0]
    extra = [n for n, a in zip(page.shape, page.axes, strict=True) if a not in "YXS"]
    if len(tif.pages) > 1 or int(np.prod(extra, dtype=int)) > 1:
        raise InputError(f"{p}: TIFF holds a stack ({len(tif.pages)} page(s), page shape "
                         f"{page.shape}, axes {page.axes}); save one 2-D image per file")
    return page


def _decode(path: str | os.PathLike[str], expected_shape: tuple[int, int] | None = None, *,
            header_only: bool = False) -> _Decoded:
    """Pixels as stored; the size is checked from the header before decoding."""
    p, fh = _open_checked(path)
    with fh:
        head = fh.read(4)
        fh.seek(0)
        if head in _TIFF_MAGIC:
            return _decode_tiff(fh, p, expected_shape, header_only)
        with _pil_opener(fh, p) as img:
            _check_orientation(p, img)
            _check_size(p, img.height, img.width, expected_shape)
            if header_only:
                return _Decoded(np.empty((img.height, img.width, 0), np.uint8), "")  # shape only
            try:
                img.load()
                return _from_pil(img)
            except Exception as exc:  # noqa: BLE001 - truncation, bad chunk, zlib error ...
                raise InputError(f"{p}: cannot decode the pixels ({exc}); the file is truncated "
                                 "or corrupt: copy or export it again") from None


def _check_orientation(p: Path, img: Image.Image) -> None:
    """Refuse an EXIF orientation other than 'as stored': viewers show such a file rotated,
    so a mask drawn on what was shown would not match the stored pixels (and the image and
    its mask could disagree). One rule for images and masks alike."""
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block: the pixels decide, as before
        return
    if orientation not in (None, 0, 1):
        raise InputError(
            f"{p}: EXIF orientation {orientation} (viewers show it rotated or flipped); save it "
            "again with the rotation applied to the pixels (e.g. 'exiftran -ai' or any editor's "
            "export) so that images and masks share one pixel grid")


def _from_pil(img: Image.Image) -> _Decoded:
    mode = img.mode
    if mode in ("L", "I", "F") or mode.startswith("I;16"):
        return _Decoded(np.asarray(img), "gray")
    if mode == "1":
        return _Decoded(np.asarray(img.convert("L")), "gray")
    if mode == "P":
        pal = np.zeros((256, 3), np.uint8)
        colours = np.asarray(img.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)[:256]
        pal[: len(colours)] = colours
        return _Decoded(np.asarray(img), "palette", pal)
    if mode in ("LA", "La"):
        return _Decoded(np.asarray(img.convert("LA")), "gray_alpha")
    if mode in ("RGBA", "RGBa", "PA"):
        return _Decoded(np.asarray(img.convert("RGBA")), "rgba")
    return _Decoded(np.asarray(img if mode == "RGB" else img.convert("RGB")), "rgb")


def _decode_tiff(fh: Any, p: Path, expected_shape: tuple[int, int] | None,
                 header_only: bool) -> _Decoded:
    import tifffile

    try:
        with tifffile.TiffFile(fh) as tif:
            page = _tiff_page(tif, p)
            h, w = page.imagelength, page.imagewidth
            _check_size(p, h, w, expected_shape)
            if header_only:
                return _Decoded(np.empty((h, w, 0), np.uint8), "")
            data = page.asarray()
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile and its codecs raise many types
        raise InputError(f"{p}: cannot decode the TIFF ({exc}); the file is truncated or "
                         "corrupt: copy or export it again") from None
    if page.axes.startswith("S"):
        data = np.moveaxis(data, 0, -1)
    data = data.reshape(h, w, -1)
    if data.dtype == bool:
        data = data.astype(np.uint8) * 255
    if page.photometric == tifffile.PHOTOMETRIC.MINISWHITE and data.dtype.kind in "ui":
        data = np.iinfo(data.dtype).max - data
    if page.photometric == tifffile.PHOTOMETRIC.PALETTE and page.colormap is not None:
        cmap = np.asarray(page.colormap).T  # (N, 3): 16-bit by the standard, 8-bit in some files
        cmap = (cmap >> 8) if cmap.max() > 255 else cmap
        return _Decoded(data[..., 0], "palette", cmap.astype(np.uint8))
    kind = {1: "gray", 2: "gray_alpha", 3: "rgb"}.get(data.shape[-1], "rgba")
    return _Decoded(data[..., 0] if kind == "gray" else data[..., :4], kind)


def read_image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(height, width)`` of an image from its header, without decoding pixels.

    Same checks as :func:`read_image` on the path, format, stacks and :data:`MAX_PIXELS`; a
    file cut after its header is only caught when its pixels are read.
    """
    h, w = _decode(path, header_only=True).data.shape[:2]
    return int(h), int(w)


# -- images ------------------------------------------------------------------------------------
def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image as one float32 channel at its original intensity scale.

    Parameters
    ----------
    path : a BMP, PNG, TIFF (8/16-bit, one page or ``(1, H, W)``) or JPEG file. The format is
        recognised from the content, not the extension.

    Returns
    -------
    (H, W) float32. 8-bit images give 0-255 and 16-bit images 0-65535 (values kept, not
    rescaled). RGB, RGBA, palette and LA images become luminance; alpha is ignored.
    A file with an EXIF orientation other than 1 is refused (viewers would show it rotated).

    Raises
    ------
    InputError
        missing, empty, unreadable, truncated or corrupt file; a folder; a link loop; not an
        image; a multi-page TIFF; more than :data:`MAX_PIXELS` pixels (checked from the header);
        NaN or infinite pixels (float TIFF).
    """
    dec = _decode(path)
    data = dec.data
    if dec.kind == "palette":
        data = dec.palette[data]  # type: ignore[index]
    if data.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:  # a float TIFF: NaN/inf pixels would turn every loss and score into NaN
            raise InputError(f"{path}: {bad} pixel(s) are NaN or infinite; replace them (for "
                             "example with the background value) and export the image again")
    if data.ndim == 3 and data.shape[-1] >= 3:
        return (data[..., :3].astype(np.float32) @ _LUMA).astype(np.float32)
    if data.ndim == 3:
        data = data[..., 0]
    return data.astype(np.float32)


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
    dec = _decode(path, expected_shape)
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
    dec = _decode(path, expected_shape)
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
