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
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Worker processes, each with the model and one thread; records go to them --batch-size at a time, and HTML/PDF reports are drawn there too.")] = 1,
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
        _err(f"error: {_error_message(source, exc)}")

    saliency = 0 if no_saliency else top
    try:  # refuses a model that cannot profile now (with --jobs, before any worker starts)
        here = profile_many(_progress(paths, "profile") if jobs == 1 else [], loaded, batch_size=batch_size,
                            saliency=saliency, on_error=on_error, risk_models=risk_models)
    except ECGError as exc:
        _err(f"error: {exc}")
        raise typer.Exit(1) from None
    profiles = ((p, {}) for p in here) if jobs == 1 else _parallel_profiles(
        paths, loaded, risk_models, kinds if out is not None else [], batch_size, saliency, jobs, on_error)
    if out is None:
        single = len(paths) == 1
        for profile, _ in profiles:
            typer.echo(json.dumps(profile.to_dict(), indent=2 if single else None))
        _finish(len(paths), failed, passed_over)
        return

    out.mkdir(parents=True, exist_ok=True)
    run = {"inputs": [str(f) for f in files], "files": len(paths), "model": str(loaded.path) if loaded.path else None,
           "model_name": loaded.card.name, "pipeline_hash": loaded.config.get("pipeline_hash"),
           "formats": kinds, "saliency_top": saliency, "batch_size": batch_size, "jobs": jobs,
           "risk_models": [str(m.path) for m in risk_models],
           "schema_version": _schema_version(), "ecgfm": ecgfm.__version__}
    (out / RUN_FILE).write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    written, refused = 0, 0
    used: set[str] = set()
    with open(out / SUMMARY_FILE, "w", encoding="utf-8") as summary:
        for profile, rendered in profiles:
            stem = _unique(_safe_name(profile.record.record_id), used)
            names = _write(profile, out, stem, kinds, rendered)
            summary.write(json.dumps(_summary(profile, names)) + "\n")
            summary.flush()
            written += 1
            refused += not profile.ok
    typer.echo(f"wrote {written} profiles ({refused} refused) to {out}")
    _finish(len(paths), failed, passed_over)


def _schema_version() -> int:
    from ecgfm.profile.core import SCHEMA_VERSION

    return SCHEMA_VERSION


def _write(profile: Any, out: Path, stem: str, kinds: list[str], rendered: dict[str, Any] | None = None
           ) -> dict[str, str]:
    """Write ``<stem>.<kind>`` for each kind (HTML and PDF from ``rendered`` where a worker
    drew them already); returns ``{kind: file name}``."""
    rendered = rendered or {}
    names = {}
    for kind in kinds:
        path = out / f"{stem}.{kind}"
        if kind == "json":
            path.write_text(json.dumps(profile.to_dict(), indent=2) + "\n", encoding="utf-8")
        elif kind in rendered:
            path.write_bytes(rendered[kind]) if kind == "pdf" else path.write_text(rendered[kind], encoding="utf-8")
        elif kind == "html":
            from ecgfm.profile.render import render_html

            path.write_text(render_html(profile), encoding="utf-8")
        else:
            from ecgfm.profile.render import render_pdf

            render_pdf(profile, path)
        names[kind] = path.name
    return names


def _error_message(source: str, exc: Exception) -> str:
    from ecgfm.errors import ECGError

    if isinstance(exc, (ECGError, _Reported)):
        message = str(exc)
        return message if message.startswith(source) else f"{source}: {message}"
    # a bug must not cost the user the rest of the batch
    return f"{source}: unexpected {type(exc).__name__}: {exc} (please report this)"


def _parallel_profiles(paths: list[Path], model: Any, risk_models: list[Any], kinds: list[str], batch_size: int,
                       saliency: int, jobs: int, on_error: Any) -> Any:
    """``(profile, {kind: rendered report})`` per record, from ``jobs`` worker processes, in input
    order; a file that fails goes to ``on_error(source, error)``."""
    from ecgfm.cli import _progress
    from ecgfm.parallel import map_chunks

    task = (str(model.path), [str(r.path) for r in risk_models], [k for k in kinds if k != "json"], batch_size,
            saliency)
    results = map_chunks(_profile_chunk, [str(p) for p in paths], *task, jobs=jobs, chunk=batch_size)
    for source, payload, error in _progress(results, "profile", total=len(paths)):
        if payload is None:
            on_error(source, _Reported(error))
        else:
            yield payload


class _Reported(Exception):
    """A failure a worker process already described (``str()`` is its message, source first)."""


_WORKER_MODELS: dict[tuple[str, tuple[str, ...]], tuple[Any, list[Any]]] = {}


def _profile_chunk(paths: list[str], model_path: str, risk_paths: list[str], kinds: list[str], batch_size: int,
                   saliency: int) -> list[tuple[str, Any, str | None]]:
    """In a worker process: ``(source, (profile, {kind: report}), None)`` per profiled record and
    ``(source, None, message)`` per failure. The models are loaded once per process."""
    import dataclasses

    import ecgfm
    from ecgfm.profile.core import profile_many

    key = (model_path, tuple(risk_paths))
    if key not in _WORKER_MODELS:
        _WORKER_MODELS[key] = (ecgfm.load_model(model_path), [ecgfm.load_model(p) for p in risk_paths])
    model, risk_models = _WORKER_MODELS[key]
    out: list[tuple[str, Any, str | None]] = []

    def on_error(source: str, exc: Exception) -> None:
        out.append((source, None, _error_message(source, exc)))

    for profile in profile_many(paths, model, batch_size=batch_size, saliency=saliency, on_error=on_error,
                                risk_models=risk_models):
        rendered = _render(profile, kinds)
        out.append((profile.record.source or profile.record.record_id,
                    (dataclasses.replace(profile, ecg=None), rendered), None))
    return out


def _render(profile: Any, kinds: list[str]) -> dict[str, Any]:
    """The HTML text and PDF bytes of a profile's reports, for the kinds asked."""
    import tempfile

    from ecgfm.profile.render import render_html, render_pdf

    rendered: dict[str, Any] = {}
    if "html" in kinds:
        rendered["html"] = render_html(profile)
    if "pdf" in kinds:
        with tempfile.TemporaryDirectory() as tmp:
            rendered["pdf"] = render_pdf(profile, Path(tmp) / "report.pdf").read_bytes()
    return rendered


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
