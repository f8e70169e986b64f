"""Review: walk the queue, correct the model's labels, commit, skip or undo.

Each queued image is shown at its original size with the model's prediction pre-filled in an
editable Labels layer (class colours, class names on hover) and its uncertainty map over it.
Commit stores the layer's data (:func:`napari_alunet.loop.commit_review`, durable when it
returns) with the seconds spent since the image appeared.

Keyboard shortcuts (in the viewer and in this panel):

===============  ===========================================
Shift+Enter      commit the labels and show the next image
Shift+S          skip: move the image to the end of the queue
Shift+U          undo the last commit (the image returns to the queue)
Shift+N          region review: zoom to the next region
Shift+M          show / hide the uncertainty overlay
===============  ===========================================

The uncertainty overlay is one violet hue for every map (no class colour is near it; the
colour bar on the canvas gives its scale), transparent below a threshold the slider sets as a
percentile of the image's own map.

Region-level review (Acquire: "Review unit" region): the queued regions of an image are
outlined in white, the view zooms to one at a time (Shift+N), the labels layer holds the model's
prediction inside them and nothing (unknown) elsewhere, and Commit stores only the regions; the
rest of the image stays unknown until a later round asks for it.
"""

from __future__ import annotations

import time
import weakref
from typing import Any, cast

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QKeySequence, QShortcut
from qtpy.QtWidgets import (
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_alunet.round_models import previous_round
from napari_alunet.widgets import _layers
from napari_alunet.widgets._common import (
    JobBar,
    format_score,
    group,
    guarded,
    hint,
    listen,
    row,
)
from napari_alunet.widgets._display import get_display
from napari_alunet.widgets._guide import next_action, prediction_warning, round_button_text
from napari_alunet.widgets._state import get_state, notify_info
from napari_alunet.widgets._workers import Job
from napari_alunet.widgets.browser import ImageBrowser
from napari_alunet.widgets.model_update import UpdateModelBox
from napari_alunet.widgets.review_controls import DisplayControls
from napari_alunet.widgets.strip import QueueStrip

#: napari key names (viewer.bind_key) and Qt key sequences of the review actions.
SHORTCUTS = {"commit": ("Shift-Enter", "Shift+Return"), "skip": ("Shift-S", "Shift+S"),
             "undo": ("Shift-U", "Shift+U"), "next_region": ("Shift-N", "Shift+N"),
             "toggle_map": ("Shift-M", "Shift+M"),
             "compare_previous": ("Shift-P", "Shift+P")}


class ReviewWidget(QWidget):
    """The review queue of the current round, one image at a time."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.state = get_state(napari_viewer)
        self.display = get_display(napari_viewer)

        self.header = QLabel("No project open.")
        self.header.setWordWrap(True)
        # The image's display: start-from, click tool, uncertainty map, colour bar, classes.
        self.controls = DisplayControls(napari_viewer, self.display)
        for name in ("map_choice", "colour_bar", "colour_bar_text", "map_threshold",
                     "map_threshold_text", "legend", "start_from", "click_tool"):
            setattr(self, name, getattr(self.controls, name))
        self.browser = ImageBrowser(self.state)
        self.strip = QueueStrip(self.state, self.display)

        self.commit_button = QPushButton("Commit  (Shift+Enter)")
        self.commit_button.setToolTip("Save these labels (durable at once) and show the next image")
        self.commit_button.clicked.connect(lambda: self.commit())
        self.skip_button = QPushButton("Skip  (Shift+S)")
        self.skip_button.setToolTip("Move this image to the end of the queue")
        self.skip_button.clicked.connect(lambda: self.skip())
        self.undo_button = QPushButton("Undo last commit  (Shift+U)")
        self.undo_button.setToolTip("Withdraw the newest commit: the image returns to the queue "
                                    "with the labels you committed, to edit (its history is "
                                    "kept)")
        self.undo_button.clicked.connect(lambda: self.undo())
        self.next_region_button = QPushButton("Next region  (Shift+N)")
        self.next_region_button.setToolTip("Region review: zoom to the next outlined region")
        self.next_region_button.clicked.connect(lambda: self.next_region())
        self.previous_button = QPushButton("Previous round  (Shift+P)")
        self.previous_button.setCheckable(True)
        self.previous_button.setToolTip(
            "Outline the previous round's prediction of this image over the labels, to see "
            "what the last round changed (its model runs if it never saw this image)")
        self.previous_button.clicked.connect(lambda: self.compare_previous())
        self.predict_button = QPushButton("Predict this image")
        self.predict_button.setToolTip(
            "Run this round's model on the unlabelled image on screen now (prediction and "
            "uncertainty maps, in a worker) and queue it, so you correct instead of drawing")
        self.predict_button.clicked.connect(lambda: self.predict_shown())
        self.oracle_button = QPushButton("Oracle: commit ground truth for the queue")
        self.oracle_button.setToolTip("Replay mode: commit the stored ground truth of every "
                                      "pending image (for experiments with labelled pools)")
        self.oracle_button.clicked.connect(lambda: self.oracle())
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.job_bar = JobBar(self.state, {"oracle"})
        self.updater = UpdateModelBox(self.state)

        layout = QVBoxLayout(self)
        layout.addWidget(group("Image under review", self.header, self.strip, layout=None))
        layout.addWidget(group("Display", self.controls))
        layout.addWidget(row(self.commit_button, self.skip_button))
        layout.addWidget(row(self.undo_button, self.next_region_button))
        layout.addWidget(row(self.predict_button, self.previous_button))
        layout.addWidget(self.status)
        layout.addWidget(group("Model", self.updater))
        layout.addWidget(group("All images", self.browser))
        layout.addWidget(group("Replay", self.oracle_button, self.job_bar))
        layout.addWidget(hint(
            "Paint in the <b>alunet: labels</b> layer (brush: P, eraser: E, fill: F); hover to "
            "see class names. Each class keeps its own brush size. <b>Click: accept / erase "
            "region</b> edits a whole connected region in one click. <b>Shift+Enter</b> "
            "commit, <b>Shift+S</b> skip, <b>Shift+U</b> undo the last commit, <b>Shift+N</b> "
            "next region (region review: only the outlined regions are committed), "
            "<b>Shift+M</b> show / hide the uncertainty overlay (violet: where the model is "
            "unsure). <b>Update model</b> retrains on your corrections while you go on."))
        layout.addStretch(1)

        self._bind_keys()
        listen(self, self.state.project_changed, self._project_changed)
        listen(self, self.state.queue_changed, self._queue_changed)
        listen(self, self.state.busy_changed, self._update)
        listen(self, self.display.changed, self._update)
        self._project_changed()

    # -- keys ---------------------------------------------------------------------------------
    def _bind_keys(self) -> None:
        ref = weakref.ref(self)
        for action, (napari_key, qt_key) in SHORTCUTS.items():
            def on_key(_viewer: Any, action: str = action) -> None:
                widget = ref()
                if widget is not None:
                    getattr(widget, action)()

            self.viewer.bind_key(napari_key, on_key, overwrite=True)
            shortcut = QShortcut(QKeySequence(qt_key), self)
            shortcut.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            shortcut.activated.connect(getattr(self, action))

    # -- actions ------------------------------------------------------------------------------
    def toggle_map(self) -> bool:
        """Show or hide the uncertainty overlay (Shift+M); True when it is now shown."""
        shown = self.display.toggle_map()
        self.controls.show_scale()
        self.status.setText("uncertainty overlay shown" if shown else
                            "uncertainty overlay hidden (Shift+M shows it)")
        return shown

    @guarded
    def commit(self) -> Any:
        """Commit the labels layer for the image shown, then show the next queued image."""
        from napari_alunet.loop import commit_review

        project = self.state.require_project(writable=True)
        shown = self._require_shown()
        if self.state.busy and cast(Job, self.state.job).name == "round":  # busy: a job
            raise RuntimeError("a round is running: commit when it has finished")
        labels = self.display.labels()
        seconds = time.monotonic() - shown.shown_at
        # A region review commits the regions only; the store merges them into the label.
        version = commit_review(project, shown.image_id, labels, seconds_spent=seconds,
                                reference=shown.reference, region=shown.region)
        where = "" if shown.region is None else " in its regions"
        self.status.setText(f"committed <b>{shown.name}</b>{where}: {version.pixels_changed} "
                            f"pixel(s) changed in {seconds:.0f} s")
        self.state.labels_changed.emit()
        self.show_next()
        return version

    @guarded
    def compare_previous(self) -> Any:
        """Show (or hide) the previous round's prediction of the image shown as outlines
        (Shift+P): how the model's view changed. Computed in a worker when that round did not
        cache this image."""
        from napari_alunet.round_models import round_prediction

        project = self.state.require_project()
        shown = self._require_shown()
        layer = self.viewer.layers[_layers.PREVIOUS] \
            if _layers.PREVIOUS in self.viewer.layers else None
        if layer is not None and layer.visible and layer.metadata.get("image_id") == \
                shown.image_id:
            self.display.show_previous(None)
            self.status.setText("previous round hidden")
            self._update()
            return None
        previous = previous_round(project, shown.round_idx)
        if previous is None:
            self._update()
            raise ValueError("there is no earlier round with a model to compare with: the "
                             "comparison starts from round 1")
        image_id = shown.image_id

        def done(prediction: Any) -> None:
            current = self.display.current
            if current is None or current.image_id != image_id:
                return  # the annotator moved on
            self.display.show_previous(prediction, previous)
            changed = float(np.mean(prediction != current.reference)) \
                if current.reference is not None else float("nan")
            self.status.setText(f"outlines: round {previous}'s prediction"
                                + ("" if changed != changed else
                                   f"; {changed:.0%} of the pixels changed since"))
            self._update()

        return self.state.start_job(
            "previous round", lambda: round_prediction(project, previous, image_id),
            on_done=done, uses_torch=True)

    @guarded
    def predict_shown(self) -> Any:
        """Predict the unlabelled image on screen with this round's model and queue it (the
        same prediction and maps a strategy's pick gets), then show it to be corrected."""
        from napari_alunet.loop import queue_images

        project = self.state.require_project(writable=True)
        shown = self._require_shown()
        if shown.pool != "unlabelled" or shown.queued:
            raise ValueError("only an unlabelled image that is not queued can be predicted "
                             "here (a queued one has its prediction already)")
        if not current_in_review(project):
            raise ValueError("no round is in review: train a round first "
                             f"({round_button_text(project)})")
        image_id = shown.image_id

        def done(added: list[int]) -> None:
            self.state.queue_changed.emit()
            self.display.show(image_id)
            self.status.setText(f"predicted <b>{shown.name}</b>: correct it and commit")

        return self.state.start_job("predict", lambda: queue_images(project, [image_id]),
                                    on_done=done, uses_torch=True)

    @guarded
    def next_region(self) -> int:
        """Zoom to the next region of the image under review (region-level queue)."""
        shown = self._require_shown()
        if shown.region is None:
            raise ValueError("this image is reviewed whole: there are no regions to step "
                             "through (Acquire: Review unit 'region' queues regions)")
        index = self.display.focus_region(shown.region_index + 1)
        self._update()
        return index

    @guarded
    def skip(self) -> None:
        """Move the image to the end of the queue and show the next one."""
        project = self.state.require_project(writable=True)
        shown = self._require_shown()
        current = project.current_round()
        if current is not None and shown.image_id in project.queue(current.idx):
            project.skip(current.idx, shown.image_id)
        self.status.setText(f"skipped {shown.name}")
        self.show_next(avoid=shown.image_id)

    @guarded
    def undo(self) -> Any:
        """Withdraw the newest commit; its image is shown again to be labelled."""
        project = self.state.require_project(writable=True)
        version = project.undo_last_commit()
        if version is None:
            notify_info("nothing to undo")
            return None
        self.state.labels_changed.emit()
        name = project.image(version.image_id).name
        self.status.setText(f"undid the commit of <b>{name}</b>; it is back in the queue with "
                            "the labels you committed, to edit")
        # The withdrawn mask comes back for editing, not the model's prediction: undo must not
        # throw the researcher's strokes away.
        self.display.show(version.image_id, labels=project.read_label_version(version))
        return version

    @guarded
    def oracle(self) -> Any:
        """Commit the stored ground truth of every pending queued image (in a worker)."""
        project = self.state.require_project(writable=True)
        queue = project.queue()
        if not queue:
            raise ValueError("the queue is empty: run a round first "
                             f"({round_button_text(project)}, Train tab)")

        def done(count: int) -> None:
            self.state.labels_changed.emit()
            self.job_bar.finish(f"done: committed ground truth of {count} image(s)")
            self.show_next()

        def failed(_failure: Any) -> None:
            self.state.labels_changed.emit()  # the commits before the failure are kept
            self.show_next()

        from napari_alunet.review import oracle_commit_each

        return self.state.start_job("oracle", lambda: oracle_commit_each(project, queue),
                                    on_done=lambda versions: done(len(versions)),
                                    on_error=failed)

    def show_next(self, avoid: int | None = None) -> None:
        """Show the first pending queued image (not ``avoid`` if another one waits)."""
        project = self.state.project
        queue = project.queue() if project is not None else []
        if avoid is not None and len(queue) > 1 and queue[0] == avoid:
            queue = queue[1:] + queue[:1]
        if queue:
            self.display.show(queue[0])
        else:
            last = self.display.current
            if project is not None and last is not None:
                # The image just committed stays on screen with its committed label (not a
                # black canvas); the header says what to do next.
                self.display.show(last.image_id)
            else:
                self.display.clear()
            if project is not None:
                notify_info(f"review queue done: {round_button_text(project)} (Train) learns "
                            "from the new labels")

    # -- display ------------------------------------------------------------------------------
    def _require_shown(self) -> Any:
        if self.display.current is None:
            raise ValueError("no image is shown: the review queue is empty")
        return self.display.current

    def _project_changed(self) -> None:
        project = self.state.project
        self.controls.show_classes(project.classes if project is not None else None)
        if project is not None:
            if project.queue():
                self.show_next()
            else:
                # Nothing queued yet: show the data (a labelled image with its classes), so
                # the user sees the project and the first round's layers exist already.
                first = project.images("labelled")[:1] or project.images()[:1]
                if first:
                    self.display.show(first[0].id)
        self._update()

    def _queue_changed(self) -> None:
        project = self.state.project
        if project is None or self.state.busy:
            return
        shown = self.display.current
        pending = project.queue()
        current = project.current_round()
        # Also when the image on screen is queued again by a new round: its prediction, maps
        # and the reference for 'pixels changed' must be the new round's (issue 17, bug 1).
        stale = shown is not None and current is not None and shown.round_idx != current.idx
        if pending and (shown is None or shown.image_id not in pending or stale):
            # stale implies shown is not None; said again for the type checker
            self.display.show(shown.image_id
                              if stale and shown is not None and shown.image_id in pending
                              else pending[0])
        self._update()

    def _update(self) -> None:
        project = self.state.project
        shown = self.display.current
        writable = project is not None and not project.read_only
        round_busy = self.state.busy and cast(Job, self.state.job).name in ("round", "oracle")
        can_edit = writable and shown is not None and shown.pool != "test" and not round_busy
        self.commit_button.setEnabled(can_edit)
        self.skip_button.setEnabled(writable and shown is not None and not round_busy)
        self.undo_button.setEnabled(writable and not round_busy)
        self.next_region_button.setEnabled(shown is not None and shown.region is not None)
        layer = self.viewer.layers[_layers.PREVIOUS] \
            if _layers.PREVIOUS in self.viewer.layers else None
        self.previous_button.setChecked(bool(
            layer is not None and layer.visible and shown is not None
            and layer.metadata.get("image_id") == shown.image_id))
        rounds = project.rounds() if project is not None else []  # one query for both buttons
        self.previous_button.setEnabled(shown is not None and not self.state.busy and (
            self.previous_button.isChecked() or project is None
            or previous_round(project, shown.round_idx, rounds) is not None))
        in_review = current_in_review(project, rounds)
        self.predict_button.setEnabled(
            writable and shown is not None and not self.state.busy and shown.pool == "unlabelled"
            and not shown.queued and in_review)
        self.updater.refresh(project, rounds, in_review)
        self.oracle_button.setEnabled(writable and not self.state.busy)
        if project is None:
            self.header.setText("No project open.")
            return
        current = project.current_round()
        pending = project.queue() if current is not None else []
        action = next_action(project, self.state.job.name if self.state.job else "")
        if shown is None:
            self.header.setText(f"Nothing to review. Next: {action.text}" if not pending
                                else "Loading...")
            return
        record = project.image(shown.image_id)
        where = (f"{pending.index(shown.image_id) + 1} of {len(pending)} waiting"
                 if shown.image_id in pending else f"{shown.pool} pool")
        score = "" if shown.score is None else f", score {format_score(shown.score)}"
        start = ({"prediction": "model prediction", "empty": "empty labels (draw from scratch)",
                  "confident": "model's confident pixels (the tinted ones unlabelled)"}
                 [self.display.start_from]
                 if shown.reference is not None and shown.pool != "labelled"
                 else "committed label" if shown.pool == "labelled" else "empty labels")
        round_text = f"Round {current.idx}: " if current is not None else ""
        regions = ""
        if shown.region is not None:
            n = self.display.region_count()
            share = 100.0 * float(shown.region.mean())
            regions = (f"<br><b>region review</b>: region {shown.region_index + 1} of {n} "
                       f"({share:.0f} % of the image, outlined); only they are committed")
        warning = ("" if shown.reference is None or shown.pool != "unlabelled" else
                   prediction_warning(shown.reference, project.classes.names))
        self.header.setText(
            f"{round_text}<b>{record.name}</b> ({record.width} x {record.height}){score}"
            + (f"<br>{warning}" if warning else "") +
            f"<br>{where}; starts from the {start}{regions}"
            + ("<br><i>test image: shown, never trained on; not editable</i>"
               if shown.pool == "test" else "")
            + ("" if pending else f"<br>Next: {action.text}"))
        self.controls.show_scale()
        visible = self.display.visible_map(dict.fromkeys(shown.maps))
        self.map_choice.blockSignals(True)
        self.map_choice.setCurrentText(visible or "none")
        self.map_choice.blockSignals(False)


def current_in_review(project: Any, rounds: Any = None) -> bool:
    """The project's newest round is in review (its model can predict more images);
    ``rounds``: the project's rounds when the caller has read them already."""
    from napari_alunet.store import RoundStatus

    if rounds is None:
        rounds = project.rounds() if project is not None else []
    return bool(rounds) and rounds[-1].status == RoundStatus.QUEUED
