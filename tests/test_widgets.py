"""Click through the napari workflow on a tiny synthetic project, on the CPU.

Run under a display::

    QT_QPA_PLATFORM=offscreen xvfb-run -a python -m pytest tests/test_widgets.py

The model is the 'tiny' preset (32 px input) on 48 x 56 images, one or two epochs, so a round
takes a second or two on two cores.
"""

from __future__ import annotations

import colorsys
import dataclasses

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_alunet.store import Project  # noqa: E402

pytestmark = pytest.mark.gui

SHAPE = (48, 56)
TIMEOUT = 60_000  # ms; a round on the tiny preset takes a few seconds


@pytest.fixture
def app(make_napari_viewer):
    """A viewer with the combined widget docked, set up for tiny, fast rounds."""
    from napari_alunet.widgets.main import ActiveLearningWidget

    viewer = make_napari_viewer()
    widget = ActiveLearningWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Active learning")
    yield viewer, widget
    widget.state.stop()


def make_tiny(widget, steps: int = 4) -> None:
    """Tiny preset, few optimiser steps and MC passes (the widgets' settings overrides)."""
    state = widget.state
    train = widget.panel("Train")
    train.preset.setCurrentText("tiny")
    train.steps.setValue(steps)
    train.patience.setValue(0)
    # No health check: a 4-step fit is meant to be poor, retrying it would only cost time.
    state.settings.train = dataclasses.replace(state.settings.train, batch_size=4,
                                               device="cpu", augment=False, health_min_dice=0.0)
    acquire = widget.panel("Acquire")
    acquire.passes.setValue(3)
    acquire.k.setValue(3)


def wait_idle(qtbot, state, timeout: int = TIMEOUT) -> None:
    qtbot.waitUntil(lambda: not state.busy, timeout=timeout)


def create_sample(qtbot, widget, tmp_path, n: int = 12):
    panel = widget.panel("Project")
    panel.test_fraction.setValue(0.25)
    panel.initial_fraction.setValue(0.25)
    assert panel.create_sample(tmp_path, n=n, shape=SHAPE) is not None
    wait_idle(qtbot, widget.state)
    assert widget.state.project is not None
    return widget.state.project


def first_round(qtbot, widget, tmp_path):
    """A sample project with round 0 trained, scored and queued (tiny preset)."""
    project = create_sample(qtbot, widget, tmp_path)
    make_tiny(widget)
    with qtbot.waitSignal(widget.state.round_finished, timeout=TIMEOUT):
        widget.panel("Train").start()
    wait_idle(qtbot, widget.state)
    return project


# -- one round through the panels, one step per test (so a failure names the step) -----------
def test_sample_project_before_any_round(app, qtbot, tmp_path):
    _viewer, widget = app
    project = create_sample(qtbot, widget, tmp_path)
    assert project.counts() == {"labelled": 3, "unlabelled": 6, "test": 3}
    # Empty tables say why they are empty (issue 17) instead of showing bare headers.
    assert widget.panel("Rounds").table.isHidden() and widget.panel("Acquire").table.isHidden()
    assert "No round yet" in widget.panel("Rounds").table_empty.text()
    assert "labelled" in widget.panel("Project").counts_label.text()
    assert widget.panel("Project").classes_list.count() == 5


def test_train_runs_a_round_in_a_worker(app, qtbot, tmp_path):
    _viewer, widget = app
    state = widget.state
    create_sample(qtbot, widget, tmp_path)
    make_tiny(widget)
    # Train: one round (train -> evaluate -> score -> queue) in a worker.
    train = widget.panel("Train")
    with qtbot.waitSignal(state.round_finished, timeout=TIMEOUT) as finished:
        assert train.start() is not None
        assert not train.start_button.isEnabled()  # one job at a time
    report = finished.args[0]
    assert report.status == "queued" and len(report.queue) == 3
    assert len(train.history) == 4 and "mean Dice" in train.metrics_label.text()  # 4 steps
    shown = train.metrics_label.text()  # how the model was trained and chosen
    assert "4 steps" in shown and "final EMA weights" in shown and "unlabelled" in shown
    assert state.settings.model.input_size == 32
    wait_idle(qtbot, state)


@pytest.fixture
def round0(app, qtbot, tmp_path):
    """The viewer, the widget and a sample project whose round 0 is trained and in review."""
    viewer, widget = app
    project = first_round(qtbot, widget, tmp_path)
    return viewer, widget, project


