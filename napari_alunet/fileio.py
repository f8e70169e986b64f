"""Durable file writes: temporary file, flush, fsync, rename, fsync of the folder.

A reader (or a crash) sees either the old file or the complete new one, never half of one. Every
file the project points to is written through here before the database row that names it is
committed.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()

#: Prefix of temporary files; anything with it left in a project folder is debris of a crash and
#: is safe to delete (see :meth:`napari_alunet.store.Project.clean_debris`).
TEMP_PREFIX = ".tmp-alunet-"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that the file is either absent/old or complete.

    Raises ``OSError`` (for example ``ENOSPC`` on a full disk) with the temporary file removed
    and the previous file, if any, untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        # mkstemp creates the file 0600; give it the permissions a plain open() would (0666
        # less the umask) so collaborators in a shared lab folder can read exported results.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def png_bytes(array: np.ndarray) -> bytes:
    """Encode a 2-D uint8/uint16 array or an (H, W, 3|4) uint8 array as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def atomic_write_png(path: Path, array: np.ndarray) -> str:
    """Write ``array`` as a PNG atomically; return the SHA-256 of the bytes written."""
    data = png_bytes(array)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
