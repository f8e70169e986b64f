"""kill -9 at seeded random moments during a commit, training, scoring and an import.

Each kill runs in its own process, forked from a warm worker server (``_crash_worker.py``, which
imports torch once) and killed with SIGKILL by that server, its parent, the moment a seeded
random trigger fires (a delay after READY, or the k-th progress line plus a random jitter); the
server does nothing else, so the kill is on time even while this process checks another project.
After every kill the project must open, pass SQLite's ``integrity_check`` and
:meth:`Project.verify`, hold every commit the worker saw return (with its file intact and
matching its hash), hold no temporary debris, reference no missing or half-written file, and
resume: a round continues to 'queued', an import is either absent (and re-runs) or complete.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from _crash_worker import HERE, db_rows, integrity_ok, round_settings, write_binary_pool

from napari_alunet.config import DataConfig
from napari_alunet.events import drain
from napari_alunet.fileio import TEMP_PREFIX, sha256_file
from napari_alunet.store import Project

pytestmark = pytest.mark.slow

KILLS = 22  # per kind; at least 20 must land where intended
PARALLEL = 2  # workers alive at once (2 cores)


# -- the fork server, which also does the killing -------------------------------------------------
class Zygote:
    """``_crash_worker.py serve``: forks one child per job and SIGKILLs it on its trigger."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_crash_worker.py"), "serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        line = self.proc.stdout.readline()
        assert line.strip() == "READY", f"worker server did not start: {line!r}"

    def submit(self, job: Job) -> None:
        spec = {"task": job.task, "args": job.args, "out": str(job.out),
                "kill": {"prefix": job.prefix, "count": job.count, "jitter": job.jitter}}
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()

    def read(self) -> list[str]:
        line = self.proc.stdout.readline()
        assert line, "worker server died"
        return line.split()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def zygote():
    z = Zygote()
    yield z
    z.close()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Workers and this process share two cores: one torch thread each."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _complete_lines(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return text.split("\n")[:-1]  # a line cut by the kill has no newline yet: not returned


@dataclass
class Job:
    """Run ``task``; SIGKILL it ``jitter`` s after it printed ``count`` lines starting
    ``prefix``."""

    name: str
    task: str
    args: dict
    out: Path
    prefix: str
    count: int
    jitter: float
    killed: bool = False
    lines: list[str] = field(default_factory=list)


def run_campaign(zygote: Zygote, jobs: list[Job], check: Callable[[Job], None]) -> list[Job]:
    """Run jobs ``PARALLEL`` at a time; ``check`` each as soon as its process is gone."""
    todo, waiting_pid, running, done = list(jobs), [], {}, []
    while todo or waiting_pid or running:
        while todo and len(waiting_pid) + len(running) < PARALLEL:
            job = todo.pop(0)
            zygote.submit(job)
            waiting_pid.append(job)
        word = zygote.read()
        if word[0] == "PID":
            running[int(word[1])] = waiting_pid.pop(0)
            continue
        assert word[0] == "END", word
        job = running.pop(int(word[1]))
        assert word[2] != "timeout", f"{job.name}: worker hung: {_complete_lines(job.out)[-5:]}"
        job.killed = word[2] == "killed"
        job.lines = _complete_lines(job.out)
        if any(ln.startswith("Traceback") for ln in job.lines):
            raise AssertionError(f"{job.name}: worker failed:\n" + "\n".join(job.lines[-30:]))
        check(job)  # the other worker runs (and is killed on time) meanwhile
        done.append(job)
    return done


# -- what must hold after any kill -----------------------------------------------------------------
def assert_sound(path: Path) -> dict:
    """Open after a crash and check everything; returns a few facts for the caller."""
    with Project.open(path, timeout=10) as project:
        debris = [str(p) for p in path.rglob(f"{TEMP_PREFIX}*")]
        assert debris == [], f"temporary debris survived opening: {debris}"
        assert integrity_ok(path) == "ok"
        assert project.verify() == []
        # Every file the project holds is whole (referenced or not): PNGs decode, caches load,
        # checkpoints load. A half-written file can only exist under a temporary name.
        from PIL import Image

        for png in (path / "masks").rglob("*.png"):
            with Image.open(png) as img:
                img.load()
        for cache in (path / "cache").rglob("*.npz"):
            with np.load(cache) as data:
                _ = [data[k] for k in data.files]
        from napari_alunet.training.checkpoint import load_checkpoint

        for ckpt in (path / "models").glob("*.pt"):
            load_checkpoint(ckpt)
        facts = {"rounds": project.rounds()}
        for r in facts["rounds"]:
            if r.checkpoint is not None:  # the row points at the very file it was hashed from
                assert sha256_file(path / r.checkpoint)[:16] == r.model_version
            if r.status in ("queued", "complete"):
                for image_id in project.queue(r.idx):
                    assert project.review_cache_path(r.idx, image_id).is_file()
        # Pools agree with label versions.
        for rec in project.images():
            active = project.current_label(rec.id)
            if rec.pool == "labelled":
                assert active is not None, f"labelled image {rec.id} has no active label"
            elif rec.pool == "unlabelled":
                assert active is None, f"unlabelled image {rec.id} has an active label"
        return facts


