"""Small project helpers shared by test files (imported as ``_projects``)."""

from __future__ import annotations


def import_tiny(pool: object, target: object, initial_fraction: float = 0.25,
                test_fraction: float = 0.25) -> object:
    """Import ``pool`` into a project at ``target`` (32 px model input) and open it."""
    from napari_alunet.config import DataConfig
    from napari_alunet.events import drain
    from napari_alunet.importer import import_pool
    from napari_alunet.store import Project

    drain(import_pool(pool, target, data=DataConfig(
        test_fraction=test_fraction, initial_fraction=initial_fraction, seed=0, input_size=32)))
    return Project.open(target)
