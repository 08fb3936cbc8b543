"""``ecgfm comorbidity``: co-occurrence, clusters, network and phenome scans of a cohort.

A plain function (:func:`comorbidity_command`), so the main ``ecgfm`` app registers it with
``app.command("comorbidity")(comorbidity_command)``; :data:`app` runs it on its own (tests).
Importing this module imports typer only; numpy, pandas, scipy and matplotlib load when the
command runs.

Exit status: 0 on success; 2 on an input or option problem (printed as ``error: ...``, naming
the file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["app", "comorbidity_command"]

app = typer.Typer(help="Comorbidity discovery over a cohort's labels and predictions.",
                  add_completion=False, pretty_exceptions_enable=False)


def _list(values: list[str] | None) -> tuple[str, ...]:
    out: list[str] = []
    for value in values or []:
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return tuple(out)


def _say(message: str) -> None:
    typer.echo(f"comorbidity: {message}", err=True)


@app.command("comorbidity")
def comorbidity_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created): pairs.csv, clusters.csv, scan.csv, network.png, report.html, summary.json.")],
    manifest: Annotated[Path | None, typer.Option(
        "--manifest", help="Cohort table (CSV, TSV, Parquet, JSON Lines) or corpus store folder: record_id, a labels "
        "column (lists or ';'-joined ids), optional scores and covariates.")] = None,
    predictions: Annotated[Path | None, typer.Option(
        "--predictions", help="Predictions table (record_id + one probability column per condition, as "
        "Model.predict_frame writes it) or an 'ecgfm profile --out' folder.")] = None,
    labels_column: Annotated[str, typer.Option("--labels-column", help="The manifest's labels column.")] = "labels",
    conditions_from: Annotated[str, typer.Option(
        "--from", help="Where the conditions come from: auto (labels when the manifest has them, else "
        "predictions), labels, or predictions (calls at the thresholds).")] = "auto",
    score: Annotated[list[str] | None, typer.Option(
        "--score", help="Score to scan against every condition: a column of the predictions or manifest, "
        "1-COLUMN or logit:COLUMN. Repeatable. Default: age, when the manifest has it.")] = None,
    covariates: Annotated[str | None, typer.Option(
        "--covariates", help="Comma-separated manifest columns that adjust the scans' odds ratios, e.g. age,sex.")] = None,
    min_count: Annotated[int, typer.Option("--min-count", min=1, help="Records with (and without) a condition to analyse it.")] = 10,
    alpha: Annotated[float, typer.Option("--alpha", min=1e-9, max=0.5, help="q cut and 1 - confidence of intervals.")] = 0.05,
    threshold: Annotated[list[str] | None, typer.Option(
        "--threshold", help="Positive threshold of predicted calls: 0.4 (all), AFIB=0.3 (one), model (the default "
        "model's operating points) or model:PATH. Repeatable, later wins. Default 0.5 (a profile folder: its own).")] = None,
    soft: Annotated[bool, typer.Option("--soft", help="Pairs from probabilities as soft counts (ranking only; chi-square p).")] = False,
    fdr: Annotated[str, typer.Option("--fdr", help="bh (Benjamini-Hochberg) or by (Benjamini-Yekutieli).")] = "bh",
    method: Annotated[str, typer.Option("--method", help="Pair p-values: auto (Fisher where the smallest expected cell < --exact-below), fisher, chi2.")] = "auto",
    exact_below: Annotated[float, typer.Option("--exact-below", min=0, help="Expected-count cut of --method auto.")] = 1000.0,
    n_clusters: Annotated[int | None, typer.Option("--clusters", min=1, help="Cut the tree into this many clusters (default: at --cluster-threshold).")] = None,
    cluster_threshold: Annotated[float, typer.Option("--cluster-threshold", min=0, max=1, help="Distance cut of the clustering tree.")] = 0.9,
    cluster_metric: Annotated[str, typer.Option("--cluster-metric", help="jaccard or phi.")] = "jaccard",
    id_column: Annotated[str, typer.Option("--id-column", help="Record id column of both tables.")] = "record_id",
) -> None:
    """Pairwise co-occurrence (OR, CI, FDR), clusters, network and phenome-wide scans, with an HTML report."""
    from ecgfm.errors import ECGError

    if manifest is None and predictions is None:
        raise typer.BadParameter("give --manifest, --predictions, or both")
    try:
        from ecgfm.comorbidity.run import ComorbidityConfig, run_comorbidity

        config = ComorbidityConfig(
            id_column=id_column, labels_column=labels_column, conditions_from=conditions_from,
            thresholds=_list(threshold), soft=soft, scores=_list(score) if score else None,
            covariates=_list([covariates] if covariates else None), min_count=min_count, alpha=alpha,
            fdr=fdr, method=method, exact_below=exact_below, cluster_metric=cluster_metric,
            n_clusters=n_clusters, cluster_threshold=cluster_threshold,
        )
        result = run_comorbidity(manifest, predictions, config)
        written = result.save(out)
    except ECGError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for note in result.notes:
        _say(f"note: {note}")
    s = result.summary()
    pr = s["pairs"]
    typer.echo(f"{s['n_records']} records, {s['conditions']['analysed']} conditions, {pr['tested']} pairs: "
               f"{pr['significant_positive']} positive and {pr['significant_negative']} negative associations "
               f"at q < {alpha:g}; {len(s['clusters'])} clusters")
    for name, scan in s["scans"].items():
        typer.echo(f"scan {name}: {scan['significant']} of {scan['fitted']} conditions at q < {alpha:g}")
    for path in written:
        typer.echo(str(path))


@app.callback()
def _group() -> None:
    """A group callback keeps ``comorbidity`` a subcommand here too, as under ``ecgfm``."""
