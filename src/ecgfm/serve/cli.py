"""``ecgfm serve``: run the profile service with uvicorn."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ecgfm.errors import ECGError


def serve_command(
    model: Annotated[Path | None, typer.Option("--model", "-m", help="Model directory; default: the bundled model.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    backend: Annotated[str, typer.Option(help="Inference backend: torch or onnx.")] = "torch",
    workers: Annotated[int, typer.Option(help="Worker processes (each loads the model).")] = 1,
    max_batch: Annotated[int, typer.Option(help="Most records in one forward pass.")] = 32,
    batch_wait_ms: Annotated[float, typer.Option(help="How long a record waits for others to batch with, ms.")] = 5.0,
    timeout: Annotated[float, typer.Option(help="Seconds a body may take to arrive and a profile to finish.")] = 30.0,
    max_upload_mb: Annotated[float, typer.Option(help="Largest request body, MiB.")] = 16.0,
    onnx: Annotated[Path | None, typer.Option(help="With --backend onnx: a file from `ecgfm export` to use.")] = None,
) -> None:
    """Serve ECG health profiles over HTTP: a JSON API (/docs) and a web page (/)."""
    try:
        import uvicorn
    except ImportError:
        raise typer.BadParameter("the service needs its extra: pip install 'ecgfm[serve]'") from None
    if backend not in ("torch", "onnx"):
        raise typer.BadParameter(f"unknown backend {backend!r} (known: torch, onnx)", param_hint="--backend")
    if workers < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--workers")
    max_bytes = int(max_upload_mb * 1024 * 1024)
    if workers == 1:
        from ecgfm.serve.app import create_app

        try:
            app = create_app(model, backend=backend, max_upload_bytes=max_bytes, timeout_s=timeout,
                             max_batch=max_batch, batch_wait_ms=batch_wait_ms, onnx_path=onnx)
        except ECGError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"serving {app.state.service.model.card.name} ({backend}) on http://{host}:{port}", err=True)
        uvicorn.run(app, host=host, port=port, log_level="info")
        return
    # Several processes: each builds its app from the environment (uvicorn needs an import string).
    os.environ.update({
        "ECGFM_SERVE_MODEL": str(model or ""), "ECGFM_SERVE_BACKEND": backend,
        "ECGFM_SERVE_MAX_UPLOAD_BYTES": str(max_bytes), "ECGFM_SERVE_TIMEOUT_S": str(timeout),
        "ECGFM_SERVE_MAX_BATCH": str(max_batch), "ECGFM_SERVE_BATCH_WAIT_MS": str(batch_wait_ms),
        "ECGFM_SERVE_ONNX": str(onnx or ""),
        # Each worker's model gets its share of the cores instead of all of them.
        "ECGFM_SERVE_MODEL_THREADS": str(max(1, (os.cpu_count() or 1) // workers)),
    })
    if backend == "onnx" and onnx is None:
        _export_once(model)  # one export before the workers start, instead of one per worker
    uvicorn.run("ecgfm.serve.app:app_from_env", factory=True, host=host, port=port,
                workers=workers, log_level="info")


def _export_once(model: Path | None) -> None:
    from ecgfm.serve.app import _resolve_model
    from ecgfm.serve.backends import export_cached

    try:
        export_cached(_resolve_model(model))
    except ECGError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
