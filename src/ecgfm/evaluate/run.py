"""Evaluate a model's predictions against labels: two tables in, every number and file out.

This is the orchestration behind ``ecgfm evaluate``; the maths lives in the sibling modules
(:mod:`~ecgfm.evaluate.metrics`, :mod:`~ecgfm.evaluate.bootstrap`,
:mod:`~ecgfm.evaluate.cohorts`, :mod:`~ecgfm.evaluate.fairness`,
:mod:`~ecgfm.evaluate.calibration`, :mod:`~ecgfm.evaluate.challenge`).

Inputs (CSV, TSV, Parquet or JSON Lines; several files of each are concatenated):

- **predictions**: an id column (``record_id``) and one column per condition holding the
  model's probability in [0, 1].
- **labels**: the same id column, one 0/1 column per predicted condition (empty or NaN: label
  missing, that record is left out of that condition only), and optional metadata columns:
  ``patient_id`` (bootstrap resamples patients), ``split`` (``val`` rows fit the operating
  thresholds and the temperatures, ``test`` rows are scored), ``cohort`` (one table of
  conditions x cohorts), and any subgroup columns for fairness (``sex``, ``age``, ``site``...).

What :func:`evaluate_run` does, in order:

1. :func:`align` joins the tables on the id and checks them (errors name the file).
2. Rows with ``split == "val"`` fit the temperatures (optional, per condition) and the operating
   thresholds; both are carried unchanged to the ``test`` rows of every cohort. Without
   validation rows the thresholds are fitted on the scored rows and the result is flagged
   ``thresholds_optimistic``.
3. The *primary* rows (the test rows of the primary cohort: by default the cohort of the
   validation rows) get the per-condition table with patient-bootstrap intervals and the
   summary (macro and micro averages, how many conditions pass AUROC 0.7 / 0.8 / 0.9),
   calibration (ECE before and after temperature scaling) and fairness per subgroup column.
4. Every cohort's test rows get a table (thresholds carried), and the challenge metric when a
   weights table is given.

>>> result = evaluate_run("predictions.csv", "labels.csv", groups=("sex", "age"))  # doctest: +SKIP
>>> result.summary["macro_auroc"], result.summary["macro_auroc_ci"]               # doctest: +SKIP
>>> result.save("eval-out")                                                        # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from ecgfm.errors import ReadError, ValidationError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "Aligned", "EvaluationConfig", "EvaluationResult", "TableInput", "align", "evaluate_run",
    "load_table", "parse_operating_point",
]

TableInput = Union[str, "os.PathLike[str]", "pd.DataFrame"]
"""A table given as a file path (CSV, TSV, Parquet, JSON Lines) or a DataFrame."""

#: Metrics that get patient-bootstrap intervals in the per-condition and per-cohort tables.
CI_METRICS = ("auroc", "ap", "sensitivity", "specificity")
#: Metrics reported per subgroup in the fairness table (``sensitivity`` is the TPR).
FAIRNESS_METRICS = ("auroc", "sensitivity", "fpr")
#: Output files of :meth:`EvaluationResult.save`, by format.
FORMATS = ("csv", "json", "html")
_MISSING_TEXT = {"", "nan", "na", "n/a", "none", "null"}
_MAX_GROUP_LEVELS = 20


# ---------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class EvaluationConfig:
    """Every option of an evaluation run; written to ``config.json`` beside the results."""

    id_column: str = "record_id"  # joins predictions to labels; read as text ("00123" stays)
    patient_column: str | None = "patient_id"  # bootstrap draws patients; None/absent: records
    split_column: str | None = "split"  # which rows fit (val) and which are scored (test)
    fit_split: str = "val"  # split value of the rows that fit thresholds and temperatures
    eval_split: str = "test"  # split value of the rows that are scored
    cohort_column: str | None = "cohort"  # one table of conditions x cohorts when present
    primary_cohort: str | None = None  # headline cohort; None: the val rows' cohort, else all
    groups: tuple[str, ...] = ()  # subgroup columns for fairness; the age column is banded
    age_column: str = "age"  # the group column cut into age bands (years)
    age_edges: tuple[float, ...] = (18, 40, 60, 80)  # band edges: <18, 18-39, ..., 80+
    min_subgroup_size: int = 20  # smaller subgroups are shown but left out of the macro gaps
    min_subgroup_positives: int = 5  # positives per subgroup for a condition to enter the macro
    conditions: tuple[str, ...] | None = None  # prediction columns to score; None: all
    n_resamples: int = 1000  # patient-bootstrap resamples (0: no intervals)
    seed: int = 0  # bootstrap seed (resample b uses default_rng([seed, b]))
    alpha: float = 0.05  # 0.05 gives 95 % percentile intervals
    operating_point: str = "youden"  # youden | f1 | sensitivity:0.9 | specificity:0.9
    temperature: bool | None = None  # temperature scaling on val; None: when val rows exist
    n_bins: int = 15  # equal-width bins of the expected calibration error
    challenge_weights: str | None = None  # CinC 2020/2021 weights.csv: adds the challenge score
    report_conditions: tuple[str, ...] | None = None  # curves in the report; None: top_k
    top_k: int = 6  # conditions with the most positives shown in the report's curves

    def __post_init__(self) -> None:
        parse_operating_point(self.operating_point)
        if int(self.n_resamples) < 0:
            raise ValidationError(f"n_resamples: expected >= 0, got {self.n_resamples}")
        if int(self.seed) < 0:
            raise ValidationError(f"seed: expected a non-negative integer, got {self.seed}")
        if not 0 < float(self.alpha) < 1:
            raise ValidationError(f"alpha: expected a value in (0, 1), got {self.alpha}")
        if int(self.n_bins) < 1:
            raise ValidationError(f"n_bins: expected >= 1, got {self.n_bins}")
        for name in ("groups", "age_edges", "conditions", "report_conditions"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = tuple(v.strip() for v in value.split(",") if v.strip())
            if value is not None:
                object.__setattr__(self, name, tuple(value))


def parse_operating_point(spec: str) -> tuple[str, float | None]:
    """``"youden"`` -> ``("youden", None)``; ``"sensitivity:0.9"`` -> ``("sensitivity", 0.9)``.

    Accepted: ``youden``, ``f1``, ``sensitivity:T`` and ``specificity:T`` with T in (0, 1].
    """
    text = str(spec).strip().lower()
    method, _, target = text.partition(":")
    method = method.strip()
    if method in ("youden", "f1") and not target:
        return method, None
    if method in ("sensitivity", "specificity") and target:
        try:
            value = float(target)
        except ValueError:
            value = math.nan
        if 0 < value <= 1:
            return method, value
    raise ValidationError(
        f"operating point {spec!r}: expected youden, f1, sensitivity:T or specificity:T with T in"
        " (0, 1], e.g. sensitivity:0.9"
    )


# ---------------------------------------------------------------------------------------------
# reading and aligning


def load_table(path: str | os.PathLike[str], *, id_column: str | None = None) -> pd.DataFrame:
    """Read a CSV, TSV, Parquet or JSON Lines table (by extension; ``.gz`` CSV/TSV too).

    Args:
        path: the file.
        id_column: a column to read as text, so ids like ``00123`` keep their zeros.

    Returns:
        The table; empty cells are NaN.

    Raises:
        ReadError: missing file, unknown extension, unparseable content, or Parquet without
            pyarrow.
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise ReadError(p, "no such file")
    name = p.name.lower()
    dtype = {id_column: str} if id_column else None
    try:
        if name.endswith((".csv", ".csv.gz")):
            return pd.read_csv(p, dtype=dtype)
        if name.endswith((".tsv", ".tsv.gz", ".tab")):
            return pd.read_csv(p, sep="\t", dtype=dtype)
        if name.endswith((".parquet", ".pq")):
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise ReadError(p, "reading Parquet needs pyarrow (pip install 'ecgfm[tables]')") from None
            df = pd.read_parquet(p)
        elif name.endswith((".jsonl", ".ndjson", ".json")):
            df = pd.read_json(p, lines=True, dtype=False)
        else:
            raise ReadError(p, "unknown table format: expected .csv, .tsv, .parquet or .jsonl")
    except ReadError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types; the file is what the user can fix
        raise ReadError(p, f"cannot read as a table ({type(exc).__name__}: {exc})") from None
    if id_column and id_column in df.columns:
        ids = df[id_column]
        df[id_column] = ids.where(ids.isna(), ids.astype(str))
    return df


