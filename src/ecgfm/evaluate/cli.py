"""``ecgfm evaluate``: score predictions against labels and write a report.

The command is a plain function (:func:`evaluate`) so the main ``ecgfm`` app registers it with
``app.command("evaluate")(evaluate)``; :data:`app` runs it on its own for tests. Importing this
module imports typer only; the evaluation modules load when the command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Score a model's predictions against labels: metrics with intervals, thresholds, "
    "calibration, fairness, cohorts, and an HTML report.",
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _list(text: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (text or "").split(",") if v.strip())


def _say(message: str) -> None:
    typer.echo(f"evaluate: {message}", err=True)


@app.command("evaluate")
def evaluate(
    predictions: Annotated[list[Path], typer.Option(
        "--predictions", help="Predictions table (CSV, TSV, Parquet, JSON Lines): the id column and one "
        "probability column per condition. Repeat to stack files (e.g. external cohorts).")],
    labels: Annotated[list[Path], typer.Option(
        "--labels", help="Labels table(s): the id column, 0/1 (empty = missing) per condition, and "
        "metadata (patient, split, cohort, subgroup columns). Repeat to stack files.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created).")],
    groups: Annotated[str | None, typer.Option(
        help="Comma-separated subgroup columns for fairness, e.g. sex,age (age is cut into bands).")] = None,
    id_column: Annotated[str, typer.Option(help="Record id column of both tables.")] = "record_id",
    patient_column: Annotated[str, typer.Option(
        help="Patient id column: the bootstrap resamples patients ('' = records are independent).")] = "patient_id",
    split_column: Annotated[str, typer.Option(
        help="Split column: 'val' rows fit thresholds and temperatures, 'test' rows are scored.")] = "split",
    cohort_column: Annotated[str, typer.Option(help="Cohort column: one table of conditions x cohorts.")] = "cohort",
    primary_cohort: Annotated[str | None, typer.Option(
        help="Cohort of the headline numbers (default: the cohort of the validation rows).")] = None,
    conditions: Annotated[str | None, typer.Option(
        help="Comma-separated prediction columns to score (default: every column but the id).")] = None,
    resamples: Annotated[int, typer.Option(min=0, help="Patient-bootstrap resamples (0: no intervals).")] = 1000,
    seed: Annotated[int, typer.Option(min=0, help="Bootstrap seed.")] = 0,
    operating_point: Annotated[str, typer.Option(
        help="Threshold rule fitted on the validation rows: youden, f1, sensitivity:0.9 or specificity:0.9.")] = "youden",
    temperature: Annotated[bool | None, typer.Option(
        "--temperature/--no-temperature",
        help="Temperature scaling fitted on the validation rows (default: when there are validation rows).")] = None,
    challenge_weights: Annotated[Path | None, typer.Option(
        help="PhysioNet/CinC challenge weights.csv: adds the challenge score for conditions with SNOMED codes.")] = None,
    curves: Annotated[str | None, typer.Option(
        help="Comma-separated conditions drawn in the report's curves (default: the 6 with most positives).")] = None,
    output_format: Annotated[str, typer.Option(
        "--format", help="Comma-separated outputs: html, json, csv.")] = "html,json,csv",
) -> None:
    """Score predictions against labels; write metrics, summary, report and config to --out."""
    from ecgfm.errors import ECGError
    from ecgfm.evaluate.run import EvaluationConfig, _formats, evaluate_run

    try:
        formats = _formats(output_format)
    except ECGError as exc:
        raise typer.BadParameter(str(exc), param_hint="--format") from None
    try:
        config = EvaluationConfig(
            id_column=id_column, patient_column=patient_column or None,
            split_column=split_column or None, cohort_column=cohort_column or None,
            primary_cohort=primary_cohort, groups=_list(groups),
            conditions=_list(conditions) or None, n_resamples=resamples, seed=seed,
            operating_point=operating_point, temperature=temperature,
            challenge_weights=str(challenge_weights) if challenge_weights else None,
            report_conditions=_list(curves) or None,
        )
    except ECGError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        result = evaluate_run(list(predictions), list(labels), config, progress=_say)
        _say(f"writing {', '.join(sorted(formats))} to {out}")
        written = result.save(out, sorted(formats))
    except ECGError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for note in result.warnings:
        _say(f"note: {note}")
    s = result.summary
    ci = s.get("macro_auroc_ci")
    interval = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else ""
    auroc = s.get("macro_auroc")
    typer.echo(
        f"{s['primary']}: macro AUROC {auroc:.3f}{interval} over {s['n_evaluable']:.0f} conditions, "
        f"{s['n_records']} records; AUROC > 0.7/0.8/0.9: {s['n_auroc_gt_0.7']:.0f}/"
        f"{s['n_auroc_gt_0.8']:.0f}/{s['n_auroc_gt_0.9']:.0f}" if auroc is not None else
        f"{s['primary']}: no condition has both positives and negatives"
    )
    for path in written:
        typer.echo(str(path))
