"""Train: model preset and training settings, the round button, a live loss/Dice plot.

The round button ("Train round N", or "Resume round N" after a Stop; the Rounds panel has
the same button under the same name, :mod:`._guide`) runs :func:`napari_alunet.loop.run_round`
(train -> evaluate -> score -> queue) in a worker; Stop closes it at the next optimiser step,
the engine saves the weights it would keep so far and the round stays open, to be resumed.
The plot is fed from ``EvalEvent`` in the GUI thread (x axis: optimiser steps) and painted
with QPainter (see :mod:`._chart` for why not matplotlib).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_alunet.config import DEFAULT_CLASS_NAMES, MODEL_PRESETS, TrainConfig, model_preset
from napari_alunet.events import EvalEvent, HealthEvent, StageEvent
from napari_alunet.widgets._chart import LineChart, Series
from napari_alunet.widgets._common import JobBar, group, guarded, hint, listen, row
from napari_alunet.widgets._display import get_display
from napari_alunet.widgets._guide import round_button_text
from napari_alunet.widgets._plot import COLOURS, theme_colours
from napari_alunet.widgets._state import get_state

PRESET_HINTS = {
    "gpu": "paper size (~31 M parameters, 256 px): needs a GPU",
    "cpu": "16 base channels, 128 px: a round in minutes on a laptop",
    "tiny": "8 base channels, 32 px: for quick tests only",
}


class TrainWidget(QWidget):
    """Settings and progress of a round's training, with a live plot and the test metrics."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.state = get_state(napari_viewer)
        get_display(napari_viewer)
        self.history: list[Any] = []

        self.preset = QComboBox()
        self.preset.addItems(list(MODEL_PRESETS))
        for i, name in enumerate(MODEL_PRESETS):
            self.preset.setItemData(i, PRESET_HINTS.get(name, ""), Qt.ItemDataRole.ToolTipRole)
        self.device = QComboBox()
        self.device.addItems(["auto", "cpu", "cuda", "mps"])
        self.device_label = QLabel()
        recipe = TrainConfig()
        self.steps = _spin(0, 100000, 0, f"Optimiser steps per round. auto: {recipe.min_steps}"
                           f" + {recipe.steps_per_image} per labelled image (at most "
                           f"{recipe.max_steps}), the same floor for 4 images as for 30, so a "
                           "first round is trained properly")
        self.steps.setSpecialValueText("auto")
        self.patience = _spin(0, 1000, 10, "Stop after this many evaluations without a better "
                                           "validation Dice (0: never). Only used once the "
                                           "validation split holds "
                                           f"{recipe.validation_min_images} or more images; "
                                           "with fewer, the whole budget is trained")
        self.patience.setSpecialValueText("off")  # 0 reads as 'off', not as 'stop at once'
        self.learning_rate = QDoubleSpinBox()
        self.learning_rate.setDecimals(5)
        self.learning_rate.setRange(1e-5, 1.0)
        self.learning_rate.setSingleStep(1e-4)
        self.learning_rate.setValue(recipe.learning_rate)
        self.warm_start = QCheckBox("from the last round's model")
        self.warm_start.setToolTip("Start training from the previous round's weights (faster); "
                                   "off: train from scratch")
        self.warm_start.setChecked(True)
        self.starter = QCheckBox("start from the starter model")
        self.starter.setToolTip(
            "A round with no model of its own (round 0) starts from the shipped starter model "
            "(trained on synthetic blastocysts only), and a project without labels shows its "
            "predictions on the first images, to correct rather than draw; used only when it "
            "fits the preset and the classes")
        self.starter.setChecked(True)
        self.semi_supervised = QCheckBox("also learn from unlabelled images")
        self.semi_supervised.setToolTip(
            "Semi-supervised training: the model's confident predictions on the unlabelled "
            "pool (never the test pool) become extra targets under strong augmentation "
            "(FixMatch-style); makes a model from a handful of labels much steadier")
        self.semi_supervised.setChecked(True)
        form = QFormLayout()
        form.addRow("Model preset", self.preset)
        form.addRow("Device", row(self.device, self.device_label))
        form.addRow("Steps", self.steps)
        form.addRow("Patience", self.patience)
        form.addRow("Learning rate", self.learning_rate)
        form.addRow("Warm start", self.warm_start)
        form.addRow("Starter", self.starter)
        form.addRow("Unlabelled", self.semi_supervised)
        settings_box = group("Model and training", layout=form)

        self.start_button = QPushButton(round_button_text(None))
        self.start_button.setToolTip("Train on the labelled pool, evaluate on the test pool, "
                                     "score the unlabelled pool and queue images for review")
        self.start_button.clicked.connect(self.start)
        self.job_bar = JobBar(self.state, {"round"})
        colours = theme_colours(napari_viewer)
        self.loss_chart = LineChart("Loss", "step", colours, height=170)
        self.dice_chart = LineChart("Validation Dice", "step", colours, ylim=(0.0, 1.0),
                                    height=170)
        for chart in (self.loss_chart, self.dice_chart):
            chart.placeholder = "waiting for the first evaluation"
        self.metrics_label = QLabel("No round evaluated yet.")
        self.metrics_label.setWordWrap(True)

        layout = QVBoxLayout(self)
        layout.addWidget(settings_box)
        layout.addWidget(self.start_button)
        layout.addWidget(self.job_bar)
        # One above the other at the dock's full width (side by side each was ~130 px wide).
        layout.addWidget(group("Training curve", self.loss_chart, self.dice_chart))
        layout.addWidget(group("Test metrics of the newest round", self.metrics_label,
                               hint("Dice on the fixed test pool, which is never trained on.")))
        layout.addStretch(1)

        for signal in (self.preset.currentIndexChanged, self.device.currentIndexChanged,
                       self.steps.valueChanged, self.patience.valueChanged,
                       self.learning_rate.valueChanged, self.warm_start.toggled,
                       self.starter.toggled, self.semi_supervised.toggled):
            signal.connect(self.apply_settings)
        listen(self, self.state.round_event, self._on_event)
        listen(self, self.state.round_finished, self._on_finished)
        listen(self, self.state.project_changed, self._project_changed)
        listen(self, self.state.busy_changed, self._busy)
        self._load_settings()
        self._draw()
        self._project_changed()

    # -- settings -----------------------------------------------------------------------------
    def _load_settings(self) -> None:
        """Show the state's settings (restored from the project's newest round)."""
        settings = self.state.settings
        widgets = (self.preset, self.device, self.steps, self.patience, self.learning_rate,
                   self.warm_start, self.starter, self.semi_supervised)
        for widget in widgets:
            widget.blockSignals(True)
        try:
            preset = next((name for name, cfg in MODEL_PRESETS.items()
                           if dataclasses.replace(cfg, n_classes=settings.model.n_classes)
                           == settings.model), None)
            if preset is not None:
                self.preset.setCurrentText(preset)
            self.device.setCurrentText(settings.train.device)
            self.steps.setValue(settings.train.steps)
            self.patience.setValue(settings.train.patience)
            self.learning_rate.setValue(settings.train.learning_rate)
            self.warm_start.setChecked(settings.train.warm_start)
            self.starter.setChecked(settings.train.starter)
            self.semi_supervised.setChecked(settings.train.semi_supervised)
        finally:
            for widget in widgets:
                widget.blockSignals(False)
        self._show_device()
        self._show_starter()

    def apply_settings(self, *_: Any) -> None:
        """Copy the controls into the shared settings (the next round uses them)."""
        settings = self.state.settings
        n_classes = (self.state.project.classes.n_classes if self.state.project is not None
                     else settings.model.n_classes)
        settings.model = model_preset(self.preset.currentText(), n_classes=n_classes)
        settings.train = dataclasses.replace(
            settings.train, steps=self.steps.value(), patience=self.patience.value(),
            learning_rate=self.learning_rate.value(), warm_start=self.warm_start.isChecked(),
            starter=self.starter.isChecked(), semi_supervised=self.semi_supervised.isChecked(),
            device=self.device.currentText(),
        )
        self._show_device()
        self._show_starter()

    def _show_starter(self) -> None:
        """Say whether a starter model fits the chosen preset and the project's classes."""
        from napari_alunet.starter import starter_for

        settings = self.state.settings
        names = (self.state.project.classes.names if self.state.project is not None
                 else DEFAULT_CLASS_NAMES)
        fits = starter_for(settings.model, names) is not None
        self.starter.setText("start from the starter model" if fits else
                             "start from the starter model (none for this preset / classes)")

    def _show_device(self) -> None:
        from napari_alunet.training.device import resolve_device

        try:
            device = resolve_device(self.device.currentText())
            self.device_label.setText(f"runs on: <b>{device}</b>")
            self.device_label.setToolTip("")
        except ValueError as exc:
            self.device_label.setText("<b>unavailable</b>")
            self.device_label.setToolTip(str(exc))

    # -- actions ------------------------------------------------------------------------------
    @guarded
    def start(self, *_: Any, confirm: Any = None) -> Any:
        """Start (or resume) a round with the settings shown; asks first when queued images
        would return to the pool unreviewed (``confirm``: the answer, for tests)."""
        self.apply_settings()
        from napari_alunet.training.device import resolve_device
        from napari_alunet.widgets.rounds import confirm_unreviewed

        resolve_device(self.state.settings.train.device)  # fail now, with the reason
        project = self.state.require_project(writable=True)
        if not confirm_unreviewed(self, project, confirm):
            return None
        return self.state.run_round()

    def _busy(self, name: str) -> None:
        self.start_button.setText(round_button_text(self.state.project))
        self.start_button.setEnabled(not name and self.state.project is not None
                                     and not self.state.project.read_only)

    def _project_changed(self) -> None:
        self._load_settings()
        self.history.clear()
        self._draw()
        self._show_metrics()
        self._busy(self.state.job.name if self.state.job else "")

    # -- progress -----------------------------------------------------------------------------
    def _on_event(self, event: Any) -> None:
        if isinstance(event, StageEvent) and event.stage == "train":
            self.history.clear()
            self._draw()
        elif isinstance(event, EvalEvent):
            self.history.append(event)
            self._draw()
        elif isinstance(event, HealthEvent):
            # The next attempt starts from a fresh initialisation: a new curve.
            self.history.clear()
            self._draw()
            self.job_bar.finish(event.message)

    def _on_finished(self, report: Any) -> None:
        if report is not None:
            self.job_bar.finish(f"done: round {report.round_idx} {report.status}, "
                                f"{len(report.queue)} image(s) queued")
        self._show_metrics()

    def _draw(self) -> None:
        steps = [float(e.step) for e in self.history]
        has_val = any(e.val_dice == e.val_dice for e in self.history)
        series = [Series("train", steps, [e.train_loss for e in self.history], COLOURS["train"])]
        if has_val:  # no legend entry for a curve that is not there
            series.append(Series("validation", steps, [e.val_loss for e in self.history],
                                 COLOURS["val"]))
        if any(e.unlabelled_loss == e.unlabelled_loss for e in self.history):
            series.append(Series("unlabelled", steps,
                                 [e.unlabelled_loss for e in self.history], COLOURS["unlabelled"]))
        self.loss_chart.set_series(series)
        self.dice_chart.placeholder = (
            "no validation split: with fewer than "
            f"{self.state.settings.train.validation_min_images} validation images the whole "
            "budget is trained and the final weights kept" if self.history and not has_val
            else "waiting for the first evaluation")
        best = self.history[-1].best_step if self.history and has_val else None
        self.dice_chart.set_series(
            [Series("", steps, [e.val_dice for e in self.history], COLOURS["dice"],
                    markers=True)] if has_val else [], vline=float(best) if best else None)

    def _show_metrics(self) -> None:
        project = self.state.project
        if project is None:
            self.metrics_label.setText("No project open.")
            return
        rows = project.metrics("test")
        if not rows:
            self.metrics_label.setText("No round evaluated yet.")
            return
        last = max(r["round_idx"] for r in rows)
        values = {r["name"]: r["value"] for r in rows if r["round_idx"] == last}
        names = project.classes.names
        per_class = ", ".join(
            f"{names[i]} {values[f'dice_{i}']:.3f}" for i in range(1, len(names))
            if values.get(f"dice_{i}") is not None
        )
        mean = values.get("mean_dice")
        mean_text = "-" if mean is None else f"{mean:.3f}"
        self.metrics_label.setText(
            f"Round {last}: mean Dice <b>{mean_text}</b> on {int(values.get('n_test', 0))} test "
            f"images, trained on {int(values.get('n_labelled', 0))} labelled<br>{per_class}"
            + fit_summary((project.round(last).config or {}).get("fit"))
        )


def fit_summary(fit: dict[str, Any] | None) -> str:
    """One HTML line on how a round's model was trained and chosen (its record's ``fit``)."""
    if not fit:
        return ""
    chosen = ("best weights on validation" if fit.get("selection") == "validation"
              else "final EMA weights")
    semi = (f", learnt also from {fit.get('n_unlabelled', 0)} unlabelled images"
            if fit.get("semi_supervised") and fit.get("n_unlabelled") else "")
    dice = fit.get("labelled_dice")
    health = "" if dice is None else f"; Dice on its own labels {dice:.2f}"
    if fit.get("attempts", 1) > 1:
        health += f" after {fit['attempts']} attempts"
    if not fit.get("healthy", True):
        health += " <b>(below the health floor: label more images)</b>"
    return (f"<br><small>{fit.get('steps_run', 0)} steps ({fit.get('passes', 0):.0f} passes), "
            f"{chosen}{semi}{health}</small>")


def _spin(low: int, high: int, value: int, tip: str) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    box.setToolTip(tip)
    return box
