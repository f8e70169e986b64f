"""Importing pools into projects: layouts, splits, all-or-nothing failure, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from napari_alunet.config import DEFAULT_CLASS_COLOURS, DataConfig
from napari_alunet.data.io import InputError
from napari_alunet.events import drain
from napari_alunet.export import export_labels
from napari_alunet.importer import import_pool, safe_file_name, split_pools
from napari_alunet.store import Project, ProjectError


def embryo_labels(h: int, w: int, shift: int = 0) -> np.ndarray:
    """A small hand-made blastocyst: ZP ring, TE lining, ICM blob, cavity (BL)."""
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h / 2, xx - w / 2 - shift)
    labels = np.zeros((h, w), np.uint8)
    labels[r < 16] = 3
    labels[r < 12] = 2
    labels[r < 9] = 4
    labels[(np.hypot(yy - h / 2 + 5, xx - w / 2 - shift) < 4) & (r < 12)] = 1
    return labels


def write_binary_pool(root: Path, n: int = 10, h: int = 40, w: int = 50) -> Path:
    for sub in ("images", "GT_ICM", "GT_TE", "GT_ZP"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        name = f"Blast_PCRM_{1201750 + i} D5"
        labels = embryo_labels(h, w, shift=i % 5)
        image = (120 + 20 * (labels == 3) + rng.normal(0, 8, (h, w))).clip(0, 255)
        Image.fromarray(image.astype(np.uint8)).save(root / "images" / f"{name}.BMP")
        for cls, idx in (("ICM", 1), ("TE", 2), ("ZP", 3)):
            mask = (labels == idx).astype(np.uint8) * 255
            Image.fromarray(mask).save(root / f"GT_{cls}" / f"{name} {cls}_Mask.bmp")
    return root


def write_rgb_pool(root: Path, n: int = 6, h: int = 30, w: int = 36) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    palette = np.asarray(DEFAULT_CLASS_COLOURS, np.int16)
    rng = np.random.default_rng(1)
    for i in range(n):
        labels = embryo_labels(h, w, shift=i % 3)
        rgb = (palette[labels] + rng.integers(-6, 7, (h, w, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(np.full((h, w), 100, np.uint8)).save(root / "images" / f"emb{i}.png")
        Image.fromarray(rgb).save(root / "masks" / f"emb{i}.png")
    return root


@pytest.fixture
def binary_pool(tmp_path):
    return write_binary_pool(tmp_path / "pool")


def test_binary_layout_import_derives_blastocoel(tmp_path, binary_pool):
    summary = drain(import_pool(binary_pool, tmp_path / "proj",
                                data=DataConfig(test_fraction=0.2, initial_fraction=0.1, seed=0)))
    assert summary.layout == "binary"
    assert summary.counts == {"labelled": 1, "unlabelled": 7, "test": 2}
    with Project.open(tmp_path / "proj") as project:
        record = project.images()[0]
        truth = project.read_ground_truth(record.id)
        np.testing.assert_array_equal(truth, embryo_labels(40, 50, shift=0))
        assert record.name == "Blast_PCRM_1201750 D5"
        assert project.read_image(record.id).shape == (40, 50)
        labelled = project.images("labelled")
        assert labelled[0].labelled_round == 0
        # The initial labels are the imported ground truth, referenced, not copied.
        version = project.current_label(labelled[0].id)
        assert version.source == "imported" and version.rel_path == labelled[0].gt_path
        assert project.verify() == []
        assert not any(p.name.startswith(".tmp") for p in (tmp_path).iterdir())


def test_rgb_layout_import(tmp_path):
    pool = write_rgb_pool(tmp_path / "rgb")
    summary = drain(import_pool(pool, tmp_path / "proj"))
    assert summary.layout == "rgb" and summary.n_with_ground_truth == 6
    with Project.open(tmp_path / "proj", read_only=True) as project:
        for record in project.images():
            shift = int(record.name[-1]) % 3
            np.testing.assert_array_equal(project.read_ground_truth(record.id),
                                          embryo_labels(30, 36, shift))


def test_images_only_layout_all_unlabelled(tmp_path):
    (tmp_path / "only" / "images").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((20, 20), 50 + i, np.uint8)).save(
            tmp_path / "only" / "images" / f"{i}.png")
    summary = drain(import_pool(tmp_path / "only", tmp_path / "proj"))
    assert summary.layout == "images"
    assert summary.counts == {"labelled": 0, "unlabelled": 4, "test": 0}


def test_splits_reproducible_from_seed():
    ids = list(range(1, 51))
    a = split_pools(ids, [], DataConfig(seed=7))
    b = split_pools(ids, [], DataConfig(seed=7))
    c = split_pools(ids, [], DataConfig(seed=8))
    assert a == b and a != c
    pools = list(a.values())
    assert pools.count("test") == 10 and pools.count("labelled") == 5


def test_unmatched_names_refused_and_nothing_left(tmp_path, binary_pool):
    (binary_pool / "GT_TE" / "Blast_PCRM_1201752 D5 TE_Mask.bmp").unlink()
    with pytest.raises(InputError, match="1201752"):
        drain(import_pool(binary_pool, tmp_path / "proj"))
    assert not (tmp_path / "proj").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["pool"]
    summary = drain(import_pool(binary_pool, tmp_path / "proj", allow_unmatched=True))
    assert summary.without_masks == ["Blast_PCRM_1201752 D5"]
    with Project.open(tmp_path / "proj", read_only=True) as project:
        record = next(r for r in project.images() if r.name == "Blast_PCRM_1201752 D5")
        assert record.pool == "unlabelled" and not record.has_ground_truth


def test_corrupt_image_midway_leaves_no_project(tmp_path, binary_pool):
    victim = binary_pool / "images" / "Blast_PCRM_1201756 D5.BMP"
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(InputError, match="1201756"):
        drain(import_pool(binary_pool, tmp_path / "proj"))
    assert not (tmp_path / "proj").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["pool"]


def test_mask_size_mismatch_refused(tmp_path, binary_pool):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(
        binary_pool / "GT_ZP" / "Blast_PCRM_1201753 D5 ZP_Mask.bmp")
    with pytest.raises(InputError, match="1201753"):
        drain(import_pool(binary_pool, tmp_path / "proj"))
    assert not (tmp_path / "proj").exists()


def test_existing_project_folder_refused(tmp_path, binary_pool):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "keep.txt").write_text("mine")
    with pytest.raises(ProjectError, match="not empty"):
        drain(import_pool(binary_pool, tmp_path / "proj"))
    assert (tmp_path / "proj" / "keep.txt").read_text() == "mine"


def test_empty_folder_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError):
        drain(import_pool(tmp_path / "empty", tmp_path / "proj"))
    assert not (tmp_path / "proj").exists()


def test_safe_file_names_cannot_escape():
    assert safe_file_name(3, "../../etc/passwd", ".png") == "000003_etc_passwd.png"
    assert "/" not in safe_file_name(1, "a/b\\c", ".BMP")
    assert safe_file_name(2, "...", ".png") == "000002_image.png"


def test_export_writes_original_size_and_names(tmp_path, binary_pool):
    drain(import_pool(binary_pool, tmp_path / "proj"))
    with Project.open(tmp_path / "proj") as project:
        target = project.images("unlabelled")[0]
        labels = np.zeros((40, 50), np.uint8)
        labels[:5, :5] = 2
        project.commit_label(target.id, labels)
        written = export_labels(project, tmp_path / "out", ground_truth=True, colour=True)
    names = sorted(p.name for p in written)
    assert len(names) == 10  # 2 labelled + 8 others exported as ground truth
    assert f"{target.name}.png" in names
    back = np.asarray(Image.open(tmp_path / "out" / f"{target.name}.png"))
    np.testing.assert_array_equal(back, labels)
    colour = np.asarray(Image.open(tmp_path / "out" / "colour" / f"{target.name}.png"))
    assert tuple(colour[0, 0]) == DEFAULT_CLASS_COLOURS[2]
    rows = (tmp_path / "out" / "labels.csv").read_text().splitlines()
    assert len(rows) == 11 and "human" in "".join(rows)


def test_a_mask_missing_a_class_the_others_have_is_warned_about():
    """Issue 12, class 3: an empty class that the other images have is worth a warning."""
    from napari_alunet.importer import missing_class_warnings

    names = ("background", "ICM", "TE")
    present = {"a": {0, 1, 2}, "b": {0, 1, 2}, "c": {0, 1, 2}, "d": {0, 2}, "e": {0}}
    warnings = missing_class_warnings(present, names)
    # ICM: 3 of the 4 others (75 %) is below the 80 % rule; TE: 4 of 4.
    assert warnings == ["e: no TE (which 4 of the 4 other masks have)"]
    present["f"] = {0, 1, 2}
    assert "d: no ICM (which 4 of the 5 other masks have)" in missing_class_warnings(present,
                                                                                     names)
    assert missing_class_warnings({"a": {0}, "b": {0, 1}}, names) == []  # too few to judge