def test_review_shows_the_first_image_with_its_map(round0):
    viewer, widget, project = round0
    state = widget.state
    # Review shows the first queued image, prediction pre-filled, map over it.
    review = widget.panel("Review")
    shown = widget.state.display.current
    assert shown is not None and shown.image_id == project.queue()[0]
    labels = viewer.layers["alunet: labels"]
    assert labels.data.shape == SHAPE
    # The view is fitted to this image (not to the placeholders made when the project opened).
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    assert camera.center[-2:] == pytest.approx(((SHAPE[0] - 1) / 2, (SHAPE[1] - 1) / 2))
    assert labels.colormap.color_dict[1][3] == 1.0  # class colours, background transparent
    assert labels.colormap.color_dict[0][3] == 0.0
    assert list(labels.features["class"]) == list(project.classes.names)
    overlay = viewer.layers["alunet: uncertainty"]
    assert overlay.visible and overlay.metadata["kind"] == "bald"
    assert overlay.data.shape == SHAPE
    assert overlay.colormap.colors[0][3] == 0.0 and overlay.colormap.colors[-1][3] > 0.5
    # The scale of the violet: a colour bar in the panel with this map's limits.
    assert not review.colour_bar.pixmap().isNull()
    assert review.colour_bar_text.text().startswith("bald ")
    # One hue for every map, far from every class colour (issue 17: users read an inferno-like
    # overlay as blastocoel yellow or TE red).
    hues = {colorsys.rgb_to_hsv(*c[:3])[0] for c in overlay.colormap.colors[1:]}
    class_hues = [colorsys.rgb_to_hsv(*(v / 255 for v in rgb))[0]
                  for rgb in project.classes.colours[1:]]
    for hue in hues:
        assert min(min(abs(hue - h), 1 - abs(hue - h)) for h in class_hues) > 0.19
    # The threshold slider moves the transparent floor to that percentile of the image's map.
    low_before = overlay.contrast_limits[0]
    review.map_threshold.setValue(90)
    assert overlay.contrast_limits[0] == pytest.approx(np.percentile(overlay.data, 90), rel=1e-4)
    assert overlay.contrast_limits[0] >= low_before
    # Shift+M hides the overlay, and it stays hidden on the next image until shown again.
    assert review.toggle_map() is False and not overlay.visible
    state.display.show(shown.image_id)
    assert not overlay.visible and review.colour_bar_text.text() == "map hidden"
    assert review.toggle_map() is True and overlay.visible
    review.map_choice.setCurrentText("js")  # another map of the same image
    assert overlay.metadata["kind"] == "js" and overlay.colormap.name == "alunet uncertainty js"
    assert overlay.metadata["threshold"] == 90
    review.map_choice.setCurrentText("none")
    assert not overlay.visible


def test_acquire_rescores_and_its_table_shows_images(round0, qtbot):
    viewer, widget, project = round0
    state = widget.state
    review = widget.panel("Review")
    overlay = viewer.layers["alunet: uncertainty"]
    # Acquire: re-score with entropy; the table ranks the pool; a click shows that image.
    acquire = widget.panel("Acquire")
    acquire.strategy.setCurrentText("entropy")
    acquire.batch.setCurrentText("none")  # plain top k: the queue is the head of the table
    assert state.settings.acquisition.diversity == "none"
    acquire.cold_start.setCurrentText("random")
    assert state.settings.acquisition.cold_start == "random"
    with qtbot.waitSignal(state.scores_changed, timeout=TIMEOUT):
        acquire.compute()
    wait_idle(qtbot, state)
    assert acquire.table.rowCount() == 6 and not acquire.table.isHidden()
    assert acquire.table_empty.isHidden()
    scores = [float(acquire.table.item(r, 2).text()) for r in range(6)]
    assert scores == sorted(scores, reverse=True)
    top = acquire.table.item(0, 0).data(256)  # Qt.UserRole: the image id
    # "queued" read as "waiting to run" (issue 17): the column says what the user does next.
    assert project.queue()[0] == top and acquire.table.item(0, 3).text() == "to review"
    acquire.table.cellClicked.emit(4, 0)  # not queued: the image without maps
    assert state.display.current.image_id == acquire.table.item(4, 0).data(256)
    assert not overlay.visible
    review.map_choice.setCurrentText("entropy")  # follow the new strategy
    acquire.table.cellClicked.emit(0, 0)  # queued: its maps over it
    assert state.display.current.image_id == top
    assert overlay.visible and overlay.metadata["kind"] == "entropy"


def _paint_and_commit(viewer, review):
    """Paint a stroke and a block into the model's labels on screen and commit them; returns
    (image id, prediction shown, labels committed, the version)."""
    first = review.state.display.current.image_id
    labels = viewer.layers["alunet: labels"]
    before = labels.data.copy()
    labels.selected_label = 1
    labels.paint((24, 28), 1)
    labels.data[2:8, 2:10] = 3  # and a block of ZP, as a fill would
    labels.refresh()
    edited = labels.data.copy()
    assert (edited != before).any()
    return first, before, edited, review.commit()


def test_review_commit_undo_and_commit_again(round0):
    viewer, widget, project = round0
    state = widget.state
    review = widget.panel("Review")
    # Review: paint a stroke into the model's labels and commit; undo; commit again.
    review.show_next()
    first, before, edited, version = _paint_and_commit(viewer, review)
    assert version is not None and version.source == "human"
    assert project.image(first).pool == "labelled"
    assert np.array_equal(project.read_label(first), edited)
    assert version.pixels_changed == int((edited != before).sum())
    assert version.seconds_spent is not None and version.seconds_spent >= 0
    assert state.display.current.image_id != first  # moved on to the next image

    review.undo()
    assert project.image(first).pool == "unlabelled"
    assert first in project.queue()
    assert state.display.current.image_id == first
    labels = viewer.layers["alunet: labels"]
    # The withdrawn mask comes back for editing (issue 17), not the model's prediction.
    assert np.array_equal(labels.data, edited)
    assert np.array_equal(state.display.current.reference, before)  # effort still vs the model
    again = review.commit()
    assert again is not None and again.pixels_changed == version.pixels_changed
    assert project.image(first).pool == "labelled"
    assert [v.active for v in project.label_history(first)] == [False, True]


