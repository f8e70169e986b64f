"""The synthetic blastocyst generator: determinism, label consistency, layouts, realism."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from napari_alunet.config import DEFAULT_CLASS_COLOURS
from napari_alunet.data import sample_files
from napari_alunet.data import synthetic as syn

# Real-image figures (sample_data/README.md, "Realism"), label order background, ICM, TE,
# ZP, BL
REAL_FRACTION = np.array([0.40, 0.10, 0.16, 0.20, 0.15])
REAL_MEAN = np.array([128.0, 107.0, 106.0, 122.0, 111.0])
REAL_TEXTURE = np.array([5.2, 15.6, 21.2, 9.7, 12.8])


def local_std(image: np.ndarray, size: int = 5) -> np.ndarray:
    x = image.astype(np.float64)
    mean = ndi.uniform_filter(x, size)
    return np.sqrt(np.maximum(ndi.uniform_filter(x * x, size) - mean * mean, 0.0))


def derived_blastocoel(labels: np.ndarray) -> np.ndarray:
    zp = labels == syn.ZP
    return ndi.binary_fill_holes(zp) & ~zp & (labels != syn.ICM) & (labels != syn.TE)


def test_same_seed_same_bytes_and_params_are_json():
    a = syn.generate_blastocyst(np.random.default_rng(5), shape=(64, 64))
    b = syn.generate_blastocyst(np.random.default_rng(5), shape=(64, 64))
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    assert a[0].dtype == np.uint8 and a[1].dtype == np.uint8 and a[0].shape == (64, 64)
    assert json.loads(json.dumps(a[2])) == a[2]
    assert a[2]["generator_version"] == syn.GENERATOR_VERSION
    c = syn.generate_blastocyst(np.random.default_rng(6), shape=(64, 64))
    assert a[0].tobytes() != c[0].tobytes()


def test_pool_is_prefix_stable_and_named_like_the_real_data():
    short = list(syn.generate_pool(3, 7, shape=(48, 56)))
    long = list(syn.generate_pool(5, 7, shape=(48, 56)))
    for (n1, i1, l1, _), (n2, i2, l2, _) in zip(short, long):
        assert n1 == n2 and np.array_equal(i1, i2) and np.array_equal(l1, l2)
    assert [n for n, *_ in long] == [f"Blast_SYN_007000{i} D5" for i in range(5)]


def test_params_can_be_fixed():
    params = syn.draw_params(np.random.default_rng(1), (64, 64))
    params.stage, params.collapsed = 4, False
    image, _, meta = syn.generate_blastocyst(np.random.default_rng(2), params=params)
    assert meta["stage"] == 4 and image.shape == (64, 64)
    with pytest.raises(ValueError):
        syn.generate_blastocyst(np.random.default_rng(2), shape=(32, 32), params=params)


@pytest.mark.parametrize("shape", [(32, 32), (64, 64), (40, 72), None])
def test_all_classes_present_and_blastocoel_derivable(shape):
    n = 4 if shape is None else 50
    for i in range(n):
        _, labels, meta = syn.generate_blastocyst(np.random.default_rng([11, i]), shape=shape)
        counts = np.bincount(labels.ravel(), minlength=5)
        assert (counts > 0).all(), (i, meta["stage_name"], counts)
        assert np.array_equal(derived_blastocoel(labels), labels == syn.BL), i
        assert ndi.label(labels == syn.ICM)[1] == 1
        zp = labels == syn.ZP
        hole = ndi.binary_fill_holes(zp) & ~zp
        assert hole[labels == syn.BL].all()
        if meta["stage"] < 5:  # hatching embryos bulge out through the zona by definition
            assert hole[(labels == syn.ICM) | (labels == syn.TE)].all(), i


def test_every_stage_is_consistent():
    """Each Gardner stage (and a collapsed embryo) obeys the derivation, also at 32 x 32."""
    for stage in syn.STAGES:
        for collapsed in (False, True) if stage in (2, 3, 4) else (False,):
            for k, shape in enumerate(((32, 32), (120, 140))):
                rng = np.random.default_rng([stage, k])
                p = syn.draw_params(rng, shape, stage=stage, collapsed=collapsed)
                assert (p.stage, p.collapsed) == (stage, collapsed)
                _, labels, _ = syn.generate_blastocyst(rng, params=p)
                assert (np.bincount(labels.ravel(), minlength=5) > 0).all(), (stage, shape)
                assert np.array_equal(derived_blastocoel(labels), labels == syn.BL)


def test_binary_layout_exact_names(tmp_path):
    out = sample_files.write_sample_pool(tmp_path / "pool", 2, seed=3, layout="binary",
                                         shape=(40, 48))
    for i in range(2):
        name = f"Blast_SYN_003000{i} D5"
        image = np.array(Image.open(out / "images" / f"{name}.BMP"))
        assert image.shape == (40, 48) and image.dtype == np.uint8
        masks = {tag: np.array(Image.open(out / f"GT_{tag}" / f"{name} {tag}_Mask.bmp"))
                 for tag in ("ICM", "TE", "ZP")}
        _, _, labels, _ = list(syn.generate_pool(i + 1, 3, shape=(40, 48)))[i]
        for tag, cls in (("ICM", syn.ICM), ("TE", syn.TE), ("ZP", syn.ZP)):
            assert set(np.unique(masks[tag])) <= {0, 255}
            assert np.array_equal(masks[tag] == 255, labels == cls)
        zp = masks["ZP"] == 255
        bl = ndi.binary_fill_holes(zp) & ~zp & (masks["ICM"] == 0) & (masks["TE"] == 0)
        assert np.array_equal(bl, labels == syn.BL)
    meta = json.loads((out / "generator.json").read_text())
    assert meta["generator_version"] == syn.GENERATOR_VERSION
    assert (meta["seed"], meta["n"], meta["layout"]) == (3, 2, "binary")
    assert not (out / "GT_BL").exists()


def test_rgb_and_both_layouts_are_deterministic(tmp_path):
    a = sample_files.write_sample_pool(tmp_path / "a", 2, seed=1, layout="both", shape=(36, 40))
    b = sample_files.write_sample_pool(tmp_path / "b", 2, seed=1, layout="both", shape=(36, 40))
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "binary" / "images" / "Blast_SYN_0010000 D5.BMP").exists()
    name = "Blast_SYN_0010001 D5"
    rgb = np.array(Image.open(a / "rgb" / "masks" / f"{name}.png")).astype(int)
    gray = np.array(Image.open(a / "rgb" / "images" / f"{name}.png"))
    assert rgb.shape == (36, 40, 3) and gray.shape == (36, 40)
    _, _, labels, _ = list(syn.generate_pool(2, 1, shape=(36, 40)))[1]
    palette = np.array(DEFAULT_CLASS_COLOURS)
    dist = np.abs(rgb[..., None, :] - palette[None, None]).max(axis=-1)
    assert dist.min(axis=-1).max() <= 6  # jittered, but within 6 of the palette
    assert np.array_equal(dist.argmin(axis=-1), labels)
    assert (dist.min(axis=-1) > 0).any()  # not pure colours
    assert json.loads((a / "generator.json").read_text())["layout"] == "both"
    with pytest.raises(ValueError):
        sample_files.write_sample_pool(tmp_path / "c", 1, layout="jpeg")


def test_napari_sample_shapes():
    (images, image_kw, image_kind), (labels, label_kw, label_kind) = syn.napari_sample()
    assert image_kind == "image" and label_kind == "labels"
    assert images.dtype == np.uint8 and labels.dtype == np.uint8
    assert images.ndim == 3 and images.shape == labels.shape and images.shape[0] == 8
    assert image_kw["name"] == "synthetic blastocysts" and label_kw["opacity"] == 0.4
    assert labels.max() == 4


def realism_stats(n: int = 20, seed: int = 123) -> dict[str, np.ndarray]:
    """Mean over ``n`` full-size images of class fractions, mean intensity and 5x5 local std."""
    frac, mean, tex, whole = [], [], [], []
    for i in range(n):
        image, labels, _ = syn.generate_blastocyst(np.random.default_rng([seed, i]))
        x, sd = image.astype(np.float64), local_std(image)
        frac.append(np.bincount(labels.ravel(), minlength=5) / labels.size)
        mean.append([x[labels == k].mean() for k in range(5)])
        tex.append([sd[labels == k].mean() for k in range(5)])
        whole.append([x.mean(), x.std()])
    return {"fraction": np.mean(frac, 0), "mean": np.mean(mean, 0), "texture": np.mean(tex, 0),
            "whole": np.mean(whole, 0)}


def test_realism_matches_real_data_facts():
    stats = realism_stats()
    assert np.abs(stats["fraction"] - REAL_FRACTION).max() <= 0.06, stats["fraction"]
    assert np.abs(stats["mean"] - REAL_MEAN).max() <= 12, stats["mean"]
    t = stats["texture"]
    assert t[syn.TE] > t[syn.ICM] > t[syn.BL] > t[syn.ZP] > t[syn.BACKGROUND], t
    assert np.abs(t - REAL_TEXTURE).max() <= 4.0, t
    assert abs(stats["whole"][0] - 119) <= 8 and abs(stats["whole"][1] - 25) <= 6, stats["whole"]
