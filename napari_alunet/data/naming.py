"""Find the images and masks of a pool folder and match them by name.

Layouts (folder names compared case-insensitively; spaces, ``_`` and ``-`` are equivalent):

``binary``
    ``images/`` + ``GT_ICM/`` ``GT_TE/`` ``GT_ZP/``: one binary mask per class.
``rgb``
    ``images/`` + ``masks/`` (or ``mask/``, ``labels/``): one colour (or class-index) mask.
``images``
    ``images/`` alone, or the folder itself holds the images: no ground truth.

If both ``GT_*`` folders and ``masks/`` exist, the binary masks are used and ``masks/`` is
listed in :attr:`PoolListing.ignored`.

Masks are matched to images through a normalised key (:func:`image_key`, :func:`mask_key`):
lower case, extension dropped, runs of spaces, ``_``, ``-`` and ``.`` made one ``_``, and for
masks trailing class and mask words removed, so ``Blast_PCRM_1201754 D5.BMP`` matches
``Blast_PCRM_1201754 D5 ICM_Mask.bmp``, ``blast_pcrm_1201754_d5-icm.png`` and
``Blast_PCRM_1201754 D5_mask.png``. Prefixes (``mask_x.png``) are not recognised.

Only the layout's folders are listed, one level deep (``os.scandir``, no recursion), so a
symbolic link loop cannot hang a scan; sub-folders, hidden files, non-image files and broken or
looping links are listed in :attr:`PoolListing.ignored`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from napari_alunet.data.io import IMAGE_EXTENSIONS, InputError

__all__ = ["PoolItem", "PoolListing", "image_key", "mask_key", "scan_pool"]

#: Classes of the binary layout, with their folder names (normalised) and the words that may
#: end a mask's file name.
BINARY_CLASSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ICM": ("gt_icm", ("icm",)),
    "TE": ("gt_te", ("te", "trophectoderm")),
    "ZP": ("gt_zp", ("zp", "zona")),
}
_MASK_WORDS = frozenset({"mask", "masks", "gt", "label", "labels", "seg", "segmentation",
                         "annotation", "annotations", "groundtruth", "colour", "color", "rgb"})
_IMAGE_DIRS = frozenset({"images", "image", "imgs", "img"})
_MASK_DIRS = frozenset({"masks", "mask", "labels"})
_SEP = re.compile(r"[\s_.\-]+")


def _tokens(name: str) -> list[str]:
    stem, ext = os.path.splitext(name)
    if ext.lower() not in IMAGE_EXTENSIONS:
        stem = name
    return [t for t in _SEP.split(stem.lower()) if t]


def image_key(name: str) -> str:
    """Normalised key of an image file name: ``'Blast_PCRM_1 D5.BMP'`` -> ``'blast_pcrm_1_d5'``."""
    return "_".join(_tokens(name))


def mask_key(name: str, cls: str | None = None) -> str:
    """Normalised key of a mask file name, trailing class/mask words removed.

    ``cls`` (``'ICM'``, ``'TE'``, ``'ZP'`` or None for colour masks) picks the class words that
    may be removed; words are removed from the end while they are mask or class words, but the
    key never becomes empty. ``'Blast_PCRM_1 D5 ICM_Mask.bmp'`` -> ``'blast_pcrm_1_d5'``.
    """
    tokens = _tokens(name)
    words = _MASK_WORDS | frozenset(BINARY_CLASSES[cls][1] if cls else ())
    while len(tokens) > 1 and tokens[-1] in words:
        tokens.pop()
    return "_".join(tokens)


@dataclass
class PoolItem:
    """One image of a pool and its masks.

    Attributes
    ----------
    name : the image's file name without extension (as written, not normalised).
    image_path : the image file.
    masks : binary layout: ``{'ICM': path, 'TE': path, 'ZP': path}`` (those found).
    mask_path : rgb layout: the colour mask, or None if none was found.
    """

    name: str
    image_path: Path
    masks: dict[str, Path] = field(default_factory=dict)
    mask_path: Path | None = None

    @property
    def labelled(self) -> bool:
        """True when the item has a colour mask or all three binary masks."""
        return self.mask_path is not None or all(c in self.masks for c in BINARY_CLASSES)


@dataclass
class PoolListing:
    """The result of :func:`scan_pool`.

    Attributes
    ----------
    src : the scanned folder.
    layout : ``'binary'``, ``'rgb'`` or ``'images'``.
    items : one per image, sorted by key; images without their masks are included
        (:attr:`PoolItem.labelled` False) and reported in ``unmatched``.
    unmatched : human-readable problems: which image lacks which mask, which mask matches no
        image.
    ignored : files and folders that were skipped, each with the reason.
    folders : the folders used: ``'images'`` and ``'ICM'``/``'TE'``/``'ZP'`` or ``'masks'``.
    """

    src: Path
    layout: str
    items: list[PoolItem]
    unmatched: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    folders: dict[str, Path] = field(default_factory=dict)

    def raise_if_unmatched(self) -> None:
        """Raise one :class:`InputError` listing every unmatched image and mask, if any."""
        if self.unmatched:
            lines = "\n".join(f"  - {u}" for u in self.unmatched)
            raise InputError(
                f"{self.src}: {len(self.unmatched)} image(s) or mask(s) could not be matched:\n"
                f"{lines}\nName each mask as its image plus a suffix such as ' ICM_Mask', "
                "'_mask' or '-ICM' (any image extension), or import without strict matching to "
                "keep unmatched images as unlabelled"
            )


def _list_dir(folder: Path, rel: str, ignored: list[str]) -> list[Path]:
    """Image files directly in ``folder`` (sorted); everything else appended to ``ignored``."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except PermissionError:
        raise InputError(f"{folder}: cannot list this folder (permission denied); make it "
                         "readable (chmod u+rx)") from None
    except OSError as exc:
        raise InputError(f"{folder}: cannot list this folder ({exc.strerror})") from None
    files = []
    for e in entries:
        where = f"{rel}{e.name}"
        if e.name.startswith("."):
            ignored.append(f"{where} (hidden file)")
            continue
        try:
            is_dir, is_file = e.is_dir(), e.is_file()  # follows a link one step, no recursion
        except OSError:
            is_dir = is_file = False
        if is_dir:
            ignored.append(f"{where}/ (folder, not scanned)")
        elif os.path.splitext(e.name)[1].lower() not in IMAGE_EXTENSIONS:
            ignored.append(f"{where} (not an image file: extension)")
        elif not is_file:
            why = "broken or looping symbolic link" if e.is_symlink() else "not a regular file"
            ignored.append(f"{where} ({why})")
        else:
            files.append(Path(e.path))
    return files