def test_skip_and_keyboard_shortcuts(round0):
    viewer, _widget, project = round0
    # Skip and the keyboard shortcuts (bound on the viewer).
    from app_model.types import KeyBinding

    pending = project.queue()
    viewer.keymap[KeyBinding.from_str("Shift-S")](viewer)
    assert project.queue()[-1] == pending[0]
    labelled = project.counts()["labelled"]
    viewer.keymap[KeyBinding.from_str("Shift-Enter")](viewer)  # commit the prediction as is
    assert project.counts()["labelled"] == labelled + 1
    viewer.keymap[KeyBinding.from_str("Shift-U")](viewer)
    assert project.counts()["labelled"] == labelled


def test_next_round_asks_first_and_draws_the_curve(round0, qtbot, tmp_path):
    viewer, widget, project = round0
    state = widget.state
    _paint_and_commit(viewer, widget.panel("Review"))  # one corrected image: 4 labelled
    # Rounds: next round; the curve has two points and effort grows.
    rounds = widget.panel("Rounds")
    asked = []
    # Images still wait for review: Next round asks first (issue 17), and No starts nothing.
    assert rounds.next_round(confirm=lambda m: asked.append(m) or False) is None
    assert "still wait for review" in asked[0] and len(project.rounds()) == 1
    # One action, one name: the round button reads the same in Train and Rounds.
    train = widget.panel("Train")
    assert rounds.next_button.text() == train.start_button.text() == "Train round 1"
    assert "Next: Review" in widget.status.text() and "in review" in rounds.summary.text()
    with qtbot.waitSignal(state.round_finished, timeout=TIMEOUT):
        rounds.next_round(confirm=lambda m: True)
    wait_idle(qtbot, state)
    assert [r.status for r in project.rounds()] == ["complete", "queued"]
    assert rounds.next_button.text() == train.start_button.text() == "Train round 2"
    assert [rounds.table.item(r, 1).text() for r in range(2)] == ["in review", "complete"]
    points = rounds.points
    assert [p.round_idx for p in points] == [0, 1]
    assert points[1].n_labelled == 4 and points[0].n_labelled == 3
    assert points[0].pixels_changed == 0 and points[1].pixels_changed > 0
    assert rounds.table.rowCount() == 2
    for kind in ("png", "svg", "csv"):
        out = rounds.export(kind, tmp_path / f"curve.{kind}")
        assert out is not None and out.stat().st_size > 0
    csv_text = (tmp_path / "curve.csv").read_text().splitlines()
    assert csv_text[0].startswith("round,status,n_labelled,pixels_changed")
    assert "dice_ICM" in csv_text[0] and len(csv_text) == 3
    # The exported figure (issue 17): 0-1 Dice axes, whole-number ticks of labelled images,
    # one curve per foreground class beside the mean, and the run's metadata under it.
    from napari_alunet.curve import curve_metadata, export_figure

    figure = export_figure(points, class_names=project.classes.names,
                           metadata=curve_metadata(project))
    left, right = figure.axes[:2]
    assert left.get_ylim() == (0.0, 1.0) and right.get_ylim() == (0.0, 1.0)
    figure.canvas.draw()
    assert all(float(t).is_integer() for t in left.get_xticks())
    names = [line.get_label() for line in left.get_lines()]
    assert names[0] == "mean (foreground)" and names[1:] == list(project.classes.names[1:])
    footer = " ".join(t.get_text() for t in figure.texts)
    assert project.path.name in footer and "3 test images" in footer and "2 round(s)" in footer
    assert right.get_xlim()[0] == 0.0
    # Live charts: one point at 0 pixels changed draws an axis from 0, not from -1.
    from napari_alunet.widgets._chart import Series

    rounds.by_effort.set_series([Series("", [0.0], [0.5], "#fff")])
    assert rounds.by_effort._ranges()[:2] == (0.0, 1.0)


def test_feature_maps_of_the_image_on_screen(round0, qtbot):
    viewer, widget, _project = round0
    state = widget.state
    # Inside the model: feature maps of a block for the image on screen.
    features = widget.panel("Model")
    assert "bottleneck" in features.blocks()
    features.show_features("enc0")
    wait_idle(qtbot, state)
    layer = viewer.layers["alunet: features"]
    assert layer.data.ndim == 3 and layer.data.shape[0] == 8 and layer.metadata["block"] == "enc0"
    assert layer.metadata["image_id"] == state.display.current.image_id
    # Only the feature pixels over the image, not the letter-box padding beside it: the
    # layer's edges are within one feature pixel of the image's (pixel centres at 0 .. n-1).
    step = layer.scale[1]
    for axis in (1, 2):
        first = layer.translate[axis] - step / 2
        last = first + layer.data.shape[axis] * step
        assert abs(first + 0.5) < step and abs(last - (SHAPE[axis - 1] - 0.5)) < step
    # Back in Review, the feature maps go under the labels (issue 17, bug 3).
    state.display.show(state.display.current.image_id)
    names = [lyr.name for lyr in viewer.layers]
    assert names.index("alunet: features") < names.index("alunet: labels")
    assert viewer.layers.selection.active.name == "alunet: labels"


