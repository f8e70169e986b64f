"""AcquisitionConfig and the one list of strategies, uncertainty maps, batch rules, cold
starts and review units (the CLI, the widgets and the experiment import them from here)."""

from __future__ import annotations

from dataclasses import dataclass

from napari_alunet.config.seeds import _check_seed

#: Every per-pixel uncertainty map :mod:`napari_alunet.uncertainty` computes.
MAP_NAMES: tuple[str, ...] = ("entropy", "bald", "kl", "js", "margin", "variation_ratio")

#: Strategy name -> the uncertainty map (:mod:`napari_alunet.uncertainty`) its score reduces;
#: the one list of strategies (acquisition.py, the CLI and the widgets import it).
STRATEGY_MAPS: dict[str, str | None] = {
    "random": None,
    "entropy": "entropy",
    "bald": "bald",
    "kl": "kl",
    "js": "js",
    "margin": "margin",
    "variation_ratio": "variation_ratio",
}
#: The strategies a user can choose (CLI, GUI, experiment arms).
STRATEGIES: tuple[str, ...] = tuple(STRATEGY_MAPS)
#: The uncertainty maps cached with every queued image for the Review panel (the strategy's own
#: map is added when it is another one).
REVIEW_MAPS: tuple[str, ...] = ("entropy", "bald", "kl", "js")
#: MC-dropout passes per image unless a config says otherwise.
DEFAULT_MC_PASSES: int = 8
#: How k are taken from the scores (see :func:`napari_alunet.acquisition.rank`).
DIVERSITY: tuple[str, ...] = ("none", "power", "feature", "softrank", "softmax", "badge")
#: Strategies that need ground truth of the unlabelled pool: benchmark controls only.
ORACLE_STRATEGIES: tuple[str, ...] = ("oracle_error",)
#: Cold starts for the first queue of a pool without labels.
COLD_STARTS: tuple[str, ...] = ("random", "typical")
#: What acquisition takes (whole images or regions) and a region's optional cost estimate.
UNITS: tuple[str, ...] = ("image", "region")
REGION_COSTS: tuple[str, ...] = ("none", "boundary")


@dataclass
class AcquisitionConfig:
    """How the unlabelled pool is scored and which images are proposed.

    Every field is checked when the config is made (options, widgets, stored settings), so a
    bad value is one clear error naming the option before anything is saved.
    """

    strategy: str = "bald"  # one of STRATEGIES
    passes: int = DEFAULT_MC_PASSES
    k: int = 2
    subset: int | None = None  # score a random subset of this many pool images (None: all)
    reduction: str = "mean"  # mean over all pixels, "foreground", "class_weighted"
    # How k images are taken from the scores. Stochastic batches by default: top-k of
    # per-image scores picks near-duplicates and loses to random at small budgets (Kirsch et
    # al. 2021); "none" is plain top-k, "badge" the uncertainty + diversity hybrid.
    diversity: str = "power"  # none, power, softrank, softmax, feature, badge
    power_beta: float | None = None  # None: set from the scores' dynamic range
    batch_size: int = 16
    seed: int = 0
    cold_start: str = "typical"  # the first queue of a project without labels: typical, random
    # What is acquired: whole images, or regions (square tiles of the model's input) ranked
    # across the pool; with "region" k counts regions and the reviewer labels only inside them.
    unit: str = "image"  # image, region
    region_size: int = 32  # side of a region tile in model-input pixels
    # "boundary": divide a region's score by its estimated correction cost (CEREALS-style:
    # 1 + the predicted class boundaries per pixel, scaled), favouring cheap-to-fix regions.
    region_cost: str = "none"  # none, boundary

    def __post_init__(self) -> None:
        choices = {"strategy": (*STRATEGY_MAPS, *ORACLE_STRATEGIES), "diversity": DIVERSITY,
                   "cold_start": COLD_STARTS, "unit": UNITS, "region_cost": REGION_COSTS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not "
                                 f"{getattr(self, name)!r}")
        for name, low in (("passes", 1), ("k", 1), ("batch_size", 1), ("region_size", 4)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
        if self.subset is not None and (not isinstance(self.subset, int) or self.subset < 1):
            raise ValueError(f"subset must be None (score the whole pool) or a whole number "
                             f">= 1, got {self.subset!r}")
        if self.power_beta is not None and not float(self.power_beta) >= 0:
            raise ValueError(f"power_beta must be >= 0 (inf: top-k) or None (from the scores' "
                             f"range), got {self.power_beta!r}")
        if self.reduction not in ("mean", "foreground", "class_weighted"):
            raise ValueError(f"reduction must be one of mean, foreground, class_weighted, not "
                             f"{self.reduction!r}")
        _check_seed(self.seed)
