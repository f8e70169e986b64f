"""An experiment's settings: :func:`make_config`, the arm names (:func:`parse_arm`) and the
checks a configuration passes before anything runs (:func:`check_config`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from napari_alunet.config import ExperimentConfig, model_preset
from napari_alunet.experiment.report import FULL


def make_config(*, preset: str = "cpu", train: dict[str, Any] | None = None,
                device: str | None = None, subset: int | None = None, warm_start: bool = True,
                threads: int | None = None, diversity: str = "power",
                power_beta: float | None = None, input_size: int | None = None,
                **fields: Any) -> ExperimentConfig:
    """An :class:`ExperimentConfig` with the model of ``preset`` and consistent sub-configs.

    ``train`` holds TrainConfig fields to change (``steps``, ``epochs``, ``patience``,
    ``learning_rate``, ``semi_supervised``, ...). ``threads`` sets ``train.num_threads``
    (torch intra-op threads for the whole experiment; 0 leaves torch's default). ``diversity`` /
    ``power_beta`` go to the acquisition config: the diversity of strategies named without a
    ``+diversity`` suffix (:func:`split_strategy`). ``fields`` are ExperimentConfig fields
    (``strategies``, ``seeds``, ``k``, ...). The acquisition config gets the experiment's ``k``
    and ``passes`` so the saved config does not hold two different values of either.
    """
    model = model_preset(preset) if input_size is None else model_preset(
        preset, input_size=int(input_size))
    config = ExperimentConfig(preset=preset, model=model, **fields)
    train_changes: dict[str, Any] = {"warm_start": warm_start, **(train or {})}
    if device is not None:
        train_changes["device"] = device
    if threads is not None:
        train_changes["num_threads"] = threads
    config.train = dataclasses.replace(config.train, **train_changes)
    config.acquisition = dataclasses.replace(config.acquisition, k=config.k,
                                             passes=config.passes, subset=subset,
                                             diversity=diversity, power_beta=power_beta)
    config.strategies = tuple(config.strategies)
    if config.data not in ("sample", "redundant"):
        config.data = str(Path(config.data).expanduser().resolve())
    return config


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm of an experiment, parsed from its name.

    Grammar: ``[typical:]strategy[+diversity][@unit][#replicate]``.

    * ``strategy``: an acquisition strategy, or ``oracle_error`` (the upper-bound control: its
      score is the true error of the review prediction, and it takes k by the same batch rule
      as the other arms, so it differs from them by its score alone);
    * ``+diversity``: how k images are taken (``power``, ``softrank``, ``softmax``,
      ``feature``, ``badge``, ``none``); default the experiment's ``--diversity``;
    * ``typical:``: the initial labelled set is the typicality cold start instead of the
      seed's random initial set;
    * ``#2``: a replicate with another acquisition seed (``random#2`` is the A/A control: its
      spread against ``random`` is the null spread of the whole harness);
    * ``@region``: region-level acquisition (:mod:`napari_alunet.regions`): each round takes
      canvas tiles across the pool instead of whole images and the oracle labels only inside
      them (``random@region`` is its control); ``@image`` is the default.
    """

    name: str
    strategy: str
    diversity: str
    initial: str = "random"
    replicate: int = 1
    unit: str = "image"


def parse_arm(name: str, default_diversity: str = "power") -> Arm:
    """The :class:`Arm` named ``name``; ValueError naming the part that is wrong."""
    from napari_alunet.acquisition import DIVERSITY, strategy_map
    from napari_alunet.active import ORACLE_STRATEGIES

    rest, initial = name, "random"
    if ":" in rest:
        initial, _, rest = rest.partition(":")
        if initial != "typical":
            raise ValueError(f"unknown initial set {initial!r} in {name!r}; only 'typical:'")
    rest, hash_, replicate_text = rest.partition("#")
    replicate = 1
    if hash_:
        if not replicate_text.isdigit() or int(replicate_text) < 1:
            raise ValueError(f"{name!r}: the replicate after '#' must be a number >= 1")
        replicate = int(replicate_text)
    rest, at, unit = rest.partition("@")
    if not at:
        unit = "image"
    elif unit not in ("image", "region"):
        raise ValueError(f"{name!r}: the unit after '@' must be 'image' or 'region'")
    strategy, plus, diversity = rest.partition("+")
    if not plus:
        diversity = "none" if strategy == "random" else default_diversity
    if strategy not in ORACLE_STRATEGIES:
        strategy_map(strategy)
    if diversity not in DIVERSITY:
        raise ValueError(f"unknown diversity {diversity!r} in {name!r}; choose one of "
                         f"{', '.join(DIVERSITY)}")
    if strategy == "random" and diversity != "none":
        raise ValueError(f"{name!r}: random acquisition takes no diversity")
    if strategy in ORACLE_STRATEGIES and diversity in ("feature", "badge"):
        raise ValueError(f"{name!r}: the oracle takes k by its scores (none, power, softrank, "
                         "softmax), not by model features")
    if unit == "region" and (strategy in ORACLE_STRATEGIES or diversity in ("feature", "badge")):
        raise ValueError(f"{name!r}: regions are taken by an uncertainty map or at random, "
                         "with diversity none, power, softrank or softmax")
    return Arm(name, strategy, diversity, initial, replicate, unit)


def split_strategy(name: str, default_diversity: str = "none") -> tuple[str, str]:
    """``(strategy, diversity)`` of an arm name (see :func:`parse_arm`)."""
    arm = parse_arm(name, default_diversity)
    return arm.strategy, arm.diversity


def check_config(config: ExperimentConfig) -> None:
    if not config.strategies:
        raise ValueError("give at least one strategy")
    if len(set(config.strategies)) != len(config.strategies):
        raise ValueError(f"strategies repeat: {' '.join(config.strategies)}")
    for s in config.strategies:
        if s == FULL:
            raise ValueError(f"'{FULL}' is the name of the full-data baseline, not a strategy")
        parse_arm(s, config.acquisition.diversity)
    if config.seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {config.seeds}")
    if not 0.0 <= config.rare_mode_p <= 0.2:
        raise ValueError(f"rare_mode_p must be in [0, 0.2] (5 rare modes), got "
                         f"{config.rare_mode_p}")
    if not 1.0 <= config.full_steps_factor <= 20.0:
        raise ValueError(f"full_steps_factor must be in [1, 20], got {config.full_steps_factor}")
    if config.first_seed < 0:
        raise ValueError(f"first_seed must be >= 0, got {config.first_seed}")
    if config.k < 1:
        raise ValueError(f"k must be >= 1, got {config.k}")
    if config.passes < 1:
        raise ValueError(f"passes must be >= 1, got {config.passes}")
    if config.rounds is not None and config.rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {config.rounds}")
    if config.until_fraction is not None and not 0 < config.until_fraction <= 1:
        raise ValueError(f"until_fraction must be in (0, 1], got {config.until_fraction}")
    for name in ("initial_fraction", "test_fraction"):
        value = getattr(config, name)
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if config.test_fraction == 0 and config.data != "redundant":
        raise ValueError("test_fraction must be > 0: the curves are measured on the test pool")
    if any(parse_arm(s).unit == "region" for s in config.strategies):
        from napari_alunet.regions import check_region_settings

        check_region_settings("region", config.region_size, "none", config.model.input_size)
        if not config.region_budget > 0:
            raise ValueError(f"region_budget must be > 0, got {config.region_budget}")


def full_budget(config: ExperimentConfig, n_train_pool: int) -> int | None:
    """Optimiser steps of the full-data baseline: ``full_steps_factor`` times the budget of an
    active fit of as many images, at most ``max_steps`` (None: the recipe's own budget, with
    an epoch budget or a fixed ``steps``)."""
    train = config.train
    if train.steps > 0 or train.budget_in_epochs or config.full_steps_factor == 1.0:
        return None
    return int(min(train.max_steps, round(config.full_steps_factor
                                          * train.planned_steps(n_train_pool))))