def test_oracle_finishes_the_queue_and_every_panel_names_the_next_step(round0, qtbot):
    viewer, widget, project = round0
    state = widget.state
    review = widget.panel("Review")
    # The oracle commits stored ground truth for the rest of the queue.
    pending = project.queue()
    assert pending
    review.oracle()
    wait_idle(qtbot, state)
    assert project.queue() == []
    assert [project.label_history(i)[-1].source for i in pending] == ["oracle"] * len(pending)
    # Queue done: the last image stays on screen (not a black canvas) and every panel names
    # the same next step.
    assert state.display.current is not None and viewer.layers["alunet: image"].visible
    assert "Next: Review of round 0 done" in review.header.text()
    assert "Train round 1" in review.header.text() and "Train round 1" in widget.status.text()


def test_stop_close_and_resume(app, qtbot, tmp_path, make_napari_viewer):
    viewer, widget = app
    state = widget.state
    project = create_sample(qtbot, widget, tmp_path)
    path = project.path
    make_tiny(widget, steps=5000)
    steps = []
    state.round_event.connect(lambda e: steps.append(type(e).__name__))
    widget.panel("Train").start()
    qtbot.waitUntil(lambda: "StepEvent" in steps, timeout=TIMEOUT)
    # Closing the viewer mid-round stops the worker and releases the project.
    viewer.close()
    qtbot.waitUntil(lambda: not state.busy and state.project is None, timeout=TIMEOUT)
    with Project.open(path, read_only=True) as reopened:
        assert reopened.current_round().status == "started"

    # Reopening continues the round (with the settings it started with).
    viewer2 = make_napari_viewer()
    from napari_alunet.widgets.main import ActiveLearningWidget

    widget2 = ActiveLearningWidget(viewer2)
    state2 = widget2.state
    assert widget2.panel("Project").open_project(path)
    assert widget2.panel("Train").steps.value() == 5000  # the round's own settings
    # Shorten it for the test: a resumed round keeps its stored settings, so edit them there.
    config = state2.project.current_round().config
    config["train"]["steps"] = 2
    state2.project.update_round(state2.project.current_round().idx, config=config)
    with qtbot.waitSignal(state2.round_finished, timeout=TIMEOUT) as finished:
        widget2.panel("Train").start()
    assert finished.args[0].round_idx == 0 and finished.args[0].status == "queued"
    wait_idle(qtbot, state2)
    state2.close_project()


def test_stop_button_keeps_round_resumable(app, qtbot, tmp_path):
    _viewer, widget = app
    state = widget.state
    project = create_sample(qtbot, widget, tmp_path)
    make_tiny(widget, steps=20000)
    steps = []
    state.round_event.connect(lambda e: steps.append(e) if type(e).__name__ == "StepEvent"
                              else None)
    widget.panel("Train").start()
    qtbot.waitUntil(lambda: len(steps) >= 3, timeout=TIMEOUT)
    # While it trains no text tells the user to press a round button (they went stale).
    assert "Wait: a round is training" in widget.status.text()
    assert "Wait: a round is training" in widget.panel("Rounds").summary.text()
    widget.panel("Train").job_bar.stop_button.click()
    at_stop = len(steps)
    wait_idle(qtbot, state)
    # Stop answers at the next optimiser step (not at the end of a 20,000-step budget).
    assert len(steps) - at_stop <= 2
    assert project.current_round().status == "started"
    # After Stop the texts say "resume" (issue 17), with the button's own name.
    assert widget.panel("Train").start_button.text() == "Resume round 0"
    assert widget.panel("Rounds").next_button.text() == "Resume round 0"
    assert "Resume round 0" in widget.status.text()
    assert widget.panel("Rounds").table.item(0, 1).text() == "stopped while training"
    # The weights it had (the EMA of the steps taken) were saved, marked with their step.
    from napari_alunet.training.checkpoint import load_checkpoint

    _model, meta = load_checkpoint(project.checkpoint_path(0))
    assert 3 <= meta["epoch"] < 20000 and meta["extra"]["selection"] == "final"


def test_locked_project_offers_read_only(app, qtbot, tmp_path):
    _viewer, widget = app
    project = create_sample(qtbot, widget, tmp_path, n=8)
    path = project.path
    widget.state.close_project()
    with Project.open(path):  # another writer holds the lock
        panel = widget.panel("Project")
        assert not panel.open_project(path)
        assert not panel.locked_box.isHidden()
        assert "read-only" in panel.locked_label.text()
        panel.read_only_button.click()
        assert widget.state.project is not None and widget.state.project.read_only
        assert not widget.panel("Train").start_button.isEnabled()
        widget.panel("Train").start()  # refused with a notification, nothing raised
        assert not widget.state.busy
    widget.state.close_project()


