"""The project never writes outside its folder, whatever the names of the files it imports.

A pool whose images are named with ``..``, backslashes, drive letters, very long names,
unicode, spaces, newlines and shell syntax is imported into a sandbox; then labels are committed,
a round trains and scores, and the labels are exported. A Python audit hook records every write
the process makes (file opened for writing, mkdir, rename, remove, SQLite database opened): each
must lie inside the project, inside the export folder, or (for the import only) inside its
staging folder next to the project, which is renamed into place.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from _crash_worker import round_settings, write_binary_pool

from napari_alunet.config import DataConfig
from napari_alunet.events import drain
from napari_alunet.export import export_labels
from napari_alunet.fileio import TEMP_PREFIX
from napari_alunet.importer import import_pool, safe_file_name
from napari_alunet.store import Project

HOSTILE_NAMES = [
    "..\\..\\..\\escape",
    "\\etc\\passwd",
    "C:\\Windows\\System32\\evil",
    " ..x.. ",
    "a..b",
    "x" * 238,
    "胚盤胞 ø é 🧫 embryo",
    "  spaces  in  the  name  ",
    "-rf --no-preserve-root",
    "new\nline",
    "tab\there",
    "%2e%2e%2fetc%2fpasswd",
    "$(touch PWNED); `id`",
    "Blast_PCRM_1201754 D5",
]

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_WRITE_EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree",
                 "os.symlink", "os.link", "os.truncate", "os.chmod", "tempfile.mkstemp",
                 "tempfile.mkdtemp", "sqlite3.connect"}
_RECORDING: list[list[tuple[str, str]]] = []


def _audit(event: str, args: tuple) -> None:
    if not _RECORDING:
        return
    paths: list = []
    if event == "open":
        path, mode, flags = args
        if isinstance(path, int):
            return
        writes = (flags or 0) & _WRITE_FLAGS or (mode and any(c in mode for c in "wax+"))
        if writes:
            paths = [path]
    elif event in _WRITE_EVENTS:
        paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
        if event == "sqlite3.connect" and paths and str(paths[0]).startswith("file:"):
            paths = [str(paths[0])[5:].split("?")[0]]
    for p in paths:
        p = os.fsdecode(p)
        if "__pycache__" in p:  # the interpreter caching bytecode, not us
            continue
        _RECORDING[-1].append((event, p))


sys.addaudithook(_audit)  # cannot be removed: it records only inside `recording()`


@contextmanager
def recording():
    log: list[tuple[str, str]] = []
    _RECORDING.append(log)
    try:
        yield log
    finally:
        _RECORDING.pop()


def _outside(log: list[tuple[str, str]], *allowed: Path) -> list[tuple[str, str]]:
    from urllib.parse import unquote

    roots = [os.path.realpath(a) for a in allowed]
    bad = []
    for event, p in log:
        real = os.path.realpath(unquote(p) if event == "sqlite3.connect" else p)
        if not any(real == r or real.startswith(r + os.sep) for r in roots):
            bad.append((event, p))
    return bad


@pytest.fixture(scope="module", autouse=True)
def warm_imports():
    """Import what the round needs before recording. Imports are not the project writing:
    Python caches bytecode, and torch's first optimiser imports torch._dynamo, which creates an
    empty cache folder /tmp/torchinductor_<user> (once per process, torch's own doing)."""
    import torch

    import napari_alunet.loop
    import napari_alunet.scoring
    import napari_alunet.training.engine  # noqa: F401

    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])


