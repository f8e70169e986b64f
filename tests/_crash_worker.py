"""Worker processes for the crash-safety tests, and helpers shared by the robustness tests.

Run as a script it is a *fork server*::

    python tests/_crash_worker.py serve

It imports the heavy modules (torch, the model, the engine, the scorer, the store) once, prints
``READY`` and then reads one JSON job per line from stdin: ``{"task": ..., "args": {...},
"out": path}``. For each job it forks a child, answers ``PID <pid>`` and goes on reading. The
child sends its stdout and stderr to ``out`` and runs the task, printing one line (flushed) per
thing that *returned*: a commit, a progress event, a stage. The test kills the child with
SIGKILL at a seeded random moment and then checks the project. Importing torch costs about 5 s of
CPU here; forking a warm server costs milliseconds, so each kill gets its own long-lived process
without paying for the import each time.

``python tests/_crash_worker.py run TASK JSON_ARGS`` runs one task in the foreground (debugging).

Line protocol (all fields space separated):

``READY``                           the project is open (commit) or the task has started
``C image_id version_id sha rel``  commit_label returned this version
``U version_id``                    undo_last_commit returned (withdrew) this version
``S epoch step``                    the training engine yielded a StepEvent
``E step``                          ... an EvalEvent
``G stage``                         run_round yielded StageEvent(stage)
``Q done total stage``              the scorer yielded ScoreProgress
``P done total stage``              the importer yielded ImportProgress
``DONE ...``                        the task finished
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


# -- shared helpers (imported by the tests) -----------------------------------------------------
def embryo_labels(h: int, w: int, shift: int = 0) -> np.ndarray:
    """A small hand-made blastocyst: ZP ring, TE lining, ICM blob, cavity (BL)."""
    yy, xx = np.mgrid[:h, :w]
    cy, cx = h / 2, w / 2 + shift
    r = np.hypot(yy - cy, xx - cx)
    rad = min(h, w) / 2 - 2
    labels = np.zeros((h, w), np.uint8)
    labels[r < rad] = 3
    labels[r < rad * 0.75] = 2
    labels[r < rad * 0.55] = 4
    labels[(np.hypot(yy - cy + rad * 0.3, xx - cx) < rad * 0.25) & (r < rad * 0.75)] = 1
    return labels


def write_binary_pool(root: Path, n: int = 10, h: int = 40, w: int = 50, *,
                      names: list[str] | None = None, seed: int = 0) -> Path:
    """The public binary layout (images/ + GT_ICM/ GT_TE/ GT_ZP/), BMP files, ``n`` images."""
    from PIL import Image

    root = Path(root)
    for sub in ("images", "GT_ICM", "GT_TE", "GT_ZP"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = names or [f"Blast_PCRM_{1201750 + i} D5" for i in range(n)]
    for i, name in enumerate(names):
        labels = embryo_labels(h, w, shift=i % 5 - 2)
        image = (110 + 25 * (labels == 3) - 20 * (labels == 4) + 15 * (labels == 1)
                 + rng.normal(0, 8, (h, w))).clip(0, 255)
        Image.fromarray(image.astype(np.uint8)).save(root / "images" / f"{name}.BMP")
        for cls, idx in (("ICM", 1), ("TE", 2), ("ZP", 3)):
            mask = (labels == idx).astype(np.uint8) * 255
            Image.fromarray(mask).save(root / f"GT_{cls}" / f"{name} {cls}_Mask.bmp")
    return root


def tree(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (links listed, not followed)."""
    out = {}
    root = Path(root)
    for folder, _dirs, files in os.walk(root):
        for name in files:
            p = Path(folder) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link->" + os.readlink(p)
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def db_rows(project_dir: Path) -> dict[str, list[tuple]]:
    """Every row of every table of a project's database, read through a fresh connection."""
    uri = (Path(project_dir) / "project.db").resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in tables}
    finally:
        conn.close()