def test_import_error_is_reported(app, qtbot, tmp_path):
    _viewer, widget = app
    (tmp_path / "empty").mkdir()
    errors = []
    import napari_alunet.widgets._state as state_module

    original = state_module.notify_error
    state_module.notify_error = errors.append
    try:
        widget.panel("Project").import_folder(tmp_path / "empty", tmp_path / "project")
        wait_idle(qtbot, widget.state)
    finally:
        state_module.notify_error = original
    assert errors and "import failed" in errors[0]
    assert not (tmp_path / "project").exists()  # all or nothing
    assert widget.state.project is None


def test_reader(make_napari_viewer, qtbot, tmp_path):
    from napari_alunet.data.sample_files import write_sample_pool
    from napari_alunet.events import drain
    from napari_alunet.importer import import_pool
    from napari_alunet.widgets._state import get_state
    from napari_alunet.widgets.reader import napari_get_reader

    pool = write_sample_pool(tmp_path / "pool", 6, 0, shape=SHAPE)
    assert napari_get_reader(str(tmp_path)) is None  # an arbitrary folder is not claimed
    assert napari_get_reader(str(pool / "images" / "x.txt")) is None
    reader = napari_get_reader(str(pool))
    data, meta, kind = reader(str(pool))[0]
    assert kind == "image" and data.shape == (6, *SHAPE) and len(meta["metadata"]["names"]) == 6

    drain(import_pool(pool, tmp_path / "project"))
    viewer = make_napari_viewer()
    reader = napari_get_reader(str(tmp_path / "project"))
    assert reader(str(tmp_path / "project")) == [(None,)]
    state = get_state(viewer)
    assert state.project is not None and state.project.path == tmp_path / "project"
    state.close_project()


def test_sample_data_contribution():
    from napari_alunet.data.synthetic import napari_sample

    layers = napari_sample()
    assert [kind for _data, _meta, kind in layers] == ["image", "labels"]


def test_region_review_commits_only_the_regions(app, qtbot, tmp_path):
    """Acquire 'region': the queue holds images with outlined regions, the labels layer is the
    prediction inside them and unknown outside, Next region steps through them, and Commit
    stores a partial label (unknown outside the regions) that undo withdraws."""
    from napari_alunet.config import UNKNOWN_LABEL
    from napari_alunet.review import review_item

    viewer, widget = app
    state = widget.state
    project = create_sample(qtbot, widget, tmp_path)
    make_tiny(widget)
    acquire = widget.panel("Acquire")
    acquire.unit.setCurrentText("region")
    acquire.region_size.setValue(8)  # 16 tiles on the tiny preset's 32 px input
    acquire.k.setValue(4)
    assert state.settings.acquisition.unit == "region"
    with qtbot.waitSignal(state.round_finished, timeout=TIMEOUT) as finished:
        widget.panel("Train").start()
    report = finished.args[0]
    wait_idle(qtbot, state)
    assert report.status == "queued" and 1 <= len(report.queue) <= 4
    review = widget.panel("Review")
    shown = state.display.current
    assert shown is not None and shown.region is not None
    region = review_item(project, shown.image_id).region
    np.testing.assert_array_equal(shown.region, region)
    outlines = viewer.layers["alunet: review regions"]
    assert outlines.visible and len(outlines.data) >= 1
    labels = viewer.layers["alunet: labels"]
    assert (labels.data[~region] == UNKNOWN_LABEL).all()
    np.testing.assert_array_equal(labels.data[region], shown.reference[region])
    assert labels.colormap.color_dict[UNKNOWN_LABEL][3] == 0.0  # shown as unlabelled
    assert "region review" in review.header.text() and review.next_region_button.isEnabled()
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    zoom_before = tuple(camera.center)
    review.next_region()
    if state.display.region_count() > 1:
        assert tuple(camera.center) != zoom_before
    # Paint outside the regions too: only the regions are committed.
    painted = labels.data.copy()
    painted[:] = 2
    labels.data = painted
    version = review.commit()
    stored = project.read_label(shown.image_id)
    assert version.partial and version.pixels_unknown == int((~region).sum())
    assert (stored[region] == 2).all() and (stored[~region] == UNKNOWN_LABEL).all()
    assert version.pixels_changed == int((shown.reference[region] != 2).sum())
    assert project.undo_last_commit().id == version.id
    assert project.read_label(shown.image_id) is None


def test_restart_round_asks_before_dropping_a_queue(app, qtbot, tmp_path):
    _viewer, widget = app
    state = widget.state
    project = first_round(qtbot, widget, tmp_path)
    rounds = widget.panel("Rounds")
    asked = []
    assert rounds.restart_round(confirm=lambda m: asked.append(m) or False) is None
    assert "waiting for review" in asked[0] and project.current_round().status == "queued"
    abandoned = rounds.restart_round(confirm=lambda m: True)
    assert abandoned.status == "abandoned" and project.queue() == []
    with qtbot.waitSignal(state.round_finished, timeout=TIMEOUT) as finished:
        rounds.next_round()
    assert finished.args[0].round_idx == 1


