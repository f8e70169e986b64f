"""One writer per project: an exclusive ``flock`` on ``project.lock``."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from napari_alunet.store.records import ProjectError, ProjectLockedError


def acquire_lock(lock_path: Path, timeout: float) -> int:
    if not (timeout >= 0 and timeout < float("inf")):  # NaN would never time out
        raise ValueError(f"the wait for another writer must be a finite number of seconds "
                         f">= 0 (--wait), got {timeout}")
    # O_NOFOLLOW: a lock file replaced by a link (to a file outside the project, or dangling)
    # must not make us truncate or create that file.
    if os.path.islink(lock_path):
        raise ProjectError(
            f"{lock_path} is a symbolic link; a project's own files must not be links (writing "
            "the lock would write where it points): delete the link and open the project again"
        )
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as exc:
        raise ProjectError(
            f"cannot open {lock_path} for writing ({exc.strerror}); check the folder's "
            "permissions, or open the project read-only"
        ) from exc
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = _read_lock_holder(fd)
                os.close(fd)
                raise ProjectLockedError(
                    f"project {lock_path.parent} is open for writing in another process"
                    f"{holder}; close it there first, or open it read-only"
                ) from None
            time.sleep(0.05)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _read_lock_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid else ""