@dataclass
class Aligned:
    """Predictions and labels joined on the record id.

    Attributes:
        ids: ``[N]`` record ids (text), in the order of the predictions.
        names: the C condition names.
        y: float64 ``[N, C]`` labels, 0, 1 or NaN (missing).
        scores: float64 ``[N, C]`` probabilities in [0, 1] (NaN only where the label is missing).
        meta: DataFrame ``[N]`` of the other columns (labels' first, then the predictions'),
            indexed by position.
        sources: the files (or ``"<DataFrame>"``) the predictions and labels came from.
        n_unmatched_labels: label rows with no prediction (ignored).
    """

    ids: np.ndarray
    names: list[str]
    y: np.ndarray
    scores: np.ndarray
    meta: pd.DataFrame
    sources: dict[str, list[str]]
    n_unmatched_labels: int = 0


def _load_many(tables: TableInput | Sequence[TableInput], id_column: str, kind: str) -> list[tuple[str, pd.DataFrame]]:
    import pandas as pd

    if isinstance(tables, (str, os.PathLike, pd.DataFrame)):
        tables = [tables]
    out = []
    for t in tables:
        if isinstance(t, pd.DataFrame):
            df, name = t.copy(), f"<{kind} DataFrame>"
            if id_column in df.columns:
                ids = df[id_column]
                df[id_column] = ids.where(ids.isna(), ids.astype(str))
        else:
            df, name = load_table(t, id_column=id_column), os.fspath(t)
        out.append((name, df))
    if not out:
        raise ValidationError(f"{kind}: no table given")
    return out


def _check_ids(name: str, df: pd.DataFrame, id_column: str) -> None:
    if id_column not in df.columns:
        cols = ", ".join(map(str, df.columns[:12])) + (", ..." if df.shape[1] > 12 else "")
        raise ReadError(name, f"no id column {id_column!r} (columns: {cols}); name it with --id-column")
    ids = df[id_column]
    empty = ids.isna() | (ids.astype(str).str.strip() == "")
    if empty.any():
        rows = (np.flatnonzero(empty.to_numpy())[:3] + 2).tolist()  # +2: header line, 1-based
        raise ReadError(name, f"{int(empty.sum())} rows have an empty {id_column!r} (lines {rows})")
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        first = dup.iloc[0]
        raise ReadError(
            name,
            f"duplicate {id_column} {first!r} ({int((ids == first).sum())} rows); "
            f"{dup.nunique()} ids appear more than once",
        )


def _concat(loaded: list[tuple[str, pd.DataFrame]], id_column: str) -> tuple[pd.DataFrame, np.ndarray]:
    """One table, and each row's source file; duplicates across files are reported."""
    import pandas as pd

    df = pd.concat([d for _, d in loaded], ignore_index=True, sort=False)
    src = np.concatenate([np.full(len(d), n, dtype=object) for n, d in loaded])
    ids = df[id_column]
    dup = ids.duplicated(keep=False)
    if dup.any():
        first = ids[dup].iloc[0]
        files = sorted(set(src[(ids == first).to_numpy()]))
        raise ReadError(" and ".join(files), f"{id_column} {first!r} appears in more than one file")
    return df, src