def test_review_reloads_an_image_queued_again_by_a_new_round(app, qtbot, tmp_path):
    """Issue 17, bug 1: the prediction, maps and effort reference of an image on screen are
    the current round's, also when the new round queues the same image again."""
    _viewer, widget = app
    state = widget.state
    create_sample(qtbot, widget, tmp_path)
    make_tiny(widget)
    with qtbot.waitSignal(state.round_finished, timeout=TIMEOUT):
        widget.panel("Train").start()
    wait_idle(qtbot, state)
    shown = state.display.current
    assert shown is not None and shown.round_idx == 0
    shown.round_idx = -1  # as if shown in an earlier round and queued again now
    state.queue_changed.emit()
    reloaded = state.display.current
    assert reloaded is not shown and reloaded.image_id == shown.image_id
    assert reloaded.round_idx == 0


def test_scores_are_shown_as_people_read_them():
    """Issue 17: no '9.318e-06' in the panels."""
    from napari_alunet.widgets._common import format_score

    assert format_score(9.318e-06) == "9.32×10⁻⁶"
    assert format_score(0.0421) == "0.042" and format_score(3.1849) == "3.18"
    assert format_score(None) == "–" and format_score(float("nan")) == "–"


def test_buttons_are_enabled_only_when_they_can_act(app, qtbot, tmp_path):
    """Issue 17: Close needs a project; Compute needs a trained model."""
    _viewer, widget = app
    state = widget.state
    assert not widget.panel("Project").close_button.isEnabled()
    create_sample(qtbot, widget, tmp_path)
    make_tiny(widget)
    assert widget.panel("Project").close_button.isEnabled()
    acquire = widget.panel("Acquire")
    assert not acquire.compute_button.isEnabled()
    assert "No trained model yet" in acquire.compute_button.toolTip()
    with qtbot.waitSignal(state.round_finished, timeout=TIMEOUT):
        widget.panel("Train").start()
    wait_idle(qtbot, state)
    assert acquire.compute_button.isEnabled()


def test_browser_start_from_and_model_warnings(app, qtbot, tmp_path):
    """Issue 17: any image can be found and queued; the labels can start from the
    prediction, its confident pixels or nothing; a collapsed model or a one-class prediction
    is called out."""
    from napari_alunet.config import UNKNOWN_LABEL
    from napari_alunet.widgets._guide import model_warning, prediction_warning

    viewer, widget = app
    state = widget.state
    project = first_round(qtbot, widget, tmp_path)
    review = widget.panel("Review")
    browser = review.browser

    # The browser lists every image; the filter keeps one pool (or the queue).
    assert browser.list.count() == 12
    browser.filter.setCurrentText("to review")
    assert browser.list.count() == 3
    browser.filter.setCurrentText("unlabelled")
    candidates = [browser.list.item(i).data(256) for i in range(browser.list.count())]
    assert len(candidates) == 3 and not set(candidates) & set(project.queue())
    assert not browser.add_button.isEnabled()  # nothing selected
    browser.select(candidates[:1])
    assert browser.add_button.isEnabled()
    before = project.queue()
    browser.add_selected()
    wait_idle(qtbot, state)
    assert project.queue() == before + candidates[:1]
    assert state.display.current.image_id == candidates[0]  # shown, with its prediction
    assert state.display.current.reference is not None and state.display.current.maps
    browser.filter.setCurrentText("test")
    browser.list.itemClicked.emit(browser.list.item(0))  # any image can be looked at
    assert state.display.current.pool == "test"

    # Start from: the prediction, its confident pixels only, or nothing.
    review.show_next()
    shown = state.display.current
    labels = viewer.layers["alunet: labels"]
    assert np.array_equal(labels.data, shown.reference)
    review.map_threshold.setValue(80)
    review.start_from.setCurrentText("confident")
    unknown = labels.data == UNKNOWN_LABEL
    kind = state.display.visible_map(state.display.maps)
    values = state.display.maps[kind]
    assert np.array_equal(unknown, values > np.percentile(values, 80))
    assert np.array_equal(labels.data[~unknown], shown.reference[~unknown])
    assert "confident pixels" in review.header.text()
    review.start_from.setCurrentText("empty")
    assert not labels.data.any()
    review.start_from.setCurrentText("confident")
    version = review.commit()  # the unreviewed pixels stay unknown, never background
    assert version.pixels_unknown == int(unknown.sum())
    review.start_from.setCurrentText("prediction")

    # Warnings: a one-class prediction, a collapsed model.
    one_class = np.zeros((10, 10), np.uint8)
    assert "100 % of this image background" in prediction_warning(one_class,
                                                                  project.classes.names)
    mixed = np.arange(100, dtype=np.uint8).reshape(10, 10) % 5
    assert prediction_warning(mixed, project.classes.names) == ""
    current = project.current_round()
    assert model_warning(current) == ""  # health check off in make_tiny: recorded healthy
    config = dict(current.config)
    config["fit"] = {**config["fit"], "healthy": False, "labelled_dice": 0.12}
    project.update_round(current.idx, config=config)
    state.queue_changed.emit()
    assert "looks collapsed (Dice 0.12" in widget.status.text()


