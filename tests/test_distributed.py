"""Scoring the pool with several processes (torch.distributed, gloo on the CPU): the same
result as one process, and the project written once, by rank 0."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from napari_alunet.cli import main
from napari_alunet.distributed import rank_and_size, shard
from napari_alunet.store import Project


def test_shards_cover_the_pool_once_and_evenly():
    ids = list(range(100, 111))
    parts = [shard(ids, r, 3) for r in range(3)]
    assert sorted(i for p in parts for i in p) == ids
    assert [len(p) for p in parts] == [4, 4, 3]
    assert shard(ids, 0, 1) == ids
    with pytest.raises(ValueError, match="outside"):
        shard(ids, 3, 3)
    assert rank_and_size() == (0, 1)  # no process group here


@pytest.fixture(scope="module")
def scored_round(tmp_path_factory):
    """A tiny project with round 0 trained (one process), copied before any re-scoring."""
    root = tmp_path_factory.mktemp("dist")
    assert main(["sample", str(root / "pool"), "--n", "14", "--seed", "3",
                 "--shape", "48", "56"]) == 0
    assert main(["import", str(root / "pool"), str(root / "proj"), "--quiet",
                 "--initial-fraction", "0.3", "--test-fraction", "0.2"]) == 0
    assert main(["round", str(root / "proj"), "--preset", "tiny", "--steps", "3",
                 "--passes", "2", "--top", "2", "--device", "cpu", "--quiet"]) == 0
    return root


@pytest.mark.parametrize("strategy, batch", [("bald", "power"), ("entropy", "badge")])
def test_two_processes_score_exactly_as_one(scored_round, tmp_path, strategy, batch):
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(scored_round / "proj", one)
    shutil.copytree(scored_round / "proj", two)
    # Batches of 2: the 7 unlabelled images make 4 batches, 2 for each process.
    common = ["--strategy", strategy, "--batch", batch, "--passes", "3", "--top", "3",
              "--score-batch", "2", "--preset", "tiny", "--device", "cpu", "--json", "--quiet"]
    # torchrun gives each rank one thread (OMP_NUM_THREADS=1); torch's reductions depend on
    # the thread count in the last bit, so the one process gets one too.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "napari_alunet.cli", "score", str(one),
                             *common], capture_output=True, text=True, timeout=300, env=env)
    assert single.returncode == 0, single.stderr[-2000:]
    sharded = subprocess.run([sys.executable, "-m", "napari_alunet.cli", "score", str(two),
                              *common, "--nproc", "2"], capture_output=True, text=True,
                             timeout=600)
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    # One JSON document from rank 0 only; the same queue and the same scores, to the bit.
    assert json.loads(single.stdout) == json.loads(sharded.stdout)
    with Project.open(one, read_only=True) as a, Project.open(two, read_only=True) as b:
        current = a.current_round()
        assert a.queue() == b.queue() and len(a.queue()) == 3
        version = current.model_version
        assert a.load_scores(current.idx, version, strategy) == \
            b.load_scores(current.idx, version, strategy)
        for image_id in a.queue():  # the review cache too: prediction and maps
            ra, rb = a.read_review(current.idx, image_id), b.read_review(current.idx, image_id)
            assert np.array_equal(ra.prediction, rb.prediction)
            assert ra.maps.keys() == rb.maps.keys()
            diffs = {k: float(np.abs(ra.maps[k].astype(float) - rb.maps[k]).max()) for k in ra.maps}
            assert all(v == 0 for v in diffs.values()), diffs
        assert [r.config for r in a.rounds()] == [r.config for r in b.rounds()]


def test_a_rank_that_fails_leaves_the_project_as_it_was(scored_round, tmp_path):
    """One rank dies mid-run (an image of its shard cannot be read): torchrun stops the
    other, the command fails, and the project's scores, queue and rounds are unchanged."""
    from napari_alunet.pools import ProjectPool

    project_dir = tmp_path / "proj"
    shutil.copytree(scored_round / "proj", project_dir)
    with Project.open(project_dir, read_only=True) as project:
        unlabelled = ProjectPool(project, 32).unlabelled_ids()
        batches = [unlabelled[b : b + 2] for b in range(0, len(unlabelled), 2)]
        assert shard(range(len(batches)), 1, 2) == [1, 3]  # rank 1 scores batches 1 and 3
        victim = batches[1][0]
        before = (project.queue(), [r.config for r in project.rounds()],
                  project.load_scores(0, project.current_round().model_version, "entropy"))
        path = project_dir / project.image(victim).rel_path
    path.write_bytes(b"not an image at all" * 10)
    done = subprocess.run([sys.executable, "-m", "napari_alunet.cli", "score", str(project_dir),
                           "--strategy", "entropy", "--passes", "2", "--top", "2",
                           "--score-batch", "2", "--preset", "tiny", "--device", "cpu",
                           "--quiet", "--nproc", "2"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode != 0
    # Rank 1's one-line error names the file; rank 0 stopped waiting for it.
    assert f"error: {path}: not a BMP, PNG, TIFF or JPEG image" in done.stderr
    with Project.open(project_dir, read_only=True) as project:
        after = (project.queue(), [r.config for r in project.rounds()],
                 project.load_scores(0, project.current_round().model_version, "entropy"))
    assert after == before