# -- fixtures: a tiny pool and projects ------------------------------------------------------------
@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return write_binary_pool(tmp_path_factory.mktemp("pool"), n=40, h=40, w=50)


@pytest.fixture(scope="module")
def base_project(tmp_path_factory, pool):
    from napari_alunet.importer import import_pool

    dst = tmp_path_factory.mktemp("base") / "project"
    drain(import_pool(pool, dst, data=DataConfig(test_fraction=0.15, initial_fraction=0.2,
                                                 seed=0, input_size=32)))
    return dst


@pytest.fixture(scope="module")
def evaluated_project(tmp_path_factory, base_project):
    from napari_alunet.loop import run_round

    dst = tmp_path_factory.mktemp("evaluated") / "project"
    shutil.copytree(base_project, dst)
    with Project.open(dst) as project:
        report = drain(run_round(project, round_settings(), device="cpu", stop_after="evaluated"))
    assert report.status == "evaluated"
    return dst


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


# -- kill -9 during commits ------------------------------------------------------------------------
def test_kill_during_commits_loses_nothing_that_returned(zygote, base_project, tmp_path):
    rng = np.random.default_rng(20240601)
    jobs = []
    for i in range(KILLS):
        path = tmp_path / f"p{i}"
        shutil.copytree(base_project, path)
        delay = _uniform(rng, 0.0, 0.6)
        # Seeded moment: `delay` seconds after the worker has the project open and says READY.
        jobs.append(Job(f"commit-{i}", "commit", {"project": str(path), "seed": i},
                        tmp_path / f"commit-{i}.log", "READY", 1, delay))
    commits_seen = []

    def check(job: Job) -> None:
        assert job.killed, f"{job.name} ended by itself: {job.lines[-3:]}"
        path = Path(job.args["project"])
        assert_sound(path)
        returned = [ln.split() for ln in job.lines if ln.startswith("C ")]
        undone = {int(ln.split()[1]) for ln in job.lines if ln.startswith("U ")}
        commits_seen.append(len(returned))
        with Project.open(path) as project:
            for n, (_c, image_id, version_id, sha, rel) in enumerate(returned, 1):
                history = {v.id: v for v in project.label_history(int(image_id))}
                version = history.get(int(version_id))
                assert version is not None, f"commit {version_id} returned but is lost"
                assert (version.sha256, version.rel_path) == (sha, rel)
                assert sha256_file(path / rel) == sha
                if int(version_id) in undone:
                    assert not version.active
                elif not (n == len(returned) and n % 5 == 0):  # else: killed after an undo
                    assert version.active
            # Work goes on: a new commit after the crash is stored like any other.
            rec = next(r for r in project.images() if r.pool != "test")
            v = project.commit_label(rec.id, np.ones((rec.height, rec.width), np.uint8))
            assert project.current_label(rec.id) == v
            assert project.verify() == []

    done = run_campaign(zygote, jobs, check)
    assert sum(j.killed for j in done) >= 20
    # The kills landed between commits, not only before the first: most runs returned some.
    assert sum(n > 0 for n in commits_seen) >= 15, commits_seen
    print(f"\ncommit kills: {len(done)}, commits returned before the kill: {commits_seen}")


# -- kill -9 during training and scoring -----------------------------------------------------------
def _resume_to_queued(path: Path) -> str:
    """Facts after the kill, then run_round resumes; returns the status it was killed in."""
    from napari_alunet.loop import run_round

    facts = assert_sound(path)
    rounds = facts["rounds"]
    assert len(rounds) == 1, "a killed round must not spawn another"
    status = rounds[0].status
    if status != "queued":
        with Project.open(path) as project:
            report = drain(run_round(project, device="cpu"))
            assert report.status == "queued" and report.round_idx == 0
            assert len(report.queue) == 2
    after = assert_sound(path)
    assert [r.status for r in after["rounds"]] == ["queued"]
    with Project.open(path) as project:
        from napari_alunet.review import review_item

        for image_id in project.queue():
            item = review_item(project, image_id)
            rec = project.image(image_id)
            assert item.prediction is not None and item.prediction.shape == (rec.height, rec.width)
            assert item.score is not None
    return status


