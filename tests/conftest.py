"""Fixtures shared by the test files."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():  # type: ignore[no-untyped-def]
    """Run a module's tests with one torch thread.

    The models in the unit tests are tiny: a second OpenMP thread gains nothing, and on a shared
    2-core machine spinning OpenMP threads made a 1 s fit take 20 s.
    """
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def recipe_plans(monkeypatch):  # type: ignore[no-untyped-def]
    """The FitPlan of every fit that goes through the recipe during the test, in order."""
    from napari_alunet.training import recipe

    plans = []
    real = recipe.train_model

    def spy(model, plan, load, config, **kwargs):  # type: ignore[no-untyped-def]
        plans.append(plan)
        return (yield from real(model, plan, load, config, **kwargs))

    monkeypatch.setattr(recipe, "train_model", spy)
    return plans


@pytest.fixture(scope="module")
def pool_dir(tmp_path_factory):  # type: ignore[no-untyped-def]
    """A small binary-layout sample pool (12 images of 40 x 48), written once per module."""
    from napari_alunet.data.sample_files import write_sample_pool

    root = tmp_path_factory.mktemp("pool")
    write_sample_pool(root, 12, seed=4, layout="binary", shape=(40, 48))
    return root

