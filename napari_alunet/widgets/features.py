"""Inside the model: the feature maps of one U-Net block for the image on screen.

The activations (one forward pass, dropout off) are computed in a worker and shown as an image
stack, one slider step per channel, scaled and shifted so that they lie over the original image:
encoder blocks show edges and textures, the bottleneck coarse context, decoder blocks the
classes taking shape.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QComboBox, QFormLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_alunet.store.records import RoundStatus
from napari_alunet.widgets import _layers
from napari_alunet.widgets._common import JobBar, group, guarded, hint, listen
from napari_alunet.widgets._display import get_display
from napari_alunet.widgets._guide import round_button_text
from napari_alunet.widgets._state import get_state


class FeaturesWidget(QWidget):
    """Choose a block, show its feature maps for the current image."""

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        self.state = get_state(napari_viewer)
        self.display = get_display(napari_viewer)
        self._stale = True

        self.block = QComboBox()
        self.block.setToolTip("enc: encoder (detail), bottleneck: context, dec: decoder, "
                              "head: class scores")
        self.image_label = QLabel("no image shown")
        self.image_label.setWordWrap(True)
        self.model_label = QLabel("")
        self.show_button = QPushButton("Show feature maps")
        self.show_button.clicked.connect(lambda: self.show_features())
        self.job_bar = JobBar(self.state, {"feature maps"})
        form = QFormLayout()
        form.addRow("Model", self.model_label)
        form.addRow("Block", self.block)
        form.addRow("Image", self.image_label)

        layout = QVBoxLayout(self)
        layout.addWidget(group("What the network sees", layout=form))
        layout.addWidget(self.show_button)
        layout.addWidget(self.job_bar)
        layout.addWidget(hint("The maps appear as the <b>alunet: features</b> layer: move its "
                              "slider to step through the channels."))
        layout.addStretch(1)

        listen(self, self.state.project_changed, self.refresh)
        listen(self, self.state.round_finished, self.refresh)
        listen(self, self.state.busy_changed, self._update)
        listen(self, self.display.changed, self._update)
        self.refresh()

    def model_round(self) -> Any:
        """The newest round with a trained model, or None."""
        project = self.state.project
        if project is None:
            return None
        for rnd in reversed(project.rounds()):
            if rnd.checkpoint and (project.path / rnd.checkpoint).is_file() \
                    and rnd.status != RoundStatus.STARTED:
                return rnd
        return None

    def refresh(self, *_: Any) -> None:
        """List the blocks of the newest model (when this panel is on screen)."""
        self._stale = True
        if self.isVisible():
            self._populate()
        self._update()

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        # Listing blocks builds the architecture (tens of ms): only for a panel someone sees,
        # not at the end of every round.
        super().showEvent(event)
        if getattr(self, "_stale", True):
            self._populate()
            self._update()

    def blocks(self) -> list[str]:
        """The block names offered (listing them now if the panel was not shown yet)."""
        if self._stale:
            self._populate()
        return [self.block.itemText(i) for i in range(self.block.count())]

    def _populate(self) -> None:

        self._stale = False
        rnd = self.model_round()
        selected = self.block.currentText()
        self.block.clear()
        if rnd is None:
            self.model_label.setText("no trained model yet")
        else:
            settings = rnd.settings
            self.block.addItems(_block_names(settings.model))
            self.model_label.setText(f"round {rnd.idx} ({settings.model.base_width} base "
                                     f"channels, {settings.model.input_size} px)")
            if selected:
                self.block.setCurrentText(selected)

    def _update(self) -> None:
        shown = self.display.current
        self.image_label.setText("no image shown (Review or Acquire)" if shown is None
                                 else shown.name)
        self.show_button.setEnabled(shown is not None and not self.state.busy
                                    and (self.block.count() > 0 or self._stale))

    @guarded
    def show_features(self, block: str | None = None) -> Any:
        """Compute the block's activations for the image on screen (in a worker)."""
        project = self.state.require_project()
        rnd = self.model_round()
        if rnd is None:
            raise ValueError("no trained model yet: run a round first "
                             f"({round_button_text(project)}, Train tab)")
        shown = self.display.current
        if shown is None:
            raise ValueError("show an image first (Review, or click a row in Acquire)")
        if self._stale:
            self._populate()
        if block:
            self.block.setCurrentText(block)  # the selector names what is shown
        block = block or self.block.currentText()

        def done(result: tuple[Any, Any]) -> None:
            activations, box = result
            name = block
            _layers.show_features(self.viewer, activations, box, name, image_id=shown.image_id)
            self.job_bar.finish(f"done: {activations.shape[0]} channels of {name} "
                                f"({activations.shape[1]} x {activations.shape[2]})")

        from napari_alunet.loop import feature_maps

        return self.state.start_job(
            "feature maps", lambda: feature_maps(project, rnd.idx, shown.image_id, block),
            on_done=done, uses_torch=True,
        )


def _block_names(model_config: Any) -> list[str]:
    """Block names of the architecture, without allocating its weights (meta device)."""
    from napari_alunet.config import to_dict

    key = tuple(sorted(to_dict(model_config).items()))
    if key not in _BLOCKS:
        _BLOCKS[key] = _build_block_names(model_config)
    return list(_BLOCKS[key])


_BLOCKS: dict[tuple[Any, ...], list[str]] = {}


def _build_block_names(model_config: Any) -> list[str]:
    import torch

    from napari_alunet.model import build_model
    from napari_alunet.model.features import list_blocks

    try:
        with torch.device("meta"):
            return list_blocks(build_model(model_config))
    except (RuntimeError, NotImplementedError):
        return list_blocks(build_model(model_config))


