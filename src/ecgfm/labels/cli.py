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
