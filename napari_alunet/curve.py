"""Learning-curve data of a project: test Dice against labelled images and annotation effort.

Pure functions on a :class:`~napari_alunet.store.Project` (no Qt): the Rounds panel draws and
exports these numbers, and ``alunet curve PROJECT OUT.{png,svg,pdf,csv}`` writes the same
files headless.

Annotation effort of round ``r``'s model is the number of pixels changed in all active label
versions it was trained on: labels committed while reviewing round ``r - 1``'s queue carry
``round_index == r`` (see :func:`napari_alunet.loop.commit_review`), so round ``r`` counts the
versions with ``round_index <= r``. Imported labels cost nothing (their ``pixels_changed`` is
empty).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_alunet.figures import build_figure, light_colours
from napari_alunet.fileio import atomic_write_bytes


@dataclass
class CurvePoint:
    """One evaluated round."""

    round_idx: int
    status: str
    n_labelled: int
    pixels_changed: int
    seconds_spent: float
    mean_dice: float
    metrics: dict[str, float] = field(default_factory=dict)


def curve_points(project: Any) -> list[CurvePoint]:
    """One point per round that has test metrics, in round order."""
    tests: dict[int, dict[str, float]] = {}
    for row in project.metrics("test"):
        value = row["value"]
        tests.setdefault(row["round_idx"], {})[row["name"]] = math.nan if value is None else value
    versions = [v for record in project.images("labelled")
                for v in project.label_history(record.id) if v.active]
    points = []
    for rnd in project.rounds():
        metrics = tests.get(rnd.idx)
        if not metrics or "mean_dice" not in metrics:
            continue
        used = [v for v in versions if (v.round_index or 0) <= rnd.idx]
        n_labelled = metrics.get("n_labelled", rnd.n_labelled if rnd.n_labelled is not None
                                 else len(used))
        points.append(CurvePoint(
            round_idx=rnd.idx, status=rnd.status, n_labelled=int(n_labelled),
            pixels_changed=int(sum(v.pixels_changed or 0 for v in used)),
            seconds_spent=float(sum(v.seconds_spent or 0.0 for v in used)),
            mean_dice=float(metrics["mean_dice"]), metrics=metrics,
        ))
    return points


def curve_csv(points: list[CurvePoint], class_names: tuple[str, ...] = ()) -> str:
    """CSV text: one row per round; per-class metric keys use class names (dice_ICM)."""
    extra = sorted({k for p in points for k in p.metrics} - {"mean_dice", "n_labelled"})
    header = ["round", "status", "n_labelled", "pixels_changed", "seconds_spent", "mean_dice"]
    header += [_named(k, class_names) for k in extra]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for p in points:
        writer.writerow([p.round_idx, p.status, p.n_labelled, p.pixels_changed,
                         f"{p.seconds_spent:.1f}", f"{p.mean_dice:.6g}"]
                        + [_fmt(p.metrics.get(k)) for k in extra])
    return out.getvalue()


def write_csv(points: list[CurvePoint], path: str | Path,
              class_names: tuple[str, ...] = ()) -> Path:
    """Write :func:`curve_csv` atomically."""
    return atomic_write_bytes(Path(path), curve_csv(points, class_names).encode())


def curve_metadata(project: Any) -> str:
    """One line saying what run a learning curve belongs to (printed under the exported
    figure): project, test images, model, strategy, rounds, date."""
    import datetime

    counts = project.counts()
    rounds = project.rounds()
    config = next((r.config for r in reversed(rounds) if r.config), None) or {}
    model = config.get("model", {})
    acquisition = config.get("acquisition", {})
    parts = [f"project {project.path.name}", f"{counts.get('test', 0)} test images"]
    if model:
        parts.append(f"U-Net width {model.get('base_width', '?')}, depth "
                     f"{model.get('depth', '?')}, input {model.get('input_size', '?')} px, "
                     f"dropout {model.get('dropout', '?')}")
    if acquisition:
        parts.append(f"{acquisition.get('strategy', '?')}, k = {acquisition.get('k', '?')}, "
                     f"{acquisition.get('passes', '?')} MC passes")
    parts.append(f"{len(rounds)} round(s)")
    parts.append(f"exported {datetime.date.today().isoformat()}")
    return " | ".join(parts)


#: Line colours of the per-class curves in exported figures (colour-blind-safe, readable on
#: white, unlike the yellow and cyan of the label colours).
CLASS_LINE_COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9")


def draw_curve(figure: Any, axes: list[Any], points: list[CurvePoint],
               colours: dict[str, str], *, class_names: tuple[str, ...] = (),
               metadata: str = "") -> None:
    """Draw test Dice against labelled images (left) and pixels changed (right).

    The mean Dice over the foreground classes is the thick line; each foreground class's Dice
    is a thin dashed line (left panel) when the points carry per-class metrics (``dice_<i>``)
    and ``class_names`` are given. Dice axes span 0-1 as in the app; the labelled-images axis
    has integer ticks; ``metadata`` (:func:`curve_metadata`) is printed under the panels.
    ``colours``: 'background', 'text', 'grid' and 'line' (the mean curve).
    """
    from matplotlib.ticker import MaxNLocator

    left, right = axes
    line = colours.get("line", "#1f77b4")
    left.set_title("Test Dice vs labelled images", fontsize=9)
    left.set_xlabel("labelled images", fontsize=8)
    left.set_ylabel("test Dice", fontsize=8)
    right.set_title("Test Dice vs annotation effort", fontsize=9)
    right.set_xlabel("pixels changed by the annotator (thousands)", fontsize=8)
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes:
        ax.set_ylim(0.0, 1.0)
    if metadata:
        figure.text(0.01, 0.01, metadata, fontsize=6.5, color=colours["text"], ha="left",
                    va="bottom", wrap=True)
    if not points:
        for ax in axes:
            ax.text(0.5, 0.5, "no evaluated round yet", ha="center", va="center",
                    transform=ax.transAxes, color=colours["text"], fontsize=8)
        return
    xs = [p.n_labelled for p in points]
    effort = [p.pixels_changed / 1000.0 for p in points]
    dice = [p.mean_dice for p in points]
    kw = dict(color=line, marker="o", markersize=4, linewidth=2.0)
    left.plot(xs, dice, label="mean (foreground)", **kw)
    right.plot(effort, dice, **kw)
    for index, name in enumerate(class_names):
        if index == 0:
            continue  # background: near 1 and not what the loop is for
        values = [p.metrics.get(f"dice_{index}", math.nan) for p in points]
        if all(v != v for v in values):
            continue
        left.plot(xs, values, color=CLASS_LINE_COLOURS[(index - 1) % len(CLASS_LINE_COLOURS)],
                  linewidth=1.0, linestyle="--", marker=".", markersize=3, label=name)
    # At least one image either side, so a single round gets whole-number ticks too.
    pad = max(1.0, 0.05 * (max(xs) - min(xs)))
    left.set_xlim(max(0.0, min(xs) - pad), max(xs) + pad)
    for p, x, d in zip(points, xs, dice):
        left.annotate(f"r{p.round_idx}", (x, d), textcoords="offset points", xytext=(3, 4),
                      fontsize=7, color=colours["text"])
    if max(effort) <= 0:
        # Nothing corrected yet (imported labels cost nothing): a 0-1 axis, not -1..1.
        right.set_xlim(0.0, 1.0)
        right.text(0.5, 0.5, "no corrections committed yet", ha="center", va="center",
                   transform=right.transAxes, color=colours["text"], fontsize=8)
    else:
        right.set_xlim(left=0.0)
    handles, labels = left.get_legend_handles_labels()
    if len(handles) > 1:
        # Under the panels, not over the curves.
        figure.legend(handles, labels, loc="lower center", ncol=len(handles), fontsize=7,
                      frameon=False, bbox_to_anchor=(0.5, 0.06))


def export_figure(points: list[CurvePoint], *, class_names: tuple[str, ...] = (),
                  metadata: str = "") -> Any:
    """The learning curve on a white background (a matplotlib Figure without pyplot), with
    per-class curves and the run's metadata (:func:`draw_curve`)."""
    colours = {**light_colours(), "line": "#202124"}

    def draw(figure: Any, axes: list[Any], data: Any, cols: dict[str, str]) -> None:
        draw_curve(figure, axes, data, cols, class_names=class_names, metadata=metadata)

    figure = build_figure(draw, points, colours, ncols=2, size=(8.0, 3.8), dpi=100)
    # Room under the panels for the legend and the metadata line.
    figure.subplots_adjust(bottom=0.3, top=0.9)
    return figure


#: File formats :func:`write_curve` writes (by the output's suffix).
CURVE_FORMATS: tuple[str, ...] = ("png", "svg", "pdf", "csv")


def write_curve(project: Any, path: str | Path) -> Path:
    """Write the project's learning curve to ``path``; the format is the suffix
    (:data:`CURVE_FORMATS`). Figures are written atomically too (a crash leaves no half file).
    """
    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    if kind not in CURVE_FORMATS:
        raise ValueError(f"{path.name}: unknown format {kind!r}; name the file .png, .svg, "
                         ".pdf or .csv")
    points = curve_points(project)
    if kind == "csv":
        return write_csv(points, path, project.classes.names)
    figure = export_figure(points, class_names=project.classes.names,
                           metadata=curve_metadata(project))
    buffer = io.BytesIO()
    figure.savefig(buffer, format=kind, dpi=150)
    return atomic_write_bytes(path, buffer.getvalue())


def _named(key: str, class_names: tuple[str, ...]) -> str:
    prefix, _, index = key.rpartition("_")
    if prefix and index.isdigit() and int(index) < len(class_names):
        return f"{prefix}_{class_names[int(index)]}"
    return key


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.6g}"
