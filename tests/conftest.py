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


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's torch work on one thread: tiny models gain nothing from intra-op threads,
    and on a busy machine OpenMP's spinning threads make each step of them ~100x slower.
    Use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ludb100(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LUDB (200 real records; 158 train / 20 val / 22 test) preprocessed at 100 Hz: a corpus store
    built once per test session and shared, so tests must only read it."""
    from ecgfm.preprocess import Pipeline
    from ecgfm.store.adapters import adapter_for
    from ecgfm.store.build import build_corpus

    out = tmp_path_factory.mktemp("ludb") / "ludb100"
    build_corpus([adapter_for(data_path("ludb"))], out, pipeline=Pipeline.standard(fs=100), workers=1,
                 progress=False)
    return out
