"""``ecgfm export``: a portable model to ONNX, with a parity check against PyTorch.

The command is a plain function that the main ``ecgfm`` app registers with
``app.command("export")(export_command)``; :data:`app` runs it on its own for tests. Importing
this module imports typer only; torch and onnx load when the command runs.

Exit status: 0 when the export matches PyTorch within ``--atol``; 1 on a model or data problem
or a parity failure (printed as ``error: ...``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

FORMATS = ("onnx",)
#: Real records checked by default: the bundled PTB-XL examples of a source checkout.
EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "ptbxl"

app = typer.Typer(help="Export ecgfm models.", add_completion=False,
                  pretty_exceptions_enable=False, no_args_is_help=True)


def export_command(
    model_dir: Annotated[Path, typer.Argument(help="A portable model directory (config.json + model.safetensors).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The file to write, e.g. model.onnx.")],
    format: Annotated[str, typer.Option("--format", "-f", help="Export format: onnx.")] = "onnx",
    check_with: Annotated[list[Path] | None, typer.Option(
        "--check-with", help="ECG files (any format) to compare PyTorch and the export on; "
        "default: the bundled examples/ptbxl records when present.")] = None,
    atol: Annotated[float, typer.Option(help="Largest accepted absolute difference of probabilities.")] = 1e-4,
    opset: Annotated[int, typer.Option(help="ONNX opset version.")] = 17,
    as_json: Annotated[bool, typer.Option("--json", help="Print the parity report as JSON on stdout.")] = False,
) -> None:
    """Export a model to ONNX and report its parity with PyTorch on real records.

    The graph takes the prepared input (``signal [B, L, T]``, ``lead_mask [B, L]``) and gives
    ``predictions [B, C]`` and ``embeddings [B, D]``; the model's config travels in its metadata.
    The report gives the largest absolute difference of the predicted probabilities between
    ONNX Runtime and PyTorch, on random input and on each real record.
    """
    if format not in FORMATS:
        raise typer.BadParameter(f"unknown format {format!r} (known: {', '.join(FORMATS)})", param_hint="--format")
    from ecgfm.errors import ECGError

    try:
        report = _export(model_dir, out, check_with, atol=atol, opset=opset)
    except ImportError as error:
        typer.echo(f"error: ONNX export needs onnx and onnxruntime (pip install 'ecgfm[onnx]'): {error}", err=True)
        raise typer.Exit(1) from None
    except ECGError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _say(report)
    if not report["passed"]:
        typer.echo(f"error: {out}: ONNX Runtime differs from PyTorch by {report['max_abs_diff']:.3g} "
                   f"(> {atol:g})", err=True)
        raise typer.Exit(1)


def _export(model_dir: Path, out: Path, records: list[Path] | None, *, atol: float, opset: int) -> dict[str, Any]:
    from ecgfm.models.export import check_onnx, export_onnx
    from ecgfm.models.portable import load_model
    from ecgfm.serve.backends import compare_backends

    model = load_model(model_dir)
    export_onnx(model, out, opset=opset, check=False)
    random_diff = check_onnx(out, model, atol=float("inf"))
    if records is None:
        records = sorted(EXAMPLES.glob("*.hea")) if EXAMPLES.is_dir() else []
    real: dict[str, Any] = {"records": 0, "refused": [], "max_abs_diff": None}
    if records:
        real = compare_backends(model, out, [str(r) for r in records])
        real["files"] = [str(r) for r in records]
    diffs = [random_diff] + ([real["max_abs_diff"]] if real["max_abs_diff"] is not None else [])
    worst = max(diffs)
    return {"file": str(out), "bytes": out.stat().st_size, "opset": opset,
            "random_input_max_abs_diff": random_diff, "real_records": real,
            "max_abs_diff": worst, "atol": atol, "passed": worst <= atol}


def _say(report: dict[str, Any]) -> None:
    real = report["real_records"]
    typer.echo(f"wrote {report['file']} ({report['bytes'] / 1e6:.1f} MB, opset {report['opset']})")
    typer.echo(f"parity with PyTorch, max abs difference of probabilities: "
               f"{report['random_input_max_abs_diff']:.3g} on random input")
    if real["records"]:
        typer.echo(f"  {real['max_abs_diff']:.3g} over {real['records']} real records "
                   f"(mean {real['mean_abs_diff']:.3g})")
    else:
        typer.echo("  no real records checked (pass --check-with FILE...)")
    for message in real.get("refused", []):
        typer.echo(f"  not checked: {message}")
    typer.echo("passed" if report["passed"] else "FAILED", err=not report["passed"])


app.command("export")(export_command)
