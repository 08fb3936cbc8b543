"""``ecgfm train``, ``ecgfm finetune`` and ``ecgfm embed``.

The commands are plain functions so the main ``ecgfm`` app registers them with
``app.command("train")(train_command)`` (and likewise ``finetune``, ``embed``); :data:`app` runs
them on their own for tests. Importing this module imports typer only; Lightning and torch load
when a command runs.

Exit status: 0 on success; 1 on a configuration, data or model problem (printed as
``error: ...``); ``embed`` exits with the number of input files that failed (capped at 100)
when some did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

MAX_EXIT = 100

app = typer.Typer(help="Train, fine-tune and embed with ecgfm encoders.", add_completion=False,
                  pretty_exceptions_enable=False, no_args_is_help=True)

_OVERRIDES_HELP = ("Config overrides section.key=value, values in YAML: trainer.max_steps=1000 "
                   "data.leads=[I,II] model.encoder_args.width=64 trainer.devices=8 trainer.strategy=ddp.")


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _report(result: dict[str, Any], as_json: bool) -> None:
    if result.get("global_rank", 0) != 0:  # under DDP every rank runs the command; one reports
        return
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    val = result.get("val") or {}
    _say(f"trained {result['global_step']} steps over {result['n_train']} windows; "
         f"{len(result['label_ids'])} outputs")
    for name, metrics in (("val", val), ("test", result.get("test") or {})):
        if "auroc" in metrics:
            _say(f"{name}: macro AUROC {metrics['auroc']:.4f} over {int(metrics.get('auroc_labels', 0))} labels")
        elif "mae" in metrics:
            _say(f"{name}: MAE {metrics['mae']:.4g}")
    _say(f"checkpoints: {Path(result['last_checkpoint']).parent}")
    if result.get("model_dir"):
        _say(f"model: {result['model_dir']}")


def _run(job: Any) -> Any:
    from ecgfm.errors import ECGError

    try:
        return job()
    except ECGError as exc:
        _say(f"error: {exc}")
        raise typer.Exit(1) from None


@app.command("train")
def train_command(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML run configuration (see docs/training.md and configs/train/).")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help=_OVERRIDES_HELP, show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in out_dir from checkpoints/last.ckpt (same as resume=auto).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Train an encoder on a corpus store; checkpoints, logs, config.yaml and the portable model go to out_dir."""
    def job() -> Any:
        from ecgfm.train.config import load_config
        from ecgfm.train.run import train

        items = list(overrides or []) + (["resume=auto"] if resume else [])
        return train(load_config(config, items))

    _report(_run(job), as_json)


@app.command("finetune")
def finetune_command(
    start: Annotated[Path, typer.Option("--from", help="Starting weights: a portable model folder or a .ckpt of 'ecgfm train'.")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML run configuration.")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help=_OVERRIDES_HELP + " model.freeze=encoder|partial:N|none.", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in out_dir from checkpoints/last.ckpt.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Fine-tune a trained model on a new label set: linear probe, partial or full."""
    def job() -> Any:
        from ecgfm.train.config import load_config
        from ecgfm.train.run import finetune

        items = list(overrides or []) + (["resume=auto"] if resume else [])
        return finetune(load_config(config, items), init=start)

    _report(_run(job), as_json)


@app.command("embed")
def embed_command(
    model: Annotated[Path, typer.Argument(help="A portable model folder.")],
    inputs: Annotated[list[Path], typer.Argument(help="ECG files or folders, or one corpus store folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output: .parquet (record_id, source, f0..) or .npy (+ .ids.csv).")],
    split: Annotated[str | None, typer.Option(help="Store split to embed (train, val, test; default: all records).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Records per forward pass.")] = 64,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1 ...")] = "cpu",
) -> None:
    """Write a model's pooled embeddings of records to Parquet or NumPy."""
    def job() -> Any:
        from ecgfm.train.run import embed

        return embed(model, inputs, out, split=split, batch_size=batch_size, device=device)

    result = _run(job)
    for source, error in result["failures"]:
        _say(f"error: {error if error.startswith(source) else f'{source}: {error}'}")
    _say(f"wrote {result['n']} x {result['dim']} embeddings to {result['out']}")
    if result["failures"]:
        _say(f"{len(result['failures'])} of {result['n'] + len(result['failures'])} files failed")
        raise typer.Exit(min(len(result["failures"]), MAX_EXIT))


if __name__ == "__main__":  # python -m ecgfm.train.cli train ... (Lightning's DDP relaunches this command)
    app()
