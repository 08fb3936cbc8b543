"""What every benchmark records about the machine it ran on."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> dict[str, object]:
    """CPU model, core count, Python, numpy/scipy versions and the platform string."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    import scipy

    return {
        "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
        "numpy": numpy.__version__, "scipy": scipy.__version__, "platform": platform.platform(),
    }


def write_results(out: Path, name: str, result: dict, page: str, marker: str | None = None) -> None:
    """Write ``<name>.json`` and ``<name>.md`` into ``out``.

    When ``marker`` is given, everything from that line on in the existing page (a hand-written
    analysis) is kept below the regenerated figures.
    """
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    md = out / f"{name}.md"
    kept = ""
    if marker and md.exists() and marker in (old := md.read_text(encoding="utf-8")):
        kept = "\n" + old[old.index(marker):]
    md.write_text(page + kept, encoding="utf-8")
    print(f"wrote {out / name}.json and .md")


def load_note() -> str:
    """How busy the machine was as a benchmark ran, from the 1-minute load average."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        return "load average unknown"
    state = ("no other jobs of note" if load <= cores + 0.5
             else "other jobs were running, so timings are indicative only")
    return f"1-minute load average {load:.1f} on {cores} cores ({state})"
