"""The ``ecgfm`` command line: one program, typed subcommands.

Every command that takes many files shows a progress bar, reports each bad file on stderr with
its reason, carries on with the rest, and exits with the number of files that failed (capped at
100), so a shell loop or a scheduler can tell a clean run from a partial one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ecgfm.errors import ECGError, UnsupportedFormatError

app = typer.Typer(
    name="ecgfm",
    help="ECG foundation models: read any ECG file, preprocess, plot, convert.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

T = TypeVar("T")
MAX_EXIT = 100
# Files a folder walk passes over without comment: parts of a WFDB record, docs, checksums.
_SKIP_SUFFIXES = {".dat", ".atr", ".md", ".txt", ".gz", ".zip", ".xsd", ".xlsx", ".json", ".py", ".sha256", ".pdf", ".png", ".html", ".jsonl"}


def _err(message: str) -> None:
    typer.echo(message, err=True)


def expand_inputs(paths: Iterable[Path]) -> tuple[list[Path], int]:
    """Files named directly, plus the ECG files found by walking named folders.

    Returns the files and how many files in folders were passed over as not ECG files.
    """
    from ecgfm.io.detect import companion_header, detect_format

    files: list[Path] = []
    passed_over = 0
    for path in paths:
        if not path.is_dir():
            files.append(path)
            continue
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            if child.suffix.lower() in _SKIP_SUFFIXES or child.name.startswith("."):
                passed_over += 1
                continue
            if child.suffix.lower() != ".hea" and companion_header(child) is not None:
                continue  # the signal file of a WFDB record whose header is listed itself
            try:
                detect_format(child)
            except UnsupportedFormatError:
                passed_over += 1
                continue
            except ECGError:
                pass  # a real problem with an ECG-looking file: let the command report it
            files.append(child)
    return files, passed_over


def _progress(items: Iterable[T], label: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr when there is more than one item and a terminal
    (``total``: the number of items, for an iterator without a length)."""
    total = len(items) if total is None else total  # type: ignore[arg-type]
    if total <= 1 or not sys.stderr.isatty():
        yield from items
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True,
    ) as progress:
        task = progress.add_task(label, total=total)
        for item in items:
            yield item
            progress.advance(task)


def run_batch(files: list[Path], label: str, job: Callable[[Path], Any]) -> tuple[list[Any], int]:
    """Apply ``job`` to each file; report failures and keep going. Returns results and failures."""
    results, failed = [], 0
    for path in _progress(files, label):
        try:
            results.append(job(path))
        except ECGError as exc:
            failed += 1
            _err(f"error: {exc}")
        except Exception as exc:  # a bug must not cost the user the rest of the batch
            failed += 1
            _err(f"error: {path}: unexpected {type(exc).__name__}: {exc} (please report this)")
    return results, failed


def _finish(n_files: int, failed: int, passed_over: int = 0) -> None:
    if passed_over:
        _err(f"passed over {passed_over} files in folders that are not ECG files")
    if failed:
        _err(f"{failed} of {n_files} files failed")
        raise typer.Exit(min(failed, MAX_EXIT))


def _load(path: Path, pipeline: Any = None) -> Any:
    from ecgfm.io import read

    ecg = read(path)
    return pipeline(ecg) if pipeline is not None else ecg


def _parse_pipeline(spec: str | None) -> Any:
    if not spec:
        return None
    from ecgfm.preprocess import Pipeline

    try:
        return Pipeline.parse(spec)
    except ECGError as exc:
        raise typer.BadParameter(str(exc), param_hint="--pipeline") from None


PipelineOption = Annotated[
    str | None,
    typer.Option(
        "--pipeline", "-p",
        help="Preprocessing to apply: 'standard', a JSON file, or steps like "
        "'resample:fs=500|bandpass:low=0.5,high=40|notch:freq=50|normalize'.",
    ),
]