def test_one_click_region_tools_and_per_class_brushes(round0):
    """Accept or erase a whole connected region in one click (issue 17), undoable with the
    layer's own history; each class keeps the brush size the annotator gave it."""
    from types import SimpleNamespace

    from napari_alunet.review import component_at

    viewer, widget, _project = round0
    review = widget.panel("Review")
    display = widget.state.display
    shown = display.current
    labels = viewer.layers["alunet: labels"]
    # Start from empty so that accepting has something to put in.
    review.start_from.setCurrentText("empty")
    display.show(shown.image_id)
    assert not labels.data.any()
    # A prediction with two separate TE blobs and a ZP blob (a 4-step tiny model predicts one
    # class nearly everywhere, which would make every region the whole image).
    reference = np.zeros(SHAPE, np.uint8)
    reference[5:15, 5:15] = 2
    reference[30:40, 30:45] = 2
    reference[20:26, 2:8] = 3
    display.current.reference = reference
    point = (8, 9)
    region = component_at(reference, point)
    assert region.sum() == 100  # the first blob only
    review.click_tool.setCurrentText("accept region")
    assert labels.mode == "pan_zoom"  # clicks no longer paint
    # A click (press, release without moving) on the canvas runs the tool.
    (callback,) = [cb for cb in labels.mouse_drag_callbacks if cb.__name__ == "clicked"]
    event = SimpleNamespace(position=(float(point[0]), float(point[1])), type="mouse_press")
    gen = callback(labels, event)
    next(gen)
    event.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(gen)
    assert np.array_equal(labels.data == reference[point], region)
    # A drag pans: nothing changes.
    before = labels.data.copy()
    event = SimpleNamespace(position=(0.0, 0.0), type="mouse_press")
    gen = callback(labels, event)
    next(gen)
    event.type, event.position = "mouse_move", (5.0, 5.0)
    with pytest.raises(StopIteration):
        next(gen)
    assert np.array_equal(labels.data, before)
    # Erase the same region in one click; Ctrl+Z (the layer's undo) brings it back.
    review.click_tool.setCurrentText("erase region")
    assert display.edit_at("erase region", point) == int(region.sum())
    assert not labels.data.any()
    labels.undo()
    assert np.array_equal(labels.data == reference[point], region)
    # Clicking background erases nothing; a point outside the image is refused, not a crash.
    assert display.edit_at("erase region", tuple(np.argwhere(labels.data == 0)[0])) == 0
    assert display.edit_at("erase region", (-1, 10_000)) == 0
    review.click_tool.setCurrentText("paint")
    assert labels.mode == "paint"

    # Per-class brushes: ICM gets 7, TE 3; switching class brings each back, also on the
    # next image.
    labels.selected_label = 1
    labels.brush_size = 7
    labels.selected_label = 2
    labels.brush_size = 3
    labels.selected_label = 1
    assert labels.brush_size == 7
    review.skip()
    labels = viewer.layers["alunet: labels"]
    assert labels.selected_label == 1 and labels.brush_size == 7
    labels.selected_label = 2
    assert labels.brush_size == 3


def test_previous_round_outlines_show_what_the_last_round_changed(round0, qtbot):
    """Previous vs current (issue 17): in round 1, Shift+P outlines round 0's prediction of
    the image over its labels; again hides it; another image starts without it."""
    viewer, widget, project = round0
    state = widget.state
    review = widget.panel("Review")
    assert not review.previous_button.isEnabled()  # round 0 has nothing before it
    assert review.compare_previous() is None  # said in a notification, nothing shown
    assert "alunet: previous round" not in viewer.layers
    review.oracle()
    wait_idle(qtbot, state)
    with qtbot.waitSignal(state.round_finished, timeout=TIMEOUT):
        widget.panel("Rounds").next_round(confirm=lambda m: True)
    wait_idle(qtbot, state)
    shown = state.display.current
    assert shown is not None and shown.round_idx == 1
    assert review.previous_button.isEnabled() and not review.previous_button.isChecked()
    from napari_alunet.loop import round_prediction

    review.compare_previous()  # round 0 never queued this image: its model runs in a worker
    wait_idle(qtbot, state)
    layer = viewer.layers["alunet: previous round"]
    assert layer.visible and layer.metadata == {**layer.metadata, "image_id": shown.image_id,
                                                "round_idx": 0}
    from napari_alunet.events import drain

    expected = drain(round_prediction(project, 0, shown.image_id))
    assert np.array_equal(layer.data, expected) and layer.contour >= 1
    assert review.previous_button.isChecked() and "round 0" in review.status.text()
    assert viewer.layers.selection.active.name == "alunet: labels"  # painting still works
    review.compare_previous()  # Shift+P again: hidden
    assert not layer.visible and not review.previous_button.isChecked()
    review.compare_previous()
    wait_idle(qtbot, state)
    assert layer.visible
    review.skip()  # the next image starts without the previous outlines
    assert not layer.visible


