"""Screenshot of the Review panel in region mode (issue 14), for docs/screenshots.

Run under a (virtual) display, as a real (xcb) window:
    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" \
        python scripts/screenshot_region_review.py docs/screenshots [STEPS]
A sample project, one round of the cpu preset (STEPS optimiser steps, default 300), regions
of 32 model-input pixels ranked by BALD across the pool; the first queued image is shown with
its regions outlined, the view zoomed to one of them.
"""
import sys
import tempfile
import time
from pathlib import Path

import napari
from PIL import Image
from qtpy.QtCore import QEventLoop, QTimer

OUT = Path(sys.argv[1]); OUT.mkdir(parents=True, exist_ok=True)
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 300
from napari_alunet.widgets.main import ActiveLearningWidget  # noqa: E402

viewer = napari.Viewer(show=True)
viewer.window._qt_window.resize(1560, 960)
widget = ActiveLearningWidget(viewer)
viewer.window.add_dock_widget(widget, name="Active learning", area="right")
state = widget.state


def wait(ms):
    loop = QEventLoop(); QTimer.singleShot(ms, loop.quit); loop.exec()


def wait_idle(timeout=1800):
    t = time.time()
    while state.busy and time.time() - t < timeout:
        wait(100)
    wait(400)


tmp = Path(tempfile.mkdtemp())
panel = widget.panel("Project")
panel.test_fraction.setValue(0.25); panel.initial_fraction.setValue(0.15)
panel.create_sample(tmp, n=24)
wait_idle()
train = widget.panel("Train")
train.preset.setCurrentText("cpu"); train.steps.setValue(STEPS); train.patience.setValue(0)
train.device.setCurrentText("cpu")
acq = widget.panel("Acquire")
acq.strategy.setCurrentText("bald"); acq.passes.setValue(8)
acq.unit.setCurrentText("region"); acq.region_size.setValue(32); acq.k.setValue(8)
train.start(); wait_idle()
review = widget.panel("Review")
review.show_next(); wait(300)
review.map_choice.setCurrentText("bald")
widget.show_tab("Review")
wait(500)
from napari._qt.dialogs.qt_notification import NapariQtNotification  # noqa: E402

for w in viewer.window._qt_window.findChildren(NapariQtNotification):
    w.close()
review.next_region(); wait(800)
img = viewer.screenshot(canvas_only=False, flash=False)
path = OUT / "review_regions.png"
im = Image.fromarray(img).convert("RGB")
im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
    path, optimize=True)
print(path, im.size, path.stat().st_size)
state.close_project()
viewer.close()
