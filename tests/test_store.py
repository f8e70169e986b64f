"""The project store: transactions, label versions, undo, rounds, resume and locking."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_alunet.config import ClassSpec, DataConfig
from napari_alunet.fileio import TEMP_PREFIX
from napari_alunet.store import Project, ProjectError, ProjectLockedError


def _row(image_id: int, pool: str = "unlabelled", h: int = 6, w: int = 8) -> dict:
    return dict(id=image_id, name=f"img{image_id}", source_name=f"img{image_id}.png",
                rel_path=f"images/{image_id:06d}_img.png", sha256="0" * 64, height=h, width=w,
                pool=pool, labelled_round=None, gt_path=None, gt_sha256=None)


@pytest.fixture
def project(tmp_path):
    proj = Project.create(tmp_path / "proj", data=DataConfig(seed=3))
    proj.import_rows([_row(1), _row(2), _row(3, "test")])
    yield proj
    proj.close()


def test_create_refuses_non_empty_folder(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file.txt").write_text("x")
    with pytest.raises(ProjectError, match="not an empty folder"):
        Project.create(tmp_path / "taken")


def test_open_refuses_non_project(tmp_path):
    with pytest.raises(ProjectError, match="not a napari-alunet project"):
        Project.open(tmp_path)


def test_settings_round_trip(project):
    assert project.classes == ClassSpec()
    assert project.data_config.seed == 3
    project.set_setting("note", {"a": [1, 2]})
    assert project.get_setting("note") == {"a": [1, 2]}


def test_commit_moves_image_to_labelled_and_writes_file(project):
    labels = np.zeros((6, 8), np.uint8)
    labels[1:3, 2:5] = 2
    version = project.commit_label(1, labels, source="human", round_index=1, seconds_spent=4.5)
    assert project.image(1).pool == "labelled"
    assert project.image(1).labelled_round == 1
    assert (project.path / version.rel_path).is_file()
    np.testing.assert_array_equal(project.read_label(1), labels)
    assert version.pixels_changed == 6  # from scratch: the foreground pixels
    assert version.pixels_foreground == 6
    assert project.counts() == {"labelled": 1, "unlabelled": 1, "test": 1}


def test_pixels_changed_against_reference(project):
    reference = np.ones((6, 8), np.uint8)
    labels = reference.copy()
    labels[0, :3] = 4
    version = project.commit_label(2, labels, reference=reference)
    assert version.pixels_changed == 3


def test_commit_rejects_bad_labels_and_leaves_nothing(project):
    with pytest.raises(ValueError, match="original image size"):
        project.commit_label(1, np.zeros((5, 8), np.uint8))
    with pytest.raises(ValueError, match="outside 0..4"):
        project.commit_label(1, np.full((6, 8), 7, np.uint8))
    with pytest.raises(ProjectError, match="test pool"):
        project.commit_label(3, np.zeros((6, 8), np.uint8))
    assert project.label_history(1) == []
    assert project.image(1).pool == "unlabelled"
    assert list((project.path / "masks" / "labels").iterdir()) == []


def test_undo_restores_previous_version_then_pool(project):
    first = np.zeros((6, 8), np.uint8)
    second = first.copy()
    second[0, 0] = 1
    project.commit_label(1, first)
    project.commit_label(1, second)
    undone = project.undo_last_commit()
    assert undone is not None and undone.active
    np.testing.assert_array_equal(project.read_label(1), first)
    assert project.image(1).pool == "labelled"
    project.undo_last_commit()
    assert project.image(1).pool == "unlabelled"
    assert project.read_label(1) is None
    history = project.label_history(1)
    assert [v.active for v in history] == [False, False]  # history is kept
    assert project.undo_last_commit() is None


def test_undo_returns_image_to_the_queue(project):
    round_ = project.start_round({"k": 1})
    project.set_queue(round_.idx, [1, 2])
    project.commit_label(1, np.zeros((6, 8), np.uint8))
    assert project.queue() == [2]
    project.undo_last_commit()
    assert project.queue() == [1, 2]


def test_skip_moves_to_end(project):
    project.start_round()
    project.set_queue(0, [1, 2])
    project.skip(0, 1)
    assert project.queue() == [2, 1]


def test_rounds_metrics_scores_survive_reopen(tmp_path, project):
    r0 = project.start_round({"strategy": "bald"})
    project.update_round(r0.idx, status="trained", model_version="abc")
    project.record_metrics(0, "test", {"mean_dice": 0.5, "dice_1": float("nan")})
    project.save_scores(0, "abc", "bald", {1: 0.2, 2: 0.7})
    project.set_queue(0, [2])
    path = project.path
    project.close()
    with Project.open(path) as again:
        assert again.current_round().status == "trained"
        assert again.current_round().config == {"strategy": "bald"}
        values = {m["name"]: m["value"] for m in again.metrics("test")}
        assert values == {"mean_dice": 0.5, "dice_1": None}
        assert again.load_scores(0, "abc", "bald") == {1: 0.2, 2: 0.7}
        assert again.queue() == [2]
        assert again.start_round().idx == 1


def test_round_status_is_typed_and_checked(project):
    from napari_alunet.config import RoundSettings, model_preset, to_dict
    from napari_alunet.store import RoundStatus

    r0 = project.start_round()
    assert r0.status is RoundStatus.STARTED and r0.status.in_progress
    assert r0.settings == RoundSettings()  # a round without stored settings: the defaults
    with pytest.raises(ValueError, match="'finished'"):
        project.update_round(r0.idx, status="finished")
    assert project.round(r0.idx).status is RoundStatus.STARTED  # nothing written
    settings = RoundSettings(model=model_preset("tiny"))
    project.update_round(r0.idx, status=RoundStatus.QUEUED, config=to_dict(settings))
    again = project.round(r0.idx)
    assert again.status is RoundStatus.QUEUED and again.status == "queued"
    assert again.status.has_model and not again.status.finished
    assert f"{again.status}" == "queued"  # messages show the word, not the enum
    assert again.settings == settings
    project.abandon_round(r0.idx)
    assert project.round(r0.idx).status.finished


def test_failed_transaction_rolls_back(project):
    with pytest.raises(RuntimeError):
        with project.transaction() as cur:
            cur.execute("UPDATE images SET pool = 'labelled' WHERE id = 1")
            raise RuntimeError("boom")
    assert project.image(1).pool == "unlabelled"


def test_second_writer_gets_clear_error_reader_works(project):
    with pytest.raises(ProjectLockedError, match="open for writing in another process"):
        Project.open(project.path)
    with Project.open(project.path, read_only=True) as reader:
        assert reader.counts()["unlabelled"] == 2
        with pytest.raises(ProjectError, match="read-only"):
            reader.commit_label(1, np.zeros((6, 8), np.uint8))


def test_second_process_is_refused(project):
    code = textwrap.dedent(f"""
        from napari_alunet.store import Project, ProjectLockedError
        try:
            Project.open({str(project.path)!r})
        except ProjectLockedError as exc:
            print("LOCKED", exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("LOCKED"), out.stderr


def test_lock_wait_times_out(project):
    with pytest.raises(ProjectLockedError):
        Project.open(project.path, timeout=0.2)


def test_open_cleans_crash_debris_and_verify(tmp_path, project):
    debris = project.path / "masks" / "labels" / f"{TEMP_PREFIX}abc"
    debris.write_bytes(b"half")
    version = project.commit_label(1, np.zeros((6, 8), np.uint8))
    path = project.path
    project.close()
    with Project.open(path) as again:
        assert not debris.exists()
        problems = again.verify()
        # The image files of this hand-made project do not exist; the label file does.
        assert all("images/" in p for p in problems)
        (path / version.rel_path).write_bytes(b"tampered")
        assert any("does not match its recorded hash" in p for p in again.verify())


def test_partial_labels_round_trip_merge_export_and_undo(project, tmp_path):
    """Region-level review: unknown pixels survive the store, merge, export and undo."""
    from PIL import Image

    from napari_alunet.config import UNKNOWN_LABEL as U
    from napari_alunet.export import UNKNOWN_COLOUR, export_labels

    first = np.full((6, 8), U, np.uint8)
    first[:3, :4] = 1  # region A reviewed: ICM
    v1 = project.commit_label(1, first, round_index=0)
    assert v1.partial and v1.pixels_unknown == 48 - 12 and v1.pixels_changed == 12
    assert project.image(1).pool == "labelled"
    np.testing.assert_array_equal(project.read_label(1), first)
    # The database keeps the count; the file keeps the value.
    with Image.open(project.path / v1.rel_path) as img:
        assert (np.asarray(img) == U).sum() == 36
    second = np.full((6, 8), U, np.uint8)
    second[3:, 4:] = 2  # region B, another commit
    second[2, 3] = 0  # overlaps A: the newer review wins there
    v2 = project.commit_label(1, second, round_index=1)
    merged = project.read_label(1)
    assert (merged[:3, :4] == 1).sum() == 11 and merged[2, 3] == 0
    assert (merged[3:, 4:] == 2).all()
    assert v2.pixels_unknown == 48 - 12 - 12 and v2.pixels_changed == 13
    out = export_labels(project, tmp_path / "out", colour=True)
    exported = np.asarray(Image.open(out[0]))
    np.testing.assert_array_equal(exported, merged)
    colour = np.asarray(Image.open(tmp_path / "out" / "colour" / out[0].name))
    assert tuple(colour[5, 0]) == UNKNOWN_COLOUR
    csv_rows = (tmp_path / "out" / "labels.csv").read_text().splitlines()
    assert csv_rows[0].endswith("unknown_pixels") and csv_rows[1].endswith(",24")
    # Undo works per commit: back to region A alone, then unlabelled.
    assert project.undo_last_commit().id == v2.id
    np.testing.assert_array_equal(project.read_label(1), first)
    assert project.undo_last_commit().id == v1.id
    assert project.read_label(1) is None and project.image(1).pool == "unlabelled"
    # A commit with nothing reviewed is refused, and nothing is written.
    with pytest.raises(ValueError, match="nothing to commit"):
        project.commit_label(2, np.full((6, 8), U, np.uint8))
    assert project.label_history(2) == []
    with pytest.raises(ValueError, match="outside"):
        project.commit_label(2, np.full((6, 8), 7, np.uint8))


def test_an_older_database_gains_the_partial_label_column(tmp_path):
    import sqlite3

    proj = Project.create(tmp_path / "old")
    proj.import_rows([_row(1)])
    proj.commit_label(1, np.ones((6, 8), np.uint8))
    proj.close()
    # Make it look like a database from before the column existed.
    conn = sqlite3.connect(tmp_path / "old" / "project.db")
    conn.execute("ALTER TABLE label_versions DROP COLUMN pixels_unknown")
    conn.commit()
    conn.close()
    with Project.open(tmp_path / "old", read_only=True) as ro:
        assert ro.current_label(1).pixels_unknown == 0
    with Project.open(tmp_path / "old") as rw:
        assert rw.current_label(1).pixels_unknown == 0
        assert not rw.current_label(1).partial


def test_links_inside_a_project_are_refused_before_anything_is_written(tmp_path):
    """Issue 12, class 1: a project folder must never make us write outside it."""
    import os

    proj = Project.create(tmp_path / "p")
    proj.close()
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    lock = tmp_path / "p" / "project.lock"
    # The lock replaced by a link to a file outside: refused, the file untouched.
    lock.unlink(missing_ok=True)
    os.symlink(outside, lock)
    with pytest.raises(ProjectError, match="project.lock"):
        Project.open(tmp_path / "p")
    assert outside.read_text() == "precious"
    # A dangling link is refused too, and nothing is created where it points.
    lock.unlink()
    os.symlink(tmp_path / "created-by-us", lock)
    with pytest.raises(ProjectError, match="symbolic link"):
        Project.open(tmp_path / "p")
    assert not (tmp_path / "created-by-us").exists()
    lock.unlink()
    # A subfolder that is a link (checkpoints would be written through it).
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "p" / "models").rmdir()
    os.symlink(elsewhere, tmp_path / "p" / "models")
    with pytest.raises(ProjectError, match="models"):
        Project.open(tmp_path / "p")
    assert list(elsewhere.iterdir()) == []
    # Read-only opening writes nothing, so it is allowed (to look at a received project).
    with Project.open(tmp_path / "p", read_only=True) as ro:
        assert ro.counts()["labelled"] == 0
    (tmp_path / "p" / "models").unlink()
    (tmp_path / "p" / "models").mkdir()
    # A hard-linked lock file would be truncated in place: refused.
    other = tmp_path / "other-name"
    other.write_text("1234\n")
    os.link(other, lock)
    with pytest.raises(ProjectError, match="hard link"):
        Project.open(tmp_path / "p")
    assert other.read_text() == "1234\n"
    lock.unlink()
    # The project folder itself may be reached through a link.
    os.symlink(tmp_path / "p", tmp_path / "via-link")
    with Project.open(tmp_path / "via-link") as ok:
        assert not ok.read_only


_AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
              # read anything (this Python lives under /root), but write only where allowed
              "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() != 0
                    or __import__("shutil").which("setpriv") is None,
                    reason="drops privileges from root with setpriv")
def test_a_project_in_a_folder_we_cannot_write_opens_read_only(tmp_path):
    """Issue 12, class 4, as a non-root user (root ignores permissions): `alunet status` and
    read-only opening work in a folder we cannot write; writing is one clear error; a project
    left with unmerged commits in its WAL says to copy it."""
    import os
    import shutil

    proj = Project.create(tmp_path / "p")
    proj.import_rows([_row(1), _row(2)])
    proj.commit_label(1, np.ones((6, 8), np.uint8))
    # A copy taken while it is open: its commits are still in project.db-wal.
    shutil.copytree(tmp_path / "p", tmp_path / "unclean")
    proj.close()
    (tmp_path / "unclean" / "project.db-shm").unlink(missing_ok=True)
    for folder in (tmp_path / "p", tmp_path / "unclean"):
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                os.chmod(os.path.join(root, name), 0o555 if name in dirs else 0o444)
        os.chmod(folder, 0o555)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def alunet(*args):
        return subprocess.run([*_AS_NOBODY, sys.executable, "-m", "napari_alunet.cli", *args],
                              capture_output=True, text=True, env=env, cwd="/", timeout=120)

    status = alunet("status", str(tmp_path / "p"), "--json")
    assert status.returncode == 0, status.stderr
    assert '"labelled": 1' in status.stdout
    oracle = alunet("oracle", str(tmp_path / "p"))
    assert oracle.returncode == 2 and "open the project read-only" in oracle.stderr
    assert "Traceback" not in oracle.stderr
    unclean = alunet("status", str(tmp_path / "unclean"))
    assert unclean.returncode == 2 and "copy the project folder" in unclean.stderr


