"""``ecgfm train``, ``ecgfm finetune`` and ``ecgfm embed``.

``--task survival --time COL --event COL [--survival-model cox|hazard] [--horizons 1,5,10]`` on
``train`` and ``finetune`` trains a time-to-event head (the columns come from the store manifest
or from ``data.overrides=outcomes.csv``); see ``docs/survival.md``.

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
    if result.get("survival"):
        info = result["survival"]
        left = sum((info.get("excluded") or {}).values())
        if left:
            _say(f"left out {left} record(s) without a time or event value")
    for name, metrics in (("val", val), ("test", result.get("test") or {})):
        if "c_index" in metrics:
            aucs = ", ".join(f"{k[4:]}: {v:.3f}" for k, v in metrics.items()
                             if k.startswith("auc_") and k != "auc_mean" and isinstance(v, float))
            _say(f"{name}: Harrell's C {metrics['c_index']:.4f}, Uno's C {metrics.get('uno_c', float('nan')):.4f}, "
                 f"integrated Brier {metrics.get('ibs', float('nan')):.4f}, time-dependent AUROC {aucs or 'n/a'} "
                 f"({int(metrics.get('events', 0))} events in {int(metrics.get('n', 0))} records)")
        elif "auroc" in metrics:
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


_TASK_HELP = "survival: a time-to-event head on --time and --event (sets model.head, data.time_column, ...)."
_SURVIVAL_MODELS = {"cox": "cox", "hazard": "discrete_hazard", "discrete_hazard": "discrete_hazard"}


def task_overrides(task: str | None, time: str | None, event: str | None, survival_model: str,
                   horizons: str | None, ties: str | None, time_unit: str | None,
                   config: Path | None, overrides: list[str]) -> list[str]:
    """The ``section.key=value`` items the task options stand for, placed before ``overrides`` (so
    an explicit override wins). ``--task survival`` also sets ``trainer.monitor=val/c_index``
    (mode max) unless the config file or an override sets the monitor.

    Raises:
        ValidationError: survival options without ``--task survival``, an unknown task or
            survival model, horizons that are not numbers, ``--ties`` with a hazard model.
    """
    from ecgfm.errors import ValidationError

    given = {"--time": time, "--event": event, "--horizons": horizons, "--ties": ties, "--time-unit": time_unit}
    if task is None:
        used = [k for k, v in given.items() if v is not None]
        if used:
            raise ValidationError(f"{', '.join(used)} need --task survival")
        return []
    if task != "survival":
        raise ValidationError(f"--task: expected survival, got {task!r} (classification and regression heads are "
                              "set with model.head=...)")
    if survival_model not in _SURVIVAL_MODELS:
        raise ValidationError(f"--survival-model: expected cox or hazard, got {survival_model!r}")
    head = _SURVIVAL_MODELS[survival_model]
    items = [f"model.head={head}"]
    if time is not None:
        items.append(f"data.time_column={json.dumps(time)}")
    if event is not None:
        items.append(f"data.event_column={json.dumps(event)}")
    if time_unit is not None:
        items.append(f"data.time_unit={json.dumps(time_unit)}")
    if horizons is not None:
        try:
            values = [float(h) for h in horizons.replace(";", ",").split(",") if h.strip()]
        except ValueError:
            raise ValidationError(f"--horizons: expected numbers separated by commas (1,5,10), got {horizons!r}") from None
        items.append(f"data.horizons={json.dumps(values)}")
    if ties is not None:
        if head != "cox":
            raise ValidationError("--ties is for --survival-model cox")
        if ties not in ("efron", "breslow"):
            raise ValidationError(f"--ties: expected efron or breslow, got {ties!r}")
        items.append(f"model.loss=cox_{ties}")
    monitor_set = any(o.split("=", 1)[0].strip() == "trainer.monitor" for o in overrides)
    if not monitor_set and config is not None:
        from ecgfm.train.config import read_yaml_sections

        monitor_set = "monitor" in (read_yaml_sections(config).get("trainer") or {})
    if not monitor_set:
        items += ["trainer.monitor=val/c_index", "trainer.monitor_mode=max"]
    return items


@app.command("train")
def train_command(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML run configuration (see docs/training.md and configs/train/).")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help=_OVERRIDES_HELP, show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in out_dir from checkpoints/last.ckpt (same as resume=auto).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    task: Annotated[str | None, typer.Option("--task", help=_TASK_HELP)] = None,
    time: Annotated[str | None, typer.Option("--time", help="survival: manifest (or data.overrides) column of follow-up time.")] = None,
    event: Annotated[str | None, typer.Option("--event", help="survival: column of the event indicator (1 = event, 0 = censored).")] = None,
    survival_model: Annotated[str, typer.Option("--survival-model", help="survival: cox (log relative hazard) or hazard (discrete-time, one output per interval).")] = "cox",
    horizons: Annotated[str | None, typer.Option("--horizons", help="survival: evaluation horizons in the time unit, e.g. 1,5,10 (default: quartiles of the training event times).")] = None,
    ties: Annotated[str | None, typer.Option("--ties", help="survival, cox: efron (default) or breslow handling of tied event times.")] = None,
    time_unit: Annotated[str | None, typer.Option("--time-unit", help="survival: the unit of --time (e.g. years), recorded in the model.")] = None,
) -> None:
    """Train an encoder on a corpus store; checkpoints, logs, config.yaml and the portable model go to out_dir."""
    def job() -> Any:
        from ecgfm.train.config import load_config
        from ecgfm.train.run import train

        user = list(overrides or [])
        items = task_overrides(task, time, event, survival_model, horizons, ties, time_unit, config, user)
        items += user + (["resume=auto"] if resume else [])
        return train(load_config(config, items))

    _report(_run(job), as_json)


@app.command("finetune")
def finetune_command(
    start: Annotated[Path, typer.Option("--from", help="Starting weights: a portable model folder or a .ckpt of 'ecgfm train'.")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML run configuration.")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help=_OVERRIDES_HELP + " model.freeze=encoder|partial:N|none.", show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in out_dir from checkpoints/last.ckpt.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    task: Annotated[str | None, typer.Option("--task", help=_TASK_HELP)] = None,
    time: Annotated[str | None, typer.Option("--time", help="survival: manifest (or data.overrides) column of follow-up time.")] = None,
    event: Annotated[str | None, typer.Option("--event", help="survival: column of the event indicator (1 = event, 0 = censored).")] = None,
    survival_model: Annotated[str, typer.Option("--survival-model", help="survival: cox (log relative hazard) or hazard (discrete-time, one output per interval).")] = "cox",
    horizons: Annotated[str | None, typer.Option("--horizons", help="survival: evaluation horizons in the time unit, e.g. 1,5,10 (default: quartiles of the training event times).")] = None,
    ties: Annotated[str | None, typer.Option("--ties", help="survival, cox: efron (default) or breslow handling of tied event times.")] = None,
    time_unit: Annotated[str | None, typer.Option("--time-unit", help="survival: the unit of --time (e.g. years), recorded in the model.")] = None,
) -> None:
    """Fine-tune a trained model on a new label set (linear probe, partial or full), or on a
    time-to-event outcome: --task survival --time COL --event COL [--survival-model cox|hazard]."""
    def job() -> Any:
        from ecgfm.train.config import load_config
        from ecgfm.train.run import finetune

        user = list(overrides or [])
        items = task_overrides(task, time, event, survival_model, horizons, ties, time_unit, config, user)
        items += user + (["resume=auto"] if resume else [])
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
