"""``ecgfm labels ...``: the conditions catalogue and labels from free-text reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The conditions catalogue, and condition labels from free-text reports.", no_args_is_help=True)


@app.command()
def catalogue(
    query: Annotated[str | None, typer.Argument(help="Search names, synonyms (EN/DE) and codes; all entries when omitted.")] = None,
    category: Annotated[str | None, typer.Option(help="Only this category (rhythm, conduction, axis, ...).")] = None,
    extra: Annotated[list[Path] | None, typer.Option("--catalogue", help="Extra catalogue CSV(s) that add or replace conditions.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per condition (JSON Lines).")] = False,
    csv_out: Annotated[Path | None, typer.Option("--csv", help="Write the (extended) catalogue to this CSV.")] = None,
) -> None:
    """List or search the conditions catalogue."""
    from ecgfm.errors import ECGError
    from ecgfm.labels import CATEGORIES, load_catalogue

    if category is not None and category not in CATEGORIES:
        raise typer.BadParameter(f"unknown category {category!r} (known: {', '.join(CATEGORIES)})", param_hint="--category")
    try:
        cat = load_catalogue(*(extra or []))
    except ECGError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if csv_out is not None:
        cat.write_csv(csv_out)
        typer.echo(f"wrote {len(cat)} conditions to {csv_out}")
        return
    found = cat.search(query, category=category) if query else [c for c in cat if category in (None, c.category)]
    for cond in found:
        if as_json:
            typer.echo(json.dumps(cond.to_row(), ensure_ascii=False))
        else:
            codes = " ".join([*(f"scp:{c}" for c in cond.scp), *(f"snomed:{c}" for c in cond.snomed)])
            parents = f" <- {','.join(cond.parents)}" if cond.parents else ""
            typer.echo(f"{cond.id:<12} {cond.category:<14} {cond.name}{parents}  {codes}".rstrip())
    if not found:
        typer.echo(f"no condition matches {query!r}", err=True)
        raise typer.Exit(1)


_FINDING_COLUMNS = ("row", "record", "id", "status", "start", "end", "evidence", "rule", "cue")


@app.command()
def extract(
    text: Annotated[str | None, typer.Argument(help="A report to label; omit when using --csv.")] = None,
    csv_in: Annotated[Path | None, typer.Option("--csv", help="A CSV of reports, one per row.")] = None,
    column: Annotated[str, typer.Option(help="The CSV column holding the report text.")] = "report",
    id_column: Annotated[str | None, typer.Option(help="A CSV column identifying each row (copied to the output).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output table: .parquet, .csv or .jsonl (one row per finding).")] = None,
    language: Annotated[str | None, typer.Option(help="en, de or sv; all languages when omitted.")] = None,
) -> None:
    """Condition labels from free-text reports, with negation, uncertainty and evidence spans."""
    import csv
    import sys

    from ecgfm.errors import ECGError
    from ecgfm.labels.report import ReportLabeler

    if (text is None) == (csv_in is None):
        raise typer.BadParameter("give either a report TEXT or --csv FILE, not both or neither")
    try:
        labeler = ReportLabeler()
        if text is not None:
            for finding in labeler.label(text, language=language):
                typer.echo(json.dumps(finding.to_dict(), ensure_ascii=False))
            return
        assert csv_in is not None
        if out is None:
            raise typer.BadParameter("--csv needs --out (a .parquet, .csv or .jsonl file)", param_hint="--out")
        if out.suffix not in (".parquet", ".csv", ".jsonl"):
            raise typer.BadParameter(f"unknown output type {out.suffix!r} (use .parquet, .csv or .jsonl)", param_hint="--out")
        csv.field_size_limit(sys.maxsize)
        with open(csv_in, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames is None or column not in reader.fieldnames:
                raise typer.BadParameter(f"{csv_in} has no column {column!r} (columns: {', '.join(reader.fieldnames or [])})", param_hint="--column")
            if id_column is not None and id_column not in reader.fieldnames:
                raise typer.BadParameter(f"{csv_in} has no column {id_column!r}", param_hint="--id-column")
            rows = [(i, row.get(id_column) if id_column else None, row[column] or "") for i, row in enumerate(reader)]
    except ECGError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    findings = []
    for (i, record, _), found in zip(rows, labeler.label_many((r[2] for r in rows), language=language)):
        for f in found:
            d = f.to_dict()
            findings.append((i, record, d["id"], d["status"], d["span"][0], d["span"][1], d["evidence"], d["rule"], d["cue"]))
    _write_table(out, findings)
    labelled = len({f[0] for f in findings})
    typer.echo(f"wrote {len(findings)} findings for {labelled} of {len(rows)} reports to {out}")


def _write_table(out: Path, rows: list[tuple]) -> None:
    """Write findings as Parquet (needs pyarrow: ``pip install ecgfm[tables]``), CSV or JSON Lines."""
    import csv

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            typer.echo("error: writing Parquet needs pyarrow: pip install 'ecgfm[tables]' (or use .csv / .jsonl)", err=True)
            raise typer.Exit(2) from None
        columns = list(zip(*rows)) if rows else [()] * len(_FINDING_COLUMNS)
        pq.write_table(pa.table({name: list(values) for name, values in zip(_FINDING_COLUMNS, columns)}), out)
    elif out.suffix == ".csv":
        with open(out, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(_FINDING_COLUMNS)
            writer.writerows(rows)
    else:
        with open(out, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(dict(zip(_FINDING_COLUMNS, row)), ensure_ascii=False) + "\n")
