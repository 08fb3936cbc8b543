"""``ecgfm transfer``: train a reduced-lead student of a 12-lead model (see :mod:`ecgfm.train.transfer`).

A plain function, so the main ``ecgfm`` app registers it with
``app.command("transfer")(transfer_command)``; importing this module imports typer only (torch
and Lightning load when the command runs).

Exit status: 0 on success; 1 on a configuration, data or model problem (printed as ``error: ...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["app", "transfer_command"]

_OVERRIDES_HELP = ("Config overrides section.key=value (YAML values), e.g. data.store=corpora/ptbxl100 "
                   "trainer.max_epochs=20 transfer.lambda_align=0.5 transfer.alignment=coral.")


def transfer_command(
    teacher: Annotated[Path, typer.Option("--teacher", help="The 12-lead teacher: a portable model folder or a .ckpt of 'ecgfm train'.")],
    leads: Annotated[str, typer.Option("--leads", help="The student's leads: I, II, I,II, I,II,III,aVR,aVL,aVF (or limb), V1-V6 ...")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML run configuration with an optional transfer: section (default: the teacher's own training configuration).")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help=_OVERRIDES_HELP, show_default=False)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in out_dir from checkpoints/last.ckpt (same as resume=auto).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Train a reduced-lead student of a 12-lead model (feature alignment + distillation) and export it."""
    from ecgfm.train.cli import _report, _run, _say

    def job() -> Any:
        from ecgfm.train.transfer import transfer

        items = list(overrides or []) + (["resume=auto"] if resume else [])
        return transfer(teacher, leads, config, items)

    result = _run(job)
    _report(result, as_json)
    if not as_json and result.get("global_rank", 0) == 0:
        _say(f"student leads: {', '.join(result['leads'])} (teacher: {result['teacher']})")


app = typer.Typer(help="Reduced-lead transfer from a 12-lead model.", add_completion=False,
                  pretty_exceptions_enable=False, no_args_is_help=True)
app.command("transfer")(transfer_command)


@app.callback()
def _group() -> None:
    """A group callback keeps ``transfer`` a subcommand here too, as under ``ecgfm``."""


if __name__ == "__main__":  # python -m ecgfm.train.transfer_cli transfer ... (DDP relaunches this command)
    app()
