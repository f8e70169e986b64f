"""One writer per project: an exclusive lock on ``project.lock``.

POSIX (Linux, macOS): ``flock`` on the whole file. Windows (where most embryology labs run
napari): ``msvcrt.locking`` of one byte far past the pid the holder writes at the start, so
another process can still read who holds it. Both locks belong to the open file and go away
with the process, so a crash never leaves a project locked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from napari_alunet.store.records import ProjectError, ProjectLockedError

try:  # POSIX
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

#: Offset of the byte the Windows lock covers (past any pid text at the start of the file).
_WINDOWS_LOCK_OFFSET = 1024


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock without waiting; False when another process holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _write_pid(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)  # os.pwrite does not exist on Windows
    os.write(fd, f"{os.getpid()}\n".encode())


def acquire_lock(lock_path: Path, timeout: float,
                 on_wait: Callable[[str], None] | None = None) -> int:
    """Take the project's writer lock, waiting up to ``timeout`` seconds for another writer;
    ``on_wait(message)`` is called once when the wait begins. Returns the lock's descriptor
    (closing it releases the lock)."""
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
        flags = (os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                 | getattr(os, "O_BINARY", 0))  # O_BINARY: no newline translation on Windows
        fd = os.open(lock_path, flags, 0o644)
    except OSError as exc:
        raise ProjectError(
            f"cannot open {lock_path} for writing ({exc.strerror}); check the folder's "
            "permissions, or open the project read-only"
        ) from exc
    deadline = time.monotonic() + timeout
    told = False
    while not _try_lock(fd):
        if not told and on_wait is not None and timeout > 0:
            told = True
            on_wait(f"project {lock_path.parent} is open for writing in another process"
                    f"{_read_lock_holder(fd)}; waiting up to {timeout:g} s for it to close")
        if time.monotonic() >= deadline:
            holder = _read_lock_holder(fd)
            os.close(fd)
            raise ProjectLockedError(
                f"project {lock_path.parent} is open for writing in another process"
                f"{holder}; close it there first, or open it read-only"
            ) from None
        time.sleep(0.05)
    _write_pid(fd)
    return fd


def _read_lock_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        pid = os.read(fd, 32).decode(errors="replace").strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid else ""