def test_hostile_names_stay_inside_the_project(tmp_path):
    sandbox = tmp_path / "sandbox"
    pool = write_binary_pool(sandbox / "pool", h=32, w=40, names=HOSTILE_NAMES)
    project_dir = sandbox / "projects" / "my project"
    out = sandbox / "export out"
    staging_prefix = str(project_dir.parent / f"{TEMP_PREFIX}import-{project_dir.name}")
    before = {p for p in sandbox.rglob("*")}

    with recording() as log:
        summary = drain(import_pool(pool, project_dir, data=DataConfig(
            test_fraction=0.2, initial_fraction=0.3, input_size=32)))
    # A name starting with '.' is a hidden file: ignored and reported, like .DS_Store.
    hidden = [n for n in HOSTILE_NAMES if n.startswith(".")]
    kept = [n for n in HOSTILE_NAMES if not n.startswith(".")]
    assert hidden and all(any(n in s and "hidden" in s for s in summary.ignored) for n in hidden)
    assert sum(summary.counts.values()) == len(kept)
    # Allowed besides the project: its staging folder, and creating the folder the user named
    # as the project's parent.
    import_writes = [(e, p) for e, p in log if not p.startswith(staging_prefix)
                     and (e, p) != ("os.mkdir", str(project_dir.parent))]
    assert _outside(import_writes, project_dir) == []
    assert any(p.startswith(staging_prefix) for _e, p in log)  # built aside, then renamed
    # Only the project was added next to the pool: the staging folder is gone.
    assert sorted(p.name for p in project_dir.parent.iterdir()) == ["my project"]

    with recording() as log, Project.open(project_dir) as project:
        names = {r.name for r in project.images()}
        assert names == set(kept)  # names kept exactly, for display and export
        for rec in project.images():
            stored = project_dir / rec.rel_path
            assert stored.resolve().parent == (project_dir / "images").resolve()
            assert len(stored.name.encode()) <= 100 and stored.name.isascii()
            if rec.pool != "test":
                project.commit_label(rec.id, np.ones((rec.height, rec.width), np.uint8))
        from napari_alunet.loop import run_round

        report = drain(run_round(project, round_settings(epochs=1), device="cpu"))
        assert report.status == "queued"
        written = export_labels(project, out, ground_truth=True, colour=True)
        assert project.verify() == []
    assert _outside(log, project_dir, out) == []
    assert len(written) == len(kept)
    for path in written:
        assert path.resolve().parent == out.resolve()

    # Nothing anywhere else in the sandbox changed or appeared.
    after = {p for p in sandbox.rglob("*")}
    new = {p for p in after - before
           if not (p.is_relative_to(project_dir) or p.is_relative_to(out))}
    assert new == {project_dir.parent}  # the folder the user named to hold the project
    assert not (sandbox / "PWNED").exists() and not Path("PWNED").exists()


def test_export_names_cannot_escape(tmp_path):
    from napari_alunet.export import export_name

    for name in HOSTILE_NAMES + ["..", ".", "", "/", "../../x", "/abs/path", "a/../../b", "\x00"]:
        cleaned = export_name(name)
        target = (tmp_path / (cleaned + ".png")).resolve()
        assert target.parent == tmp_path.resolve(), (name, cleaned)


def test_safe_file_names_are_bounded_and_tame():
    for i, name in enumerate(HOSTILE_NAMES + ["..", "/", "\x00", "é" * 300], start=1):
        for suffix in (".BMP", ".png/../../x", "\\..\\x"):
            safe = safe_file_name(i, name, suffix)
            assert "/" not in safe and "\\" not in safe and "\x00" not in safe
            assert not safe.startswith(".") and ".." not in safe.split("_", 1)[1][:2]
            assert safe.startswith(f"{i:06d}_") and len(safe) <= 6 + 1 + 80 + 8


def test_export_does_not_merge_two_images_into_one_file(tmp_path):
    pool = write_binary_pool(tmp_path / "pool", n=2, h=32, w=40, names=["a\\b", "a_b"])
    project_dir = tmp_path / "project"
    drain(import_pool(pool, project_dir, data=DataConfig(test_fraction=0.0, initial_fraction=0.0)))
    with Project.open(project_dir) as project:
        for value, rec in enumerate(project.images(), start=1):
            project.commit_label(rec.id, np.full((rec.height, rec.width), value, np.uint8))
        written = export_labels(project, tmp_path / "out")
    assert len(set(written)) == 2


def test_predict_does_not_merge_two_images_into_one_file(tmp_path):
    """Issue 12, class 5: names that map to one output name get the export rule's suffix."""
    from PIL import Image

    from napari_alunet.config import model_preset
    from napari_alunet.model import build_model
    from napari_alunet.predict import predict_folder
    from napari_alunet.training.checkpoint import save_checkpoint

    config = model_preset("tiny")
    save_checkpoint(tmp_path / "m.pt", build_model(config), model_config=config)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("a\\b.png", "a_b.png"):
        Image.fromarray(np.full((20, 24), 100, np.uint8)).save(folder / name)
    drain(predict_folder(tmp_path / "m.pt", folder, tmp_path / "out", method="softmax",
                         device="cpu"))
    masks = sorted(p.name for p in (tmp_path / "out" / "masks").iterdir())
    assert len(masks) == 2 and "a_b.png" in masks