def test_kill_during_training_resumes(zygote, base_project, tmp_path):
    rng = np.random.default_rng(7)
    settings = round_settings()
    # 8 labelled images: a validation split of 2 is under the recipe's threshold, so all 8
    # train; batch 2 -> 4 steps per epoch.
    total_steps = settings.train.planned_steps(8)
    assert total_steps == settings.train.epochs * 4
    jobs = []
    for i in range(KILLS + 2):
        path = tmp_path / f"p{i}"
        shutil.copytree(base_project, path)
        k = int(rng.integers(1, total_steps - 5))  # after step k: two epochs or more to go
        jobs.append(Job(f"train-{i}", "round", {"project": str(path)}, tmp_path / f"train-{i}.log",
                        "S ", k, _uniform(rng, 0.0, 0.01)))
    where = Counter()

    def check(job: Job) -> None:
        assert job.killed, f"{job.name} ended by itself"
        where[_resume_to_queued(Path(job.args["project"]))] += 1

    done = run_campaign(zygote, jobs, check)
    print(f"\ntraining kills: {len(done)}, round status at the kill: {dict(where)}")
    # Killed while training, before the checkpoint (a busy machine may let one or two through).
    assert where["started"] >= 20, where


def test_kill_during_scoring_resumes(zygote, evaluated_project, tmp_path):
    rng = np.random.default_rng(11)
    with Project.open(evaluated_project, read_only=True) as project:
        n_pool = len(project.images("unlabelled"))
    n_events = -(-n_pool // 2)  # one ScoreProgress per batch of 2
    jobs = []
    for i in range(KILLS + 2):
        path = tmp_path / f"p{i}"
        shutil.copytree(evaluated_project, path)
        k = int(rng.integers(1, n_events))  # a batch or more still to score
        jobs.append(Job(f"score-{i}", "round", {"project": str(path)}, tmp_path / f"score-{i}.log",
                        "Q ", k, _uniform(rng, 0.0, 0.02)))
    where = Counter()

    def check(job: Job) -> None:
        assert job.killed, f"{job.name} ended by itself"
        where[_resume_to_queued(Path(job.args["project"]))] += 1

    done = run_campaign(zygote, jobs, check)
    print(f"\nscoring kills: {len(done)}, round status at the kill: {dict(where)}")
    assert where["evaluated"] >= 20, where  # killed while scoring, before the queue


# -- kill -9 during an import ----------------------------------------------------------------------
def test_kill_during_import_leaves_nothing_or_everything(zygote, pool, tmp_path):
    from napari_alunet.importer import import_pool

    rng = np.random.default_rng(3)
    n = len(list((pool / "images").iterdir()))
    jobs = []
    for i in range(KILLS + 2):
        parent = tmp_path / f"parent{i}"
        parent.mkdir()
        k = int(rng.integers(0, n + 1))  # after image k is stored (k = n: while finishing)
        prefix, count = ("READY", 1) if k == 0 else ("P ", k + 1)  # +1: the 'scan' line
        jobs.append(Job(f"import-{i}", "import", {"src": str(pool), "dst": str(parent / "proj")},
                        tmp_path / f"import-{i}.log", prefix, count, _uniform(rng, 0.0, 0.03)))
    outcome = Counter()

    def check(job: Job) -> None:
        dst = Path(job.args["dst"])
        # A kill aimed at the last moments may come after the import finished: then it must be
        # complete like any other.
        assert job.killed or job.lines[-1].startswith("DONE"), job.lines[-3:]
        outcome["killed"] += job.killed
        if dst.exists():  # the rename happened: the project must be complete
            assert_sound(dst)
            with Project.open(dst, read_only=True) as project:
                assert sum(project.counts().values()) == n
            outcome["complete"] += 1
        else:
            outcome["absent"] += 1
            summary = drain(import_pool(pool, dst, data=DataConfig(test_fraction=0.2,
                                                                   initial_fraction=0.2,
                                                                   seed=0, input_size=32)))
            assert sum(summary.counts.values()) == n
            assert_sound(dst)
        # The re-run (or the finished import) leaves nothing else next to the project.
        assert sorted(p.name for p in dst.parent.iterdir()) == ["proj"]

    done = run_campaign(zygote, jobs, check)
    print(f"\nimport kills: {len(done)}, project after the kill: {dict(outcome)}")
    assert outcome["killed"] >= 20 and outcome["absent"] >= 15, outcome


def test_crash_state_is_stable_on_reopen(base_project, tmp_path):
    """Opening a crashed project twice changes nothing the second time (no repair loops)."""
    path = tmp_path / "p"
    shutil.copytree(base_project, path)
    # A crash left a temporary mask, a temporary checkpoint and a temporary folder behind.
    (path / "masks" / "labels" / f"{TEMP_PREFIX}x.png").write_bytes(b"\x89PNG half")
    (path / "models" / f"{TEMP_PREFIX}y").write_bytes(b"PK half")
    with Project.open(path):
        pass
    first = db_rows(path)
    with Project.open(path):
        pass
    assert db_rows(path) == first
    assert list(path.rglob(f"{TEMP_PREFIX}*")) == []


# -- power loss: what is fsynced, and in which order -----------------------------------------------
def _record_syncs(monkeypatch, after_fsync=None) -> list[tuple[str, ...]]:
    """Log every fsync (with the path of its fd) and every rename, in order."""
    events: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        events.append(("fsync", target))
        real_fsync(fd)
        if after_fsync is not None:
            after_fsync(target)

    def replace(src, dst, **kwargs):
        events.append(("replace", str(src), str(dst)))
        return real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_commit_is_on_disk_before_its_row(base_project, tmp_path, monkeypatch):
    """Power loss: the mask file and its folder entry are fsynced before the row naming them is
    committed, and the database commits with synchronous=FULL in WAL mode (SQLite fsyncs the
    WAL at every commit), so a commit that returned survives a power cut."""
    path = tmp_path / "p"
    shutil.copytree(base_project, path)
    with Project.open(path) as project:
        assert project._query("PRAGMA journal_mode")[0][0] == "wal"
        assert project._query("PRAGMA synchronous")[0][0] == 2  # FULL
        rec = project.images("unlabelled")[0]
        rows_before = len(db_rows(path)["label_versions"])
        seen_rows_at_dir_sync = []

        def rows_now(target: str) -> None:
            if target == str(path / "masks" / "labels"):
                seen_rows_at_dir_sync.append(len(db_rows(path)["label_versions"]))

        events = _record_syncs(monkeypatch, rows_now)
        version = project.commit_label(rec.id, np.ones((rec.height, rec.width), np.uint8))
        monkeypatch.undo()
    final = str(path / version.rel_path)
    replaced = [e for e in events if e[0] == "replace"]
    assert len(replaced) == 1 and replaced[0][2] == final
    i = events.index(replaced[0])
    assert ("fsync", replaced[0][1]) in events[:i]  # the data, before the rename
    assert ("fsync", str(path / "masks" / "labels")) in events[i:]  # the rename itself
    assert seen_rows_at_dir_sync == [rows_before]  # ... all before the row existed
    assert len(db_rows(path)["label_versions"]) == rows_before + 1


def test_import_is_on_disk_before_it_returns(pool, tmp_path, monkeypatch):
    """Power loss after an import returned: every folder of the project and the final rename
    were fsynced (regression: the rename into place was not, so a finished import could vanish)."""
    from napari_alunet.importer import import_pool

    events = _record_syncs(monkeypatch)
    dst = tmp_path / "parent" / "proj"
    drain(import_pool(pool, dst, data=DataConfig(input_size=32)))
    monkeypatch.undo()
    final = [e for e in events if e[0] == "replace" and e[2] == str(dst)]
    assert len(final) == 1
    staging, i = final[0][1], events.index(final[0])
    synced_before = {e[1] for e in events[:i] if e[0] == "fsync"}
    for folder in (Path(staging), *(Path(staging) / p.relative_to(dst)
                                    for p in dst.rglob("*") if p.is_dir())):
        assert str(folder) in synced_before, f"{folder} not fsynced before the rename"
    for f in (dst / "images").iterdir():  # every copied image's data
        assert str(Path(staging) / "images" / f.name) in synced_before or any(
            e[0] == "replace" and e[2] == str(Path(staging) / "images" / f.name)
            and ("fsync", e[1]) in events for e in events)
    assert ("fsync", str(dst.parent)) in events[i + 1:]
