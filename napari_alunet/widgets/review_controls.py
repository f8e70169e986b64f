"""The Review panel's display controls: what the labels start from, what a click does, which
uncertainty map is shown above which percentile (with its colour bar), and the classes to
paint with (GUI thread only)."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFormLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QSlider,
    QWidget,
)

from napari_alunet.config import MAP_NAMES, ClassSpec
from napari_alunet.widgets import _layers
from napari_alunet.widgets._common import combo, format_score, ramp_pixmap, swatch
from napari_alunet.widgets._display import CLICK_TOOLS, START_FROM

#: Every map the scorer can cache (an image has the review maps and its strategy's own).
MAP_CHOICES = (*MAP_NAMES, "none")


class DisplayControls(QWidget):
    """The display settings of the image under review, applied to the shared Display."""

    def __init__(self, viewer: Any, display: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.display = display
        self.map_choice = combo(MAP_CHOICES, "Uncertainty map shown over the image in violet "
                                "(brighter and more opaque: less sure); Shift+M shows / hides it")
        self.map_choice.currentTextChanged.connect(self._map_changed)
        # The overlay's colour bar: the ramp from the threshold to the top of this image's map,
        # with both values (a Qt pixmap: napari's canvas colour bar stalled the GUI thread).
        self.colour_bar = QLabel()
        self.colour_bar.setPixmap(ramp_pixmap(_layers.map_ramp(160)))
        self.colour_bar_text = QLabel("no map")
        self.map_threshold = QSlider(Qt.Orientation.Horizontal)
        self.map_threshold.setRange(0, 99)
        self.map_threshold.setValue(int(self.display.map_threshold))
        self.map_threshold.setToolTip("Tint only the pixels above this percentile of the image's "
                                      "map: 0 tints everything the model has any doubt about, "
                                      "90 only its most uncertain tenth")
        self.map_threshold_text = QLabel()
        self.map_threshold.valueChanged.connect(self._threshold_changed)
        self._threshold_changed(self.map_threshold.value())
        self.legend = QListWidget()
        self.legend.setMaximumHeight(112)
        self.legend.setToolTip("Click a class to paint with it")
        self.legend.itemClicked.connect(self._class_clicked)
        self.start_from = combo(
            START_FROM, "What the labels of a queued image start from: the model's prediction; "
            "only its confident pixels (the tinted, uncertain ones start unlabelled, and those "
            "you leave are stored as unknown, never as background); or empty (draw from "
            "scratch)")
        self.start_from.currentTextChanged.connect(self._start_from_changed)
        self.click_tool = combo(CLICK_TOOLS, "What a click on the labels does", (
            "napari's tools: paint, fill and erase as chosen in the layer controls (P, F, E)",
            "one click on a region of the model's prediction puts that whole region into the "
            "labels (the canvas pans instead of painting; Ctrl+Z undoes)",
            "one click on a labelled region sets the whole region to background (Ctrl+Z "
            "undoes)"))
        self.click_tool.currentTextChanged.connect(self.display.set_click_tool)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Start from", self.start_from)
        form.addRow("Click", self.click_tool)
        form.addRow("Uncertainty", self.map_choice)
        form.addRow(self.map_threshold_text, self.map_threshold)
        form.addRow(self.colour_bar_text, self.colour_bar)
        form.addRow("Classes", self.legend)

    def _map_changed(self, name: str) -> None:
        self.display.set_map(name)
        self.show_scale()

    def _start_from_changed(self, name: str) -> None:
        self.display.start_from = name
        shown = self.display.current
        if shown is not None and shown.queued and shown.pool == "unlabelled":
            self.display.show(shown.image_id)  # the image on screen starts again from it

    def _threshold_changed(self, value: int) -> None:
        self.map_threshold_text.setText(f"Show above {value} %")
        self.display.set_map_threshold(value)
        self.show_scale()

    def show_scale(self) -> None:
        """The colour bar's values: the overlay's limits, or 'no map'."""
        layer = (self.viewer.layers[_layers.MAP] if _layers.MAP in self.viewer.layers
                 else None)
        kind = None if layer is None else layer.metadata.get("kind")
        if layer is None or kind is None or not layer.visible:
            self.colour_bar_text.setText("no map shown" if kind is None else "map hidden")
            return
        low, high = layer.contrast_limits
        self.colour_bar_text.setText(f"{kind} {format_score(low)} .. {format_score(high)}")

    def _class_clicked(self, item: QListWidgetItem) -> None:
        if _layers.LABELS in self.viewer.layers:
            layer = self.viewer.layers[_layers.LABELS]
            layer.selected_label = int(item.data(Qt.ItemDataRole.UserRole))
            layer.mode = "paint"
            self.viewer.layers.selection.active = layer

    def show_classes(self, classes: ClassSpec | None) -> None:
        """List the project's classes with their colours (click one to paint with it)."""
        self.legend.clear()
        if classes is None:
            return
        for index, (name, rgb) in enumerate(zip(classes.names, classes.colours)):
            item = QListWidgetItem(swatch(rgb), f"{index}  {name}")
            item.setData(Qt.ItemDataRole.UserRole, index)
            self.legend.addItem(item)