def test_windows_lock_path_locks_a_byte_past_the_pid(tmp_path, monkeypatch):
    """Without fcntl (Windows) the lock is msvcrt.locking of one byte past the pid text, and a
    held lock is the same clear ProjectLockedError, naming the holder's pid."""
    import types

    from napari_alunet.store import ProjectLockedError
    from napari_alunet.store import lock as lock_module

    held: dict[str, tuple[int, int]] = {}

    def locking(fd, mode, nbytes):
        offset = os.lseek(fd, 0, os.SEEK_CUR)
        assert mode == fake.LK_NBLCK and nbytes == 1
        assert offset == lock_module._WINDOWS_LOCK_OFFSET  # never over the pid
        if "owner" in held:
            raise OSError(36, "Resource deadlock avoided")  # what msvcrt raises when held
        held["owner"] = (fd, offset)

    fake = types.SimpleNamespace(LK_NBLCK=2, locking=locking)
    monkeypatch.setattr(lock_module, "fcntl", None)
    monkeypatch.setattr(lock_module, "msvcrt", fake, raising=False)
    path = tmp_path / "project.lock"
    fd = lock_module.acquire_lock(path, timeout=0)
    try:
        assert path.read_text() == f"{os.getpid()}\n"
        with pytest.raises(ProjectLockedError, match=f"pid {os.getpid()}"):
            lock_module.acquire_lock(path, timeout=0.1)
    finally:
        os.close(fd)


def test_import_rows_records_the_initial_labels_in_one_transaction(tmp_path):
    proj = Project.create(tmp_path / "imp")
    labelled = {**_row(1, "labelled"), "gt_path": "masks/ground_truth/000001.png",
                "gt_sha256": "1" * 64}
    with pytest.raises(ValueError, match="without ground truth"):
        proj.import_rows([_row(2), _row(3, "labelled")])
    assert proj.images() == []  # refused before anything was written
    proj.import_rows([labelled, _row(2)])
    assert [r.pool for r in proj.images()] == ["labelled", "unlabelled"]
    assert proj.image(1).labelled_round == 0 and proj.image(2).labelled_round is None
    (version,) = proj.label_history(1)
    assert (version.source, version.rel_path, version.round_index) == (
        "imported", "masks/ground_truth/000001.png", 0)
    proj.close()
