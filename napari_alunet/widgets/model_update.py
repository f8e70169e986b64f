"""The Review panel's Update model box: retrain in the background while the researcher labels.

The core step is :func:`napari_alunet.model_update.update_model`; this box only starts it in a
worker, shows its progress (with Stop) and says what changed. Commit, Skip and Undo stay
available while it trains: the update read the labels at its start, and the images still
queued when it ends get the new model's predictions (the one on screen keeps the prediction
being corrected, so no stroke is lost).
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from napari_alunet.widgets._common import JobBar, guarded
from napari_alunet.widgets._state import AppState

#: The job's name (the JobBar follows it; Review keeps committing while it runs).
JOB = "update model"


class UpdateModelBox(QWidget):
    """An Update model button, its progress and its outcome."""

    def __init__(self, state: AppState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = state
        self.button = QPushButton("Update model")
        self.button.setToolTip(
            "Retrain this round's model on every image committed so far, in the background: "
            "keep correcting meanwhile; the images still queued then come with the new "
            "model's predictions (the queue keeps its images)")
        self.button.clicked.connect(lambda: self.start())
        self.outcome = QLabel("")
        self.outcome.setWordWrap(True)
        self.job_bar = JobBar(state, {JOB})
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.button)
        layout.addWidget(self.job_bar)
        layout.addWidget(self.outcome)

    def refresh(self, project: Any, rounds: Any, in_review: bool) -> None:
        """Enable the button when a round is in review and has labels its model has not seen
        (the Review panel calls this from its own update, with the rounds it has read)."""
        from napari_alunet.model_update import labelled_for_model

        new = 0
        if project is not None and in_review and not project.read_only and rounds:
            new = len(project.images("labelled")) - labelled_for_model(rounds[-1])
        self.button.setEnabled(new > 0 and not self.state.busy)
        self.button.setText(f"Update model  (+{new} label{'s' if new != 1 else ''})"
                            if new > 0 else "Update model")

    @guarded
    def start(self) -> Any:
        from napari_alunet.model_update import update_model

        project = self.state.require_project(writable=True)

        def done(result: Any) -> None:
            if result.cancelled:
                self.job_bar.finish("stopped: the round keeps its model")
                return
            if not result.kept:
                self.job_bar.finish("done: the new fit failed the health check, so the round "
                                    "keeps its model; check the labels or label more images")
                return
            before, after = result.test_dice_before, result.test_dice_after
            dice = ("" if after != after else
                    f"; test Dice {before:.3f} -> {after:.3f}" if before == before else
                    f"; test Dice {after:.3f}")
            self.job_bar.finish(f"done: model updated on {result.n_labelled} labelled "
                                f"image(s){dice}")
            self.outcome.setText(
                f"{len(result.refreshed)} queued image(s) now come with the new model's "
                "prediction; the one on screen keeps the prediction you are correcting.")
            self.state.queue_changed.emit()

        self.outcome.setText("")
        return self.state.start_job(JOB, lambda: update_model(project), on_done=done,
                                    uses_torch=True)
