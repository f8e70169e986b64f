"""Acquire: choose the acquisition strategy, re-score the pool, see it ranked and mapped.

Compute re-scores the unlabelled pool with the current round's model and the strategy shown,
replaces the round's review queue with the new top ``k`` (their predictions and uncertainty
maps are cached for Review) and lists the whole pool by score. Clicking a row shows that image
with its maps over it. The settings here are also the ones the next round uses.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, cast

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_alunet.config import COLD_STARTS, DEFAULT_MC_PASSES, STRATEGIES, UNITS
from napari_alunet.widgets._common import (
    JobBar,
    combo,
    format_score,
    group,
    guarded,
    hint,
    listen,
)
from napari_alunet.widgets._display import get_display
from napari_alunet.widgets._guide import round_button_text
from napari_alunet.widgets._state import get_state, notify_info

STRATEGY_TIPS = {
    "random": "baseline: a random sample of the pool",
    "entropy": "predictive entropy of the MC-mean (total uncertainty)",
    "bald": "mutual information between prediction and weights (model uncertainty)",
    "kl": "committee KL: divergence of the dropout-off prediction from the MC mean",
    "js": "committee JS: Jensen-Shannon divergence of the dropout-off prediction and MC mean",
    "margin": "small gap between the two most likely classes",
    "variation_ratio": "share of MC samples disagreeing with the majority class",
}


#: How k images are taken from the scores (AcquisitionConfig.diversity), stochastic first.
BATCH_MODES = ("power", "softrank", "softmax", "badge", "feature", "none")
BATCH_TIPS = {
    "power": "stochastic: draw k with probability ~ score^beta (beta from the scores' range); "
             "beats top k at small budgets",
    "softrank": "stochastic: draw k with probability ~ 1 / rank",
    "softmax": "stochastic: draw k with probability ~ exp(beta * score)",
    "badge": "uncertainty + diversity (BADGE): k-means++ on gradient embeddings",
    "feature": "top k, skipping images too similar to one already taken",
    "none": "plain top k: tends to take near-duplicates of the hardest case",
}


class AcquireWidget(QWidget):
    """Strategy settings, Compute, and the pool ranked by score."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.state = get_state(napari_viewer)
        self.display = get_display(napari_viewer)

        self.strategy = combo(STRATEGIES, item_tips=STRATEGY_TIPS)
        self.batch = combo(BATCH_MODES, "How the k images are taken from the scores", BATCH_TIPS)
        self.cold_start = combo(
            COLD_STARTS, "The first queue of a project without labels: 'typical' takes the most "
            "typical image of each of k clusters of the pool (TypiClust), so the first labels "
            "cover the kinds of image the pool holds; 'random' takes k at random")
        self.passes = _spin(1, 256, DEFAULT_MC_PASSES, "Monte-Carlo dropout passes per image")
        self.k = _spin(1, 10000, 2, "Images queued for review per round")
        self.subset = _spin(0, 10**7, 0, "Score a random subset of this many pool images "
                                         "(0: the whole pool); much faster on big pools and "
                                         "about as good")
        self.subset.setSpecialValueText("whole pool")
        form = QFormLayout()
        form.addRow("Strategy", self.strategy)
        form.addRow("Take k by", self.batch)
        form.addRow("First queue", self.cold_start)
        self.unit = combo(
            UNITS, "What is queued for review: whole images, or regions (square tiles of the "
            "model input ranked across the pool by the strategy's map). With regions, k counts "
            "regions and you label only inside them; the rest of the image stays unknown")
        self.region_size = _spin(4, 1024, 32, "Side of a region tile in model-input pixels "
                                              "(the model sees images at 256 x 256 by default)")
        form.addRow("MC passes", self.passes)
        form.addRow("Review unit", self.unit)
        form.addRow("Region size", self.region_size)
        form.addRow("Queue size k", self.k)
        form.addRow("Subset", self.subset)
        self.compute_button = QPushButton("Compute")
        self.compute_button.setToolTip("Re-score the pool with the current model and this "
                                       "strategy; the top k become the review queue")
        self.compute_button.clicked.connect(lambda: self.compute())
        self.job_bar = JobBar(self.state, {"score"})

        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["rank", "image", "score", "status"])
        # cast: the stubs type the headers optional; a QTableWidget always has both.
        cast(QHeaderView, self.table.verticalHeader()).setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        header = cast(QHeaderView, self.table.horizontalHeader())
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.table.setMinimumHeight(180)
        self.table.cellClicked.connect(self._row_clicked)

        layout = QVBoxLayout(self)
        layout.addWidget(group("Acquisition", layout=form))
        layout.addWidget(self.compute_button)
        layout.addWidget(self.job_bar)
        # Shown instead of an empty table: why it is empty and what fills it.
        self.table_empty = QLabel("No scores yet: a round (or Compute, once a model exists) "
                                  "ranks the unlabelled pool here.")
        self.table_empty.setWordWrap(True)
        layout.addWidget(group("Pool ranked by score", self.table_empty, self.table,
                               hint("Click a row to show the image; predictions and uncertainty "
                                    "maps are kept for the queued images only.")))

        for signal in (self.strategy.currentIndexChanged, self.batch.currentIndexChanged,
                       self.cold_start.currentIndexChanged, self.unit.currentIndexChanged,
                       self.region_size.valueChanged,
                       self.passes.valueChanged,
                       self.k.valueChanged, self.subset.valueChanged):
            signal.connect(self.apply_settings)
        listen(self, self.state.project_changed, self._project_changed)
        listen(self, self.state.queue_changed, self.refresh_table)
        listen(self, self.state.labels_changed, self.refresh_table)
        listen(self, self.state.scores_changed, self.refresh_table)
        listen(self, self.state.busy_changed, self._busy)
        listen(self, self.state.round_finished, self._refresh_buttons)
        self._project_changed()

    # -- settings -----------------------------------------------------------------------------
    def _load_settings(self) -> None:
        acq = self.state.settings.acquisition
        widgets = (self.strategy, self.batch, self.cold_start, self.passes, self.k, self.subset,
                   self.unit, self.region_size)
        for widget in widgets:
            widget.blockSignals(True)
        self.strategy.setCurrentText(acq.strategy)
        self.batch.setCurrentText(acq.diversity)
        self.cold_start.setCurrentText(acq.cold_start)
        self.passes.setValue(acq.passes)
        self.k.setValue(acq.k)
        self.subset.setValue(acq.subset or 0)
        self.unit.setCurrentText(acq.unit)
        self.region_size.setValue(acq.region_size)
        self.region_size.setEnabled(acq.unit == "region")
        for widget in widgets:
            widget.blockSignals(False)

    def apply_settings(self, *_: Any) -> None:
        settings = self.state.settings
        settings.acquisition = dataclasses.replace(
            settings.acquisition, strategy=self.strategy.currentText(),
            diversity=self.batch.currentText(), cold_start=self.cold_start.currentText(),
            passes=self.passes.value(), k=self.k.value(), subset=self.subset.value() or None,
            unit=self.unit.currentText(), region_size=self.region_size.value(),
        )
        self.region_size.setEnabled(self.unit.currentText() == "region")

    # -- compute ------------------------------------------------------------------------------
    @guarded
    def compute(self) -> Any:
        """Re-score the pool with the current model (in a worker)."""
        self.apply_settings()
        project = self.state.require_project(writable=True)
        current = project.current_round()
        if current is None or not current.status.has_model \
                or not current.checkpoint:
            raise ValueError(
                "no trained model in the current round yet: label the queued images (Review) "
                f"and run a round first ({round_button_text(project)}, Train tab)"
            )
        acquisition = copy.deepcopy(self.state.settings.acquisition)
        if acquisition.unit == "region":
            from napari_alunet.regions import check_region_settings

            check_region_settings(acquisition.unit, acquisition.region_size,
                                  acquisition.region_cost, self.state.settings.model.input_size)

        def done(scores: dict[int, float]) -> None:
            self.state.scores = {"strategy": acquisition.strategy, "round": current.idx,
                                 "scores": scores}
            self.state.scores_changed.emit()
            self.state.queue_changed.emit()
            queue = project.queue(current.idx)
            notify_info(f"re-scored {len(scores)} image(s) with {acquisition.strategy}: "
                        f"{len(queue)} queued for review")
            if queue:
                self.display.map_name = None
                self.state.image_requested.emit(queue[0])

        from napari_alunet.loop import rescore

        return self.state.start_job(
            "score", lambda: rescore(project, acquisition),
            on_done=lambda result: done({} if result is None else dict(result.scores)),
            uses_torch=True,
        )

    def _refresh_buttons(self, *_: Any) -> None:
        self._busy(self.state.job.name if self.state.job else "")

    def _busy(self, name: str) -> None:
        project = self.state.project
        current = project.current_round() if project is not None else None
        # Compute re-scores with the current round's model: none before a round has trained.
        has_model = current is not None and current.status.has_model \
            and bool(current.checkpoint)
        self.compute_button.setEnabled(not name and project is not None
                                       and not project.read_only and has_model)
        self.compute_button.setToolTip(
            "Re-score the pool with the current model and this strategy; the top k become "
            "the review queue" if has_model else
            "No trained model yet: run a round first "
            f"({round_button_text(project)}, Train tab)")

    def _project_changed(self) -> None:
        self._load_settings()
        self._busy(self.state.job.name if self.state.job else "")
        self.refresh_table()

    # -- table --------------------------------------------------------------------------------
    def ranked(self) -> list[tuple[int, float]]:
        """(image id, score) of the latest scoring of the current round, best first."""
        project = self.state.project
        if project is None:
            return []
        current = project.current_round()
        if current is None:
            return []
        if self.state.scores is not None and self.state.scores["round"] == current.idx:
            scores = self.state.scores["scores"]
        else:
            from napari_alunet.review import round_scores

            scores = round_scores(project, current)
        return sorted(scores.items(), key=lambda item: (-item[1], item[0]))

    def refresh_table(self) -> None:
        project = self.state.project
        ranked = self.ranked()
        self.table.setRowCount(len(ranked))
        self.table.setVisible(bool(ranked))
        self.table_empty.setVisible(not ranked)
        if not ranked:
            return
        assert project is not None  # ranked() is [] without a project
        queued = set(project.queue())
        pools = {r.id: (r.pool, r.name) for r in project.images()}
        for row_index, (image_id, score) in enumerate(ranked):
            pool, name = pools.get(image_id, ("?", str(image_id)))
            status = "to review" if image_id in queued else pool
            cells = (str(row_index + 1), name, format_score(score), status)
            for column, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setData(Qt.ItemDataRole.UserRole, image_id)
                if column in (0, 2):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight
                                          | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row_index, column, item)

    def _row_clicked(self, row_index: int, _column: int) -> None:
        item = self.table.item(row_index, 0)
        if item is not None and self.state.project is not None:
            self.state.image_requested.emit(int(item.data(Qt.ItemDataRole.UserRole)))


def _spin(low: int, high: int, value: int, tip: str) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    box.setToolTip(tip)
    return box
