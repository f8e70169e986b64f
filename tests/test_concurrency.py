"""Two processes (the GUI and ``alunet``) or two threads on one project never corrupt it.

One writer at a time (flock on project.lock): a second writer waits ``timeout`` seconds or gets
:class:`ProjectLockedError` naming the holder's pid; a read-only reader sees a consistent
snapshot while the writer commits (SQLite WAL); threads sharing one ``Project`` are serialised.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from _crash_worker import HERE, embryo_labels, write_binary_pool

from napari_alunet.config import DataConfig
from napari_alunet.events import drain
from napari_alunet.fileio import sha256_file
from napari_alunet.importer import import_pool
from napari_alunet.store import Project, ProjectLockedError


@pytest.fixture
def project_dir(tmp_path):
    pool = write_binary_pool(tmp_path / "pool", n=12, h=40, w=50)
    dst = tmp_path / "project"
    drain(import_pool(pool, dst, data=DataConfig(test_fraction=0.2, initial_fraction=0.2)))
    return dst


def start_worker(task: str, **args) -> subprocess.Popen:
    """A separate Python process running one task of _crash_worker (no torch import)."""
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "_crash_worker.py"), "run", task, json.dumps(args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()
    assert line.strip() == "READY", line + proc.stderr.read()
    return proc


def test_second_writer_refused_with_holder_pid_then_waits(project_dir):
    holder = start_worker("hold", project=str(project_dir), seconds=3.0)
    try:
        start = time.monotonic()
        with pytest.raises(ProjectLockedError, match=rf"open for writing in another process "
                                                     rf"\(pid {holder.pid}\)"):
            Project.open(project_dir)
        assert time.monotonic() - start < 0.5  # timeout 0: refused at once
        with pytest.raises(ProjectLockedError):
            Project.open(project_dir, timeout=0.3)
        # Reading is never blocked by the writer.
        with Project.open(project_dir, read_only=True) as reader:
            assert sum(reader.counts().values()) == 12
        # Waiting long enough gets the project once the holder closes it.
        with Project.open(project_dir, timeout=30) as project:
            assert holder.poll() is not None or holder.wait(5) == 0
            assert time.monotonic() - start >= 1.0
            rec = project.images("unlabelled")[0]
            project.commit_label(rec.id, embryo_labels(40, 50))
            assert project.verify() == []
    finally:
        holder.kill()
        holder.wait()


def test_cli_against_an_open_project(project_dir):
    """The GUI holds the project: `alunet` commands that write say so in one line; reading works;
    --wait waits for the GUI to close."""
    holder = start_worker("hold", project=str(project_dir), seconds=120)
    try:
        out = subprocess.run(["alunet", "oracle", str(project_dir)], capture_output=True,
                             text=True, timeout=120, check=False)
        assert out.returncode == 2
        assert out.stderr.strip().splitlines() == [(
            f"error: project {project_dir} is open for writing in another process "
            f"(pid {holder.pid}); close it there first, or open it read-only")]
        status = subprocess.run(["alunet", "status", str(project_dir), "--json"],
                                capture_output=True, text=True, timeout=120, check=False)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["images"] == 12
        waiting = subprocess.Popen(["alunet", "oracle", str(project_dir), "--wait", "60"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # It says it is waiting on the holder's lock (not merely still starting up).
        line = waiting.stderr.readline()
        assert "is open for writing in another process" in line and "waiting up to 60 s" in line
        assert f"pid {holder.pid}" in line
        assert waiting.poll() is None, waiting.communicate()
        holder.kill()  # the GUI goes away (even by kill -9): the waiting command proceeds
        holder.wait()
        out, err = waiting.communicate(timeout=120)
        assert waiting.returncode == 0, err
        assert out.startswith("committed stored ground truth")
    finally:
        holder.kill()
        holder.wait()


def test_two_writers_take_turns(project_dir):
    """Two processes that both want to commit: each waits for the other, all commits land."""
    code = (
        "import sys, numpy as np\n"
        "from napari_alunet.store import Project\n"
        "seed = int(sys.argv[2])\n"
        "with Project.open(sys.argv[1], timeout=60) as p:\n"
        "    recs = [r for r in p.images() if r.pool != 'test']\n"
        "    rng = np.random.default_rng(seed)\n"
        "    for i in range(15):\n"
        "        r = recs[(i + seed) % len(recs)]\n"
        "        v = p.commit_label(r.id, rng.integers(0, 5, (r.height, r.width))"
        ".astype(np.uint8))\n"
        "        print(v.id, v.sha256, flush=True)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(project_dir), str(seed)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in (1, 2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    seen = [line.split() for out, _ in outs for line in out.splitlines()]
    assert len(seen) == 30
    with Project.open(project_dir) as project:
        assert project.verify() == []
        versions = {v.id: v for r in project.images() for v in project.label_history(r.id)}
        for version_id, sha in seen:
            assert versions[int(version_id)].sha256 == sha


def test_reader_sees_consistent_snapshots_while_a_writer_commits(project_dir):
    """WAL: a read-only reader is never blocked and never sees a row before its file, a pool
    that disagrees with the label versions, or the number of versions going backwards."""
    writer = start_worker("commit", project=str(project_dir), seed=5, undo_every=4)
    checks = 0
    last_count = 0
    try:
        with Project.open(project_dir, read_only=True) as reader:
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                # One statement, one snapshot: pools agree with active label versions.
                bad = reader._query(
                    "SELECT COUNT(*) AS n FROM images i WHERE (i.pool = 'labelled') != EXISTS ("
                    "SELECT 1 FROM label_versions v WHERE v.image_id = i.id AND v.active = 1) "
                    "AND i.pool != 'test'")[0]["n"]
                assert bad == 0
                rows = reader._query("SELECT id, rel_path, sha256 FROM label_versions "
                                     "ORDER BY id DESC LIMIT 5")
                count = reader._query("SELECT COUNT(*) AS n FROM label_versions")[0]["n"]
                assert count >= last_count
                last_count = count
                for row in rows:  # the file was complete before its row was committed
                    assert sha256_file(project_dir / row["rel_path"]) == row["sha256"]
                checks += 1
    finally:
        writer.kill()
        writer.wait()
    assert checks > 20
    assert last_count > 10  # the writer really was committing meanwhile
    with Project.open(project_dir) as project:
        assert project.verify() == []


def test_threads_sharing_one_project(project_dir):
    """The GUI thread and a worker thread commit and undo on one Project at once: every commit
    keeps its own file (regression: both once picked the same version file name), every undo
    withdraws its own version."""
    with Project.open(project_dir) as project:
        rec = project.images("unlabelled")[0]
        before = len(project.label_history(rec.id))
        returned: list = []
        undone: list = []
        errors: list = []

        def work(seed: int) -> None:
            rng = np.random.default_rng(seed)
            try:
                for i in range(25):
                    labels = rng.integers(0, 5, (rec.height, rec.width)).astype(np.uint8)
                    returned.append((project.commit_label(rec.id, labels), labels))
                    if i % 5 == 4:
                        undone.append(project.undo_last_commit())
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(s,)) for s in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert project.verify() == []
        history = project.label_history(rec.id)
        assert len(history) == before + 75
        assert len({v.rel_path for v in history}) == len(history)  # one file per version
        from PIL import Image

        for version, labels in returned:
            with Image.open(project_dir / version.rel_path) as img:
                np.testing.assert_array_equal(np.asarray(img), labels)
        assert len({v.id for v in undone}) == len(undone) == 15
        assert sum(not v.active for v in history) == 15
