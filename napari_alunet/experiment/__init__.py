"""Oracle-replay active-learning experiments (headless): compare acquisition strategies over
seeds on a pool with ground truth, record every round, summarise and plot.

* :mod:`.runner`: :func:`run_experiment`, the loop as a generator of events; :func:`write_report`.
* :mod:`.pool`: the pool in memory, the fixed test split, initial sets, the size schedule.
* :mod:`.records`: rounds.csv (append + fsync) and config.json (saved, compared on resume).
* :mod:`.report`: AULC (labelled fraction and clicks), Dice at fixed fractions, fraction to 95 %
  of full data, per-mode Dice; :mod:`.stats`: paired CIs, Holm, Wilcoxon, TOST;
  :mod:`.cost`: annotation cost in pixels and clicks.
* :mod:`.plots`: learning curves and Dice vs annotation effort (PNG + SVG).
"""

from napari_alunet.experiment.plots import write_report
from napari_alunet.experiment.pool import (
    Pool,
    Splits,
    load_pool,
    make_splits,
    planned_sizes,
)
from napari_alunet.experiment.records import (
    load_experiment_config,
    parse_ids,
    read_rounds,
    round_columns,
)
from napari_alunet.experiment.report import (
    aulc,
    dice_at,
    fraction_to_reach,
    markdown_table,
    summarise,
)
from napari_alunet.experiment.runner import (
    ExperimentPlan,
    ExperimentResult,
    ReportWritten,
    RoundRecorded,
    RoundStarted,
    run_experiment,
)
from napari_alunet.experiment.settings import make_config, split_strategy

__all__ = [
    "ExperimentPlan", "ExperimentResult", "Pool", "ReportWritten", "RoundRecorded",
    "RoundStarted", "Splits", "aulc", "dice_at", "fraction_to_reach", "load_experiment_config",
    "load_pool", "make_config", "make_splits", "markdown_table", "parse_ids",
    "planned_sizes", "read_rounds", "round_columns", "run_experiment", "split_strategy",
    "summarise", "write_report",
]
