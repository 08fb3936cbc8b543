"""``ecgfm profile``: the health profile of ECG files, as JSON, HTML or PDF.

:func:`profile_command` is a plain function; the main ``ecgfm`` app registers it with
``app.command("profile")(profile_command)``. Importing this module imports typer only; torch
and matplotlib load when the command runs.

Exit status: 0 when every file was profiled (a refused record is a profile, not a failure);
otherwise the number of files that could not be read (capped at 100); 1 when the model cannot
be loaded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer

FORMATS = ("json", "html", "pdf")
SUMMARY_FILE = "profiles.jsonl"
RUN_FILE = "profile_run.json"


def parse_formats(values: list[str] | None) -> list[str]:
    """``["json", "html,pdf"]`` -> ``["json", "html", "pdf"]`` (order kept, duplicates dropped)."""
    out: list[str] = []
    for value in values or ["json"]:
        for name in (v.strip().lower() for v in value.split(",")):
            if not name:
                continue
            if name not in FORMATS:
                raise typer.BadParameter(f"unknown format {name!r} (known: {', '.join(FORMATS)})",
                                         param_hint="--format")
            if name not in out:
                out.append(name)
    return out or ["json"]


def profile_command(
    files: Annotated[list[Path], typer.Argument(help="ECG files or folders (walked recursively), any supported format.")],
    model: Annotated[Path | None, typer.Option("--model", "-m", help="A portable model folder; default: the model shipped with ecgfm.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder: <record>.<format> per record and format, plus profiles.jsonl. Without it: JSON on stdout (one object, or JSON Lines for several files).")] = None,
    formats: Annotated[list[str] | None, typer.Option("--format", "-f", help="json, html or pdf; repeat it or give a comma list (html and pdf need --out).")] = None,
    top: Annotated[int, typer.Option("--top", min=0, help="Explain the top K positive findings with integrated gradients.")] = 3,
    no_saliency: Annotated[bool, typer.Option("--no-saliency", help="Skip the saliency maps (faster).")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Records per forward pass.")] = 32,
    risk_model: Annotated[list[Path] | None, typer.Option("--risk-model", help="A survival model folder (ecgfm finetune --task survival) whose absolute risk at its horizons joins each profile; repeat for several.")] = None,
) -> None:
    """Health profile of each ECG: ranked conditions with calls, measurements, quality, saliency."""
    from ecgfm.cli import _err, _finish, _progress, expand_inputs
    from ecgfm.errors import ECGError

    kinds = parse_formats(formats)
    if out is None and kinds != ["json"]:
        raise typer.BadParameter("html and pdf reports are files: give an output folder with --out",
                                 param_hint="--format")
    paths, passed_over = expand_inputs(files)
    try:
        import ecgfm
        from ecgfm.profile.core import default_model, profile_many

        loaded = default_model() if model is None else ecgfm.load_model(model)
        risk_models = [ecgfm.load_model(p) for p in risk_model or ()]
    except ECGError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(1) from None

    failed = 0

    def on_error(source: str, exc: Exception) -> None:
        nonlocal failed
        failed += 1
        if isinstance(exc, ECGError):
            message = str(exc)
            _err(f"error: {message if message.startswith(source) else f'{source}: {message}'}")
        else:  # a bug must not cost the user the rest of the batch
            _err(f"error: {source}: unexpected {type(exc).__name__}: {exc} (please report this)")

    try:
        profiles = profile_many(_progress(paths, "profile"), loaded, batch_size=batch_size,
                                saliency=0 if no_saliency else top, on_error=on_error, risk_models=risk_models)
    except ECGError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(1) from None
    if out is None:
        single = len(paths) == 1
        for profile in profiles:
            typer.echo(json.dumps(profile.to_dict(), indent=2 if single else None))
        _finish(len(paths), failed, passed_over)
        return

    out.mkdir(parents=True, exist_ok=True)
    run = {"inputs": [str(f) for f in files], "files": len(paths), "model": str(loaded.path) if loaded.path else None,
           "model_name": loaded.card.name, "pipeline_hash": loaded.config.get("pipeline_hash"),
           "formats": kinds, "saliency_top": 0 if no_saliency else top, "batch_size": batch_size,
           "risk_models": [str(m.path) for m in risk_models],
           "schema_version": _schema_version(), "ecgfm": ecgfm.__version__}
    (out / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    written, refused = 0, 0
    used: set[str] = set()
    with open(out / SUMMARY_FILE, "w", encoding="utf-8") as summary:
        for profile in profiles:
            stem = _unique(_safe_name(profile.record.record_id), used)
            names = _write(profile, out, stem, kinds)
            summary.write(json.dumps(_summary(profile, names)) + "\n")
            summary.flush()
            written += 1
            refused += not profile.ok
    typer.echo(f"wrote {written} profiles ({refused} refused) to {out}")
    _finish(len(paths), failed, passed_over)


def _schema_version() -> int:
    from ecgfm.profile.core import SCHEMA_VERSION

    return SCHEMA_VERSION


def _write(profile: Any, out: Path, stem: str, kinds: list[str]) -> dict[str, str]:
    from ecgfm.profile.render import render_html, render_pdf

    names = {}
    for kind in kinds:
        path = out / f"{stem}.{kind}"
        if kind == "json":
            path.write_text(json.dumps(profile.to_dict(), indent=2) + "\n", encoding="utf-8")
        elif kind == "html":
            path.write_text(render_html(profile), encoding="utf-8")
        else:
            render_pdf(profile, path)
        names[kind] = path.name
    return names


def _summary(profile: Any, names: dict[str, str]) -> dict[str, Any]:
    """One line of profiles.jsonl: enough to triage a batch without opening every file."""
    return {"record_id": profile.record.record_id, "source": profile.record.source,
            "status": profile.status, "reasons": [r.message for r in profile.reasons],
            "positive": [c.id for c in profile.called("positive")],
            "borderline": [c.id for c in profile.called("borderline")],
            "quality_flags": sorted(profile.quality.codes), "files": names}


def _safe_name(record_id: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", record_id).strip("._")
    return name or "record"


def _unique(stem: str, used: set[str]) -> str:
    """Two records with one id (from different folders) must not overwrite each other."""
    name, k = stem, 1
    while name in used:
        k += 1
        name = f"{stem}-{k}"
    used.add(name)
    return name