@app.command()
def info(
    files: Annotated[list[Path], typer.Argument(help="ECG files or folders (walked recursively).")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per file on stdout (JSON Lines).")] = False,
    quality: Annotated[bool, typer.Option(help="Run the signal-quality checks.")] = True,
) -> None:
    """Format, sampling rate, leads, duration, metadata and quality flags of each file."""
    from ecgfm.io import detect_format

    paths, passed_over = expand_inputs(files)

    def describe(path: Path) -> dict[str, Any]:
        fmt = detect_format(path)
        ecg = _load(path)
        out = {"file": str(path), "format": fmt, **ecg.to_dict()}
        if quality:
            from ecgfm.quality import check_quality

            out["quality"] = check_quality(ecg).to_dict()
        return out

    results, failed = run_batch(paths, "info", describe)
    for result in results:
        if as_json:
            typer.echo(json.dumps(result, default=str))
        else:
            typer.echo(_format_info(result))
    _finish(len(paths), failed, passed_over)


def _format_info(d: dict[str, Any]) -> str:
    meta = d["meta"]
    lines = [
        f"{d['file']}",
        f"  format    {d['format']}",
        f"  rate      {d['fs']:g} Hz",
        f"  leads     {len(d['leads'])}: {' '.join(d['leads'])}",
        f"  duration  {d['duration_s']:.2f} s ({d['n_samples']} samples)",
    ]
    if d.get("masked_samples"):
        lines.append(f"  gaps      {d['masked_samples']} masked samples")
    who = ", ".join(
        f"{k} {meta[k]}" for k in ("record_id", "patient_id", "age", "sex", "acquired", "device") if meta.get(k) not in (None, "")
    )
    if who:
        lines.append(f"  record    {who}")
    if meta.get("interpretation"):
        text = "; ".join(line.strip() for line in meta["interpretation"].splitlines() if line.strip())
        lines.append(f"  report    {text[:200]}{'...' if len(text) > 200 else ''}")
    if "quality" in d:
        q = d["quality"]
        flags = q.get("flags", [])
        if not flags:
            lines.append("  quality   ok")
        for flag in flags:
            where = f" [{flag['lead']}]" if flag.get("lead") else ""
            lines.append(f"  quality   {flag['code']}{where}: {flag['reason']}")
    return "\n".join(lines)


@app.command()
def plot(
    file: Annotated[Path, typer.Argument(help="An ECG file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output image: .png, .svg or .pdf.")],
    pipeline: PipelineOption = None,
    start: Annotated[float, typer.Option(help="First second to show.")] = 0.0,
    title: Annotated[str | None, typer.Option(help="Title line; default: the record id.")] = None,
) -> None:
    """Draw a 12-lead ECG in the clinical layout (3x4 + rhythm strip, 25 mm/s, 10 mm/mV)."""
    from ecgfm.plot import plot_ecg

    steps = _parse_pipeline(pipeline)

    def draw(path: Path) -> Path:
        ecg = _load(path, steps)
        out.parent.mkdir(parents=True, exist_ok=True)
        plot_ecg(ecg, out, start=start, title=title)
        return out

    results, failed = run_batch([file], "plot", draw)
    for written in results:
        typer.echo(f"wrote {written}")
    _finish(1, failed)


@app.command()
def convert(
    files: Annotated[list[Path], typer.Argument(help="ECG files or folders (walked recursively).")],
    to: Annotated[str, typer.Option("--to", help="Output format: wfdb, npz or csv.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    pipeline: PipelineOption = None,
) -> None:
    """Convert ECG files of any supported format to WFDB, NPZ or CSV, optionally preprocessed."""
    from ecgfm.io.write import WRITERS, write

    if to not in WRITERS:
        raise typer.BadParameter(f"unknown format {to!r} (known: {', '.join(WRITERS)})", param_hint="--to")
    steps = _parse_pipeline(pipeline)
    paths, passed_over = expand_inputs(files)
    out.mkdir(parents=True, exist_ok=True)
    if steps is not None:
        (out / "pipeline.json").write_text(steps.to_json() + "\n")

    def job(path: Path) -> Path:
        return write(_load(path, steps), out, to)

    results, failed = run_batch(paths, "convert", job)
    typer.echo(f"wrote {len(results)} records to {out}")
    _finish(len(paths), failed, passed_over)


@app.command()
def formats() -> None:
    """List the file formats ecgfm reads (detected from content, not extension)."""
    from ecgfm.io import READERS

    width = max(len(name) for name in READERS)
    for reader in READERS.values():
        typer.echo(f"{reader.name:<{width}}  {reader.description}")


def _add_subcommands() -> None:
    from ecgfm.active.cli import review_apply_command, review_queue_command
    from ecgfm.comorbidity.cli import comorbidity_command
    from ecgfm.delineate.cli import measure_command
    from ecgfm.evaluate.cli import evaluate
    from ecgfm.labels.cli import app as labels_app
    from ecgfm.language.cli import report_command, zero_shot_command
    from ecgfm.models.cli import export_command
    from ecgfm.profile.cli import profile_command
    from ecgfm.serve.cli import serve_command
    from ecgfm.store.cli import app as corpus_app
    from ecgfm.store.cli import build_corpus_command
    from ecgfm.train.cli import embed_command, finetune_command, train_command
    from ecgfm.train.pretrain_cli import pretrain_command
    from ecgfm.train.transfer_cli import transfer_command

    app.add_typer(labels_app, name="labels")
    app.add_typer(corpus_app, name="corpus")
    app.command("profile")(profile_command)
    app.command("measure")(measure_command)
    app.command("serve")(serve_command)
    app.command("export")(export_command)
    app.command("build-corpus")(build_corpus_command)
    app.command("evaluate")(evaluate)
    app.command("comorbidity")(comorbidity_command)
    app.command("review-queue")(review_queue_command)
    app.command("review-apply")(review_apply_command)
    app.command("train")(train_command)
    app.command("finetune")(finetune_command)
    app.command("pretrain")(pretrain_command)
    app.command("report")(report_command)
    app.command("zero-shot")(zero_shot_command)
    app.command("embed")(embed_command)
    app.command("transfer")(transfer_command)


_add_subcommands()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
