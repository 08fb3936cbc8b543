"""Comorbidity discovery: which conditions occur together in a cohort, and what a score tracks.

Over a cohort's labels, or a model's predicted calls, this package computes:

- :mod:`~ecgfm.comorbidity.cooccurrence`: every pair's 2x2 table from one matrix product,
  observed vs expected, odds ratio with Woolf's interval (Haldane-Anscombe 0.5 when a cell is
  empty), phi, Fisher's exact p (chi-square for large tables), Benjamini-Hochberg/Yekutieli q;
- :mod:`~ecgfm.comorbidity.clusters`: hierarchical clusters of conditions on a co-occurrence
  distance;
- :mod:`~ecgfm.comorbidity.scan`: a phenome-wide scan of one continuous score (a model
  probability, ECG-age gap, QTc ...) against every condition: odds ratio per SD from a logistic
  regression (optionally adjusted), AUROC and standardised mean difference, with FDR;
- :mod:`~ecgfm.comorbidity.plots` and :mod:`~ecgfm.comorbidity.report`: the network and
  Manhattan figures and the self-contained HTML report;
- :mod:`~ecgfm.comorbidity.run`: the whole analysis from files (``ecgfm comorbidity``).

Names load their module on first use: ``import ecgfm.comorbidity`` imports no pandas, scipy or
matplotlib.

>>> from ecgfm.comorbidity import pairwise_cooccurrence, phenome_scan      # doctest: +SKIP
>>> pairs = pairwise_cooccurrence(y, ids).pairs                             # doctest: +SKIP
>>> scan = phenome_scan(age, y, ids, covariates=sex[:, None], covariate_names=["sex"])  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ecgfm.comorbidity.clusters import (
        ConditionClusters,
        cluster_conditions,
        cooccurrence_distance,
    )
    from ecgfm.comorbidity.conditions import describe_conditions, relation_matrix
    from ecgfm.comorbidity.cooccurrence import (
        CooccurrenceCounts,
        CooccurrenceResult,
        cooccurrence_counts,
        fisher_exact_2x2,
        pairwise_cooccurrence,
        table_statistics,
    )
    from ecgfm.comorbidity.fdr import fdr_qvalues
    from ecgfm.comorbidity.plots import plot_manhattan, plot_network
    from ecgfm.comorbidity.report import render_report
    from ecgfm.comorbidity.run import ComorbidityConfig, ComorbidityResult, run_comorbidity
    from ecgfm.comorbidity.scan import (
        BatchLogisticRegression,
        auroc_delong,
        phenome_scan,
        standardised_mean_difference,
    )

_LAZY = {
    "ConditionClusters": "clusters", "cluster_conditions": "clusters", "cooccurrence_distance": "clusters",
    "describe_conditions": "conditions", "relation_matrix": "conditions",
    "CooccurrenceCounts": "cooccurrence", "CooccurrenceResult": "cooccurrence",
    "cooccurrence_counts": "cooccurrence", "fisher_exact_2x2": "cooccurrence",
    "pairwise_cooccurrence": "cooccurrence", "table_statistics": "cooccurrence",
    "fdr_qvalues": "fdr", "plot_manhattan": "plots", "plot_network": "plots", "render_report": "report",
    "ComorbidityConfig": "run", "ComorbidityResult": "run", "run_comorbidity": "run",
    "BatchLogisticRegression": "scan", "auroc_delong": "scan", "phenome_scan": "scan",
    "standardised_mean_difference": "scan",
}

__all__ = [
    "BatchLogisticRegression", "ComorbidityConfig", "ComorbidityResult", "ConditionClusters",
    "CooccurrenceCounts", "CooccurrenceResult", "auroc_delong", "cluster_conditions",
    "cooccurrence_counts", "cooccurrence_distance", "describe_conditions", "fdr_qvalues",
    "fisher_exact_2x2", "pairwise_cooccurrence", "phenome_scan", "plot_manhattan", "plot_network",
    "relation_matrix", "render_report", "run_comorbidity", "standardised_mean_difference",
    "table_statistics",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ecgfm.comorbidity' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ecgfm.comorbidity.{module}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
