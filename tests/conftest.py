"""Shared fixtures: the real ECG data in ``../shared/data`` (tests skip where it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ECGFM_DATA", ROOT.parent / "shared" / "data"))
EXAMPLES = ROOT / "examples"


def data_path(*parts: str) -> Path:
    """A path under the shared data folder; skips the calling test when it is absent."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not found: {path} (set ECGFM_DATA to the data folder)")
    return path


@pytest.fixture
def data() -> Path:
    """The shared real-data folder (``../shared/data`` beside the repo, or $ECGFM_DATA)."""
    return data_path()
