"""Reading images and masks of the blastocyst layouts: formats, refusals, palettes, matching.

Fixtures are tiny files written into ``tmp_path`` with PIL and tifffile.
"""

from __future__ import annotations

import os
import struct
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageFile

from napari_alunet import imagefile
from napari_alunet.config import DEFAULT_CLASS_COLOURS
from napari_alunet.data import naming
from napari_alunet.data.io import (
    InputError,
    labels_from_binary,
    labels_from_colour,
    load_item_labels,
    read_binary_mask,
    read_colour_mask,
    read_image,
    read_image_size,
)
from napari_alunet.data.naming import image_key, mask_key, scan_pool

PAL = np.array(DEFAULT_CLASS_COLOURS, dtype=np.uint8)


def _gray(h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def _save(path: Path, array: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def _ring(h: int = 40, w: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A zona ring (radius 12-16) with TE lining its inside (10-12) and an ICM blob."""
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h / 2, xx - w / 2)
    zp = (r >= 12) & (r < 16)
    te = (r >= 10) & (r < 12)
    icm = np.hypot(yy - h / 2 + 6, xx - w / 2) < 3
    return icm, te, zp


# -- images ------------------------------------------------------------------------------------
def test_read_formats_keep_intensity_scale(tmp_path):
    a = _gray()
    for ext in ("png", "bmp", "tif"):
        p = tmp_path / f"g.{ext}"
        tifffile.imwrite(p, a) if ext == "tif" else _save(p, a)
        out = read_image(p)
        assert out.dtype == np.float32 and out.shape == a.shape
        np.testing.assert_array_equal(out, a)
        assert read_image_size(p) == a.shape
    a16 = a.astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "g16.tif", a16)
    np.testing.assert_array_equal(read_image(tmp_path / "g16.tif"), a16)  # 0-65535 kept
    _save(tmp_path / "g16.png", a16)
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png"), a16)
    tifffile.imwrite(tmp_path / "one.tif", a[None])  # (1, H, W) is one image
    np.testing.assert_array_equal(read_image(tmp_path / "one.tif"), a)
    _save(tmp_path / "G.JPEG", a, quality=95)
    assert np.abs(read_image(tmp_path / "G.JPEG") - a).mean() < 8


def test_colour_palette_and_alpha_become_luminance(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0], rgb[1, :, 1], rgb[2, :, 2] = 100, 200, 50
    lum = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(read_image(_save(tmp_path / "c.png", rgb)), lum, atol=1e-3)
    rgba = np.dstack([rgb, np.zeros((4, 5), np.uint8)])  # alpha 0 everywhere: ignored
    np.testing.assert_allclose(read_image(_save(tmp_path / "c4.png", rgba)), lum, atol=1e-3)
    tifffile.imwrite(tmp_path / "c.tif", rgb)
    np.testing.assert_allclose(read_image(tmp_path / "c.tif"), lum, atol=1e-3)
    p = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), mode="P")
    p.putpalette([0, 0, 0, 255, 255, 255, 255, 0, 0])
    p.save(tmp_path / "p.png")
    np.testing.assert_allclose(read_image(tmp_path / "p.png"), [[0, 255], [76.245, 255]],
                               atol=1e-3)
    Image.fromarray(np.dstack([_gray(), _gray(seed=1)]), mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), _gray())


def _png_header(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 8))
            + chunk(b"IEND", b""))


def _bmp_header(w: int, h: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + info + b"\0" * 16


@pytest.mark.parametrize("name,header", [("huge.png", _png_header(50_000, 50_000)),
                                         ("huge.bmp", _bmp_header(50_000, 50_000))])
def test_huge_header_refused_fast_without_allocating(tmp_path, name, header):
    p = tmp_path / name
    p.write_bytes(header)
    tracemalloc.start()
    t0 = time.perf_counter()
    for reader in (read_image, read_image_size, read_binary_mask):
        with pytest.raises(InputError, match="50000 x 50000") as err:
            reader(p)
        assert str(p) in str(err.value) and "MAX_PIXELS" in str(err.value)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 1.0
    assert peak < 10_000_000  # 2.5 GB would be allocated by a decode
    assert Image.MAX_IMAGE_PIXELS is not None  # PIL's own limit restored for everyone else


def test_max_pixels_is_ours_not_pils(tmp_path, monkeypatch):
    p = _save(tmp_path / "g.png", _gray(10, 10))
    monkeypatch.setattr(imagefile, "MAX_PIXELS", 99)  # read at call time
    with pytest.raises(InputError, match="10 x 10"):
        read_image(p)
    # Above PIL's own bomb limits (warning at ~89 M, error at ~179 M pixels) our limit decides,
    # with no DecompressionBombWarning/Error.
    big = tmp_path / "big.png"
    big.write_bytes(_png_header(20_000, 20_000))
    monkeypatch.setattr(imagefile, "MAX_PIXELS", 500_000_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image_size(big) == (20_000, 20_000)


def test_broken_files_are_refused_naming_the_file(tmp_path):
    good = _save(tmp_path / "good.png", _gray(64, 64))
    cases = {
        "empty.png": (b"", "empty"),
        "half.png": (good.read_bytes()[: good.stat().st_size // 2], "truncated"),
        "text.png": (b"this is not an image\n", "not a BMP, PNG, TIFF or JPEG"),
        "corrupt.png": (good.read_bytes()[:40] + b"\xff" * 200, "corrupt|truncated"),
        "half.tif": (b"II*\x00" + b"\x00" * 20, "TIFF"),
    }
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    for name, (payload, why) in cases.items():
        p = tmp_path / name
        p.write_bytes(payload)
        with pytest.raises(InputError, match=why) as err:
            read_image(p)
        assert str(p) in str(err.value), name
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="folder"):
        read_image(tmp_path)
    with pytest.raises(InputError, match="stack"):
        tifffile.imwrite(tmp_path / "stack.tif", np.stack([_gray(), _gray()]))
        read_image(tmp_path / "stack.tif")


def test_symlink_loop_and_unreadable_file(tmp_path):
    os.symlink(tmp_path / "b.png", tmp_path / "a.png")
    os.symlink(tmp_path / "a.png", tmp_path / "b.png")
    with pytest.raises(InputError, match="loop"):
        read_image(tmp_path / "a.png")
    p = _save(tmp_path / "locked.png", _gray())
    p.chmod(0)
    try:
        if os.geteuid() == 0:  # root reads anything: chmod 000 cannot be exercised as root
            assert read_image(p).shape == _gray().shape
        else:
            with pytest.raises(InputError, match="permission denied"):
                read_image(p)
    finally:
        p.chmod(0o644)


def test_permission_denied_message(tmp_path, monkeypatch):
    # The same path as chmod 000 for a non-root user, simulated so that it runs as root too.
    p = _save(tmp_path / "locked.png", _gray())

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(imagefile, "open", denied, raising=False)
    with pytest.raises(InputError, match="permission denied") as err:
        read_image(p)
    assert str(p) in str(err.value)


# -- masks -------------------------------------------------------------------------------------
def test_binary_mask_threshold_and_size_mismatch(tmp_path):
    m = np.zeros((20, 30), np.uint8)
    m[5:15, 8:20] = 255
    _save(tmp_path / "m.jpg", m, quality=60)  # JPEG noise around 0 and 255
    np.testing.assert_array_equal(read_binary_mask(tmp_path / "m.jpg", (20, 30)), m > 0)
    np.testing.assert_array_equal(read_binary_mask(_save(tmp_path / "m01.png", m // 255)), m > 0)
    red = np.zeros((20, 30, 3), np.uint8)
    red[..., 0] = m  # a red mask: dark in luminance, still "on"
    np.testing.assert_array_equal(read_binary_mask(_save(tmp_path / "red.bmp", red)), m > 0)
    with pytest.raises(InputError) as err:
        read_binary_mask(tmp_path / "m.jpg", expected_shape=(21, 30))
    assert "20 x 30" in str(err.value) and "21 x 30" in str(err.value)
    assert "m.jpg" in str(err.value)


def test_labels_from_binary_derives_blastocoel():
    icm, te, zp = _ring()
    labels = labels_from_binary(icm, te, zp)
    yy, xx = np.mgrid[:40, :40]
    cavity = (np.hypot(yy - 20, xx - 20) < 10) & ~icm
    assert labels.dtype == np.uint8
    assert (labels[icm] == 1).all() and (labels[te] == 2).all() and (labels[zp] == 3).all()
    np.testing.assert_array_equal(labels == 4, cavity)
    assert (labels[np.hypot(yy - 20, xx - 20) >= 16] == 0).all()
    # priority: ICM over TE over ZP
    both = labels_from_binary(icm | zp, te | zp, zp)
    assert (both[zp] == 1).all()
    # an open ring (a 4-pixel gap) is closed before filling: the cavity is found, and the
    # bridge the closing drew stays background (the gap's inner edge may become BL)
    gap = zp.copy()
    gap[18:22, 28:40] = False
    opened = labels_from_binary(icm, te, gap)
    away = np.ones_like(zp)
    away[18:22, 28:40] = False
    np.testing.assert_array_equal((opened == 4)[away], cavity[away])
    assert (opened[18:22, 33:40] == 0).all()
    assert not (labels_from_binary(icm, te, np.zeros_like(zp)) == 4).any()


def test_palette_mapping_with_jitter_and_tolerance():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 5, (30, 40)).astype(np.uint8)
    rgb = PAL[truth].astype(int) + rng.integers(-15, 16, (30, 40, 3))  # distance <= 26
    rgb = np.clip(rgb, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(labels_from_colour(rgb, DEFAULT_CLASS_COLOURS), truth)
    with pytest.raises(InputError):
        labels_from_colour(rgb, DEFAULT_CLASS_COLOURS, tolerance=5)


def test_off_palette_colours_are_refused_naming_file_and_colours(tmp_path):
    truth = np.zeros((10, 12), np.uint8)
    truth[2:5, 2:5] = 1
    rgb = PAL[truth]
    rgb[0, :3] = (255, 255, 255)
    rgb[9, :] = (128, 0, 128)
    path = _save(tmp_path / "bad mask.png", rgb)
    with pytest.raises(InputError) as err:
        read_colour_mask(path, DEFAULT_CLASS_COLOURS)
    msg = str(err.value)
    assert str(path) in msg
    assert "(128, 0, 128) x 12 px" in msg and "(255, 255, 255) x 3 px" in msg
    assert "(51, 221, 255)" in msg  # the palette is listed
    assert msg.index("(128, 0, 128)") < msg.index("(255, 255, 255)")  # most frequent first


def test_colour_mask_kinds(tmp_path):
    truth = np.random.default_rng(2).integers(0, 5, (16, 20)).astype(np.uint8)
    rgb = PAL[truth]
    np.testing.assert_array_equal(read_colour_mask(_save(tmp_path / "rgb.png", rgb)), truth)
    rgba = np.dstack([rgb, np.full(truth.shape, 255, np.uint8)])
    rgba[0, 0] = (9, 200, 9, 0)  # transparent: background whatever its colour
    expect = truth.copy()
    expect[0, 0] = 0
    np.testing.assert_array_equal(read_colour_mask(_save(tmp_path / "rgba.png", rgba)), expect)
    # class indices stored in grayscale or as palette indices are taken as they are
    np.testing.assert_array_equal(read_colour_mask(_save(tmp_path / "idx.png", truth)), truth)
    pimg = Image.fromarray(truth, mode="P")
    pimg.putpalette(PAL.ravel().tolist())
    pimg.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_colour_mask(tmp_path / "p.png"), truth)
    # a palette image with indices beyond the classes is read through its palette
    shifted = Image.fromarray(truth + 10, mode="P")
    shifted.putpalette([0] * 30 + PAL.ravel().tolist())
    shifted.save(tmp_path / "p10.png")
    np.testing.assert_array_equal(read_colour_mask(tmp_path / "p10.png"), truth)
    with pytest.raises(InputError, match="not class indices"):
        read_colour_mask(_save(tmp_path / "bin.png", (truth > 0).astype(np.uint8) * 255))
    with pytest.raises(InputError, match="16 x 20.*17 x 20"):
        read_colour_mask(tmp_path / "rgb.png", expected_shape=(17, 20))


# -- layouts and names -------------------------------------------------------------------------
def test_real_spelling_matches(tmp_path):
    names = ["Blast_PCRM_1201754 D5.BMP", "blast_pcrm_77 d4.png"]
    suffix = {"ICM": [" ICM_Mask.bmp", "_icm_mask.PNG"], "TE": [" TE_Mask.bmp", "-TE.png"],
              "ZP": [" ZP_Mask.bmp", "_mask.bmp"]}
    icm, te, zp = _ring()
    for n in names:
        _save(tmp_path / "Images" / n, _gray(40, 40))
    folders = {"ICM": "GT_ICM", "TE": "gt_te", "ZP": "GT_zp"}  # case varies between sets
    for cls, mask in (("ICM", icm), ("TE", te), ("ZP", zp)):
        for n, suf in zip(names, suffix[cls], strict=True):
            stem = os.path.splitext(n)[0]
            _save(tmp_path / folders[cls] / (stem + suf), mask.astype(np.uint8) * 255)
    (tmp_path / "Images" / "Thumbs.db").write_bytes(b"x")
    (tmp_path / "Images" / ".DS_Store").write_bytes(b"x")
    listing = scan_pool(tmp_path)
    assert listing.layout == "binary" and listing.unmatched == []
    assert [i.name for i in listing.items] == ["Blast_PCRM_1201754 D5", "blast_pcrm_77 d4"]
    item = listing.items[0]
    assert item.masks["ICM"].name == "Blast_PCRM_1201754 D5 ICM_Mask.bmp" and item.labelled
    assert any("Thumbs.db" in s for s in listing.ignored)
    assert any(".DS_Store" in s for s in listing.ignored)
    listing.raise_if_unmatched()
    labels = load_item_labels(item, listing.layout, DEFAULT_CLASS_COLOURS)
    np.testing.assert_array_equal(labels, labels_from_binary(icm, te, zp))


def test_hand_built_item_and_jpeg_hint(tmp_path):
    # the importer may build items itself; labels then follow from the masks it gives
    truth = np.zeros((12, 12), np.uint8)
    truth[3:9, 3:9] = 3
    item = naming.PoolItem("x", _save(tmp_path / "x.png", _gray(12, 12)),
                       mask_path=_save(tmp_path / "x_mask.png", PAL[truth]))
    assert item.labelled
    np.testing.assert_array_equal(load_item_labels(item, "rgb", DEFAULT_CLASS_COLOURS), truth)
    stripes = np.zeros((32, 32), np.uint8)
    stripes[:, ::2] = 2  # class borders everywhere: JPEG mixes the colours
    _save(tmp_path / "s.jpg", PAL[stripes], quality=75)
    with pytest.raises(InputError, match="export masks as PNG"):
        read_colour_mask(tmp_path / "s.jpg")


def test_key_normalisation():
    assert image_key("Blast_PCRM_1201754 D5.BMP") == "blast_pcrm_1201754_d5"
    for n in ("Blast_PCRM_1201754 D5 ICM_Mask.bmp", "blast-pcrm-1201754  d5_ICM.png",
              "BLAST_PCRM_1201754_D5_icm_mask.tif", "Blast_PCRM_1201754 D5_mask.jpg"):
        assert mask_key(n, "ICM") == "blast_pcrm_1201754_d5", n
    assert mask_key("x TE_Mask.bmp", "ICM") == "x_te"  # another class's mask does not match
    assert mask_key("mask.png") == "mask"  # never empty


def test_unmatched_are_reported_not_raised(tmp_path):
    for n in ("a.png", "b.png"):
        _save(tmp_path / "images" / n, _gray(8, 8))
    _save(tmp_path / "masks" / "a_mask.png", PAL[np.zeros((8, 8), np.uint8)])
    _save(tmp_path / "masks" / "zzz_mask.png", PAL[np.zeros((8, 8), np.uint8)])
    listing = scan_pool(tmp_path)
    assert listing.layout == "rgb" and len(listing.items) == 2
    a, b = listing.items
    assert a.labelled and a.mask_path.name == "a_mask.png" and not b.labelled
    assert any("b.png" in u and "masks/" in u for u in listing.unmatched)
    assert any("zzz_mask.png" in u for u in listing.unmatched)
    with pytest.raises(InputError, match=r"(?s)b\.png.*zzz_mask\.png"):
        listing.raise_if_unmatched()
    assert load_item_labels(b, "rgb", DEFAULT_CLASS_COLOURS) is None
    assert (load_item_labels(a, "rgb", DEFAULT_CLASS_COLOURS) == 0).all()
    # a mask of the wrong size is refused naming both sizes
    _save(tmp_path / "masks" / "a_mask.png", PAL[np.zeros((9, 8), np.uint8)])
    with pytest.raises(InputError, match="9 x 8.*8 x 8"):
        load_item_labels(a, "rgb", DEFAULT_CLASS_COLOURS)


def test_layout_errors(tmp_path):
    with pytest.raises(InputError, match="no images"):
        scan_pool(tmp_path)  # empty folder
    (tmp_path / "GT_ICM").mkdir()
    (tmp_path / "GT_TE").mkdir()
    with pytest.raises(InputError, match="GT_ZP"):
        scan_pool(tmp_path)
    (tmp_path / "gt_zp").mkdir()
    with pytest.raises(InputError, match="no images/ folder"):
        scan_pool(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(InputError, match="no images found"):
        scan_pool(tmp_path)
    with pytest.raises(InputError, match="not a folder"):
        scan_pool(_save(tmp_path / "x.png", _gray(4, 4)))


def test_duplicate_names_differing_in_case_or_extension(tmp_path):
    _save(tmp_path / "a.png", _gray(4, 4))
    _save(tmp_path / "A.PNG", _gray(4, 4))
    if len(os.listdir(tmp_path)) < 2:  # case-insensitive file system: differ by extension
        _save(tmp_path / "a.bmp", _gray(4, 4))
    with pytest.raises(InputError, match="same name") as err:
        scan_pool(tmp_path)
    assert "a.png" in str(err.value)


def test_flat_folder_and_images_layout(tmp_path):
    _save(tmp_path / "one.png", _gray(4, 4))
    tifffile.imwrite(tmp_path / "two.TIFF", _gray(4, 4))
    (tmp_path / "notes.txt").write_text("hi")
    listing = scan_pool(tmp_path)
    assert listing.layout == "images" and [i.name for i in listing.items] == ["one", "two"]
    assert load_item_labels(listing.items[0], "images", DEFAULT_CLASS_COLOURS) is None
    assert any("notes.txt" in s for s in listing.ignored)


def test_symlink_loop_in_pool_does_not_hang(tmp_path):
    images = tmp_path / "images"
    _save(images / "a.png", _gray(4, 4))
    os.symlink(tmp_path, images / "up")  # a folder link back to the pool
    os.symlink(images / "y.png", images / "x.png")  # file links in a loop
    os.symlink(images / "x.png", images / "y.png")
    t0 = time.perf_counter()
    listing = scan_pool(tmp_path)
    assert time.perf_counter() - t0 < 1.0
    assert [i.name for i in listing.items] == ["a"]
    assert any(s.startswith("images/up/") for s in listing.ignored)
    assert any("x.png" in s and "link" in s for s in listing.ignored)


# -- masks are understood exactly or refused (issue 12, class 3) ----------------------------------
def test_palette_mask_in_another_order_is_read_through_its_palette(tmp_path):
    from napari_alunet.data.io import PALETTE, read_colour_mask

    labels = np.array([[0, 1, 2], [3, 4, 0]], np.uint8)
    order = [4, 2, 0, 3, 1]  # palette entry i holds the colour of class order[i]
    index_of_class = np.argsort(order)
    img = Image.fromarray(index_of_class[labels].astype(np.uint8), "P")
    palette = np.asarray(PALETTE, np.uint8)[order]
    img.putpalette(palette.ravel().tolist() + [0] * (768 - palette.size))
    img.save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_colour_mask(tmp_path / "m.png"), labels)
    # A palette of grays (how tools save index masks) is read as its gray values.
    gray = Image.fromarray(labels, "P")
    gray.putpalette([v for i in range(256) for v in (i, i, i)])
    gray.save(tmp_path / "g.png")
    np.testing.assert_array_equal(read_colour_mask(tmp_path / "g.png"), labels)
    # A gray palette whose values are not classes is refused, saying what was found.
    odd = Image.fromarray(labels, "P")
    odd.putpalette([v for i in range(256) for v in ((3 * i) % 256,) * 3])
    odd.save(tmp_path / "o.png")
    with pytest.raises(InputError, match="palette of grays with values 6, 9, 12"):
        read_colour_mask(tmp_path / "o.png")


def test_binary_masks_of_any_foreground_value_and_drawn_in_alpha(tmp_path):
    from napari_alunet.data.io import read_binary_mask

    shape = np.zeros((8, 10), bool)
    shape[2:6, 3:8] = True
    # Foreground 100 in 8 bit (not near 255), with JPEG-like noise around both values.
    noisy = np.where(shape, 100, 0).astype(np.int16) + np.tile([0, 3, -3, 2], 20).reshape(8, 10)
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "L").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_binary_mask(tmp_path / "a.png"), shape)
    # White everywhere, the shape drawn in the alpha channel.
    rgba = np.dstack([np.full((8, 10, 3), 255, np.uint8), np.where(shape, 255, 0).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_binary_mask(tmp_path / "b.png"), shape)
    # Opaque RGBA: the colour carries the shape, as before.
    rgba = np.dstack([np.where(shape, 255, 0).astype(np.uint8)] * 3
                     + [np.full((8, 10), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "c.png")
    np.testing.assert_array_equal(read_binary_mask(tmp_path / "c.png"), shape)
    # 0/1 masks and empty masks.
    Image.fromarray(shape.astype(np.uint8), "L").save(tmp_path / "d.png")
    np.testing.assert_array_equal(read_binary_mask(tmp_path / "d.png"), shape)
    Image.fromarray(np.zeros((8, 10), np.uint8), "L").save(tmp_path / "e.png")
    assert not read_binary_mask(tmp_path / "e.png").any()


def test_nan_and_inf_pixels_are_refused(tmp_path):
    data = np.ones((6, 7), np.float32)
    data[1, 2], data[3, 3] = np.nan, np.inf
    tifffile.imwrite(tmp_path / "f.tif", data)
    with pytest.raises(InputError, match="2 pixel\\(s\\) are NaN or infinite"):
        read_image(tmp_path / "f.tif")
    tifffile.imwrite(tmp_path / "ok.tif", np.ones((6, 7), np.float32))
    assert read_image(tmp_path / "ok.tif").shape == (6, 7)


def test_exif_rotated_files_are_refused(tmp_path):
    """Issue 12, class 5: an EXIF orientation is not silently ignored (image or mask)."""
    img = Image.fromarray(np.zeros((8, 10), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    img.save(tmp_path / "r.jpg", exif=exif.tobytes())
    with pytest.raises(InputError, match="EXIF orientation 6"):
        read_image(tmp_path / "r.jpg")
    exif[0x0112] = 1
    img.save(tmp_path / "ok.jpg", exif=exif.tobytes())
    assert read_image(tmp_path / "ok.jpg").shape == (8, 10)
