"""``ecgfm report``, ``ecgfm zero-shot`` and the signal-language objectives of ``ecgfm pretrain``.

Plain typer-annotated functions, so the main ``ecgfm`` app registers them
(``app.command("report")(report_command)``, ``app.command("zero-shot")(zero_shot_command)``) and
``ecgfm pretrain --objective clip|caption|multitask`` calls :func:`pretrain_language_command`.
Importing this module imports typer only; torch, Lightning and ``tokenizers`` load when a command
runs. :data:`app` runs them on their own (tests, ``python -m ecgfm.language.cli``).

Exit status: ``report`` and ``zero-shot`` exit with the number of input files that failed
(capped at 100; each is reported on stderr with its reason); 1 on a model or option problem.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["app", "pretrain_language_command", "report_command", "zero_shot_command"]

MAX_EXIT = 100
SUPERCLASSES = "NORM,MI,STTC,CD,HYP"


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _load(model: Path) -> Any:
    from ecgfm.errors import ECGError
    from ecgfm.language.portable import load_language_model

    try:
        return load_language_model(model)
    except ECGError as exc:
        _say(f"error: {exc}")
        raise typer.Exit(1) from None


def _inputs(files: list[Path]) -> list[Path]:
    from ecgfm.cli import expand_inputs

    paths, passed_over = expand_inputs(files)
    if passed_over:
        _say(f"passed over {passed_over} files in folders that are not ECG files")
    if not paths:
        _say("error: no ECG files among the inputs")
        raise typer.Exit(1)
    return paths


def _finish(failures: list[Any], n: int) -> None:
    for f in failures:
        _say(f"error: {f.error}")
    if failures:
        _say(f"{len(failures)} of {n} files failed")
        raise typer.Exit(min(len(failures), MAX_EXIT))


def _write_rows(rows: list[dict[str, Any]], out: Path | None, columns: list[str]) -> None:
    """CSV (``.csv``, or stdout), or JSON lines (``.jsonl``)."""
    import csv

    if out is not None and out.suffix.lower() == ".jsonl":
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    if out is not None and out.suffix.lower() != ".csv":
        _say(f"error: {out}: the output must end in .csv or .jsonl")
        raise typer.Exit(1)
    handle = out.open("w", encoding="utf-8", newline="") if out is not None else sys.stdout
    try:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    finally:
        if out is not None:
            handle.close()


def report_command(
    files: Annotated[list[Path], typer.Argument(help="ECG files or folders (any format ecgfm reads).", show_default=False)],
    model: Annotated[Path, typer.Option("--model", "-m", help="A signal-language model folder with a report decoder (ecgfm pretrain --objective caption or multitask).")],
    beam: Annotated[int | None, typer.Option("--beam", help="Beam width; 1 is greedy decoding (default: the model's, 4).")] = None,
    length_penalty: Annotated[float | None, typer.Option("--length-penalty", help="Beam score = log-probability / length ** penalty (default: the model's, 1.0).")] = None,
    max_length: Annotated[int | None, typer.Option("--max-length", help="Longest report, in tokens.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the drafts to a .csv or .jsonl file (default: CSV on stdout).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Records per forward pass.")] = 16,
) -> None:
    """Write a draft report for each ECG (machine-generated text for a qualified reader to check)."""
    from ecgfm.errors import ECGError

    lm = _load(model)
    paths = _inputs(files)
    try:
        reports, failures = lm.generate(paths, beam=beam, length_penalty=length_penalty, max_length=max_length,
                                        batch_size=batch_size, errors="skip")
    except ECGError as exc:
        _say(f"error: {exc}")
        raise typer.Exit(1) from None
    failed = {f.index for f in failures}
    rows = [{"record_id": p.stem, "source": str(p), "draft_report": reports[i]}
            for i, p in enumerate(paths) if i not in failed]
    _write_rows(rows, out, ["record_id", "source", "draft_report"])
    if out is not None:
        _say(f"wrote {len(rows)} draft report(s) to {out} (model: {model})")
    _finish(failures, len(paths))


def zero_shot_command(
    files: Annotated[list[Path], typer.Argument(help="ECG files or folders (any format ecgfm reads).", show_default=False)],
    model: Annotated[Path, typer.Option("--model", "-m", help="A signal-language model folder with a text encoder (ecgfm pretrain --objective clip or multitask).")],
    conditions: Annotated[str, typer.Option("--conditions", "-c", help="Catalogue ids to score, comma-separated (ecgfm labels search finds ids).")] = SUPERCLASSES,
    catalogue: Annotated[Path | None, typer.Option("--catalogue", help="A catalogue CSV whose rows add to (or replace) the packaged catalogue's: conditions of your own, with names and synonyms for the prompts.")] = None,
    method: Annotated[str | None, typer.Option("--method", help="normal (softmax against the normal-ECG prompts), negation (against 'no X' prompts) or similarity (default: the model's).")] = None,
    expand: Annotated[str | None, typer.Option("--expand", help="descendants (score a condition by itself and its catalogue descendants) or none (default: the model's).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the scores to a .csv or .jsonl file (default: CSV on stdout).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Records per forward pass.")] = 32,
) -> None:
    """Score catalogue conditions for each ECG from text prompts, without training on them."""
    from ecgfm.errors import ECGError

    ids = [c.strip() for c in conditions.split(",") if c.strip()]
    if not ids:
        _say("error: --conditions: give at least one catalogue id")
        raise typer.Exit(1)
    lm = _load(model)
    try:
        cat = None
        if catalogue is not None:
            from ecgfm.labels import Catalogue, load_catalogue

            cat = Catalogue.from_csv(catalogue, extends=load_catalogue())
        clf = lm.zero_shot_classifier(cat, method=method, expand=expand)
        for cid in ids:  # fail on a bad id before reading any file
            clf.members(cid)
    except ECGError as exc:
        _say(f"error: {exc}")
        raise typer.Exit(1) from None
    paths = _inputs(files)
    try:
        scores, failures = lm.zero_shot(paths, ids, catalogue=cat, method=method, expand=expand,
                                        batch_size=batch_size, errors="skip")
    except ECGError as exc:
        _say(f"error: {exc}")
        raise typer.Exit(1) from None
    failed = {f.index for f in failures}
    rows = []
    for i, p in enumerate(paths):
        if i in failed:
            continue
        row: dict[str, Any] = {"record_id": p.stem, "source": str(p)}
        row.update({cid: round(float(scores[i, j]), 6) for j, cid in enumerate(ids)})
        rows.append(row)
    _write_rows(rows, out, ["record_id", "source", *ids])
    _finish(failures, len(paths))


def pretrain_language_command(
    objective: Annotated[str, typer.Option("--objective", help="clip, caption or multitask.")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML run configuration with a language: section (configs/language/).")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="Overrides section.key=value, e.g. data.store=corpora/ptbxl100 trainer.max_epochs=50 language.caption_weight=0.5.", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in out_dir from checkpoints/last.ckpt (same as resume=auto).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Pretrain on ECG-report pairs (contrastive, report generation, or both with normal/abnormal) and export the model."""
    from ecgfm.errors import ECGError

    from_objectives = ("clip", "caption", "multitask")
    if objective not in from_objectives:
        _say(f"error: --objective: the signal-language objectives are {', '.join(from_objectives)}, got {objective!r}")
        raise typer.Exit(1)
    try:
        from ecgfm.train.language import pretrain_language

        items = list(overrides or []) + (["resume=auto"] if resume else [])
        result = pretrain_language(objective, config, items)
    except ECGError as exc:
        _say(f"error: {exc}")
        raise typer.Exit(1) from None
    if result.get("global_rank", 0) != 0:
        return
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    val = result.get("val") or {}
    _say(f"pretrained ({objective}) {result['global_step']} steps over {result['n_train']} ECG-report pairs")
    shown = ", ".join(f"{k} {val[k]:.4g}" for k in ("loss", "clip", "caption", "e2t_r1", "auroc") if k in val)
    if shown:
        _say(f"val: {shown}")
    if result.get("model_dir"):
        _say(f"model: {result['model_dir']}")


app = typer.Typer(help="Signal-language models: draft reports, zero-shot scores, pretraining.", add_completion=False,
                  pretty_exceptions_enable=False, no_args_is_help=True)
app.command("report")(report_command)
app.command("zero-shot")(zero_shot_command)
app.command("pretrain-language")(pretrain_language_command)


if __name__ == "__main__":  # python -m ecgfm.language.cli pretrain-language ... (DDP relaunches this command)
    app()
