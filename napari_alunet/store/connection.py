"""Opening a project's database and folder safely: read-only connections that refuse an
unclean copy, refusing symbolic and hard links, and adding the columns of newer versions."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from napari_alunet.store.records import ADDED_COLUMNS, ProjectError

DB_NAME = "project.db"
LOCK_NAME = "project.lock"


def connect_read_only(db: Path) -> sqlite3.Connection:
    """A read-only connection, also in a folder we may not write (read-only file system,
    someone else's project, a CD).

    ``mode=ro`` still needs to create the WAL index (``project.db-shm``) next to the
    database. Where that fails, the database is opened ``immutable`` (no locks, no index),
    which is exact when there is no unmerged write-ahead log, as after a clean close; with a
    non-empty ``project.db-wal`` the newest commits would be invisible, so that is refused with
    what to do instead.
    """
    uri = db.resolve().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False, timeout=30.0)
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        wal = db.with_name(db.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise ProjectError(
                f"cannot read {db.parent} in place: its folder is not writable and its last "
                "session did not close cleanly (project.db-wal holds commits not yet merged); "
                "copy the project folder somewhere writable and open the copy") from exc
        return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True,
                               check_same_thread=False, timeout=30.0)


def refuse_links(root: Path) -> None:
    """Raise :class:`ProjectError` naming every symbolic link inside a project folder.

    A project received from someone else must never make us write outside it: a link in place
    of ``project.lock``, ``project.db``, a mask file or a subfolder (``models/``, ``cache/``,
    ...) would send our writes wherever it points. The folder itself may be reached through a
    link (the path the user gave); everything below it must be real files and folders. Links
    are not followed while looking (``os.walk`` does not descend into them).
    """
    links = []
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            full = Path(folder) / name
            if full.is_symlink():
                links.append(full)
    # Files we write in place (not by atomic rename) must not be hard links either: truncating
    # the lock or writing the database would change the other name's file too.
    for name in (LOCK_NAME, DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm"):
        file = root / name
        if file.is_file() and not file.is_symlink() and file.stat().st_nlink > 1:
            raise ProjectError(
                f"{file} is a hard link (the same file has another name elsewhere); writing it "
                "would change that file too: replace it with a copy (cp) and open again")
    if links:
        shown = ", ".join(str(p.relative_to(root)) for p in links[:5])
        more = f" and {len(links) - 5} more" if len(links) > 5 else ""
        raise ProjectError(
            f"{root} holds symbolic links ({shown}{more}); a project's own files and folders "
            "must not be links, because writing to them would write outside the project. "
            "Replace each link by a copy of what it points to (or remove it), or open the "
            "project read-only"
        )


def add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a database made by an older version up to the current columns (additive only)."""
    for table, columns in ADDED_COLUMNS.items():
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        for name, sql in columns.items():
            if name not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {sql}")
