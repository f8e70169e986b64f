"""Annotation cost in user actions (napari_alunet.experiment.cost), on hand-made label maps
with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_alunet.experiment.cost import (
    clicks_for_batch,
    corrected_pixels,
    correction_clicks,
    scratch_clicks,
)


def _blank(h: int = 64, w: int = 64) -> np.ndarray:
    return np.zeros((h, w), dtype=np.int32)


def _disc(r: float, size: int = 256) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    c = size // 2
    return (((yy - c) ** 2 + (xx - c) ** 2) <= r * r).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# correction


def test_identical_maps_cost_nothing():
    truth = _blank()
    truth[10:30, 10:30] = 1
    truth[40:50, 5:60] = 2
    assert corrected_pixels(truth, truth.copy()) == 0
    assert correction_clicks(truth, truth.copy()) == 0


def test_one_wrong_square():
    truth = _blank()
    truth[10:20, 10:20] = 1
    proposal = _blank()  # the model missed the square
    assert corrected_pixels(proposal, truth) == 100
    assert correction_clicks(proposal, truth) == 1
    # The reverse (a false positive to erase) costs the same.
    assert correction_clicks(truth, proposal) == 1


def test_two_wrong_squares_of_different_classes():
    truth = _blank()
    truth[5:15, 5:15] = 1
    truth[30:40, 30:40] = 2
    proposal = _blank()
    assert corrected_pixels(proposal, truth) == 200
    assert correction_clicks(proposal, truth) == 2


def test_small_error_is_below_brush_precision():
    truth = _blank()
    truth[10:13, 10:13] = 1  # 9 px < 16
    proposal = _blank()
    assert corrected_pixels(proposal, truth) == 9
    assert correction_clicks(proposal, truth) == 0
    assert correction_clicks(proposal, truth, min_area=9) == 1
    assert correction_clicks(proposal, truth, min_area=0) == 1


def test_error_region_spanning_two_true_classes_costs_two():
    truth = _blank()
    truth[10:20, 10:20] = 1
    truth[10:20, 20:30] = 2  # side by side: one connected error region, two paints
    proposal = _blank()
    assert corrected_pixels(proposal, truth) == 200
    assert correction_clicks(proposal, truth) == 2
    # Wrong class painted over one true class: one stroke of class 1.
    proposal = truth.copy()
    proposal[10:20, 10:20] = 2
    assert correction_clicks(proposal, truth) == 1


def test_connectivity_of_diagonal_errors():
    truth = _blank()
    truth[10:20, 10:20] = 1
    truth[20:30, 20:30] = 1  # touches the first square only at a corner
    proposal = _blank()
    assert correction_clicks(proposal, truth, connectivity=1) == 2
    assert correction_clicks(proposal, truth, connectivity=2) == 1


def test_partial_error_counts_only_the_wrong_part():
    truth = _blank()
    truth[10:30, 10:30] = 1
    proposal = truth.copy()
    proposal[10:30, 25:30] = 0  # the model cut off a 20 x 5 strip
    assert corrected_pixels(proposal, truth) == 100
    assert correction_clicks(proposal, truth) == 1


def test_input_checks():
    with pytest.raises(ValueError):
        corrected_pixels(_blank(4, 4), _blank(4, 5))
    with pytest.raises(ValueError):
        correction_clicks(np.zeros((2, 2, 2), int), np.zeros((2, 2, 2), int))
    with pytest.raises(TypeError):
        correction_clicks(np.zeros((4, 4)), _blank(4, 4))
    with pytest.raises(ValueError):
        correction_clicks(_blank(4, 4), _blank(4, 4), connectivity=3)
    with pytest.raises(ValueError):
        scratch_clicks(_blank(4, 4), vertex_spacing=0)


# ---------------------------------------------------------------------------------------------
# scratch


def test_scratch_empty_truth():
    assert scratch_clicks(_blank()) == 0
    assert scratch_clicks(np.zeros((0, 0), dtype=np.int32)) == 0


@pytest.mark.parametrize(("h", "w", "spacing", "expected"), [
    (10, 10, 10.0, 4),   # perimeter 2 (10 + 10) - 4 = 36 -> ceil(3.6) = 4
    (12, 10, 10.0, 4),   # 40 -> exactly 4
    (12, 10, 4.0, 10),   # 40 -> exactly 10
    (20, 30, 10.0, 10),  # 96 -> ceil(9.6) = 10
    (5, 5, 10.0, 3),     # 16 -> ceil(1.6) = 2, but a polygon needs 3
])
def test_scratch_rectangle_exact(h, w, spacing, expected):
    truth = _blank()
    truth[7:7 + h, 3:3 + w] = 1
    assert scratch_clicks(truth, vertex_spacing=spacing) == expected


def test_scratch_rectangle_on_the_image_edge_is_closed():
    truth = _blank()
    truth[0:12, 0:10] = 3  # the image border is part of the polygon
    assert scratch_clicks(truth, vertex_spacing=4.0) == 10


@pytest.mark.parametrize("r", [10, 25, 60])
def test_scratch_disc_close_to_circumference(r):
    expected = math.ceil(2 * math.pi * r / 10.0)
    got = scratch_clicks(_disc(r), vertex_spacing=10.0)
    # The digital perimeter is ~5 % longer than the circle's: within 10 % (+1 for rounding).
    assert abs(got - expected) <= max(1, math.ceil(0.1 * expected))


def test_scratch_regions_and_classes_add_up():
    truth = _blank()
    truth[2:14, 2:12] = 1    # 40 -> 4 (spacing 10)
    truth[30:42, 2:12] = 1   # another region of the same class -> 4
    truth[30:42, 30:40] = 2  # another class -> 4
    truth[60:63, 60:63] = 2  # 9 px < min_area: ignored
    assert scratch_clicks(truth) == 12
    assert scratch_clicks(truth, min_area=0) == 12 + 3


def test_clicks_for_batch():
    truth = _blank()
    truth[10:20, 10:20] = 1
    table = clicks_for_batch([_blank(), truth.copy(), None], [truth, truth, truth])
    assert list(table["corrected_pixels"][:2]) == [100, 0]
    assert list(table["correction_clicks"][:2]) == [1, 0]
    assert (table["scratch_clicks"] == 4).all()
    assert list(table["cheaper"]) == [1, 0, 4]
    assert math.isnan(table["correction_clicks"][2])