def _label_values(name: str, col: str, values: pd.Series, ids: pd.Series) -> np.ndarray:
    import pandas as pd

    v = values
    if v.dtype == bool:
        return v.to_numpy(dtype=np.float64)
    if v.dtype == object:
        text = v.astype(str).str.strip().str.lower()
        mapped = text.map({"1": 1.0, "0": 0.0, "1.0": 1.0, "0.0": 0.0, "true": 1.0, "false": 0.0})
        missing = v.isna() | text.isin(_MISSING_TEXT)
        bad = mapped.isna() & ~missing
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ReadError(
                name, f"label column {col!r}: values must be 0, 1 or empty (missing); found "
                f"{v.iloc[i]!r} for {ids.iloc[i]!r}"
            )
        return mapped.to_numpy(dtype=np.float64)
    x = pd.to_numeric(v, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isnan(x) & (x != 0) & (x != 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ReadError(
            name, f"label column {col!r}: values must be 0, 1 or empty (missing); found {x[i]!r}"
            f" for {ids.iloc[i]!r}"
        )
    return x


def _score_values(name: str, col: str, values: pd.Series, ids: pd.Series) -> np.ndarray:
    import pandas as pd

    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    text_missing = values.isna().to_numpy()
    if values.dtype == object:
        text_missing |= values.astype(str).str.strip().str.lower().isin(_MISSING_TEXT).to_numpy()
    bad = np.isnan(x) & ~text_missing
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ReadError(
            name, f"column {col!r}: predictions must be numbers (probabilities in [0, 1]); found"
            f" {values.iloc[i]!r} for {ids.iloc[i]!r} (not a condition? leave it out with --conditions)"
        )
    out = ~np.isnan(x) & ~((x >= 0) & (x <= 1))
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise ReadError(
            name, f"column {col!r}: {int(out.sum())} predictions outside [0, 1] (e.g. {x[i]!r} for"
            f" {ids.iloc[i]!r}); give probabilities (apply a sigmoid to logits)"
        )
    return x


def align(
    predictions: TableInput | Sequence[TableInput],
    labels: TableInput | Sequence[TableInput],
    id_column: str = "record_id",
    *,
    conditions: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> Aligned:
    """Join predictions to labels on the record id and check both.

    Args:
        predictions: table(s) of ``id_column`` + one probability column per condition. Several
            tables are stacked (e.g. internal and external cohorts).
        labels: table(s) of ``id_column`` + one 0/1 column per predicted condition + metadata.
            Label rows without a prediction are ignored (and counted).
        id_column: the record id column of both.
        conditions: prediction columns to use (default: all but the id and ``exclude``).
        exclude: prediction columns that are not conditions (patient, split, cohort, groups).

    Returns:
        :class:`Aligned`, rows in prediction order.

    Raises:
        ReadError: naming the file: no id column, empty or duplicate ids, a prediction not in
            [0, 1] or not a number, a prediction missing where a label exists, no label column
            for a predicted condition, a label other than 0/1/empty, a prediction id missing
            from the labels.
        ValidationError: an unknown name in ``conditions``.
    """
    import pandas as pd

    preds = _load_many(predictions, id_column, "predictions")
    labs = _load_many(labels, id_column, "labels")
    for name, df in (*preds, *labs):
        _check_ids(name, df, id_column)

    # condition columns: those of the first predictions table, required in every table
    first_name, first = preds[0]
    skip = {id_column, *exclude}
    available = [str(c) for c in first.columns if str(c) not in skip]
    if conditions is not None:
        names = [str(c) for c in conditions]
        unknown = [c for c in names if c not in set(map(str, first.columns))]
        if unknown:
            raise ValidationError(
                f"conditions: {unknown[:5]} not in {first_name} (columns: {', '.join(available[:12])}"
                f"{', ...' if len(available) > 12 else ''})"
            )
    else:
        names = available
    if not names:
        raise ReadError(first_name, f"no condition columns besides {id_column!r}")
    for name, df in preds[1:]:
        missing = [c for c in names if c not in set(map(str, df.columns))]
        if missing:
            raise ReadError(name, f"no prediction column for {len(missing)} condition(s) of {first_name}: {missing[:5]}")
    for name, df in labs:
        missing = [c for c in names if c not in set(map(str, df.columns))]
        if missing:
            raise ReadError(
                name, f"no label column for {len(missing)} predicted condition(s): {missing[:8]}"
                f"{' ...' if len(missing) > 8 else ''} (label columns are named as the prediction columns)"
            )

    # scores, checked per file so errors name it
    score_parts = []
    for name, df in preds:
        df.columns = [str(c) for c in df.columns]
        score_parts.append(np.column_stack([_score_values(name, c, df[c], df[id_column]) for c in names]))
    label_parts = []
    for name, df in labs:
        df.columns = [str(c) for c in df.columns]
        label_parts.append(np.column_stack([_label_values(name, c, df[c], df[id_column]) for c in names]))
    pdf, psrc = _concat(preds, id_column)
    ldf, lsrc = _concat(labs, id_column)
    scores_all = np.vstack(score_parts)
    y_all = np.vstack(label_parts)

    pos = pd.Index(ldf[id_column]).get_indexer(pdf[id_column])
    if (pos < 0).any():
        miss = pdf[id_column].to_numpy()[pos < 0]
        files = sorted(set(psrc[pos < 0]))
        raise ReadError(
            " and ".join(files), f"{len(miss)} record ids have no row in the labels "
            f"({', '.join(n for n, _ in labs)}), e.g. {', '.join(map(repr, miss[:3]))}"
        )
    y = y_all[pos]
    scores = scores_all
    gap = np.isnan(scores) & ~np.isnan(y)
    if gap.any():
        i, c = np.argwhere(gap)[0]
        raise ReadError(
            psrc[i], f"column {names[c]!r}: {int(gap[:, c].sum())} predictions missing for labelled"
            f" records (e.g. {pdf[id_column].iloc[i]!r}); predict every record or leave its label empty"
        )
    scores = np.where(np.isnan(scores), 0.0, scores)  # only where the label is missing too

    meta_l = ldf.drop(columns=[*names, id_column]).iloc[pos].reset_index(drop=True)
    extra = [c for c in pdf.columns if c not in set(names) | {id_column} | set(meta_l.columns)]
    meta = pd.concat([meta_l, pdf[extra].reset_index(drop=True)], axis=1)
    return Aligned(
        ids=pdf[id_column].to_numpy(dtype=object), names=names, y=y, scores=scores, meta=meta,
        sources={"predictions": [n for n, _ in preds], "labels": [n for n, _ in labs]},
        n_unmatched_labels=int(len(ldf) - len(np.unique(pos))),
    )


# ---------------------------------------------------------------------------------------------
# the result


@dataclass
class EvaluationResult:
    """Everything an evaluation produced; :meth:`save` writes it, :mod:`~ecgfm.evaluate.report`
    renders it.

    Attributes:
        config: the options used.
        resolved: choices made from the data (primary cohort, temperature on/off, where the
            thresholds were fitted, row counts).
        names: the C condition names.
        metrics: per-condition table on the primary rows (index ``condition``, last row
            ``macro``): ``n``, ``n_pos``, ``prevalence``, ``auroc``, ``ap``, ``brier``, ``fmax``,
            ``fmax_threshold``, ``threshold``, ``sensitivity``, ``specificity``, ``ppv``,
            ``npv``, ``f1`` and ``<metric>_low`` / ``<metric>_high`` for :data:`CI_METRICS`.
        summary: macro/micro averages, AnyECG counts, macro intervals, flags (JSON-ready).
        thresholds: per condition: the threshold, where it was fitted, its sensitivity and
            specificity there and on the primary rows.
        calibration: per condition (plus ``macro`` and ``pooled`` rows): ECE and Brier score
            before and, with temperature scaling, after; the temperature.
        fairness: long table ``attribute, subgroup, condition, n, n_pos, auroc, ...`` (or None).
        fairness_gaps: ``attribute, condition, metric, comparison, gap, low, high, p_value``;
            condition ``macro`` rows are gaps of the macro averages (or None).
        cohorts: ``{cohort: per-condition table}`` of the test rows of each cohort (or {}).
        challenge: challenge metric per cohort (or None).
        warnings: caveats to show with the numbers.
        data: arrays of the primary rows for plots: ``y``, ``scores`` (used), ``scores_raw``,
            ``ids``, and ``subgroups`` per attribute.
    """

    config: EvaluationConfig
    resolved: dict[str, Any]
    names: list[str]
    metrics: pd.DataFrame
    summary: dict[str, Any]
    thresholds: pd.DataFrame
    calibration: pd.DataFrame
    fairness: pd.DataFrame | None = None
    fairness_gaps: pd.DataFrame | None = None
    cohorts: dict[str, pd.DataFrame] = field(default_factory=dict)
    challenge: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict, repr=False)

    def cohort_table(self, metric: str = "auroc", ci: bool = True) -> pd.DataFrame:
        """``metric`` as conditions x cohorts (strings with intervals, or floats with ``ci=False``)."""
        from ecgfm.evaluate.cohorts import cohort_table

        if not self.cohorts:
            raise ValidationError("no cohort tables (the labels have no cohort column)")
        return cohort_table(self.cohorts, metric, ci=ci)

    def cohorts_long(self) -> pd.DataFrame:
        """All cohort tables stacked: columns ``cohort, condition, ...`` (the ``cohorts.csv``)."""
        import pandas as pd

        frames = [t.reset_index().assign(cohort=c) for c, t in self.cohorts.items()]
        df = pd.concat(frames, ignore_index=True)
        return df[["cohort", *[c for c in df.columns if c != "cohort"]]]

    def config_dict(self) -> dict[str, Any]:
        """The resolved options (``config.json``)."""
        import ecgfm

        return {
            "ecgfm_version": ecgfm.__version__, "options": _jsonable(asdict(self.config)),
            "resolved": _jsonable(self.resolved),
        }

    def save(self, out_dir: str | os.PathLike[str], formats: Sequence[str] = FORMATS) -> list[Path]:
        """Write the results into ``out_dir`` (created).

        Files by format: ``csv``: ``metrics.csv``, ``thresholds.csv``, ``calibration.csv``,
        ``fairness.csv`` and ``fairness_gaps.csv`` (with groups), ``cohorts.csv`` (with a
        cohort column); ``json``: ``summary.json`` (summary, per-condition metrics, cohorts,
        challenge, warnings); ``html``: ``report.html``. ``config.json`` is always written.

        Returns:
            The paths written.
        """
        fmts = _formats(formats)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []

        def put(name: str, text: str) -> None:
            path = out / name
            path.write_text(text, encoding="utf-8")
            written.append(path)

        if "csv" in fmts:
            put("metrics.csv", self.metrics.to_csv(float_format="%.6g"))
            put("thresholds.csv", self.thresholds.to_csv(float_format="%.6g"))
            put("calibration.csv", self.calibration.to_csv(float_format="%.6g"))
            if self.fairness is not None:
                put("fairness.csv", self.fairness.to_csv(index=False, float_format="%.6g"))
            if self.fairness_gaps is not None:
                put("fairness_gaps.csv", self.fairness_gaps.to_csv(index=False, float_format="%.6g"))
            if self.cohorts:
                put("cohorts.csv", self.cohorts_long().to_csv(index=False, float_format="%.6g"))
        if "json" in fmts:
            put("summary.json", json.dumps(_jsonable(self.to_dict()), indent=1, allow_nan=False) + "\n")
        put("config.json", json.dumps(self.config_dict(), indent=1, allow_nan=False) + "\n")
        if "html" in fmts:
            from ecgfm.evaluate.report import write_report

            written.append(write_report(self, out / "report.html"))
        return written

    def to_dict(self) -> dict[str, Any]:
        """Summary (with the macro fairness gaps), per-condition metrics, thresholds, calibration,
        cohort tables and the challenge metric as plain JSON-ready values (``summary.json``);
        per-condition fairness is in the CSV files only."""
        out: dict[str, Any] = {
            "summary": self.summary,
            "resolved": self.resolved,
            "warnings": self.warnings,
            "conditions": _records(self.metrics.reset_index()),
            "thresholds": _records(self.thresholds.reset_index()),
            "calibration": _records(self.calibration.reset_index()),
        }
        if self.cohorts:
            out["cohorts"] = _records(self.cohorts_long())
        if self.challenge is not None:
            out["challenge"] = self.challenge
        return out


def _formats(formats: Sequence[str] | str) -> set[str]:
    if isinstance(formats, str):
        formats = formats.split(",")
    fmts = {f.strip().lower() for f in formats if f.strip()}
    bad = sorted(fmts - set(FORMATS))
    if bad or not fmts:
        raise ValidationError(f"formats: unknown {bad or formats!r} (choose from {', '.join(FORMATS)})")
    return fmts


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [_jsonable(r) for r in df.to_dict(orient="records")]


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


# ---------------------------------------------------------------------------------------------
# the run


def _column(meta: pd.DataFrame, name: str | None) -> pd.Series | None:
    if name is None or name not in meta.columns:
        return None
    return meta[name]


def _nanmean(x: Any) -> float:
    a = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(a)) if np.isfinite(a).any() else math.nan


def evaluate_run(
    predictions: TableInput | Sequence[TableInput],
    labels: TableInput | Sequence[TableInput],
    config: EvaluationConfig | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    **options: Any,
) -> EvaluationResult:
    """Evaluate predictions against labels (steps in the module docstring).

    Args:
        predictions: predictions table(s): path(s) or DataFrame(s).
        labels: labels table(s), with metadata columns.
        config: options; ``options`` override its fields (``groups=("sex", "age")``,
            ``n_resamples=200``, ``operating_point="sensitivity:0.9"``, ...).
        progress: called with a short message before each step (the CLI prints them).

    Returns:
        :class:`EvaluationResult`.

    Raises:
        ReadError: a problem with an input file (the message names it).
        ValidationError: an inconsistent option (a group column that does not exist, temperature
            scaling without validation rows, ...).
    """
    import pandas as pd

    from ecgfm.evaluate.cohorts import Cohort, evaluate_cohorts
    from ecgfm.evaluate.metrics import operating_thresholds, summary, threshold_metrics

    cfg = config or EvaluationConfig()
    known = {f.name for f in fields(EvaluationConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValidationError(f"unknown option(s) {unknown} (known: {', '.join(sorted(known))})")
    cfg = replace(cfg, **options)
    say = progress or (lambda message: None)
    t0 = time.perf_counter()
    notes: list[str] = []
    method, target = parse_operating_point(cfg.operating_point)

    say("reading and aligning predictions and labels")
    meta_cols = [c for c in (cfg.patient_column, cfg.split_column, cfg.cohort_column, *cfg.groups) if c]
    al = align(predictions, labels, cfg.id_column, conditions=cfg.conditions, exclude=meta_cols)
    names, y, raw = al.names, al.y, al.scores
    n = len(al.ids)
    labels_name = " and ".join(al.sources["labels"])
    if al.n_unmatched_labels:
        notes.append(f"{al.n_unmatched_labels} label rows have no prediction and were ignored")

    # which rows fit, which are scored
    split = _column(al.meta, cfg.split_column)
    if split is not None:
        split_text = split.astype(str).str.strip().to_numpy()
        fit = split_text == cfg.fit_split
        scored = split_text == cfg.eval_split
        if not scored.any():
            values = sorted(set(split_text))[:10]
            raise ValidationError(
                f"{labels_name}: no rows with {cfg.split_column} == {cfg.eval_split!r} to score "
                f"(values: {values})"
            )
        other = int((~fit & ~scored).sum())
        if other:
            notes.append(f"{other} rows with another {cfg.split_column} were ignored")
    else:
        fit = np.zeros(n, dtype=bool)
        scored = np.ones(n, dtype=bool)
        if cfg.split_column:
            notes.append(f"no {cfg.split_column!r} column: every row is scored")

    patients_col = _column(al.meta, cfg.patient_column)
    if patients_col is None:
        patients = np.arange(n).astype(object)
        notes.append("no patient column: the bootstrap treats records as independent patients")
    else:
        if patients_col.isna().any():
            i = int(np.flatnonzero(patients_col.isna().to_numpy())[0])
            raise ReadError(labels_name, f"{cfg.patient_column!r} is empty for {al.ids[i]!r}")
        patients = patients_col.astype(str).to_numpy(dtype=object)

    cohort_col = _column(al.meta, cfg.cohort_column)
    cohort = None if cohort_col is None else cohort_col.fillna("(none)").astype(str).to_numpy(dtype=object)
    primary_name, primary = _primary(cfg, cohort, fit, scored)

    # temperature scaling, fitted on the validation rows
    use_temp = bool(fit.any()) if cfg.temperature is None else bool(cfg.temperature)
    temps = np.ones(len(names))
    scores = raw
    if use_temp:
        if not fit.any():
            raise ValidationError(
                f"temperature scaling needs validation rows ({cfg.split_column} == {cfg.fit_split!r}"
                f" in {labels_name}); run with --no-temperature"
            )
        say("fitting temperatures on the validation rows")
        scores, temps = _temperature(y[fit], raw, raw[fit])

    # operating thresholds: fitted on val, carried everywhere
    fit_rows = fit if fit.any() else primary
    optimistic = not fit.any()
    if optimistic:
        notes.append(
            "no validation rows: thresholds were fitted on the scored rows (optimistic "
            "sensitivity/specificity/PPV/NPV/F1)"
        )
    say(f"fitting {cfg.operating_point} thresholds on {int(fit_rows.sum())} "
        f"{'validation' if not optimistic else 'scored'} rows")
    thr = np.atleast_1d(operating_thresholds(y[fit_rows], scores[fit_rows], method, target))
    n_nan_thr = int(np.isnan(thr).sum())
    if n_nan_thr:
        notes.append(
            f"{n_nan_thr} conditions have no threshold (no positive or no negative record where "
            "thresholds are fitted): their threshold metrics are n/a"
        )

    # per-condition table on the primary rows
    yp, sp, gp = y[primary], scores[primary], patients[primary]
    say(f"scoring {int(primary.sum())} primary rows ({primary_name}) with {cfg.n_resamples} "
        "patient-bootstrap resamples")
    tables = evaluate_cohorts(
        {primary_name: Cohort(yp, sp, gp)}, names, thr, CI_METRICS, int(cfg.n_resamples),
        int(cfg.seed), float(cfg.alpha),
    )
    table = tables[primary_name]
    per_cond = table.drop(index="macro")
    summ: dict[str, Any] = {
        "n_records": int(primary.sum()), "n_patients": int(len(set(gp))),
        "n_labels": int((~np.isnan(yp)).sum()), "n_positive_labels": int((yp == 1).sum()),
        "primary": primary_name, "operating_point": cfg.operating_point,
        "thresholds_fitted_on": "scored rows (optimistic)" if optimistic else cfg.fit_split,
        "thresholds_optimistic": optimistic, "temperature_scaling": use_temp,
        **summary(yp, sp, table=per_cond),
    }
    for m in CI_METRICS:
        if f"{m}_low" in table.columns:
            summ[f"macro_{m}_ci"] = [float(table.at["macro", f"{m}_low"]), float(table.at["macro", f"{m}_high"])]
    summ["alpha"] = float(cfg.alpha)
    summ["n_resamples"] = int(cfg.n_resamples)

    # thresholds table
    fit_rates = threshold_metrics(y[fit_rows], scores[fit_rows], thr)
    thr_table = pd.DataFrame(
        {
            "threshold": thr, "method": method, "target": np.nan if target is None else target,
            "fitted_on": "scored (optimistic)" if optimistic else cfg.fit_split,
            "n_fit": (~np.isnan(y[fit_rows])).sum(0), "n_pos_fit": (y[fit_rows] == 1).sum(0),
            "sensitivity_fit": fit_rates["sensitivity"], "specificity_fit": fit_rates["specificity"],
            "sensitivity_test": per_cond["sensitivity"].to_numpy(),
            "specificity_test": per_cond["specificity"].to_numpy(), "temperature": temps,
        },
        index=pd.Index(names, name="condition"),
    )

    say("calibration")
    calib = _calibration(yp, raw[primary], sp if use_temp else None, temps, names, int(cfg.n_bins))
    summ["macro_ece"] = float(calib.at["macro", "ece"])
    summ["pooled_ece"] = float(calib.at["pooled", "ece"])
    if use_temp:
        summ["macro_ece_calibrated"] = float(calib.at["macro", "ece_calibrated"])
        summ["pooled_ece_calibrated"] = float(calib.at["pooled", "ece_calibrated"])

    # cohorts: the test rows of each, thresholds carried
    cohort_tables: dict[str, pd.DataFrame] = {}
    if cohort is not None:
        levels = list(dict.fromkeys(cohort[scored]))
        say(f"scoring {len(levels)} cohorts")
        todo = {}
        for lev in levels:
            rows = scored & (cohort == lev)
            if not np.array_equal(rows, primary):
                todo[lev] = Cohort(y[rows], scores[rows], patients[rows])
        done = evaluate_cohorts(
            todo, names, thr, CI_METRICS, int(cfg.n_resamples), int(cfg.seed), float(cfg.alpha)
        ) if todo else {}
        cohort_tables = {lev: done.get(lev, table) for lev in levels}
        summ["cohorts"] = {
            lev: {
                "n_records": int((scored & (cohort == lev)).sum()),
                "macro_auroc": float(t.at["macro", "auroc"]),
                "macro_auroc_ci": [float(t.at["macro", "auroc_low"]), float(t.at["macro", "auroc_high"])]
                if "auroc_low" in t.columns else None,
                "macro_ap": float(t.at["macro", "ap"]),
                "n_evaluable": int(np.isfinite(t["auroc"].drop(index="macro").to_numpy(dtype=float)).sum()),
            }
            for lev, t in cohort_tables.items()
        }

    # fairness per subgroup column, on the primary rows
    fair, gaps, subgroups = None, None, {}
    if cfg.groups:
        say(f"fairness by {', '.join(cfg.groups)}")
        fair, gaps, subgroups, fair_summary = _fairness(cfg, al, primary, yp, sp, gp, thr, names, labels_name, notes)
        summ["fairness"] = fair_summary

    challenge = None
    if cfg.challenge_weights:
        say("challenge metric")
        challenge = _challenge(cfg, names, y, scores, thr, scored, primary, primary_name, cohort, notes)

    summ["seconds"] = round(time.perf_counter() - t0, 3)
    resolved = {
        "predictions": al.sources["predictions"], "labels": al.sources["labels"],
        "n_rows": n, "n_fit_rows": int(fit.sum()), "n_scored_rows": int(scored.sum()),
        "n_primary_rows": int(primary.sum()), "primary": primary_name,
        "temperature": use_temp, "thresholds_fitted_on": summ["thresholds_fitted_on"],
        "operating_point": {"method": method, "target": target}, "conditions": names,
    }
    data = {"y": yp, "scores": sp, "scores_raw": raw[primary], "ids": al.ids[primary], "subgroups": subgroups}
    return EvaluationResult(
        config=cfg, resolved=resolved, names=names, metrics=table, summary=_jsonable(summ),
        thresholds=thr_table, calibration=calib, fairness=fair, fairness_gaps=gaps,
        cohorts=cohort_tables, challenge=challenge, warnings=notes, data=data,
    )


def _primary(cfg: EvaluationConfig, cohort: np.ndarray | None, fit: np.ndarray, scored: np.ndarray) -> tuple[str, np.ndarray]:
    """The headline rows: scored rows of the primary cohort, and its name."""
    if cohort is None:
        return "all", scored.copy()
    levels = list(dict.fromkeys(cohort[scored]))
    if cfg.primary_cohort is not None:
        if cfg.primary_cohort not in levels:
            raise ValidationError(
                f"primary cohort {cfg.primary_cohort!r} has no scored rows (cohorts: {', '.join(levels)})"
            )
        name = cfg.primary_cohort
    else:
        fit_levels = set(cohort[fit])
        if len(fit_levels) == 1 and next(iter(fit_levels)) in levels:
            name = next(iter(fit_levels))
        elif len(levels) == 1:
            name = levels[0]
        else:
            return "all", scored.copy()
    return name, scored & (cohort == name)


def _temperature(y_fit: np.ndarray, raw: np.ndarray, raw_fit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities of every row and the per-condition temperatures.

    A condition without both classes among the validation rows keeps T = 1 (its fit would run
    to a bound of the search, not to a temperature).
    """
    from ecgfm.evaluate.calibration import TemperatureScaling

    ts = TemperatureScaling(inputs="probabilities").fit(raw_fit, y_fit)
    both = ((y_fit == 1).sum(0) > 0) & ((y_fit == 0).sum(0) > 0)
    ts.temperature_ = np.where(both, ts.temperature_, 1.0)
    return ts.transform(raw), ts.temperature_.copy()


def _calibration(y: np.ndarray, raw: np.ndarray, calibrated: np.ndarray | None, temps: np.ndarray, names: list[str], n_bins: int) -> pd.DataFrame:
    import pandas as pd

    from ecgfm.evaluate.calibration import expected_calibration_error, pooled_calibration_error
    from ecgfm.evaluate.metrics import brier_score

    cols: dict[str, Any] = {
        "n": (~np.isnan(y)).sum(0), "n_pos": (y == 1).sum(0),
        "ece": expected_calibration_error(y, raw, n_bins=n_bins), "brier": brier_score(y, raw),
    }
    pooled = {"ece": pooled_calibration_error(y, raw, n_bins=n_bins)}
    valid = ~np.isnan(y)
    pooled["brier"] = float(brier_score(y[valid], raw[valid]))
    if calibrated is not None:
        cols["temperature"] = temps
        cols["ece_calibrated"] = expected_calibration_error(y, calibrated, n_bins=n_bins)
        cols["brier_calibrated"] = brier_score(y, calibrated)
        pooled["ece_calibrated"] = pooled_calibration_error(y, calibrated, n_bins=n_bins)
        pooled["brier_calibrated"] = float(brier_score(y[valid], calibrated[valid]))
    df = pd.DataFrame(cols, index=pd.Index(names, name="condition"))
    macro = {k: _nanmean(df[k]) for k in df.columns if k not in ("n", "n_pos", "temperature")}
    macro.update(n=int(df["n"].sum()), n_pos=int(df["n_pos"].sum()))
    pooled.update(n=int(df["n"].sum()), n_pos=int(df["n_pos"].sum()))
    extra = pd.DataFrame([macro, pooled], index=pd.Index(["macro", "pooled"], name="condition"))
    return pd.concat([df, extra])[df.columns]


def _group_values(cfg: EvaluationConfig, col: str, values: pd.Series, labels_name: str) -> np.ndarray:
    """Subgroup label per record: age banded, other columns as text; None where missing."""
    import pandas as pd

    from ecgfm.evaluate.fairness import age_bands

    if col == cfg.age_column:
        ages = pd.to_numeric(values, errors="coerce")
        bad = ages.isna() & values.notna() & ~values.astype(str).str.strip().str.lower().isin(_MISSING_TEXT)
        if bad.any():
            raise ReadError(labels_name, f"column {col!r}: ages must be numbers (years); found {values[bad].iloc[0]!r}")
        bands = age_bands(ages.to_numpy(dtype=float), cfg.age_edges, unknown="")
        return np.array([b if b else None for b in bands], dtype=object)
    out = values.where(values.notna(), None)
    text = np.array([None if v is None or str(v).strip().lower() in _MISSING_TEXT else str(v).strip() for v in out], dtype=object)
    levels = {v for v in text if v is not None}
    if len(levels) > _MAX_GROUP_LEVELS:
        raise ValidationError(
            f"{labels_name}: group column {col!r} has {len(levels)} distinct values; bin it first "
            f"(only {cfg.age_column!r} is cut into bands, at {list(cfg.age_edges)})"
        )
    return text


def _fairness(cfg: EvaluationConfig, al: Aligned, primary: np.ndarray, y: np.ndarray, s: np.ndarray, patients: np.ndarray, thr: np.ndarray, names: list[str], labels_name: str, notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, np.ndarray], dict[str, Any]]:
    import pandas as pd

    from ecgfm.evaluate.fairness import subgroup_table

    tables, gap_tables, subgroups, summ = [], [], {}, {}
    for col in cfg.groups:
        if col not in al.meta.columns:
            raise ValidationError(
                f"{labels_name}: no group column {col!r} (columns: {', '.join(map(str, al.meta.columns))})"
            )
        g = _group_values(cfg, col, al.meta[col].iloc[np.flatnonzero(primary)].reset_index(drop=True), labels_name)
        present = [v for v in g if v is not None]
        if len(set(present)) < 2:
            notes.append(f"fairness: {col!r} has fewer than two subgroups among the scored rows; skipped")
            continue
        n_missing = int(sum(v is None for v in g))
        if n_missing:
            notes.append(f"fairness: {n_missing} scored rows have no {col!r} and are left out of it")
        res = subgroup_table(
            y, s, g, thr, patients, FAIRNESS_METRICS, int(cfg.n_resamples), int(cfg.seed),
            float(cfg.alpha), names=names,
        )
        levels = _level_order(res.levels, col == cfg.age_column)
        t = res.table.reset_index()
        t["subgroup"] = pd.Categorical(t["subgroup"], categories=levels, ordered=True)
        t = t.sort_values("subgroup", kind="stable")
        t["subgroup"] = t["subgroup"].astype(str)
        t.insert(0, "attribute", col)
        tables.append(t)
        gt = res.gaps.reset_index()
        gt.insert(0, "attribute", col)
        macro, macro_gaps, used = _macro_gaps(y, s, g, levels, res.reference, thr, patients, cfg, col, notes, names)
        gap_tables.extend([gt, macro_gaps.assign(attribute=col)[gt.columns]])
        subgroups[col] = g
        summ[col] = {
            "reference": res.reference, "macro_conditions": used, "subgroups": macro,
            "gaps": _records(macro_gaps),
        }
    if not tables:
        return None, None, subgroups, summ  # type: ignore[return-value]
    return (pd.concat(tables, ignore_index=True), pd.concat(gap_tables, ignore_index=True), subgroups, summ)


def _level_order(levels: list[str], age: bool) -> list[str]:
    """Subgroups in reading order: age bands by their lower edge (``<18`` first), else as given."""
    if not age:
        return list(levels)

    def key(label: str) -> float:
        if label.startswith("<"):
            return -math.inf
        head = label.split("-")[0].rstrip("+")
        try:
            return float(head)
        except ValueError:
            return math.inf

    return sorted(levels, key=key)


def _macro_gaps(y: np.ndarray, s: np.ndarray, g: np.ndarray, levels: list[str], reference: str, thr: np.ndarray, patients: np.ndarray, cfg: EvaluationConfig, attribute: str, notes: list[str], names: list[str]) -> tuple[dict[str, Any], pd.DataFrame, list[str]]:
    """Macro TPR, FPR and AUROC per subgroup and the gaps between them, with intervals.

    Subgroups with fewer than ``min_subgroup_size`` records are left out. The macro average of
    a subgroup is the mean over the conditions that have a threshold and at least
    ``min_subgroup_positives`` positives and one negative in every subgroup kept, so every
    subgroup averages the same conditions. Resamples are the patient resamples of
    :func:`~ecgfm.evaluate.fairness.subgroup_table` (same seed), so gaps are paired.
    """
    import pandas as pd

    from ecgfm.evaluate.bootstrap import _p_values, resample_weights
    from ecgfm.evaluate.metrics import WeightedMetrics

    columns = ["condition", "metric", "comparison", "gap", "low", "high", "p_value"]
    metrics = ("sensitivity", "fpr", "auroc")
    small = [lev for lev in levels if sum(v == lev for v in g) < int(cfg.min_subgroup_size)]
    if small:
        notes.append(
            f"fairness: {attribute} subgroup(s) {', '.join(small)} have fewer than "
            f"{cfg.min_subgroup_size} records; shown per condition, left out of the macro gaps"
        )
    levels = [lev for lev in levels if lev not in small]
    per_level: dict[str, Any] = {}
    rows = []
    if len(levels) < 2:
        return per_level, pd.DataFrame(columns=columns), []
    if reference not in levels:
        reference = max(levels, key=lambda lev: sum(v == lev for v in g))
    masks = [np.array([v == lev for v in g]) for lev in levels]
    has_pos = np.all([(y[m] == 1).sum(0) >= max(1, int(cfg.min_subgroup_positives)) for m in masks], axis=0)
    has_neg = np.all([(y[m] == 0).sum(0) > 0 for m in masks], axis=0)
    keep = has_pos & has_neg & np.isfinite(thr)
    if not keep.any():
        notes.append(
            f"fairness: no condition has {cfg.min_subgroup_positives} positives in every {attribute}"
            " subgroup; no macro gaps"
        )
        return per_level, pd.DataFrame(columns=columns), []
    engines = [WeightedMetrics(y[m][:, keep], s[m][:, keep], metrics, thr[keep], n_jobs=1) for m in masks]
    points = [{k: _nanmean(v[0]) for k, v in e(np.ones(int(m.sum()), dtype=np.int8)).items()} for e, m in zip(engines, masks)]
    for lev, m, p in zip(levels, masks, points):
        per_level[lev] = {"n_records": int(m.sum()), "n_conditions": int(keep.sum()),
                          "macro_tpr": p["sensitivity"], "macro_fpr": p["fpr"], "macro_auroc": p["auroc"]}
    b = int(cfg.n_resamples)
    samples: list[dict[str, np.ndarray]] = []
    if b:
        w = resample_weights(patients, b, int(cfg.seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            samples = [{k: np.nanmean(v, axis=1) for k, v in e(w[:, m]).items()} for e, m in zip(engines, masks)]
    ref = levels.index(reference)
    alpha = float(cfg.alpha)

    def ci(x: np.ndarray) -> tuple[float, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanquantile(x, [alpha / 2, 1 - alpha / 2])
        return float(lo), float(hi)

    for metric in metrics:
        pt = np.array([p[metric] for p in points])
        label = "tpr" if metric == "sensitivity" else metric
        if b:
            rs = np.stack([smp[metric] for smp in samples])  # [K, B]
            lo, hi = ci(np.nanmax(rs, 0) - np.nanmin(rs, 0))
            for lev, row in zip(levels, rs):
                per_level[lev][f"macro_{label}_ci"] = list(ci(row))
        else:
            lo = hi = math.nan
        rows.append(("macro", metric, "max-min", float(np.nanmax(pt) - np.nanmin(pt)), lo, hi, math.nan))
        for k, lev in enumerate(levels):
            if k == ref:
                continue
            d = pt[k] - pt[ref]
            if b:
                ds = rs[k] - rs[ref]
                dlo, dhi = ci(ds)
                p = float(_p_values(ds[:, None])[0])
            else:
                dlo = dhi = p = math.nan
            rows.append(("macro", metric, f"{lev} - {reference}", float(d), dlo, dhi, p))
    return per_level, pd.DataFrame(rows, columns=columns), [n for n, k in zip(names, keep) if k]


def _challenge(cfg: EvaluationConfig, names: list[str], y: np.ndarray, scores: np.ndarray, thr: np.ndarray, scored: np.ndarray, primary: np.ndarray, primary_name: str, cohort: np.ndarray | None, notes: list[str]) -> dict[str, Any] | None:
    """The CinC challenge score of each cohort's thresholded outputs, projected to its classes."""
    from ecgfm.evaluate.challenge import ChallengeWeights, challenge_summary
    from ecgfm.labels import load_catalogue

    weights = ChallengeWeights.from_csv(cfg.challenge_weights)  # type: ignore[arg-type]
    cat = load_catalogue()
    ids = [c for c in names if c in cat]
    if not ids:
        notes.append("challenge metric skipped: no condition column is a catalogue id")
        return None
    try:
        matrix = weights.catalogue_matrix(ids, cat)
    except ValidationError as exc:
        notes.append(f"challenge metric skipped: {exc}")
        return None
    covered = matrix.any(axis=0)
    if not covered.any():
        notes.append("challenge metric skipped: no condition maps to a scored challenge class")
        return None
    cols = [names.index(c) for c in ids]
    with np.errstate(invalid="ignore"):
        decisions = (scores[:, cols] >= thr[cols][None, :]).astype(np.float64)
    labels = np.nan_to_num(y[:, cols], nan=0.0)
    out_k = weights.project_catalogue_scores(decisions, ids, cat) > 0.5
    lab_k = weights.project_catalogue_scores(labels, ids, cat) > 0.5
    by: dict[str, Any] = {}
    groups = {primary_name: primary}
    if cohort is not None:
        for lev in dict.fromkeys(cohort[scored]):
            groups.setdefault(lev, scored & (cohort == lev))
    for name, rows in groups.items():
        by[name] = {"n_records": int(rows.sum()), **challenge_summary(lab_k[rows], out_k[rows], weights)}
    return {
        "weights": os.fspath(cfg.challenge_weights),  # type: ignore[arg-type]
        "n_classes": weights.n_classes,
        "classes_covered": [weights.names[k] for k in np.flatnonzero(covered)],
        "conditions_used": [c for r, c in enumerate(ids) if matrix[r].any()],
        "note": "classes no condition maps to are scored as never predicted and never labelled",
        "by_cohort": _jsonable(by),
    }
