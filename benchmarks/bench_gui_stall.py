"""How long does napari's GUI thread stall while a round trains and scores in a worker?

A QTimer ticks every 5 ms in the GUI thread and records the gaps between ticks while the
"Active learning" widget runs a whole round (train -> evaluate -> score -> queue) on a small
synthetic project with the ``cpu`` model preset, with the live loss/Dice plot and the progress
bars updating. The longest gap is the longest the window could not repaint or answer a click.

Reference: the same round drained on the GUI thread (what a GUI without workers does) stalls
for the whole round.

Run (needs a display)::

    QT_QPA_PLATFORM=offscreen xvfb-run -a python benchmarks/bench_gui_stall.py [--steps 60]

Prints one line per measurement; the figure to quote is ``worker: longest stall``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

TICK_MS = 5
LIMIT_MS = 50.0


class StallMeter:
    """Records gaps between ticks of a fast QTimer in the GUI thread."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.gaps: list[float] = []
        #: (perf_counter at the end of the gap, gap in ms) of every gap over LIMIT_MS.
        self.long: list[tuple[float, float]] = []
        self._last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        gap = (now - self._last) * 1000.0
        self.gaps.append(gap)
        if gap > LIMIT_MS:
            self.long.append((now, gap))
        self._last = now

    def start(self) -> None:
        self.gaps.clear()
        self.long.clear()
        self._last = time.perf_counter()
        self.timer.start()

    def stop(self) -> list[float]:
        self.timer.stop()
        return list(self.gaps)


def summary(gaps: list[float]) -> str:
    if not gaps:
        return "no ticks"
    ordered = sorted(gaps)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    over = sum(g > LIMIT_MS for g in gaps)
    return (f"longest stall {max(gaps):.1f} ms, p99 {p99:.1f} ms, median "
            f"{statistics.median(gaps):.1f} ms, {over} gap(s) > {LIMIT_MS:.0f} ms, "
            f"{len(gaps)} ticks")


def make_project(folder: Path, n: int, shape: tuple[int, int]) -> Path:
    from napari_alunet.config import DataConfig
    from napari_alunet.data.sample_files import write_sample_pool
    from napari_alunet.events import drain
    from napari_alunet.importer import import_pool

    pool = write_sample_pool(folder / "pool", n, 0, shape=shape)
    data = DataConfig(test_fraction=0.25, initial_fraction=0.3, seed=0)
    return drain(import_pool(pool, folder / "project", data=data)).project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--passes", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of the round (0: the GUI's default, all cores but one)")
    parser.add_argument("--trace", action="store_true",
                        help="print every stall over the limit with the signals just before it")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the round drained on the GUI thread")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_alunet.widgets.main import ActiveLearningWidget

    with tempfile.TemporaryDirectory() as tmp:
        project_path = make_project(Path(tmp), args.images, (180, 214))
        viewer = napari.Viewer(show=True)
        widget = ActiveLearningWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Active learning")
        widget.show_tab("Train")  # the live plot is visible and redrawn
        state = widget.state
        assert widget.panel("Project").open_project(project_path)
        train = widget.panel("Train")  # the controls Start reads
        train.preset.setCurrentText("cpu")
        train.steps.setValue(args.steps)
        train.patience.setValue(0)
        train.device.setCurrentText("cpu")
        acquire = widget.panel("Acquire")
        acquire.strategy.setCurrentText("bald")
        acquire.passes.setValue(args.passes)
        acquire.k.setValue(4)
        state.settings.train = dataclasses.replace(state.settings.train, batch_size=4)
        state.torch_threads = args.threads or None
        app = QApplication.instance()
        for _ in range(20):
            app.processEvents()
        time.sleep(3.0)  # let the widgets' background warm-up imports finish
        app.processEvents()

        # -- worker: the widget's own Start, in napari's real event loop ------------------------
        from qtpy.QtCore import QEventLoop, QTimer

        meter = StallMeter()
        loop = QEventLoop()
        # Control: the same meter with nothing running; on a shared or loaded machine this is
        # the floor that no GUI code can go below.
        meter.start()
        QTimer.singleShot(3000, loop.quit)
        loop.exec()
        idle = meter.stop()

        job_over: list[float] = []

        def ended(name: str) -> None:
            if not name and not job_over:
                job_over.append(time.perf_counter())
                loop.quit()

        state.busy_changed.connect(ended)
        # --trace: what the GUI thread was told just before each long stall.
        signals: list[tuple[float, str]] = []
        for name in ("busy_changed", "round_finished", "queue_changed", "labels_changed",
                     "scores_changed", "image_requested"):
            getattr(state, name).connect(
                lambda *a, name=name: signals.append((time.perf_counter(), name)))
        state.round_event.connect(
            lambda e: signals.append((time.perf_counter(), type(e).__name__ + ":"
                                      + str(getattr(e, "stage", "")))))
        evals = []
        state.round_event.connect(lambda e: evals.append(e) if type(e).__name__ ==
                                  "EvalEvent" else None)
        meter.start()
        start = time.perf_counter()
        widget.panel("Train").start()
        loop.exec()
        during = meter.gaps[:]  # training, evaluation and scoring (the worker ran)
        QTimer.singleShot(1000, loop.quit)  # the queued image, its labels and map appear
        loop.exec()
        gaps = meter.stop()
        seconds = job_over[0] - start
        import os

        from napari_alunet.widgets._workers import gui_torch_threads

        threads = args.threads or gui_torch_threads()
        print(f"project: {args.images} images 180x214, cpu preset (128 px), {args.steps} "
              f"optimiser steps, {args.passes} MC passes, torch threads {threads} of "
              f"{os.cpu_count()} "
              f"cores, load average {os.getloadavg()[0]:.1f}; round took {seconds:.1f} s, "
              f"{len(evals)} evaluation(s) plotted")
        print(f"idle control (nothing running, 3 s): {summary(idle)}")
        print(f"worker: {summary(during)}  (while training, evaluating and scoring)")
        print(f"worker, incl. showing the queued image layers: {summary(gaps)}")
        if args.trace:
            for end, gap in meter.long:
                begin = end - gap / 1000.0
                before = [n for t, n in signals if t <= begin + 0.001][-3:]
                print(f"  stall {gap:6.1f} ms at {begin - start:6.2f} s after Start; "
                      f"signals just before: {', '.join(before) or '-'}")

        # -- reference: the same round drained on the GUI thread ------------------------------
        if not args.no_reference:
            from napari_alunet.events import drain
            from napari_alunet.loop import run_round

            project = state.project
            project.update_round(project.current_round().idx, status="complete")
            settings = dataclasses.replace(state.settings)
            meter.start()
            app.processEvents()
            t0 = time.perf_counter()
            drain(run_round(project, settings))
            app.processEvents()
            ref = meter.stop()
            print(f"reference (round on the GUI thread, {time.perf_counter() - t0:.1f} s): "
                  f"{summary(ref)}")
        state.close_project()
        viewer.close()


if __name__ == "__main__":
    main()
