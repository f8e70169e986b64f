"""The napari layers the widgets show: image, editable labels, uncertainty maps, feature maps.

Layers are found by name and updated in place (``layer.data = ...``) rather than re-created,
so the user's contrast, opacity and visibility choices survive moving from image to image. All
functions here run in the GUI thread.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_alunet.config import STRATEGY_MAPS, UNKNOWN_LABEL, ClassSpec

IMAGE = "alunet: image"
LABELS = "alunet: labels"
MAP = "alunet: uncertainty"
FEATURES = "alunet: features"
REGIONS = "alunet: review regions"
PREVIOUS = "alunet: previous round"
#: Outline colour of the regions to review: white, a colour no class uses (the default classes
#: are cyan, red, green and yellow; a cyan outline read as ICM).
REGION_COLOUR = "#ffffff"

#: The uncertainty overlay's hue, the same for every map: violet (hue ~270 degrees), midway
#: between the two nearest default class colours, ICM cyan (190) and TE red (350). A different
#: colormap per map (inferno, magma, ...) shared red and yellow with TE and BL, and users read
#: high uncertainty as blastocoel (issue 17); magenta, tried first, still read as TE where it
#: lay over the TE ring. The map's name is in the Review panel; the colour bar gives the scale.
MAP_COLOUR_DARK = (0.30, 0.0, 0.70)
MAP_COLOUR_BRIGHT = (0.62, 0.32, 1.0)
#: Overlay opacity at the top of the scale: high enough that the most uncertain pixels read as
#: violet whatever class colour lies under them (a lighter, more transparent violet mixed with
#: TE red into pink); the labels show through everywhere below the top of the scale.
MAP_MAX_ALPHA = 0.9

#: The map shown for each acquisition strategy: the map its score reduces (the scorer caches it
#: with the review maps), entropy (total uncertainty) for random. Showing entropy for margin
#: while margin ranked by the margin map showed the user a different doubt than the one used.
STRATEGY_MAP = {name: kind or "entropy" for name, kind in STRATEGY_MAPS.items()}


def map_colormap(kind: str = "") -> Any:
    """A napari colormap for an uncertainty map: one violet hue, alpha rising with the value.

    Transparent at the bottom of the contrast limits (the threshold), growing lighter and more
    opaque towards the top, so only the pixels above the threshold are tinted and the image and
    labels stay readable under them. ``kind`` only names the colormap.
    """
    from napari.utils.colormaps import Colormap

    rgba = map_ramp(32)
    return Colormap(colors=rgba, controls=np.linspace(0.0, 1.0, len(rgba)),
                    name=f"alunet uncertainty {kind}".strip())


def class_colormap(classes: ClassSpec) -> Any:
    """A DirectLabelColormap with the project's class colours (background transparent, and
    ``UNKNOWN_LABEL`` too: a pixel nobody reviewed is shown as unlabelled)."""
    from napari.utils.colormaps import DirectLabelColormap

    colours: dict[int | None, Any] = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0),
                                      UNKNOWN_LABEL: (0.0, 0.0, 0.0, 0.0)}
    for index, rgb in enumerate(classes.colours):
        if index:
            colours[index] = tuple(c / 255.0 for c in rgb) + (1.0,)
    return DirectLabelColormap(color_dict=colours)


def class_features(classes: ClassSpec) -> dict[str, Any]:
    """Labels-layer features: napari shows the class name of the label under the cursor."""
    return {"index": list(range(classes.n_classes)), "class": list(classes.names)}


def _layer(viewer: Any, name: str) -> Any:
    return viewer.layers[name] if name in viewer.layers else None


def _limits(data: np.ndarray, *, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [low, high]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def apply_classes(viewer: Any, classes: ClassSpec) -> None:
    """Give the label layers already in the viewer the colours and names of ``classes`` (a
    project opened after another must not be painted in the first one's colours)."""
    for name in (LABELS, PREVIOUS):
        layer = _layer(viewer, name)
        if layer is not None:
            layer.colormap = class_colormap(classes)
            if name == LABELS:
                layer.features = class_features(classes)


def show_image(viewer: Any, image: np.ndarray, *, name: str, image_id: int) -> Any:
    """Show (or replace) the image under review; resets the view when the shape changes."""
    layer = _layer(viewer, IMAGE)
    limits = _limits(image)
    if layer is None:
        layer = viewer.add_image(image, name=IMAGE, colormap="gray", contrast_limits=limits)
        reset = True
    else:
        reset = layer.data.shape != image.shape or not layer.visible
        # Visible first: napari does not update a hidden layer's extent when its data changes,
        # so the view would be reset to the old (or the 2 x 2 placeholder's) extent.
        layer.visible = True
        layer.data = image
        layer.contrast_limits_range = limits
        layer.contrast_limits = limits
    layer.metadata["image_id"] = image_id
    layer.metadata["name"] = name
    if reset:
        viewer.reset_view()
    return layer


def show_labels(viewer: Any, labels: np.ndarray, classes: ClassSpec, *, image_id: int) -> Any:
    """Show (or replace) the editable labels, coloured by class, in paint mode."""
    layer = _layer(viewer, LABELS)
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    if layer is None:
        layer = viewer.add_labels(labels, name=LABELS, colormap=class_colormap(classes),
                                  features=class_features(classes), opacity=0.45)
        layer.selected_label = 1
    else:
        layer.data = labels
        layer.visible = True
    layer.metadata["image_id"] = image_id
    layer.brush_size = max(2, min(labels.shape) // 40)
    _order(viewer)
    return layer


def map_ramp(width: int = 256) -> np.ndarray:
    """The overlay's colours as a (width, 4) float RGBA ramp from the threshold (left) to the
    top of the scale (right), for the colour bar in the Review panel."""
    positions = np.linspace(0.0, 1.0, width)
    dark, bright = np.asarray(MAP_COLOUR_DARK), np.asarray(MAP_COLOUR_BRIGHT)
    rgba = np.empty((width, 4), np.float32)
    rgba[:, :3] = dark + (bright - dark) * positions[:, None]
    rgba[:, 3] = np.where(positions > 0, 0.15 + (MAP_MAX_ALPHA - 0.15) * positions, 0.0)
    return rgba


def map_limits(values: np.ndarray, threshold: float) -> tuple[float, float]:
    """Contrast limits of an uncertainty overlay: from the ``threshold`` percentile of the
    image's map (pixels below it are transparent) to its 99.5th percentile."""
    threshold = float(np.clip(threshold, 0.0, 99.0))
    return _limits(values, low=threshold, high=max(99.5, threshold + 0.5))


def show_map(viewer: Any, data: np.ndarray | None, kind: str | None, *, shape: tuple[int, int],
             threshold: float = 50.0, hidden: bool = False) -> Any:
    """Show one uncertainty map as an overlay (one layer, whatever the kind).

    Its colour bar is a Qt widget in the Review panel (:func:`map_ramp`), not napari's canvas
    colour bar overlay: that one rendered its tick labels as font textures on the GUI thread,
    about 180 ms the first time it appeared (at the end of every first round).

    One layer rather than one per kind: fewer layer controls to build (each costs the GUI
    thread tens of milliseconds) and a shorter layer list; Review switches the kind. Without a
    map (an image that was not scored) the layer stays, hidden and empty, so nothing stale sits
    over a different image and the next map appears without building a layer.

    Parameters
    ----------
    data : (h, w) map at the image's original size (the letter-box padding already cropped).
    threshold : percentile of this image's map below which the overlay is transparent; the
        default (the median) marks where this image is least certain, while the score column
        ranks images against each other.
    hidden : the user toggled the overlay off (Shift+M): the data is updated, not shown.
    """
    layer = _layer(viewer, MAP)
    empty = data is None or kind is None
    values = np.zeros(shape, np.float32) if empty else np.asarray(data, dtype=np.float32)
    limits = (0.0, 1.0) if empty else map_limits(values, threshold)
    colormap = map_colormap(kind or "")
    visible = not empty and not hidden
    if layer is None:
        layer = viewer.add_image(values, name=MAP, colormap=colormap, blending="translucent",
                                 opacity=1.0, contrast_limits=limits, visible=visible)
    else:
        layer.data = values
        layer.colormap = colormap
        layer.contrast_limits_range = limits
        layer.contrast_limits = limits
        layer.visible = visible
    layer.metadata["kind"] = None if empty else kind
    layer.metadata["threshold"] = threshold
    _order(viewer)
    return layer


def set_map_threshold(viewer: Any, threshold: float) -> None:
    """Move the overlay's threshold (percentile) without rebuilding it."""
    layer = _layer(viewer, MAP)
    if layer is None or layer.metadata.get("kind") is None:
        return
    limits = map_limits(np.asarray(layer.data), threshold)
    layer.contrast_limits_range = limits
    layer.contrast_limits = limits
    layer.metadata["threshold"] = threshold


def show_features(viewer: Any, activations: np.ndarray, box: Any, block: str, *,
                  image_id: int | None = None) -> Any:
    """Show a (channels, h, w) activation stack over the original image.

    The block sees the letter-boxed canvas at ``size / h`` canvas pixels per feature pixel; the
    scale and translation below map feature-pixel centres back onto original-image pixel
    centres, so the features line up with the image (one slider step per channel).
    """
    factor = box.size / activations.shape[-1]
    scale = box.size / max(box.orig_h, box.orig_w)  # canvas pixels per original pixel
    step = factor / scale
    # Only the feature pixels over the image: the letter-box padding's activations are no part
    # of the image (they drew bands beside it) and would skew the contrast limits.
    r0, c0 = int(box.top // factor), int(box.left // factor)
    r1 = int(np.ceil((box.top + box.new_h) / factor))
    c1 = int(np.ceil((box.left + box.new_w) / factor))
    activations = activations[:, r0:r1, c0:c1]
    translate_y = (0.5 * factor + r0 * factor - box.top) / scale - 0.5
    translate_x = (0.5 * factor + c0 * factor - box.left) / scale - 0.5
    data = activations.astype(np.float32)
    limits = _limits(activations, low=1.0, high=99.0)
    layer = _layer(viewer, FEATURES)
    if layer is None:
        layer = viewer.add_image(
            data, name=FEATURES, colormap="viridis", contrast_limits=limits, opacity=0.85,
            scale=(1.0, step, step), translate=(0.0, translate_y, translate_x),
            blending="translucent",
        )
    else:  # updated in place (see clear_review_layers for why layers are not removed)
        layer.data = data
        layer.scale = (1.0, step, step)
        layer.translate = (0.0, translate_y, translate_x)
        layer.contrast_limits_range = limits
        layer.contrast_limits = limits
        layer.visible = True
    layer.metadata["block"] = block
    layer.metadata["image_id"] = image_id
    viewer.dims.set_current_step(0, 0)
    return layer


def region_outlines(region: np.ndarray) -> list[np.ndarray]:
    """Closed (n, 2) row/column polygons around the connected parts of a (h, w) bool mask."""
    from skimage.measure import find_contours

    padded = np.pad(np.asarray(region, dtype=float), 1)
    return [c - 1.0 for c in find_contours(padded, 0.5) if len(c) >= 4]


def region_boxes(region: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(top, left, bottom, right) of every connected part of a region mask, top to bottom."""
    from scipy import ndimage

    parts, _n = ndimage.label(np.asarray(region, dtype=bool))
    boxes = [(s[0].start, s[1].start, s[0].stop, s[1].stop)
             for s in ndimage.find_objects(parts) if s is not None]
    return sorted(boxes)


def show_regions(viewer: Any, region: np.ndarray | None, *, image_id: int) -> Any:
    """Outline the regions to review (a Shapes layer); hidden when ``region`` is None."""
    layer = _layer(viewer, REGIONS)
    outlines = [] if region is None else region_outlines(region)
    if layer is None:
        if not outlines:
            return None
        assert region is not None  # outlines is empty without a region
        layer = viewer.add_shapes(outlines, shape_type="polygon", name=REGIONS,
                                  edge_color=REGION_COLOUR, face_color="transparent",
                                  edge_width=max(1.0, min(region.shape) / 150), opacity=0.9)
    else:
        layer.data = []
        if outlines:
            assert region is not None  # outlines is empty without a region
            layer.add_polygons(outlines, edge_color=REGION_COLOUR, face_color="transparent",
                               edge_width=max(1.0, min(region.shape) / 150))
        layer.visible = bool(outlines)
    layer.metadata["image_id"] = image_id
    layer.editable = False
    _order(viewer)
    return layer


def show_previous(viewer: Any, labels: np.ndarray | None, classes: ClassSpec, *,
                  image_id: int, round_idx: int | None = None) -> Any:
    """The previous round's prediction as class-coloured outlines over the labels (read-only),
    or hidden when ``labels`` is None."""
    layer = _layer(viewer, PREVIOUS)
    if labels is None:
        if layer is not None:
            layer.visible = False
        return layer
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    if layer is None:
        layer = viewer.add_labels(labels, name=PREVIOUS, colormap=class_colormap(classes),
                                  opacity=0.9)
    else:
        layer.data = labels
        layer.visible = True
    layer.contour = max(2, min(labels.shape) // 120)  # outlines: the labels stay visible
    layer.editable = False
    layer.metadata.update(image_id=image_id, round_idx=round_idx)
    _order(viewer)
    viewer.layers.selection.active = viewer.layers[LABELS] if LABELS in viewer.layers else layer
    return layer


def _order(viewer: Any) -> None:
    """Image at the bottom, feature maps (if any) and the labels above it, the uncertainty
    overlay and the review regions over the labels.

    The overlay is transparent where the model is sure, so it only tints the labels where they
    most need checking (usually class boundaries); painting goes to the labels layer whatever
    the order.
    """
    layers = viewer.layers
    # Feature maps go just above the image: under the labels, never covering what is painted
    # (issue 17: a feature layer on top made the labels invisible in Review).
    present = [name for name in (IMAGE, FEATURES, LABELS, PREVIOUS, MAP, REGIONS)
               if name in layers]
    for position, name in enumerate(present):
        if layers.index(name) != position:
            layers.move(layers.index(name), position)


def hide_stale_features(viewer: Any, image_id: int) -> None:
    """Hide feature maps computed for another image."""
    layer = _layer(viewer, FEATURES)
    if layer is not None and layer.metadata.get("image_id") != image_id:
        layer.visible = False


def clear_review_layers(viewer: Any) -> None:
    """Hide the layers of the project (another project opens, or the queue is done).

    They are hidden, not removed: removing a Labels layer that was in paint mode and adding
    layers again crashed vispy (a segmentation fault in ``glDrawArrays`` drawing a stale
    overlay mesh, napari 0.9 / Mesa under Xvfb), and re-creating layers costs the GUI thread
    far more than updating their data. The next image shown makes them visible again.
    """
    for layer in list(viewer.layers):
        if layer.name.startswith("alunet: "):
            layer.visible = False
            layer.metadata["image_id"] = None