def _keyed(files: list[Path], key: Callable[[str], str], what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        k = key(f.name)
        if k in out:
            raise InputError(
                f"{out[k]} and {f}: two {what} with the same name once case, extension, "
                f"separators and mask suffixes are ignored ('{k}'); rename or remove one"
            )
        out[k] = f
    return out


def scan_pool(src: str | os.PathLike[str]) -> PoolListing:
    """Detect the layout of a pool folder and match its images and masks.

    Does not read any image. Missing and extra masks are reported in
    :attr:`PoolListing.unmatched`, not raised: call :meth:`PoolListing.raise_if_unmatched` to
    be strict.

    Raises
    ------
    InputError
        ``src`` is not a readable folder; a ``GT_*`` or ``masks/`` folder without ``images/``;
        only some of ``GT_ICM/ GT_TE/ GT_ZP/``; two folders or two images (or two masks in one
        folder) whose names differ only in case, extension or suffix; no images found.
    """
    src = Path(src)
    if not src.is_dir():
        what = "does not exist" if not src.exists() else "is not a folder"
        raise InputError(f"{src}: {what}; give the folder holding images/ (and GT_ICM/, GT_TE/, "
                         "GT_ZP/ or masks/), or a folder of images")
    ignored: list[str] = []
    try:
        with os.scandir(src) as it:
            top = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise InputError(f"{src}: cannot list this folder ({exc.strerror}); check its "
                         "permissions") from None
    found: dict[str, Path] = {}
    others: list[str] = []
    for e in top:
        norm = _SEP.sub("_", e.name.strip().lower())
        role = ("images" if norm in _IMAGE_DIRS else "masks" if norm in _MASK_DIRS else
                next((c for c, (d, _) in BINARY_CLASSES.items() if d == norm), None))
        if role is None or not _is_dir(e):
            others.append(f"{e.name}/ (folder, not part of the layout)" if _is_dir(e)
                          else f"{e.name} (outside the layout's folders)")
            continue
        if role in found:
            raise InputError(f"{found[role]} and {e.path}: two folders for the same role "
                             f"({role}); keep only one")
        found[role] = Path(e.path)
    gts = [c for c in BINARY_CLASSES if c in found]
    if gts and len(gts) < len(BINARY_CLASSES):
        missing = [f"GT_{c}/" for c in BINARY_CLASSES if c not in found]
        raise InputError(f"{src}: has {', '.join(found[c].name + '/' for c in gts)} but no "
                         f"{', '.join(missing)}; the binary layout needs all three (the "
                         "blastocoel is derived from the zona)")
    layout = "binary" if gts else "rgb" if "masks" in found else "images"
    if layout != "images" and "images" not in found:
        present = ", ".join(p.name + "/" for p in found.values())
        raise InputError(f"{src}: has {present} but no images/ folder; put the images in "
                         f"{src / 'images'}")
    if layout == "binary" and "masks" in found:
        ignored.append(f"{found.pop('masks').name}/ (folder; the GT_* binary masks are used)")
    image_dir = found.get("images", src)
    if image_dir != src:
        ignored += others
    rel = "" if image_dir == src else f"{image_dir.name}/"
    images = _keyed(_list_dir(image_dir, rel, ignored), image_key, "images")
    if not images:
        raise InputError(
            f"{image_dir}: no images found (extensions {', '.join(sorted(IMAGE_EXTENSIONS))}); "
            "give a folder with images/ (and GT_ICM/ GT_TE/ GT_ZP/ or masks/) or image files"
        )
    items = {k: PoolItem(os.path.splitext(p.name)[0], p) for k, p in sorted(images.items())}
    unmatched: list[str] = []
    for role in (gts or (["masks"] if layout == "rgb" else [])):
        folder = found[role]
        cls = role if role in BINARY_CLASSES else None
        # cast: mypy cannot infer a lambda with a default argument against Callable[[str], str].
        masks = _keyed(_list_dir(folder, f"{folder.name}/", ignored),
                       cast(Callable[[str], str], lambda n, c=cls: mask_key(n, c)),
                       f"masks in {folder.name}/")
        for k, item in items.items():
            if k not in masks:
                unmatched.append(f"{rel}{item.image_path.name}: no mask in {folder.name}/")
            elif cls:
                item.masks[cls] = masks[k]
            else:
                item.mask_path = masks[k]
        unmatched += [f"{folder.name}/{p.name}: matches no image in {rel or src.name + '/'} "
                      f"(normalised name '{k}')" for k, p in masks.items() if k not in items]
    return PoolListing(src, layout, list(items.values()), unmatched, ignored,
                       {"images": image_dir, **found})


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False