def test_a_project_with_other_classes_paints_in_its_own_colours(app, qtbot, tmp_path):
    from napari_alunet.config import ClassSpec

    viewer, widget = app
    create_sample(qtbot, widget, tmp_path)
    assert "alunet: labels" in viewer.layers  # made once, when the project opened
    classes = ClassSpec(("background", "cell", "debris"), ((0, 0, 0), (0, 200, 0), (200, 0, 200)))
    Project.create(tmp_path / "other", classes=classes).close()
    widget.state.open_project(tmp_path / "other")
    colours = viewer.layers["alunet: labels"].colormap.color_dict
    assert tuple(round(float(v) * 255) for v in colours[2][:3]) == (200, 0, 200)
    assert list(viewer.layers["alunet: labels"].features["class"]) == list(classes.names)


def test_queue_strip_shows_the_queue_and_jumps_to_an_image(round0, monkeypatch):
    """A strip of the queue's thumbnails (issue 17): queue order, the image on screen
    selected, a click shows that image; a commit removes it without reading images again."""
    viewer, widget, project = round0
    review = widget.panel("Review")
    strip = review.strip
    assert strip.ids() == project.queue() and len(strip.ids()) == 3
    assert strip.isVisibleTo(review)
    selected = [it.data(256) for it in strip.selectedItems()]
    assert selected == [widget.state.display.current.image_id]
    third = strip.item(2)
    strip.itemClicked.emit(third)
    assert widget.state.display.current.image_id == third.data(256)
    assert [it.data(256) for it in strip.selectedItems()] == [third.data(256)]
    reads = []
    real = Project.read_image
    monkeypatch.setattr(Project, "read_image",
                        lambda self, i: reads.append(i) or real(self, i))
    review.commit()  # the thumbnails of the rest come from the cache
    assert strip.ids() == project.queue() and len(strip.ids()) == 2
    assert set(reads) <= {widget.state.display.current.image_id}  # only the image shown
    from napari_alunet.widgets.strip import thumbnail

    small = thumbnail(np.arange(300 * 200, dtype=np.float32).reshape(300, 200))
    assert max(small.shape) <= 64 and small.dtype == np.uint8 and small.max() == 255


def test_predict_this_image_now(round0, qtbot):
    """'Predict this image' (issue 17): an unlabelled image the strategy did not pick gets the
    round model's prediction and maps at once, joins the queue, and is corrected, not drawn."""
    viewer, widget, project = round0
    state = widget.state
    review = widget.panel("Review")
    queued = set(project.queue())
    other = next(r.id for r in project.images("unlabelled") if r.id not in queued)
    state.display.show(other)
    assert state.display.current.reference is None  # nothing predicted for it yet
    review._update()
    assert review.predict_button.isEnabled()
    review.predict_shown()
    wait_idle(qtbot, state)
    shown = state.display.current
    assert shown.image_id == other and shown.queued and other in project.queue()
    assert shown.reference is not None and shown.maps  # prediction and uncertainty maps
    assert np.array_equal(viewer.layers["alunet: labels"].data, shown.reference)
    assert not review.predict_button.isEnabled()  # queued now: nothing more to predict
    labelled = project.images("labelled")[0].id
    state.display.show(labelled)
    assert not review.predict_button.isEnabled()  # only unlabelled images


def test_update_model_trains_in_the_background_while_the_review_goes_on(round0, qtbot):
    """Update model (issue 17): after a commit it retrains the round's model in a worker; the
    researcher keeps committing meanwhile, the strokes on screen stay, and the images still
    queued come with the new model's prediction."""
    viewer, widget, project = round0
    state = widget.state
    review = widget.panel("Review")
    updater = review.updater
    assert not updater.button.isEnabled()  # nothing committed since round 0 was trained
    _paint_and_commit(viewer, review)
    review._update()
    assert updater.button.isEnabled() and "+1 label" in updater.button.text()
    version = project.current_round().model_version
    waiting = project.queue()
    assert len(waiting) == 2
    old_cache = project.review_cache_path(0, waiting[1]).read_bytes()
    updater.start()
    assert state.busy and state.job.name == "update model"
    review._update()
    assert review.commit_button.isEnabled()  # the review goes on while it trains
    shown = state.display.current.image_id
    assert shown == waiting[0]
    labels = viewer.layers["alunet: labels"]
    labels.data[0:4, 0:4] = 2
    labels.refresh()
    strokes = labels.data.copy()
    wait_idle(qtbot, state)
    assert np.array_equal(viewer.layers["alunet: labels"].data, strokes)  # nothing lost
    assert state.display.current.image_id == shown
    current = project.current_round()
    assert current.model_version != version and len(current.config["updates"]) == 1
    assert updater.job_bar.text.text().startswith("done: model updated on")
    assert project.review_cache_path(0, waiting[1]).read_bytes() != old_cache
    assert not updater.button.isEnabled()  # it has learnt every commit
    review.commit()  # the image on screen, with the strokes made during the update
    assert np.array_equal(project.read_label(shown), strokes)
    assert state.display.current.image_id == waiting[1]
