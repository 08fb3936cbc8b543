"""Evaluation: metrics with patient-bootstrap intervals, operating points, calibration,
fairness, multi-cohort tables, the PhysioNet/CinC challenge score, data-efficiency curves, and
the HTML report of ``ecgfm evaluate``.

One call from two tables to every number (:func:`evaluate_run`), or the pieces by module:
:mod:`~ecgfm.evaluate.metrics`, :mod:`~ecgfm.evaluate.bootstrap`,
:mod:`~ecgfm.evaluate.fairness`, :mod:`~ecgfm.evaluate.cohorts`,
:mod:`~ecgfm.evaluate.calibration`, :mod:`~ecgfm.evaluate.challenge`,
:mod:`~ecgfm.evaluate.efficiency`, :mod:`~ecgfm.evaluate.run`, :mod:`~ecgfm.evaluate.report`.

The names below load their module on first use, so ``import ecgfm.evaluate`` imports neither
pandas, scipy nor matplotlib.

>>> from ecgfm.evaluate import evaluate_run                       # doctest: +SKIP
>>> result = evaluate_run("predictions.csv", "labels.csv", groups=("sex", "age"))  # doctest: +SKIP
>>> result.save("eval-out")                                        # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ecgfm.evaluate.bootstrap import paired_bootstrap
    from ecgfm.evaluate.calibration import TemperatureScaling, expected_calibration_error
    from ecgfm.evaluate.challenge import ChallengeWeights, challenge_score
    from ecgfm.evaluate.cohorts import cohort_table, evaluate_cohorts
    from ecgfm.evaluate.efficiency import data_efficiency
    from ecgfm.evaluate.fairness import age_bands, subgroup_table
    from ecgfm.evaluate.metrics import auroc, average_precision, fmax, operating_thresholds
    from ecgfm.evaluate.report import render_report, write_report
    from ecgfm.evaluate.run import (
        EvaluationConfig,
        EvaluationResult,
        align,
        evaluate_run,
        load_table,
    )

# Names equal to a submodule's (bootstrap, fairness, ...) are left out on purpose: importing the
# submodule would replace the function by the module on the package.
_LAZY = {
    "EvaluationConfig": "run", "EvaluationResult": "run", "align": "run", "evaluate_run": "run",
    "load_table": "run", "render_report": "report", "write_report": "report",
    "auroc": "metrics", "average_precision": "metrics", "fmax": "metrics",
    "operating_thresholds": "metrics", "paired_bootstrap": "bootstrap",
    "age_bands": "fairness", "subgroup_table": "fairness", "cohort_table": "cohorts",
    "evaluate_cohorts": "cohorts", "ChallengeWeights": "challenge",
    "challenge_score": "challenge", "TemperatureScaling": "calibration",
    "expected_calibration_error": "calibration", "data_efficiency": "efficiency",
}

__all__ = [
    "ChallengeWeights", "EvaluationConfig", "EvaluationResult", "TemperatureScaling", "age_bands",
    "align", "auroc", "average_precision", "challenge_score", "cohort_table", "data_efficiency",
    "evaluate_cohorts", "evaluate_run", "expected_calibration_error", "fmax", "load_table",
    "operating_thresholds", "paired_bootstrap", "render_report", "subgroup_table", "write_report",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"ecgfm.evaluate.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'ecgfm.evaluate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