def integrity_ok(project_dir: Path) -> str:
    uri = (Path(project_dir) / "project.db").resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        return ";".join(r[0] for r in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


# -- tasks (run in a forked child) --------------------------------------------------------------
def _say(*parts: Any) -> None:
    print(" ".join(str(p) for p in parts), flush=True)


def task_commit(project: str, seed: int, undo_every: int = 5) -> None:
    """Commit random labels to random non-test images forever; undo every ``undo_every``-th."""
    from napari_alunet.store import Project

    rng = np.random.default_rng(seed)
    with Project.open(project, timeout=10) as proj:
        n_classes = proj.classes.n_classes
        records = [r for r in proj.images() if r.pool != "test"]
        _say("READY")
        i = 0
        while True:
            i += 1
            rec = records[int(rng.integers(len(records)))]
            labels = rng.integers(0, n_classes, (rec.height, rec.width)).astype(np.uint8)
            v = proj.commit_label(rec.id, labels, source="human", author="crash-test",
                                  seconds_spent=float(i))
            _say("C", v.image_id, v.id, v.sha256, v.rel_path)
            if undo_every and i % undo_every == 0:
                u = proj.undo_last_commit()
                if u is not None:
                    _say("U", u.id)


def round_settings(epochs: int = 6, passes: int = 4, k: int = 2, score_batch: int = 2) -> Any:
    from napari_alunet.config import AcquisitionConfig, TrainConfig, model_preset
    from napari_alunet.loop import RoundSettings

    return RoundSettings(
        model=model_preset("tiny"),
        train=TrainConfig(epochs=epochs, patience=0, batch_size=2, device="cpu", seed=0,
                          validation_fraction=0.25, health_min_dice=0.0),
        acquisition=AcquisitionConfig(strategy="bald", passes=passes, k=k,
                                      batch_size=score_batch, seed=0),
    )


def _emit(event: Any) -> None:
    name = type(event).__name__
    if name == "StepEvent":
        _say("S", event.step, event.steps)
    elif name == "EvalEvent":
        _say("E", event.step)
    elif name == "StageEvent":
        _say("G", event.stage)
    elif name == "ScoreProgress":
        _say("Q", event.done, event.total, event.stage)
    else:
        _say("X", name)


def task_round(project: str, settings: dict[str, Any] | None = None,
               stop_after: str | None = None) -> None:
    """``run_round`` on the project (the tiny preset), printing every event."""
    from napari_alunet.loop import run_round
    from napari_alunet.store import Project

    with Project.open(project, timeout=10) as proj:
        _say("READY")
        gen = run_round(proj, round_settings(**(settings or {})), device="cpu",
                        stop_after=stop_after)
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                _say("DONE", stop.value.status)
                return
            _emit(event)


def task_import(src: str, dst: str) -> None:
    from napari_alunet.config import DataConfig
    from napari_alunet.importer import import_pool

    _say("READY")
    gen = import_pool(src, dst, data=DataConfig(test_fraction=0.2, initial_fraction=0.2,
                                                seed=0, input_size=32))
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            _say("DONE", sum(stop.value.counts.values()))
            return
        _say("P", event.done, event.total, event.stage)


def task_hold(project: str, seconds: float, read_only: bool = False) -> None:
    """Open a project (writer or reader), say so, keep it open ``seconds``, close."""
    import time

    from napari_alunet.store import Project

    with Project.open(project, read_only=read_only):
        _say("READY")
        time.sleep(seconds)
    _say("DONE")


TASKS = {"commit": task_commit, "round": task_round, "import": task_import, "hold": task_hold}


# -- the fork server ------------------------------------------------------------------------------
def _preload() -> None:
    import torch

    # The first optimiser imports torch._dynamo (about 3 s): do it once here. Building an
    # optimiser runs no tensor op, so no OpenMP thread pool exists yet when we fork.
    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])

    from PIL import BmpImagePlugin, Image, PngImagePlugin

    from napari_alunet.data import io

    del BmpImagePlugin, Image, PngImagePlugin, io  # imported for their side effect: warm caches


def _child(job: dict[str, Any]) -> None:
    code = 1
    try:
        fd = os.open(job["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.close(0)
        import torch

        torch.set_num_threads(1)  # several workers share two cores
        TASKS[job["task"]](**job.get("args", {}))
        code = 0
    except BaseException:  # noqa: BLE001 - report anything, then leave without cleanup
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _lines(path: str) -> list[str]:
    try:
        with open(path) as fh:
            return fh.read().split("\n")[:-1]  # a line cut by a kill has no newline: not counted
    except FileNotFoundError:
        return []


def serve() -> None:
    """Fork a child per job and kill it with SIGKILL when its trigger fires.

    A job's ``kill`` is ``{"prefix": p, "count": k, "jitter": s}``: once the child has printed
    ``k`` complete lines starting with ``p``, wait ``s`` seconds and send SIGKILL. The server
    does nothing else, so the kill comes on time even while the test process is busy checking
    another project. For each job it answers ``PID <pid>`` and, once the child is gone (reaped,
    so its file locks are released), ``END <pid> killed|exit=<code>``.
    """
    import select
    import time

    _preload()
    _say("READY")
    buffer = b""
    running: dict[int, dict[str, Any]] = {}
    stdin_open = True
    while stdin_open or running:
        ready, _, _ = select.select([0] if stdin_open else [], [], [], 0.002 if running else None)
        if ready:
            chunk = os.read(0, 65536)
            stdin_open = bool(chunk)
            buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if not line.strip():
                continue
            job = json.loads(line)
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _child(job)
            running[pid] = {"job": job, "fire_at": None, "started": time.monotonic()}
            _say("PID", pid)
        for pid, state in list(running.items()):
            kill = state["job"].get("kill")
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                del running[pid]
                _say("END", pid, f"exit={os.waitstatus_to_exitcode(status)}")
                continue
            now = time.monotonic()
            if kill and state["fire_at"] is None and sum(
                    ln.startswith(kill["prefix"]) for ln in _lines(state["job"]["out"])
            ) >= kill["count"]:
                state["fire_at"] = now + kill["jitter"]
            too_long = now - state["started"] > state["job"].get("timeout", 120)
            if (state["fire_at"] is not None and now >= state["fire_at"]) or too_long:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                del running[pid]
                _say("END", pid, "timeout" if too_long else "killed")


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve()
    elif sys.argv[1] == "run":
        TASKS[sys.argv[2]](**json.loads(sys.argv[3] if len(sys.argv) > 3 else "{}"))
        _say("DONE")
    else:
        raise SystemExit(f"usage: {sys.argv[0]} serve | run TASK JSON_ARGS")
