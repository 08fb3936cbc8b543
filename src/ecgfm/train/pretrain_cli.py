"""``ecgfm pretrain``: self-supervised pretraining of an encoder on a corpus store (see
:mod:`ecgfm.train.pretrain` and ``docs/pretraining.md``).

A plain function, so the main ``ecgfm`` app registers it with
``app.command("pretrain")(pretrain_command)``; importing this module imports typer only (torch
and Lightning load when the command runs).

Exit status: 0 on success; 1 on a configuration, data or model problem (printed as ``error: ...``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["app", "pretrain_command"]

_OVERRIDES_HELP = ("Config overrides section.key=value (YAML values), e.g. data.store=corpora/pretrain100 "
                   "trainer.max_steps=2000 pretrain.objectives=[{name: masked, lead_prob: 0.5}].")


def _report(result: dict[str, Any], as_json: bool) -> None:
    from ecgfm.train.cli import _say

    if result.get("global_rank", 0) != 0:  # under DDP every rank runs the command; one reports
        return
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
        return
    val = result.get("val") or {}
    speed = result.get("ecgs_per_second")
    _say(f"pretrained ({' + '.join(result['objectives'])}) for {result['global_step']} steps over "
         f"{result['n_train']} records" + (f", {speed:.0f} ECGs/s" if speed else ""))
    if "loss" in val:
        _say(f"val: loss {val['loss']:.4f} over {int(val.get('n', 0))} records")
    _say(f"checkpoints: {Path(result['last_checkpoint']).parent}")
    if result.get("model_dir"):
        _say(f"model: {result['model_dir']} (ecgfm finetune --from {result['model_dir']})")


def pretrain_command(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML run configuration with a pretrain: section (see configs/pretrain/ and docs/pretraining.md).")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help=_OVERRIDES_HELP, show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in out_dir from checkpoints/last.ckpt (same as resume=auto).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    objective: Annotated[str | None, typer.Option("--objective", help="clip, caption or multitask: ECG-report pretraining on a store with reports (docs/language.md). Without it: the objectives of the config's pretrain: section.")] = None,
) -> None:
    """Pretrain an encoder self-supervised (CPC, wav2vec 2.0, masked modelling, CMSC) or with
    reports (CLIP, captioning, multi-task), and export it."""
    if objective is not None:
        if objective not in ("clip", "caption", "multitask"):
            raise typer.BadParameter(f"{objective!r} is not one of clip, caption, multitask (self-supervised "
                                     "objectives go in the config's pretrain: section)", param_hint="--objective")
        from ecgfm.language.cli import pretrain_language_command

        pretrain_language_command(objective, config, overrides, resume, as_json)
        return
    from ecgfm.train.cli import _run

    def job() -> Any:
        from ecgfm.train.pretrain import pretrain

        items = list(overrides or []) + (["resume=auto"] if resume else [])
        return pretrain(config, items)

    _report(_run(job), as_json)


app = typer.Typer(help="Self-supervised pretraining.", add_completion=False,
                  pretty_exceptions_enable=False, no_args_is_help=True)
app.command("pretrain")(pretrain_command)


@app.callback()
def _group() -> None:
    """A group callback keeps ``pretrain`` a subcommand here too, as under ``ecgfm``."""


if __name__ == "__main__":  # python -m ecgfm.train.pretrain_cli pretrain ... (DDP relaunches this command)
    app()
