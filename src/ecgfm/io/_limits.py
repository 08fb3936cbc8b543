"""Guards against files whose headers would make a reader allocate absurd amounts of memory."""

from __future__ import annotations

import os

from ecgfm.errors import ReadError

# 2**28 float32 values = 1 GiB; a 24-hour 12-lead Holter at 500 Hz is 0.52e9 values and must be
# read in windows rather than at once. Override with the ECGFM_MAX_VALUES environment variable.
DEFAULT_MAX_VALUES = 2**28


def max_values() -> int:
    return int(os.environ.get("ECGFM_MAX_VALUES", DEFAULT_MAX_VALUES))


def check_declared_size(path: str | os.PathLike[str], n_leads: int, n_samples: int) -> None:
    """Refuse a declared signal size that is non-positive or would exceed the allocation cap."""
    if n_leads <= 0:
        raise ReadError(path, f"header declares {n_leads} leads")
    if n_samples <= 0:
        raise ReadError(path, f"header declares {n_samples} samples per lead")
    total = n_leads * n_samples
    if total > max_values():
        raise ReadError(
            path,
            f"header declares {n_leads} leads x {n_samples} samples = {total:,} values, over the "
            f"limit of {max_values():,} (set ECGFM_MAX_VALUES to raise it)",
        )
