"""Letter-box round trips and the project-to-array helpers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_alunet.data.dataset import normalise, prepare_image, validation_split
from napari_alunet.data.geometry import Letterbox


@pytest.mark.parametrize("shape", [(377, 447), (447, 377), (100, 60), (256, 256), (31, 17)])
def test_letterbox_geometry(shape):
    box = Letterbox.fit(*shape, 256)
    assert max(box.new_h, box.new_w) == 256
    assert box.top + box.new_h <= 256 and box.left + box.new_w <= 256
    # Aspect ratio kept to within one pixel of rounding.
    assert abs(box.new_h / box.new_w - shape[0] / shape[1]) < 2 / min(box.new_h, box.new_w)
    assert Letterbox(**box.as_dict()) == box


@pytest.mark.parametrize("shape", [(100, 60), (31, 17), (128, 200)])
def test_labels_round_trip_exact_when_upscaling(shape):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, shape).astype(np.uint8)
    box = Letterbox.fit(*shape, 256)
    canvas = box.apply_labels(labels)
    assert canvas.shape == (256, 256) and canvas.dtype == np.uint8
    np.testing.assert_array_equal(box.invert_labels(canvas), labels)


def test_labels_round_trip_of_smooth_masks_when_shrinking():
    yy, xx = np.mgrid[:377, :447]
    labels = np.zeros((377, 447), np.uint8)
    labels[(yy - 180) ** 2 + (xx - 220) ** 2 < 150**2] = 3
    labels[(yy - 180) ** 2 + (xx - 220) ** 2 < 110**2] = 4
    labels[(yy - 120) ** 2 + (xx - 200) ** 2 < 30**2] = 1
    box = Letterbox.fit(377, 447, 256)
    back = box.invert_labels(box.apply_labels(labels))
    assert back.shape == labels.shape
    # Only pixels on class boundaries can change (about one original pixel per boundary pixel).
    assert (back != labels).mean() < 0.01


def test_pad_is_background_like_and_maps_invert():
    image = np.full((50, 100), 200.0, np.float32)
    image[20:30, 40:60] = 10.0
    box = Letterbox.fit(50, 100, 64)
    canvas = box.apply_image(image)
    assert canvas[0, 0] == pytest.approx(200.0)  # padding takes the border's median, not black
    back = box.invert_map(canvas)
    assert back.shape == (50, 100)
    assert np.abs(back - image).mean() < 10  # bilinear down and up: blurred edges only
    stacked = box.invert_map(np.stack([canvas, canvas]))
    assert stacked.shape == (2, 50, 100)


def test_wrong_canvas_size_is_refused():
    box = Letterbox.fit(10, 20, 32)
    with pytest.raises(ValueError, match="32x32"):
        box.invert_labels(np.zeros((16, 16), np.uint8))
    with pytest.raises(ValueError, match="10x20"):
        box.apply_labels(np.zeros((20, 10), np.uint8))


def test_normalise_and_prepare():
    rng = np.random.default_rng(1)
    image = rng.normal(120, 25, (40, 60)).astype(np.float32)
    canvas, box = prepare_image(image, 32)
    assert canvas.shape == (32, 32) and canvas.dtype == np.float32
    assert abs(canvas.mean()) < 1e-4 and abs(canvas.std() - 1) < 1e-3
    assert box.orig_h == 40
    flat = normalise(np.full((4, 4), 7.0))
    assert np.all(flat == 0)


def test_validation_split_is_stable_as_pool_grows():
    train_a, val_a = validation_split(range(1, 21), 0.2, seed=0)
    train_b, val_b = validation_split(range(1, 41), 0.2, seed=0)
    assert set(val_a) <= set(val_b)  # no image moves from validation to training
    assert set(train_a) <= set(train_b)
    assert not set(train_b) & set(val_b)
    assert validation_split(range(1, 21), 0.2, seed=1) != (train_a, val_a)


def test_validation_split_small_pools():
    assert validation_split([5], 0.2, seed=0) == ([5], [])
    train, val = validation_split([1, 2], 0.2, seed=0)
    assert len(train) == 1 and len(val) == 1
    train, val = validation_split([1, 2, 3], 0.0, seed=0)
    assert val == []
