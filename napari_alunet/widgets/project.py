"""Project: import a pool folder, create a sample project, open a project; pools and classes.

Opening a project restores everything the other widgets show (settings of the newest round,
the review queue, the learning curve); see :class:`~napari_alunet.widgets._state.AppState`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_alunet.config import DataConfig
from napari_alunet.store import ProjectLockedError
from napari_alunet.widgets._common import JobBar, group, guarded, hint, listen, row, swatch
from napari_alunet.widgets._display import get_display
from napari_alunet.widgets._guide import round_button_text, status_text
from napari_alunet.widgets._state import get_state, notify_info, notify_warning

LAYOUTS_HINT = (
    "A pool folder holds <b>images/</b> and either <b>GT_ICM/ GT_TE/ GT_ZP/</b> (binary masks), "
    "<b>masks/</b> (colour masks) or nothing else (no ground truth)."
)


class ProjectWidget(QWidget):
    """Create, import or open a project; shows its pools, round and classes."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.state = get_state(napari_viewer)
        get_display(napari_viewer)
        self._locked_path: Path | None = None

        # -- open -------------------------------------------------------------------------------
        self.path_label = QLabel("no project open")
        self.path_label.setWordWrap(True)
        self.open_button = QPushButton("Open project...")
        self.open_button.setToolTip("Open a project folder (it holds project.db)")
        self.open_button.clicked.connect(lambda: self.open_project())
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.close_project)
        self.locked_label = QLabel()
        self.locked_label.setWordWrap(True)
        self.read_only_button = QPushButton("Open read-only")
        self.read_only_button.setToolTip("Look at the project without changing it")
        self.read_only_button.clicked.connect(self._open_locked_read_only)
        self.locked_box = QWidget()
        locked_layout = QVBoxLayout(self.locked_box)
        locked_layout.setContentsMargins(0, 0, 0, 0)
        locked_layout.addWidget(self.locked_label)
        locked_layout.addWidget(self.read_only_button)
        self.locked_box.hide()
        open_box = group("Project", self.path_label, row(self.open_button, self.close_button),
                         self.locked_box)

        # -- import -----------------------------------------------------------------------------
        self.source_edit = QLineEdit()
        self.source_edit.setPlaceholderText("pool folder (holds images/)")
        source_button = QPushButton("...")
        source_button.setMaximumWidth(32)
        source_button.clicked.connect(lambda: self._browse(self.source_edit, "Pool folder"))
        self.dest_edit = QLineEdit()
        self.dest_edit.setPlaceholderText("new project folder")
        dest_button = QPushButton("...")
        dest_button.setMaximumWidth(32)
        dest_button.clicked.connect(lambda: self._browse(self.dest_edit, "New project folder"))
        self.test_fraction = _fraction(0.2, "Share of images with ground truth kept as the fixed "
                                            "test set (never trained on)")
        self.initial_fraction = _fraction(0.1, "Share of images with ground truth labelled from "
                                               "the start (round 0 trains on them)")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("Seed of the pool split: the same seed gives the same split")
        self.import_button = QPushButton("Import")
        self.import_button.clicked.connect(lambda: self.import_folder())
        form = QFormLayout()
        form.addRow("Pool folder", row(self.source_edit, source_button))
        form.addRow("Project folder", row(self.dest_edit, dest_button))
        form.addRow("Test fraction", self.test_fraction)
        form.addRow("Initially labelled", self.initial_fraction)
        form.addRow("Split seed", self.seed)
        form.addRow(hint(LAYOUTS_HINT))
        form.addRow(self.import_button)
        import_box = group("New project from a pool folder", layout=form)

        # -- sample -----------------------------------------------------------------------------
        self.sample_n = QSpinBox()
        self.sample_n.setRange(8, 2000)
        self.sample_n.setValue(40)
        self.sample_button = QPushButton("Create sample project...")
        self.sample_button.setToolTip("Write synthetic blastocysts with ground truth into a "
                                      "folder you choose and import them")
        self.sample_button.clicked.connect(lambda: self.create_sample())
        sample_box = group("Try it", row(QLabel("Images"), self.sample_n, self.sample_button))

        # -- pools and classes ------------------------------------------------------------------
        self.counts_label = QLabel("-")
        self.counts_label.setWordWrap(True)
        self.classes_list = QListWidget()
        self.classes_list.setMaximumHeight(110)
        pool_box = group("Pools and classes", self.counts_label, self.classes_list)

        self.job_bar = JobBar(self.state, {"import", "sample project"})
        layout = QVBoxLayout(self)
        for widget in (open_box, import_box, sample_box, self.job_bar, pool_box):
            layout.addWidget(widget)
        layout.addStretch(1)

        listen(self, self.state.project_changed, self.refresh)
        listen(self, self.state.project_changed, self._refresh_buttons)
        listen(self, self.state.labels_changed, self.refresh)
        listen(self, self.state.round_finished, self.refresh)
        listen(self, self.state.busy_changed, self._busy)
        self._refresh_buttons()
        self.refresh()

    # -- actions ------------------------------------------------------------------------------
    @guarded
    def open_project(self, path: str | Path | None = None, *, read_only: bool = False) -> bool:
        """Open ``path`` (asks with a dialog when None). Returns True when opened."""
        if path is None:
            path = QFileDialog.getExistingDirectory(self, "Open a napari-alunet project")
            if not path:
                return False
        self.locked_box.hide()
        try:
            project = self.state.open_project(path, read_only=read_only)
        except ProjectLockedError as exc:
            # Not an error to dismiss: offer the way out right here.
            self._locked_path = Path(path)
            self.locked_label.setText(f"{exc}")
            self.locked_box.show()
            notify_warning(str(exc))
            return False
        suffix = " (read-only)" if project.read_only else ""
        notify_info(f"opened {project.path}{suffix}")
        return True

    def _open_locked_read_only(self) -> None:
        if self._locked_path is not None:
            self.open_project(self._locked_path, read_only=True)

    @guarded
    def close_project(self) -> None:
        if self.state.busy:
            raise RuntimeError("a job is running: press Stop first")
        self.state.close_project()

    @guarded
    def import_folder(self, source: str | Path | None = None,
                      destination: str | Path | None = None) -> Any:
        """Import a pool folder into a new project folder (in a worker), then open it."""
        source = Path(source or self.source_edit.text().strip())
        destination = Path(destination or self.dest_edit.text().strip())
        if not str(source) or str(source) == ".":
            raise ValueError("choose the pool folder to import (it holds images/)")
        if not str(destination) or str(destination) == ".":
            raise ValueError("choose a new, empty folder for the project")
        data = self._data_config()
        from napari_alunet.importer import import_pool

        return self.state.start_job(
            "import", lambda: import_pool(source, destination, data=data),
            on_done=self._imported,
        )

    @guarded
    def create_sample(self, folder: str | Path | None = None, *, n: int | None = None,
                      shape: tuple[int, int] | None = None, seed: int = 0) -> Any:
        """Write a synthetic pool to ``folder/alunet-sample-pool`` and import it as
        ``folder/alunet-sample-project`` (asks for the folder when None)."""
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Folder for the sample project")
            if not folder:
                return None
        folder = Path(folder)
        pool = _free(folder / "alunet-sample-pool")
        project = _free(folder / "alunet-sample-project")
        n = int(n or self.sample_n.value())
        data = self._data_config()
        from napari_alunet.importer import import_sample

        return self.state.start_job(
            "sample project",
            lambda: import_sample(pool, project, n, seed, shape=shape, data=data),
            on_done=self._imported,
        )

    def _imported(self, summary: Any) -> None:
        self.job_bar.finish(f"done: imported {sum(summary.counts.values())} images")
        counts = ", ".join(f"{k} {v}" for k, v in summary.counts.items())
        message = f"imported {summary.project} ({summary.layout} layout): {counts}"
        if summary.without_masks:
            message += f"; {len(summary.without_masks)} image(s) without masks are unlabelled"
        warnings = getattr(summary, "warnings", [])
        if warnings:
            message += (f"; check {len(warnings)} mask(s) missing a class the others have: "
                        + "; ".join(warnings[:3]) + (" ..." if len(warnings) > 3 else ""))
        notify_info(message)
        self.open_project(summary.project)

    def _data_config(self) -> DataConfig:
        return DataConfig(test_fraction=self.test_fraction.value(),
                          initial_fraction=self.initial_fraction.value(), seed=self.seed.value())

    def _browse(self, edit: QLineEdit, title: str) -> None:
        path = QFileDialog.getExistingDirectory(self, title)
        if path:
            edit.setText(path)

    # -- display ------------------------------------------------------------------------------
    def _refresh_buttons(self, *_: Any) -> None:
        self._busy(self.state.job.name if self.state.job else "")

    def _busy(self, name: str) -> None:
        idle = not name
        for button in (self.open_button, self.import_button, self.sample_button):
            button.setEnabled(idle)
        # Nothing to close without a project (issue 17).
        self.close_button.setEnabled(idle and self.state.project is not None)

    def refresh(self) -> None:
        project = self.state.project
        self.classes_list.clear()
        if project is None:
            self.path_label.setText("no project open")
            self.counts_label.setText("Open a project, import a pool folder, or create a sample "
                                      "project to start.")
            return
        mode = "  <b>[read-only]</b>" if project.read_only else ""
        self.path_label.setText(f"<b>{project.path.name}</b>{mode}<br><small>{project.path}"
                                "</small>")
        counts = project.counts()
        current = project.current_round()
        text = (f"<b>{counts['labelled']}</b> labelled, <b>{counts['unlabelled']}</b> unlabelled, "
                f"<b>{counts['test']}</b> test images")
        if current is None:
            text += f"<br>No round yet: press <b>{round_button_text(project)}</b> (Train)."
        else:
            pending = len(project.queue(current.idx))
            text += f"<br>Round {current.idx}: {status_text(current.status)}"
            if pending:
                text += f", {pending} image(s) waiting for review"
        self.counts_label.setText(text)
        classes = project.classes
        for index, (name, rgb) in enumerate(zip(classes.names, classes.colours)):
            self.classes_list.addItem(QListWidgetItem(swatch(rgb), f"{index}  {name}"))


def _fraction(value: float, tip: str) -> QDoubleSpinBox:
    box = QDoubleSpinBox()
    box.setRange(0.0, 0.95)
    box.setSingleStep(0.05)
    box.setDecimals(2)
    box.setValue(value)
    box.setToolTip(tip)
    return box


def _free(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``... whichever does not exist yet."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


