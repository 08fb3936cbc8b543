"""``ecgfm measure``: heart rate, intervals, QTc and axes of many ECG files, as CSV or JSON Lines.

A hospital's archive is read once: every file in any supported format goes through
:func:`ecgfm.delineate.measure` (the median-beat route by default), one row per file, written as
the results arrive so that a million files never sit in memory. ``--jobs N`` spreads the files
over N processes (about 13 ms per 10 s 12-lead record on one core). A file that cannot be read
or measured is reported on stderr with its reason and skipped; the exit status counts them.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

FIELDS = ("heart_rate_bpm", "rr_ms", "pr_ms", "qrs_ms", "qt_ms", "qtc_bazett_ms", "qtc_fridericia_ms",
          "p_axis_deg", "qrs_axis_deg", "t_axis_deg", "n_beats")
COLUMNS = ("file", "record_id", *FIELDS)
METHODS = ("median", "beats")
CHUNK = 16  # files per task handed to a worker process


def measure_file(path: str, method: str = "median") -> dict[str, Any]:
    """One output row for ``path``: the file, its record id and :class:`~ecgfm.delineate.Measurements`
    (rounded to 0.1; None where not measurable).

    Raises:
        ECGError: the file cannot be read or measured (the message names it).
    """
    import math

    from ecgfm.delineate import measure
    from ecgfm.io import read

    ecg = read(path)
    values = measure(ecg, method=method).to_dict()  # type: ignore[arg-type]
    row: dict[str, Any] = {"file": str(path), "record_id": ecg.meta.record_id or Path(path).stem}
    for key in FIELDS:
        value = values[key]
        row[key] = round(value, 1) if isinstance(value, float) and math.isfinite(value) else value
    return row


def _measure_chunk(paths: list[str], method: str) -> list[tuple[str, dict[str, Any] | None, str | None]]:
    """``(path, row, None)`` or ``(path, None, error message)`` per file (in a worker process)."""
    from ecgfm.errors import ECGError

    out: list[tuple[str, dict[str, Any] | None, str | None]] = []
    for path in paths:
        try:
            out.append((path, measure_file(path, method), None))
        except ECGError as exc:
            out.append((path, None, str(exc)))
        except Exception as exc:  # noqa: BLE001 - a bug on one file must not cost the batch
            out.append((path, None, f"{path}: unexpected {type(exc).__name__}: {exc} (please report this)"))
    return out


def measure_files(paths: list[Path], method: str = "median", jobs: int = 1
                  ) -> Iterator[tuple[str, dict[str, Any] | None, str | None]]:
    """Measure ``paths`` in input order: ``(path, row, None)`` or ``(path, None, message)`` each.

    With ``jobs > 1`` the files go to that many processes, :data:`CHUNK` at a time, each with
    one BLAS thread (the work is per file).
    """
    from ecgfm.parallel import map_chunks

    return map_chunks(_measure_chunk, [str(p) for p in paths], method, jobs=jobs, chunk=CHUNK)


def measure_command(
    files: Annotated[list[Path], typer.Argument(help="ECG files or folders (walked recursively).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output .csv or .jsonl; default: CSV on stdout.")] = None,
    method: Annotated[str, typer.Option(help="median: each lead's median beat (fast); beats: every beat.")] = "median",
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Worker processes.")] = 1,
) -> None:
    """Heart rate, RR, PR, QRS, QT, QTc (Bazett, Fridericia) and P/QRS/T axes of each file."""
    from ecgfm.cli import _err, _finish, _progress, expand_inputs

    if method not in METHODS:
        raise typer.BadParameter(f"unknown method {method!r} (known: {', '.join(METHODS)})", param_hint="--method")
    if jobs < 1:
        raise typer.BadParameter("must be >= 1", param_hint="--jobs")
    if out is not None and out.suffix.lower() not in (".csv", ".jsonl"):
        raise typer.BadParameter(f"{out}: give a .csv or .jsonl file", param_hint="--out")
    paths, passed_over = expand_inputs(files)
    stream: TextIO = sys.stdout if out is None else _open(out)
    as_json = out is not None and out.suffix.lower() == ".jsonl"
    writer = None if as_json else csv.DictWriter(stream, fieldnames=COLUMNS, lineterminator="\n")
    if writer is not None:
        writer.writeheader()
    failed = written = 0
    try:
        for _, row, error in _progress(measure_files(paths, method, jobs), "measure", total=len(paths)):
            if row is None:
                failed += 1
                _err(f"error: {error}")
                continue
            if as_json:
                stream.write(json.dumps(row) + "\n")
            else:
                writer.writerow({k: "" if v is None else v for k, v in row.items()})  # type: ignore[union-attr]
            written += 1
    finally:
        if out is not None:
            stream.close()
    if out is not None:
        _err(f"wrote {written} rows to {out}")
    _finish(len(paths), failed, passed_over)


def _open(path: Path) -> TextIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("w", encoding="utf-8", newline="")

