"""Redundant synthetic pools: embryos filmed several times, rare modes, stratified test sets."""

from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from napari_alunet.cli import main
from napari_alunet.data import redundant as red
from napari_alunet.data import sample_files
from napari_alunet.data import synthetic as syn

SHAPE = (64, 64)


def derived_blastocoel(labels: np.ndarray) -> np.ndarray:
    zp = labels == syn.ZP
    return ndi.binary_fill_holes(zp) & ~zp & (labels != syn.ICM) & (labels != syn.TE)


def pairwise_dice(labels: np.ndarray) -> np.ndarray:
    """(n, n) mean Dice of the four foreground classes between (n, h, w) label maps."""
    onehot = np.stack([labels == k for k in range(1, 5)], 1).reshape(len(labels), 4, -1)
    onehot = onehot.astype(np.float64)
    inter = np.einsum("akp,bkp->abk", onehot, onehot)
    size = onehot.sum(-1)
    return (2 * inter / np.maximum(size[:, None] + size[None], 1)).mean(-1)


@pytest.fixture(scope="module")
def pool():
    return list(red.generate_redundant_pool(200, 4, shape=SHAPE))


def test_deterministic_and_prefix_stable():
    a = list(red.generate_redundant_pool(7, 2, shape=SHAPE))
    b = list(red.generate_redundant_pool(7, 2, shape=SHAPE))
    longer = list(red.generate_redundant_pool(12, 2, shape=SHAPE))
    for (n1, i1, l1, f1), (n2, i2, l2, f2), (n3, i3, _l3, _) in zip(a, b, longer):
        assert n1 == n2 == n3 and f1 == f2
        assert i1.tobytes() == i2.tobytes() == i3.tobytes() and l1.tobytes() == l2.tobytes()
    assert json.loads(json.dumps(a[0][3])) == a[0][3]
    other = next(red.generate_redundant_pool(1, 3, shape=SHAPE))
    assert other[1].tobytes() != a[0][1].tobytes()
    # rendering from the base again gives the same frame; the base is not modified
    base = red.draw_embryo(np.random.default_rng(0), "hatching", SHAPE)
    kept = base.to_dict()
    f1, f2 = red.render_frame(base, 9, 2), red.render_frame(base, 9, 2)
    assert f1[0].tobytes() == f2[0].tobytes() and f1[2] == f2[2] and base.to_dict() == kept
    assert red.render_frame(base, 9, 0, (96, 80))[0].shape == (96, 80)


def test_pool_structure_names_and_labels(pool):
    names = [name for name, *_ in pool]
    assert len(pool) == 200 and len(set(names)) == 200
    frames: dict[int, list[int]] = {}
    for name, image, labels, info in pool:
        assert image.dtype == labels.dtype == np.uint8 and image.shape == labels.shape == SHAPE
        assert name == red.pool_frame_name(4, info["embryo"], info["frame"])
        assert info["mode"] in red.MODES and red.classify_mode(info["params"]) == info["mode"]
        assert info["params"]["generator_version"] == syn.GENERATOR_VERSION
        assert np.array_equal(derived_blastocoel(labels), labels == syn.BL), name
        assert labels.max() <= 4 and (labels == syn.ZP).any()
        frames.setdefault(info["embryo"], []).append(info["frame"])
    # embryos 0, 1, ... in order, frames 0, 1, ..., 3-8 of them (the last may be truncated)
    assert sorted(frames) == list(range(len(frames)))
    assert all(f == list(range(len(f))) for f in frames.values())
    assert all(3 <= len(f) <= 8 for e, f in frames.items() if e < len(frames) - 1)
    # the stage, grades and collapse of an embryo are the same in all its frames
    for e in frames:
        keys = {tuple(info["params"][k] for k in ("stage", "icm_grade", "te_grade", "collapsed"))
                for _, _, _, info in pool if info["embryo"] == e}
        assert len(keys) == 1, e


def test_frames_of_one_embryo_are_alike(pool):
    items = pool[:40]
    embryo = np.array([info["embryo"] for *_, info in items])
    dice = pairwise_dice(np.stack([labels for _, _, labels, _ in items]))
    same = embryo[:, None] == embryo[None]
    off_diagonal = ~np.eye(len(items), dtype=bool)
    assert dice[same & off_diagonal].mean() > 0.8
    assert dice[same & off_diagonal].mean() > dice[~same].mean() + 0.2
    # each frame's most similar other image, in labels and in (blurred) appearance, is a frame
    # of the same embryo
    blurred = np.stack([ndi.gaussian_filter(image.astype(np.float64), 2)
                        for _, image, _, _ in items])
    distance = np.abs(blurred[:, None] - blurred[None]).mean((2, 3))
    np.fill_diagonal(dice, -1.0)
    np.fill_diagonal(distance, np.inf)
    has_twin = same.sum(1) > 1
    assert (embryo[dice.argmax(1)] == embryo)[has_twin].all()
    assert (embryo[distance.argmin(1)] == embryo)[has_twin].all()


