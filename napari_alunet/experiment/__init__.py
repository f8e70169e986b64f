"""Oracle-replay active-learning experiments (headless): compare acquisition strategies over
seeds on a pool with ground truth, record every round, summarise and plot.

* :mod:`.runner`: :func:`run_experiment` (the loop, as a generator of events), rounds.csv,
  config.json and resume.
* :mod:`.report`: AULC, Dice at fixed fractions, fraction to 95 % of full data, paired tests.
* :mod:`.plots`: learning curves and Dice vs annotation effort (PNG + SVG).
"""

from napari_alunet.experiment.report import (
    aulc, dice_at, fraction_to_reach, markdown_table, paired_tests, summarise,
)
from napari_alunet.experiment.runner import (
    ExperimentPlan, ExperimentResult, Pool, ReportWritten, RoundRecorded, RoundStarted,
    load_experiment_config, load_pool, make_config, make_splits, planned_sizes, read_rounds,
    run_experiment, write_report,
)

__all__ = [
    "ExperimentPlan", "ExperimentResult", "Pool", "ReportWritten", "RoundRecorded",
    "RoundStarted", "aulc", "dice_at", "fraction_to_reach", "load_experiment_config",
    "load_pool", "make_config", "make_splits", "markdown_table", "paired_tests",
    "planned_sizes", "read_rounds", "run_experiment", "summarise", "write_report",
]
