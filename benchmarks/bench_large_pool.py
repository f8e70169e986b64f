"""Large pools: import and score a 10,000-image synthetic pool within 2 GiB of host memory, and
show that the database work of one commit does not grow with the pool.

    python benchmarks/bench_large_pool.py                 # 10,000 images of 64 x 64
    python benchmarks/bench_large_pool.py --n 2000        # smaller, faster
    python benchmarks/bench_large_pool.py --keep DIR      # keep the pool and projects in DIR

Steps (each timed, with the process's peak resident memory after it):

1. generate: draw ``--n`` images with the project's synthetic generator
   (``data.synthetic.generate_pool``, shape ``--size``) and write them in the colour-mask
   layout (images/*.png + masks/*.png), in ``--workers`` processes (not part of the figures).
2. import: ``import_pool`` into a new project (2 % test, 2 % initial labelled).
3. round: ``run_round`` with the ``--preset`` model (tiny by default), ``--epochs`` epochs, then
   BALD scoring of the whole unlabelled pool with ``--passes`` MC passes (no subset), scores
   saved, the top ``--k`` queued with their review maps.
4. commits: ``--commits`` label commits on a 100-image project and on the large project, side by
   side: full commits (PNG + fsync + database) and database-only (the file write replaced by a
   no-op), with the ratio large / small.

Peak memory is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` and ``VmHWM`` from
/proc/self/status (the same high-water mark, read two ways), for this one process: the pool is
read through ``load_batch`` in batches, so the peak should not depend on ``--n``.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

GOAL_MIB = 2048


def peak_mib() -> tuple[float, float]:
    """(ru_maxrss, VmHWM) in MiB."""
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    hwm = float("nan")
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    except OSError:
        pass
    return ru, hwm


def report(stage: str, seconds: float, extra: str = "") -> None:
    ru, hwm = peak_mib()
    flag = "ok" if max(ru, 0 if math.isnan(hwm) else hwm) <= GOAL_MIB else "OVER"
    print(f"{stage:<10} {seconds:8.1f} s   peak RSS {ru:7.0f} MiB (VmHWM {hwm:7.0f} MiB, "
          f"goal {GOAL_MIB} MiB: {flag})  {extra}", flush=True)


def _write_chunk(args: tuple[str, int, int, int, int]) -> int:
    from PIL import Image

    from napari_alunet.data.sample_files import colour_mask
    from napari_alunet.data.synthetic import generate_blastocyst, pool_name

    out, seed, start, stop, size = args
    root = Path(out)
    for i in range(start, stop):
        image, labels, _ = generate_blastocyst(np.random.default_rng([seed, i]),
                                               shape=(size, size))
        name = pool_name(seed, i)
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        Image.fromarray(colour_mask(labels)).save(root / "masks" / f"{name}.png")
    return stop - start


def generate(out: Path, n: int, size: int, seed: int, workers: int) -> None:
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    step = 250
    chunks = [(str(out), seed, s, min(n, s + step), size) for s in range(0, n, step)]
    done = 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for k in pool.map(_write_chunk, chunks):
            done += k
            print(f"\r  generated {done}/{n}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)


def subset_pool(src: Path, dst: Path, n: int) -> Path:
    """The first ``n`` images of ``src`` (and their masks) as symbolic links."""
    for sub in ("images", "masks"):
        (dst / sub).mkdir(parents=True)
        for p in sorted((src / sub).iterdir())[:n]:
            os.symlink(p, dst / sub / p.name)
    return dst


def time_commits(project_dir: Path, n: int, *, db_only: bool, seed: int = 0) -> float:
    """Seconds per commit_label (and one undo every 10) on unlabelled images of a project."""
    import hashlib

    from napari_alunet.store import Project
    from napari_alunet.store import project as project_module

    real = project_module.atomic_write_png
    if db_only:  # the PNG encode, write and fsyncs replaced by a no-op with the same result
        project_module.atomic_write_png = lambda path, labels: hashlib.sha256(
            labels.tobytes()).hexdigest()
    try:
        with Project.open(project_dir) as project:
            rng = np.random.default_rng(seed)
            records = project.images("unlabelled")[: n]
            labels = [rng.integers(0, 5, (r.height, r.width)).astype(np.uint8) for r in records]
            start = time.perf_counter()
            for i, (rec, lab) in enumerate(zip(records, labels, strict=True)):
                project.commit_label(rec.id, lab, source="human")
                if i % 10 == 9:
                    project.undo_last_commit()
            seconds = (time.perf_counter() - start) / len(records)
            # Leave the project as it was for the next measurement.
            with project.transaction() as cur:
                ids = [r.id for r in records]
                marks = ",".join("?" * len(ids))
                rels = [r[0] for r in cur.execute(
                    f"SELECT rel_path FROM label_versions WHERE image_id IN ({marks}) AND "
                    "source = 'human'", ids)]
                cur.execute(f"DELETE FROM label_versions WHERE image_id IN ({marks}) AND "
                            "source = 'human'", ids)
                cur.execute(f"UPDATE images SET pool = 'unlabelled', labelled_round = NULL "
                            f"WHERE id IN ({marks})", ids)
            for rel in rels:
                (project_dir / rel).unlink(missing_ok=True)
    finally:
        project_module.atomic_write_png = real
    return seconds


def commit_statements(project_dir: Path) -> list[tuple[str, str]]:
    """The SQL one commit + one undo runs, each with its query plan's table scans (if any)."""
    from napari_alunet.store import Project

    statements: list[str] = []
    with Project.open(project_dir) as project:
        rec = project.images("unlabelled")[0]
        project._conn.set_trace_callback(statements.append)
        try:
            project.commit_label(rec.id, np.zeros((rec.height, rec.width), np.uint8))
            project.undo_last_commit()
        finally:
            project._conn.set_trace_callback(None)
        out = []
        for sql in statements:
            if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT", "DELETE")):
                continue
            plan = project._conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
            scans = [row[-1] for row in plan if row[-1].startswith("SCAN")]
            out.append((" ".join(sql.split())[:70], "; ".join(scans)))
        with project.transaction() as cur:  # leave the project as it was
            cur.execute("DELETE FROM label_versions WHERE image_id = ? AND source = 'human'",
                        (rec.id,))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="pool size (default 10000)")
    parser.add_argument("--size", type=int, default=64, help="image side (default 64)")
    parser.add_argument("--preset", default="tiny", choices=("tiny", "cpu"))
    parser.add_argument("--passes", type=int, default=4, help="MC passes (default 4)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--k", type=int, default=8, help="images queued for review")
    parser.add_argument("--batch", type=int, default=32, help="scoring batch size")
    parser.add_argument("--commits", type=int, default=100, help="commits per project")
    parser.add_argument("--small", type=int, default=100, help="size of the small project")
    parser.add_argument("--workers", type=int, default=2, help="processes generating the pool")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice; 1 is faster on a busy "
                        "machine, where OpenMP threads wait for each other)")
    parser.add_argument("--keep", type=Path, default=None, help="work in this folder, keep it")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from napari_alunet.config import AcquisitionConfig, DataConfig, TrainConfig, model_preset
    from napari_alunet.events import drain
    from napari_alunet.importer import import_pool
    from napari_alunet.loop import RoundSettings, run_round
    from napari_alunet.store import Project

    work = args.keep or Path(tempfile.mkdtemp(prefix="alunet-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"napari-alunet large-pool benchmark: {args.n} images of {args.size}x{args.size}, "
          f"preset {args.preset}, {args.passes} MC passes, {os.cpu_count()} CPU(s), "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads); work folder {work}")
    report("start", 0.0, "(Python + torch + napari_alunet imported)")
    try:
        pool = work / "pool"
        if not pool.exists():
            start = time.perf_counter()
            generate(pool, args.n, args.size, args.seed, args.workers)
            print(f"generate   {time.perf_counter() - start:8.1f} s   (other processes; not "
                  "counted in the peak)", flush=True)
        data = DataConfig(test_fraction=0.02, initial_fraction=0.02, seed=args.seed,
                          input_size=model_preset(args.preset).input_size)

        big = work / "project-large"
        shutil.rmtree(big, ignore_errors=True)
        start = time.perf_counter()
        summary = drain(import_pool(pool, big, data=data))
        report("import", time.perf_counter() - start,
               f"{sum(summary.counts.values())} images: {summary.counts}")

        settings = RoundSettings(
            model=model_preset(args.preset),
            # A deliberately short fit: no health check (it would retry it as collapsed).
            train=TrainConfig(epochs=args.epochs, patience=0, device="cpu", seed=args.seed,
                              health_min_dice=0.0),
            acquisition=AcquisitionConfig(strategy="bald", passes=args.passes, k=args.k,
                                          subset=None, batch_size=args.batch, seed=args.seed))
        with Project.open(big) as project:
            start = time.perf_counter()
            result = drain(run_round(project, settings, device="cpu"))
            total = time.perf_counter() - start
            n_scored = len(project.load_scores(result.round_idx, project.round(
                result.round_idx).model_version, "bald"))
        secs = result.seconds
        report("round", total,
               f"train {secs.get('train', 0):.1f} s, evaluate {secs.get('evaluate', 0):.1f} s, "
               f"score {secs.get('score', 0):.1f} s for {n_scored} images "
               f"({n_scored / max(secs.get('score', 1e-9), 1e-9):.0f} images/s); "
               f"queued {len(result.queue)}")

        start = time.perf_counter()
        with Project.open(big) as project:
            opened = time.perf_counter() - start
            t = time.perf_counter()
            problems = project.verify(hashes=False)
            verify_s = time.perf_counter() - t
        print(f"open       {opened:8.3f} s   (walks the folder for crash debris); verify without "
              f"hashes {verify_s:.2f} s, problems: {len(problems)}", flush=True)

        small = work / "project-small"
        shutil.rmtree(small, ignore_errors=True)
        small_pool = work / "pool-small"
        shutil.rmtree(small_pool, ignore_errors=True)
        subset_pool(pool, small_pool, args.small)
        drain(import_pool(small_pool, small, data=data))
        plans = commit_statements(big)
        scans = [(sql, scan) for sql, scan in plans if scan]
        print(f"\none commit + one undo run {len(plans)} SQL statements; full scans: "
              + ("none" if not scans else "; ".join(f"{scan} in '{sql}'" for sql, scan in scans)))
        n = min(args.commits, args.small - 10)
        print(f"\nper commit ({n} commits + an undo every 10, unlabelled images; "
              f"{args.small}-image vs {args.n}-image project):")
        for label, db_only in (("full commit (PNG + fsync + database)", False),
                               ("database only (file write replaced by a no-op)", True)):
            time_commits(small, 5, db_only=db_only)  # warm up
            s = time_commits(small, n, db_only=db_only)
            b = time_commits(big, n, db_only=db_only)
            print(f"  {label:<48} small {s * 1e3:7.2f} ms   large {b * 1e3:7.2f} ms   "
                  f"ratio {b / s:5.2f}", flush=True)
        report("end", 0.0)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
