"""One comorbidity analysis from a manifest and/or predictions: what ``ecgfm comorbidity`` runs.

:func:`run_comorbidity` reads the inputs (:mod:`~ecgfm.comorbidity.inputs`), builds the
records x conditions matrix, and runs the pairwise statistics
(:mod:`~ecgfm.comorbidity.cooccurrence`), the clusters (:mod:`~ecgfm.comorbidity.clusters`) and
one phenome scan per score (:mod:`~ecgfm.comorbidity.scan`).
:meth:`ComorbidityResult.save` writes ``pairs.csv``, ``clusters.csv``, ``scan.csv``,
``network.png``, ``report.html`` and ``summary.json``.

Which records: with predictions, the records of the predictions (each must be in the manifest
when one is given; manifest records without a prediction are left out, with a note); without,
every manifest record.

Which conditions (``conditions_from``): ``"labels"`` (the manifest's labels column),
``"predictions"`` (each probability column called positive at its threshold; see
:func:`~ecgfm.comorbidity.inputs.parse_thresholds`), or ``"auto"`` (default): labels when the
manifest has the labels column, else predictions. ``soft=True`` uses the probabilities as soft
counts for the pairs (``min_count`` then applies to the summed probabilities; clusters and scans
still use the thresholded calls).

Which scores: ``scores`` names columns of the predictions or the manifest (``AFIB``,
``1-NORM``, ``logit:AFIB``, ``age``, ``qtc``); by default ``age`` when the manifest has a
numeric ``age`` column, else none.

>>> result = run_comorbidity("manifest.csv", "predictions.csv", scores=("AFIB",))  # doctest: +SKIP
>>> result.save("comorbidity-out")                                                   # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgfm.errors import ReadError, ValidationError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from ecgfm.comorbidity.clusters import ConditionClusters
    from ecgfm.comorbidity.cooccurrence import CooccurrenceResult
    from ecgfm.labels import Catalogue

__all__ = ["OUTPUT_FILES", "ComorbidityConfig", "ComorbidityResult", "run_comorbidity"]

OUTPUT_FILES = ("pairs.csv", "clusters.csv", "scan.csv", "network.png", "report.html", "summary.json")
_FROM = ("auto", "labels", "predictions")


@dataclass(frozen=True)
class ComorbidityConfig:
    """Every option of an analysis; written to ``summary.json``."""

    id_column: str = "record_id"  # joins the manifest and the predictions
    labels_column: str = "labels"  # the manifest's labels column (lists or ';'-joined ids)
    conditions_from: str = "auto"  # auto | labels | predictions
    thresholds: tuple[str, ...] = ()  # '0.4', 'AFIB=0.3', 'model', 'model:PATH' (predicted calls)
    soft: bool = False  # pairs from probabilities as soft counts instead of calls
    scores: tuple[str, ...] | None = None  # scan these; None: 'age' when the manifest has it
    covariates: tuple[str, ...] = ()  # adjust the scans' odds ratios for these manifest columns
    min_count: int = 10  # records with (and without) a condition for it to be analysed
    alpha: float = 0.05  # q cut and 1 - confidence of every interval
    fdr: str = "bh"  # bh | by
    method: str = "auto"  # pair p-values: auto (Fisher for small tables) | fisher | chi2
    exact_below: float = 1000.0  # auto: Fisher when the smallest expected cell is below this
    cluster_metric: str = "jaccard"  # jaccard | phi
    cluster_method: str = "average"  # scipy linkage
    n_clusters: int | None = None  # cut into k clusters; None: cut at cluster_threshold
    cluster_threshold: float = 0.9  # distance cut of the tree
    max_network_nodes: int = 60  # nodes drawn in network.png
    max_network_edges: int = 150  # edges drawn
    top: int = 20  # rows of the report's top tables

    def __post_init__(self) -> None:
        if self.conditions_from not in _FROM:
            raise ValidationError(f"conditions_from must be one of {', '.join(_FROM)}, got {self.conditions_from!r}")
        for name in ("thresholds", "scores", "covariates"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = tuple(v.strip() for v in value.split(",") if v.strip())
            if value is not None:
                object.__setattr__(self, name, tuple(str(v) for v in value))
        if int(self.min_count) < 1:
            raise ValidationError(f"min_count must be >= 1, got {self.min_count}")
        if not 0 < float(self.alpha) < 1:
            raise ValidationError(f"alpha must be in (0, 1), got {self.alpha}")
        choices = {"fdr": ("bh", "by"), "method": ("auto", "fisher", "chi2"),
                   "cluster_metric": ("jaccard", "phi"), "cluster_method": ("average", "complete", "single", "weighted")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValidationError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")


@dataclass
class ComorbidityResult:
    """Everything an analysis found.

    Attributes:
        config: the options.
        inputs: what was read: files, record counts, where the conditions came from, thresholds.
        cooccurrence: the pairwise statistics (``.pairs``, ``.conditions``).
        clusters: the condition clusters (None with fewer than two analysed conditions).
        scan: every score's scan, stacked (empty without scores).
        notes: what the reader should know.
        timings: seconds per stage.
    """

    config: ComorbidityConfig
    inputs: dict[str, Any]
    cooccurrence: CooccurrenceResult
    clusters: ConditionClusters | None
    scan: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def pairs(self) -> pd.DataFrame:
        """The pairwise table (``pairs.csv``)."""
        return self.cooccurrence.pairs

    def top_pairs(self, sign: int = 1, n: int | None = None) -> pd.DataFrame:
        """Significant pairs with OR > 1 (``sign=1``) or < 1 (``sign=-1``), pairs related by
        construction left out, most significant first."""
        p = self.pairs
        sel = p[(p["significant"]) & (p["relation"] != "grouping") & (np.sign(p["log_or"]) == sign)]
        return sel.head(self.config.top if n is None else n)

    def summary(self) -> dict[str, Any]:
        """The ``summary.json`` content: inputs, counts, the top findings, notes, configuration."""
        co = self.cooccurrence
        pairs = co.pairs
        tested = pairs[pairs["relation"] != "grouping"]
        def brief(df: pd.DataFrame) -> list[dict[str, Any]]:
            cols = ["a", "b", "n11", "expected", "odds_ratio", "or_low", "or_high", "q", "p_method", "haldane", "relation"]
            return _records(df[cols])
        out: dict[str, Any] = {
            "inputs": self.inputs,
            "n_records": int(round(co.settings["n_records"])),
            "conditions": {"n": int(co.settings["n_conditions"]), "analysed": int(co.settings["n_kept"]),
                           "left_out": co.conditions.loc[~co.conditions["kept"], "id"].tolist()},
            "pairs": {"tested": int(len(pairs)), "significant": int(pairs["significant"].sum()),
                      "significant_positive": int((tested["significant"] & (tested["log_or"] > 0)).sum()),
                      "significant_negative": int((tested["significant"] & (tested["log_or"] < 0)).sum()),
                      "fisher": int((pairs["p_method"] == "fisher").sum()),
                      "haldane": int(pairs["haldane"].sum()),
                      "by_construction": int((pairs["relation"] == "grouping").sum())},
            "top_positive": brief(self.top_pairs(1, 10)),
            "top_negative": brief(self.top_pairs(-1, 10)),
            "clusters": [] if self.clusters is None else _records(self.clusters.summary()),
            "scans": {},
            "notes": list(self.notes),
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "config": _jsonable(asdict(self.config)),
        }
        if not self.scan.empty:
            for name, group in self.scan.groupby("score", sort=False):
                ok = group[group["status"] == "ok"]
                cols = ["condition", "or_per_sd", "or_low", "or_high", "q", "auroc", "smd"]
                out["scans"][str(name)] = {
                    "conditions": int(len(group)), "fitted": int(len(ok)),
                    "significant": int(ok["significant"].sum()),
                    "skipped": {str(k): int(v) for k, v in group.loc[group["status"] != "ok", "status"].value_counts().items()},
                    "covariates": str(group["covariates"].iloc[0]),
                    "top": _records(ok.head(10)[cols]),
                }
        return out

    def save(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        """Write :data:`OUTPUT_FILES` into ``out_dir`` (created). Returns the paths."""
        from ecgfm.comorbidity.report import _png, render_report

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        self.pairs.to_csv(out / "pairs.csv", index=False)
        paths.append(out / "pairs.csv")
        clusters = self.clusters.table if self.clusters is not None else None
        if clusters is None:
            import pandas as pd

            clusters = pd.DataFrame(columns=["cluster", "id", "name", "category", "n", "prevalence", "cluster_size", "mean_distance"])
        clusters.to_csv(out / "clusters.csv", index=False)
        paths.append(out / "clusters.csv")
        self.scan.to_csv(out / "scan.csv", index=False)
        paths.append(out / "scan.csv")
        png = _png(self.network_figure())
        (out / "network.png").write_bytes(png)
        paths.append(out / "network.png")
        (out / "report.html").write_text(render_report(self, network_png=png), encoding="utf-8")
        paths.append(out / "report.html")
        (out / "summary.json").write_text(json.dumps(_jsonable(self.summary()), indent=2) + "\n", encoding="utf-8")
        paths.append(out / "summary.json")
        return paths

    def network_figure(self) -> Figure:
        """The association network (:func:`~ecgfm.comorbidity.plots.plot_network`)."""
        from ecgfm.comorbidity.plots import plot_network

        cfg = self.config
        return plot_network(self.pairs, self.cooccurrence.conditions, clusters=self.cluster_map(),
                            alpha=cfg.alpha, max_nodes=cfg.max_network_nodes, max_edges=cfg.max_network_edges)

    def cluster_map(self) -> dict[str, int]:
        """``{condition id: cluster}`` (empty without clusters)."""
        if self.clusters is None:
            return {}
        return dict(zip(self.clusters.ids, (int(k) for k in self.clusters.labels)))


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: _jsonable(v) for k, v in row.items()} for row in df.to_dict(orient="records")]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_comorbidity(
    manifest: str | os.PathLike[str] | None = None,
    predictions: str | os.PathLike[str] | None = None,
    config: ComorbidityConfig | None = None,
    *,
    catalogue: Catalogue | None = None,
    **overrides: Any,
) -> ComorbidityResult:
    """Read the inputs and run every analysis (module docstring).

    Args:
        manifest: a table or corpus store with ``record_id``, labels and covariates (optional).
        predictions: a predictions table or ``ecgfm profile`` folder (optional; one of the two
            is needed).
        config: the options; ``**overrides`` replace single fields (``min_count=5``).
        catalogue: for names, categories and relations; defaults to the packaged one.

    Returns:
        :class:`ComorbidityResult`.

    Raises:
        ReadError: a file problem (names the file).
        ValidationError: an option or combination that cannot work.
    """
    import pandas as pd

    from ecgfm.comorbidity.clusters import cluster_conditions
    from ecgfm.comorbidity.cooccurrence import cooccurrence_counts, pairwise_cooccurrence
    from ecgfm.comorbidity.inputs import (
        covariate_matrix,
        label_matrix,
        parse_labels,
        parse_thresholds,
        read_manifest,
        read_predictions,
        resolve_score,
    )
    from ecgfm.comorbidity.scan import phenome_scan

    cfg = replace(config or ComorbidityConfig(), **overrides) if overrides else (config or ComorbidityConfig())
    if manifest is None and predictions is None:
        raise ValidationError("give a manifest (labels), predictions, or both")
    timings: dict[str, float] = {}
    notes: list[str] = []
    t0 = time.perf_counter()
    idc = cfg.id_column
    man = read_manifest(manifest, id_column=idc) if manifest is not None else None
    pred = read_predictions(predictions, id_column=idc) if predictions is not None else None
    inputs: dict[str, Any] = {"manifest": None if manifest is None else str(manifest),
                              "predictions": None if predictions is None else str(predictions)}
    if pred is not None:
        notes.extend(pred.notes)
        ids = pred.frame[idc]
        if man is not None:
            present = ids.isin(man[idc])
            if not present.all():
                missing = ids[~present].tolist()
                raise ReadError(predictions, f"{len(missing)} records are not in the manifest {manifest} "
                                f"(e.g. {', '.join(map(str, missing[:5]))})")
            left = int((~man[idc].isin(ids)).sum())
            if left:
                notes.append(f"{left} manifest records without a prediction left out")
            man = man.set_index(idc).loc[ids.to_numpy()].reset_index()
    n_records = len(pred.frame) if pred is not None else len(man)  # type: ignore[arg-type]
    inputs["n_records"] = n_records
    timings["read"] = time.perf_counter() - t0

    # -- the condition matrix ----------------------------------------------------------------
    t0 = time.perf_counter()
    has_labels = man is not None and cfg.labels_column in man.columns
    source = cfg.conditions_from
    if source == "auto":
        source = "labels" if has_labels or pred is None else "predictions"
    soft_matrix = None
    if source == "labels":
        if man is None:
            raise ValidationError("conditions_from='labels' needs a manifest")
        lists = parse_labels(man, cfg.labels_column, str(manifest), id_column=idc)
        y, cond_ids = label_matrix(lists, catalogue)
        if not cond_ids:
            raise ReadError(manifest, f"labels column {cfg.labels_column!r} holds no label at all")
        inputs["conditions_from"] = f"labels (column {cfg.labels_column!r})"
        if cfg.soft:
            notes.append("soft=True ignored: the conditions come from labels")
    else:
        if pred is None:
            raise ValidationError("conditions_from='predictions' needs predictions")
        if not pred.probabilities:
            raise ReadError(predictions, "no probability column (values in [0, 1]) to take conditions from")
        cond_ids = list(pred.probabilities)
        probs = pred.frame[cond_ids].to_numpy(dtype=np.float64)
        thr, described = parse_thresholds(cfg.thresholds, cond_ids, defaults=pred.thresholds)
        y = probs >= thr[None, :]
        inputs["conditions_from"] = "predictions (soft counts for pairs)" if cfg.soft else "predictions (calls)"
        inputs["thresholds"] = described
        inputs["threshold_values"] = {c: float(t) for c, t in zip(cond_ids, thr)}
        if cfg.soft:
            soft_matrix = probs
    timings["conditions"] = time.perf_counter() - t0

    # -- pairs and clusters ------------------------------------------------------------------
    t0 = time.perf_counter()
    counts = cooccurrence_counts(soft_matrix if soft_matrix is not None else y, soft=soft_matrix is not None)
    co = pairwise_cooccurrence(counts, cond_ids, min_count=cfg.min_count, alpha=cfg.alpha, fdr=cfg.fdr,
                               method=cfg.method, exact_below=cfg.exact_below, catalogue=catalogue)
    notes.extend(co.notes)
    timings["pairs"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    clusters = None
    kept_idx = [cond_ids.index(c) for c in co.kept_ids]
    if len(co.kept_ids) >= 2:
        clusters = cluster_conditions(cooccurrence_counts(y[:, kept_idx]), co.kept_ids, metric=cfg.cluster_metric,
                                      method=cfg.cluster_method, n_clusters=cfg.n_clusters,
                                      threshold=cfg.cluster_threshold, catalogue=catalogue)
    timings["clusters"] = time.perf_counter() - t0

    # -- scans -------------------------------------------------------------------------------
    t0 = time.perf_counter()
    tables: list[tuple[str, pd.DataFrame]] = []
    if pred is not None:
        tables.append((str(predictions), pred.frame))
    if man is not None:
        tables.append((str(manifest), man))
    scores = cfg.scores
    if scores is None:
        age_ok = man is not None and "age" in man.columns and pd.to_numeric(man["age"], errors="coerce").notna().any()
        scores = ("age",) if age_ok else ()
        if not scores:
            notes.append("no score to scan (give --score COLUMN)")
    if cfg.covariates and man is None:
        raise ValidationError("covariates come from the manifest: give one")
    scans = []
    for spec in scores:
        name, values = resolve_score(spec, tables)
        covs = [c for c in cfg.covariates if c != spec]
        if len(covs) < len(cfg.covariates):
            notes.append(f"scan of {name}: {spec!r} is the score itself, not used as a covariate")
        x, x_names = (covariate_matrix(man, covs, str(manifest)) if covs and man is not None
                      else (None, []))
        finite = np.isfinite(values) & (np.all(np.isfinite(x), axis=1) if x is not None and x.size else True)
        if int(np.sum(finite)) < n_records:
            notes.append(f"scan of {name}: {n_records - int(np.sum(finite))} records without the score "
                         "or a covariate left out")
        scans.append(phenome_scan(values, y, cond_ids, covariates=x, covariate_names=x_names or None,
                                  score_name=name, min_cases=cfg.min_count, alpha=cfg.alpha, fdr=cfg.fdr,
                                  catalogue=catalogue))
    scan = pd.concat(scans, ignore_index=True) if scans else _empty_scan()
    timings["scan"] = time.perf_counter() - t0
    return ComorbidityResult(cfg, inputs, co, clusters, scan, notes, timings)


def _empty_scan() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(columns=["score", "condition", "name", "category", "status", "reason", "n", "n_cases",
                                 "beta", "se", "or_per_sd", "or_low", "or_high", "p", "log10_p", "q",
                                 "significant", "auroc", "auroc_low", "auroc_high", "smd", "smd_low",
                                 "smd_high", "mean_cases", "mean_controls", "covariates", "score_mean", "score_sd"])

