"""The project store: one folder, one SQLite database, atomic mask files.

See :mod:`napari_alunet.store.project` for the layout and the durability rules.
"""

from napari_alunet.store.project import DB_NAME, LOCK_NAME, Project
from napari_alunet.store.records import (
    LABEL_SOURCES,
    POOLS,
    SCHEMA_VERSION,
    ImageRecord,
    LabelVersion,
    ProjectError,
    ProjectLockedError,
    RoundRecord,
    RoundStatus,
)

__all__ = [
    "DB_NAME", "LABEL_SOURCES", "LOCK_NAME", "POOLS", "SCHEMA_VERSION", "ImageRecord",
    "LabelVersion", "Project", "ProjectError", "ProjectLockedError", "RoundRecord",
    "RoundStatus",
]