def test_modes_appear_with_their_frequency(pool):
    # the plan (cheap): per-image fractions over many images
    plan = red.plan_pool(30_000, 0)
    images = Counter()
    for _, mode, k in plan:
        images[mode] += k
    for mode in red.MODES:
        assert abs(images[mode] / 30_000 - red.MODE_P[mode]) < 0.025, (mode, images)
    # a rendered pool of 200 images follows its plan and roughly the frequencies
    counts = Counter(info["mode"] for *_, info in pool)
    planned = Counter()
    for _, mode, k in red.plan_pool(200, 4):
        planned[mode] += k
    assert counts == planned
    assert sum(counts.values()) == 200 and 0.5 <= counts["common"] / 200 <= 0.9
    assert sum(counts[m] for m in red.MODES[1:]) >= 20
    # mode_p can force the rare modes
    only = red.plan_pool(50, 1, mode_p={"hatched": 1.0})
    assert {mode for _, mode, _ in only} == {"hatched"}
    with pytest.raises(ValueError):
        red.plan_pool(10, 0, mode_p={"blob": 1.0})
    with pytest.raises(ValueError):
        red.plan_pool(0, 0)
    with pytest.raises(ValueError):
        red.plan_pool(5, 0, frames=(4, 2))


@pytest.mark.parametrize("mode", red.MODES)
def test_draw_embryo_is_in_its_mode(mode):
    for i in range(10):
        base = red.draw_embryo(np.random.default_rng([i, 5]), mode, SHAPE)
        assert red.classify_mode(base) == mode


def test_stratified_test_set_is_fresh():
    test = list(red.generate_test_set(2, 4, shape=SHAPE))
    assert Counter(info["mode"] for *_, info in test) == Counter({m: 2 for m in red.MODES})
    test_ids = {info["embryo"] for *_, info in test}
    assert len(test_ids) == 12 and min(test_ids) >= red.TEST_EMBRYO_BASE
    pool_items = list(red.generate_redundant_pool(30, 4, shape=SHAPE))
    assert not test_ids & {info["embryo"] for *_, info in pool_items}
    assert not {n for n, *_ in test} & {n for n, *_ in pool_items}
    # fresh embryos, not pool frames again
    pool_images = {image.tobytes() for _, image, _, _ in pool_items}
    assert not any(image.tobytes() in pool_images for _, image, _, _ in test)
    for _, _, labels, info in test:
        assert red.classify_mode(info["params"]) == info["mode"] and info["frame"] == 0
        assert np.array_equal(derived_blastocoel(labels), labels == syn.BL)
    assert list(red.generate_test_set(0, 4)) == []


def test_written_pool_matches_pool_csv(tmp_path):
    out = sample_files.write_redundant_pool(tmp_path / "p", 9, 1, shape=(48, 56), n_test_per_mode=1)
    info = sample_files.read_pool_info(out)
    assert info is not None and len(info) == 9 + len(red.MODES)
    images = sorted(p.name for p in (out / "images").iterdir())
    assert images == sorted(f"{name}.BMP" for name in info)
    splits = Counter(row["split"] for row in info.values())
    assert splits == {"pool": 9, "test": len(red.MODES)}
    generated = {name: (labels, meta) for name, _, labels, meta in
                 [*red.generate_redundant_pool(9, 1, shape=(48, 56)),
                  *red.generate_test_set(1, 1, shape=(48, 56))]}
    for name, row in info.items():
        labels, meta = generated[name]
        assert (row["embryo"], row["frame"], row["mode"]) == (meta["embryo"], meta["frame"],
                                                               meta["mode"])
        for tag, cls in (("ICM", syn.ICM), ("TE", syn.TE), ("ZP", syn.ZP)):
            mask = np.array(Image.open(out / f"GT_{tag}" / f"{name} {tag}_Mask.bmp"))
            assert np.array_equal(mask == 255, labels == cls)
    with open(out / "pool.csv", newline="") as handle:
        assert next(csv.reader(handle)) == list(red.CSV_COLUMNS)
    meta = json.loads((out / "generator.json").read_text())
    assert (meta["kind"], meta["n"], meta["n_test_per_mode"]) == ("redundant", 9, 1)
    assert set(json.loads((out / "params.json").read_text())) == set(info)
    # same arguments, same bytes; a plain sample pool has no pool.csv
    again = sample_files.write_redundant_pool(tmp_path / "q", 9, 1, shape=(48, 56),
                                              n_test_per_mode=1)
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((out / f).read_bytes() == (again / f).read_bytes() for f in files)
    plain = sample_files.write_sample_pool(tmp_path / "s", 1, shape=(32, 32))
    assert sample_files.read_pool_info(plain) is None


def test_cli_redundant_flag(tmp_path, capsys):
    assert main(["sample", str(tmp_path / "r"), "--redundant", "--n", "6", "--test-per-mode",
                 "1", "--layout", "both", "--shape", "40", "48"]) == 0
    assert "6 frames" in capsys.readouterr().out
    for folder in (tmp_path / "r", tmp_path / "r" / "binary", tmp_path / "r" / "rgb"):
        info = sample_files.read_pool_info(folder)
        assert info is not None and len(info) == 6 + len(red.MODES)
    assert len(list((tmp_path / "r" / "rgb" / "masks").iterdir())) == 6 + len(red.MODES)
    for argv, message in ((["--n", "0"], "--n must be >= 1"),
                          (["--test-per-mode", "-1"], "--test-per-mode must be >= 0"),
                          (["--shape", "8", "8"], "too small")):
        assert main(["sample", str(tmp_path / "bad"), "--redundant", *argv]) == 2
        assert message in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "bad"), "--test-per-mode", "2"]) == 2
    assert "needs --redundant" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    # without the flag, the plain sample pool as before
    assert main(["sample", str(tmp_path / "plain"), "--n", "2", "--shape", "32", "32"]) == 0
    assert sample_files.read_pool_info(tmp_path / "plain") is None
    assert len(list((tmp_path / "plain" / "images").iterdir())) == 2
