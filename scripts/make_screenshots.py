"""Screenshots of the widgets in use on a sample project, for the README.

Run under a (virtual) display, as a real (xcb) window: the offscreen platform has no GL context
and leaves the canvas black:
    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" \
        python scripts/make_screenshots.py docs/screenshots [STEPS] [N_IMAGES]
Trains three rounds with the cpu preset and the default recipe on a synthetic pool (STEPS 0:
the automatic budget; about 5 minutes a round on 2 cores).
"""
import sys
import tempfile
import time
from pathlib import Path

import napari
from PIL import Image
from qtpy.QtCore import QEventLoop, QTimer
from qtpy.QtWidgets import QApplication

OUT = Path(sys.argv[1]); OUT.mkdir(parents=True, exist_ok=True)
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 0
N = int(sys.argv[3]) if len(sys.argv) > 3 else 40
from napari_alunet.widgets.main import PANELS, ActiveLearningWidget

viewer = napari.Viewer(show=True)
viewer.window._qt_window.resize(1560, 960)
widget = ActiveLearningWidget(viewer)
dock = viewer.window.add_dock_widget(widget, name="Active learning", area="right")
state = widget.state
app = QApplication.instance()

def wait(ms):
    loop = QEventLoop(); QTimer.singleShot(ms, loop.quit); loop.exec()

def wait_idle(timeout=1200):
    t = time.time()
    while state.busy and time.time() - t < timeout:
        wait(100)
    wait(400)

def shot(name, tab):
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    widget.show_tab(tab)
    wait(300)
    for w in viewer.window._qt_window.findChildren(NapariQtNotification):
        w.close()
    wait(800)
    img = viewer.screenshot(canvas_only=False, flash=False)
    im = Image.fromarray(img).convert("RGB")
    path = OUT / f"{name}.png"
    im.save(path, optimize=True)
    if path.stat().st_size > 390_000:  # fewer colours rather than fewer pixels: text stays sharp
        im.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    print(name, im.size, path.stat().st_size)
    if name == "review":
        (OUT / "overview.png").write_bytes(path.read_bytes())

tmp = Path(tempfile.mkdtemp())
panel = widget.panel("Project")
panel.test_fraction.setValue(0.25); panel.initial_fraction.setValue(0.1)
panel.create_sample(tmp, n=N)
wait_idle()
train = widget.panel("Train")
train.preset.setCurrentText("cpu"); train.steps.setValue(STEPS); train.patience.setValue(0)
train.device.setCurrentText("cpu")
acq = widget.panel("Acquire"); acq.strategy.setCurrentText("bald"); acq.passes.setValue(8); acq.k.setValue(4)
shot("project", "Project")
for rnd in range(3):
    train.start(); wait_idle()
    if rnd == 0:
        # The first model, trained on the 4 initially labelled images: what a researcher
        # corrects first (issue "few labels": it must look like an embryo).
        review = widget.panel("Review")
        review.map_choice.setCurrentText("bald")
        shot("review_round0", "Review")
    if rnd < 2:
        widget.panel("Review").oracle(); wait_idle()
shot("train", "Train")
# Acquire: recompute with entropy, show the top image with its map
acq.strategy.setCurrentText("entropy"); acq.compute(); wait_idle()
acq.table.selectRow(0); acq.table.cellClicked.emit(0, 0); wait(300)
shot("acquire", "Acquire")
# Review: the first queued image, with a stroke being painted
review = widget.panel("Review")
review.show_next(); wait(300)
review.map_choice.setCurrentText("bald")
shot("review", "Review")
# The image browser (issue 17): the unlabelled pool, one image selected to add to the queue.
review.browser.filter.setCurrentText("unlabelled")
review.browser.list.setCurrentRow(0)
scroll = widget.tabs.widget([t for t, _ in PANELS].index("Review"))
widget.show_tab("Review"); wait(200)
scroll.ensureWidgetVisible(review.browser, 0, 40)
shot("review_browser", "Review")
scroll.verticalScrollBar().setValue(0)
shot("rounds", "Rounds")
# The exported learning curve, as a paper would print it (white, per-class, metadata).
widget.panel("Rounds").export("png", OUT / "learning_curve_export.png")
feat = widget.panel("Model")
feat.block.setCurrentText("enc1")
feat.show_features("enc1"); wait_idle()
viewer.dims.set_current_step(0, 3)
shot("features", "Model")
state.close_project()
viewer.close()

