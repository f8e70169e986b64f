"""What the viewer shows of the project: one image, its editable labels and uncertainty maps.

One :class:`Display` per viewer (:func:`get_display`) answers ``state.image_requested`` so that
Acquire (a table row), Review (the queue) and the reader show images the same way, whichever
dock widgets are open.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
from psygnal import Signal

from napari_alunet.widgets import _layers
from napari_alunet.widgets._state import AppState, get_state, notify_error

#: What the labels of a queued image start from in Review.
START_FROM = ("prediction", "confident", "empty")
#: What a click on the labels does: napari's own tools (paint, fill, erase, as chosen in the
#: layer controls), or one-click region edits (the canvas then pans instead of painting).
CLICK_TOOLS = ("paint", "accept region", "erase region")


@dataclass
class Shown:
    """The image on screen and what the annotator started from."""

    image_id: int
    name: str
    pool: str
    queued: bool
    score: float | None
    reference: np.ndarray | None  # the model's prediction (None: none cached)
    maps: tuple[str, ...]
    shown_at: float  # time.monotonic() when it appeared, for seconds_spent
    region: np.ndarray | None = None  # (h, w) bool: review only here (region-level queue)
    region_index: int = 0  # the region part the view is zoomed to
    round_idx: int | None = None  # the round whose prediction and maps are shown


class Display:
    """Shows images of the state's project in a viewer (GUI thread only).

    Signals
    -------
    changed : the image on screen changed (or was cleared).
    """

    changed = Signal()

    def __init__(self, viewer: Any, state: AppState) -> None:
        self._viewer = weakref.ref(getattr(viewer, "__wrapped__", viewer))
        self.state = state
        self.current: Shown | None = None
        #: The uncertainty map chosen in Review (None: the one of the round's strategy;
        #: 'none': no overlay).
        self.map_name: str | None = None
        #: Percentile of the image's map below which the overlay is transparent.
        self.map_threshold: float = 50.0
        #: The overlay toggled off (Shift+M), kept from image to image.
        self.map_hidden: bool = False
        #: What the labels of a queued image start from (:data:`START_FROM`).
        self.start_from: str = "prediction"
        #: What a click on the labels does (:data:`CLICK_TOOLS`).
        self.click_tool: str = "paint"
        #: Brush size per class, as the annotator left it (per-class brush presets).
        self.brush_sizes: dict[int, int] = {}
        self._showing = False  # show() sets the brush: not the annotator's choice
        self.maps: dict[str, np.ndarray] = {}
        state.image_requested.connect(self._requested)
        state.project_changed.connect(self._project_changed)

    @property
    def viewer(self) -> Any:
        return self._viewer()

    def _requested(self, image_id: int) -> None:
        try:
            self.show(image_id)
        except (KeyError, ValueError, OSError, RuntimeError) as exc:
            notify_error(f"cannot show image {image_id}: {exc}")

    def _project_changed(self) -> None:
        self.current = None
        viewer = self.viewer
        if viewer is not None:
            _layers.clear_review_layers(viewer)
            if self.state.project is not None:
                _layers.apply_classes(viewer, self.state.project.classes)
        self._notify()

    def show(self, image_id: int, labels: np.ndarray | None = None) -> Shown:
        """Show ``image_id``: the image, labels to edit and the cached uncertainty maps.

        The labels layer starts from the image's committed label if it has one, else from the
        model's cached prediction (queued images), else empty (all background). A region-level
        queue item shows the prediction inside its regions (outlined, the view zoomed to the
        first) and leaves every other pixel unknown, or as an earlier review labelled it.
        ``labels`` given (a withdrawn commit, after Undo) start the layer instead.
        """
        from napari_alunet.config import UNKNOWN_LABEL
        from napari_alunet.review import review_item

        viewer = self.viewer
        project = self.state.require_project()
        record = project.image(image_id)
        image = project.read_image(image_id)
        current = project.current_round()
        queued = current is not None and image_id in project.queue(current.idx,
                                                                    pending_only=False)
        item = review_item(project, image_id) if queued else None
        given = labels
        labels = project.read_label(image_id) if record.pool == "labelled" else None
        if record.pool == "test":
            labels = project.read_ground_truth(image_id)
        reference = item.prediction if item is not None else None
        region = item.region if item is not None and image_id in project.queue() else None
        if region is not None and reference is not None:
            # Only the regions are reviewed: the model's labels there, the rest unknown (or as
            # an earlier region review of this image left it).
            base = labels if labels is not None else np.full(image.shape, UNKNOWN_LABEL, np.uint8)
            labels = np.where(region, reference, base).astype(np.uint8)
        elif labels is None:
            # A copy: painting edits the layer's array in place, and the reference must stay the
            # model's prediction so that 'pixels changed' measures the annotator's work.
            labels = (self._starting_labels(reference, item.maps if item else {})
                      if reference is not None else np.zeros(image.shape, np.uint8))
        if given is not None and given.shape == image.shape:
            labels = np.array(given, dtype=np.uint8)  # the annotator's own strokes come back
        maps = item.maps if item is not None else {}
        score = item.score if item is not None else None
        if score is None and self.state.scores is not None:
            score = self.state.scores["scores"].get(image_id)
        if viewer is not None:
            _layers.show_image(viewer, image, name=record.name, image_id=image_id)
            kind = self.visible_map(maps)
            _layers.show_map(viewer, maps.get(kind) if kind else None, kind, shape=image.shape,
                             threshold=self.map_threshold, hidden=self.map_hidden)
            _layers.hide_stale_features(viewer, image_id)
            self._showing = True
            try:
                layer = _layers.show_labels(viewer, labels, project.classes, image_id=image_id)
                self._hook(layer)
                preset = self.brush_sizes.get(int(layer.selected_label))
                if preset is not None:
                    layer.brush_size = preset
            finally:
                self._showing = False
            _layers.show_regions(viewer, region, image_id=image_id)
            _layers.show_previous(viewer, None, project.classes, image_id=image_id)
            layer.mode = "paint" if self.click_tool == "paint" else "pan_zoom"
            viewer.layers.selection.active = layer
        self.maps = maps
        self.current = Shown(image_id, record.name, record.pool, queued, score, reference,
                             tuple(maps), time.monotonic(), region,
                             round_idx=current.idx if current is not None else None)
        if region is not None:
            self.focus_region(0)
        self._notify()
        return self.current

    # -- per-class brushes and one-click region edits ------------------------------------------
    def _hook(self, layer: Any) -> None:
        """Connect the labels layer once: brush presets and the click tools."""
        if layer.metadata.get("alunet_hooked"):
            return
        layer.metadata["alunet_hooked"] = True
        ref = weakref.ref(self)

        def class_changed(_event: Any = None) -> None:
            display = ref()
            preset = None if display is None else display.brush_sizes.get(
                int(layer.selected_label))
            if preset is not None and preset != layer.brush_size:
                layer.brush_size = preset

        def brush_changed(_event: Any = None) -> None:
            display = ref()
            if display is not None and not display._showing:
                display.brush_sizes[int(layer.selected_label)] = int(layer.brush_size)

        def clicked(layer: Any, event: Any) -> Any:
            display = ref()
            if display is None or display.click_tool == "paint" or layer.mode != "pan_zoom":
                return
            start = tuple(event.position)
            yield
            while event.type == "mouse_move":  # a drag pans the view: no edit
                if tuple(event.position) != start:
                    return
                yield
            display.edit_at(display.click_tool, layer.world_to_data(start)[-2:])

        layer.events.selected_label.connect(class_changed)
        layer.events.brush_size.connect(brush_changed)
        layer.mouse_drag_callbacks.append(clicked)

    def show_previous(self, prediction: np.ndarray | None, round_idx: int | None = None) -> bool:
        """Outline an earlier round's prediction of the image shown over its labels (None:
        hide it). Returns whether it is shown."""
        viewer = self.viewer
        project = self.state.project
        if viewer is None or project is None or self.current is None:
            return False
        if prediction is not None and prediction.shape != np.asarray(
                viewer.layers[_layers.LABELS].data).shape:
            raise ValueError("that prediction belongs to another image")
        _layers.show_previous(viewer, prediction, project.classes,
                              image_id=self.current.image_id, round_idx=round_idx)
        return prediction is not None

    def set_click_tool(self, tool: str) -> None:
        """Choose what a click on the labels does (:data:`CLICK_TOOLS`)."""
        if tool not in CLICK_TOOLS:
            raise ValueError(f"unknown click tool {tool!r}; choose one of {CLICK_TOOLS}")
        self.click_tool = tool
        viewer = self.viewer
        if viewer is not None and _layers.LABELS in viewer.layers:
            viewer.layers[_layers.LABELS].mode = "paint" if tool == "paint" else "pan_zoom"

    def edit_at(self, tool: str, point: Any) -> int:
        """One-click edit at ``point`` (row, column of the image): ``"accept region"`` writes
        the model's connected predicted region there into the labels, ``"erase region"`` sets
        the labels' connected region there to background. Goes into the layer's undo history
        (Ctrl+Z). Returns the pixels changed (0: nothing to do)."""
        from napari_alunet.review import accept_region, erase_region

        viewer = self.viewer
        if self.current is None or viewer is None or _layers.LABELS not in viewer.layers:
            raise ValueError("no image under review")
        layer = viewer.layers[_layers.LABELS]
        labels = np.asarray(layer.data)
        try:
            if tool == "accept region":
                if self.current.reference is None:
                    raise ValueError("this image has no prediction to accept from: add it "
                                     "to the queue (All images) or train a round first")
                mask, value = accept_region(labels, self.current.reference, point)
            elif tool == "erase region":
                mask, value = erase_region(labels, point), 0
            else:
                raise ValueError(f"unknown click tool {tool!r}")
        except ValueError as exc:
            notify_error(str(exc))
            return 0
        changed = int(np.count_nonzero(mask))
        if changed:
            layer.data_setitem(np.nonzero(mask), value)
        return changed

    def _starting_labels(self, reference: np.ndarray, maps: dict[str, np.ndarray]
                         ) -> np.ndarray:
        """The labels a queued image starts from (a copy of ``reference`` at most).

        'prediction': the model's labels; 'empty': nothing (draw from scratch); 'confident':
        the model's labels where it is sure, and unknown (shown unlabelled) where the overlay
        tints, i.e. above the threshold percentile of the map shown. Unknown pixels the
        annotator leaves are committed as unknown, never as background: training ignores them.
        """
        from napari_alunet.config import UNKNOWN_LABEL

        if self.start_from == "empty":
            return np.zeros(reference.shape, np.uint8)
        labels = np.array(reference, dtype=np.uint8)
        kind = self.visible_map(maps) or next(iter(maps), None)
        if self.start_from == "confident" and kind is not None:
            values = maps[kind]
            # Exactly the pixels the overlay tints: above its lower contrast limit.
            cut, _top = _layers.map_limits(values, self.map_threshold)
            labels[values > cut] = UNKNOWN_LABEL
        return labels

    def region_count(self) -> int:
        """Connected regions to review in the image shown (0 for a whole-image review)."""
        shown = self.current
        return 0 if shown is None or shown.region is None else len(
            _layers.region_boxes(shown.region))

    def focus_region(self, index: int) -> int:
        """Centre and zoom the view on region ``index`` (wrapping); returns the index used."""
        shown = self.current
        viewer = self.viewer
        if shown is None or shown.region is None:
            return 0
        boxes = _layers.region_boxes(shown.region)
        if not boxes:
            return 0
        index %= len(boxes)
        shown.region_index = index
        top, left, bottom, right = boxes[index]
        if viewer is not None:
            # Show the region with a margin of half its size on every side.
            canvas = getattr(viewer, "_canvas_size", None) or (600, 800)
            span_h, span_w = 2.0 * (bottom - top), 2.0 * (right - left)
            # napari 0.9 moved the camera to viewer.scene; older versions have viewer.camera.
            scene = getattr(viewer, "scene", None)
            camera = scene.camera if scene is not None else viewer.camera
            camera.center = ((top + bottom) / 2.0, (left + right) / 2.0)
            camera.zoom = float(min(canvas[0] / max(span_h, 1.0), canvas[1] / max(span_w, 1.0)))
        return index

    def visible_map(self, maps: dict[str, Any]) -> str | None:
        """The map kind to overlay: the one chosen, else the strategy's, else any."""
        if self.map_name == "none":
            return None
        if self.map_name in maps:
            return self.map_name
        strategy = self.state.settings.acquisition.strategy
        if self.state.scores is not None:
            strategy = self.state.scores["strategy"]
        preferred = _layers.STRATEGY_MAP.get(strategy, "entropy")
        return preferred if preferred in maps else next(iter(maps), None)

    def set_map(self, name: str | None) -> None:
        """Overlay another uncertainty map of the image shown ('none': no overlay)."""
        self.map_name = name
        self._refresh_map()

    def set_map_threshold(self, percentile: float) -> None:
        """Tint only the pixels above this percentile of the image's map (0-99)."""
        self.map_threshold = float(percentile)
        viewer = self.viewer
        if viewer is not None:
            _layers.set_map_threshold(viewer, self.map_threshold)

    def toggle_map(self) -> bool:
        """Show or hide the uncertainty overlay (for every image until toggled again).

        Returns True when the overlay is now shown."""
        self.map_hidden = not self.map_hidden
        self._refresh_map()
        return not self.map_hidden

    def _refresh_map(self) -> None:
        viewer = self.viewer
        if viewer is None or self.current is None:
            return
        kind = self.visible_map(self.maps)
        shape = viewer.layers[_layers.IMAGE].data.shape if _layers.IMAGE in viewer.layers \
            else next(iter(self.maps.values())).shape
        _layers.show_map(viewer, self.maps.get(kind) if kind else None, kind, shape=shape,
                         threshold=self.map_threshold, hidden=self.map_hidden)

    def labels(self) -> np.ndarray:
        """The labels layer's data: what the annotator drew, at the image's original size."""
        viewer = self.viewer
        if viewer is None or _layers.LABELS not in viewer.layers:
            raise ValueError("the labels layer was closed: show the image again (Review)")
        layer = viewer.layers[_layers.LABELS]
        if self.current is None or layer.metadata.get("image_id") != self.current.image_id:
            raise ValueError("the labels layer does not belong to the image under review")
        return np.asarray(layer.data)

    def clear(self) -> None:
        """Nothing to review: remove the image, labels and map layers."""
        self.current = None
        self.maps = {}
        viewer = self.viewer
        if viewer is not None:
            _layers.clear_review_layers(viewer)
        self._notify()

    def _notify(self) -> None:
        self.changed.emit()


def get_display(viewer: Any) -> Display:
    """The viewer's display (created with its state on first use)."""
    state = get_state(viewer)
    display = getattr(state, "display", None)
    if display is None:
        display = state.display = Display(viewer, state)
    return display
