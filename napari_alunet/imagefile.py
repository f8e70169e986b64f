"""Decode image files safely: one channel of float32, sizes checked before any pixel is read.

Images become one float32 channel at their original intensity scale: 8-bit files give 0-255,
16-bit files 0-65535 (not rescaled; ``data.dataset.normalise`` standardises each image anyway).
Colour images become luminance (ITU-R 601: 0.299 R + 0.587 G + 0.114 B, alpha ignored).

Every problem with an input file raises :class:`InputError`, naming the file, the problem and
what to do. Sizes are checked against :data:`MAX_PIXELS` from the header, before any pixel is
decoded: a file whose header claims 50,000 x 50,000 pixels is refused at once.

This module sits below both the store (which reads its copied images through it) and
:mod:`napari_alunet.data.io` (which reads the masks of the public layouts with :func:`decode`).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

__all__ = ["IMAGE_EXTENSIONS", "MAX_FILE_BYTES", "MAX_PIXELS", "InputError", "decode",
           "read_image", "read_image_size"]

#: Largest image (height x width) accepted. Read at call time: assign a new value to change it.
MAX_PIXELS = 64_000_000
#: Largest image file read, in bytes: 64 M pixels of 16-bit RGBA uncompressed (8 bytes a
#: pixel) plus headers. A small image padded with a gigabyte of trailing junk would otherwise be
#: read whole into memory and copied into the project.
MAX_FILE_BYTES = 8 * MAX_PIXELS + (16 << 20)

#: File extensions taken as images (compared lower-case).
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".bmp", ".png", ".tif", ".tiff", ".jpg", ".jpeg"})


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


def decode(path: str | os.PathLike[str], expected_shape: tuple[int, int] | None = None, *,
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
    h, w = decode(path, header_only=True).data.shape[:2]
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
    dec = decode(path)
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
