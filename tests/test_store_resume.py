"""Resuming and extending corpus stores: kill -9 mid-build, a crash mid-part, appending sources.

The kill test runs a real build in a subprocess, SIGKILLs it once some parts are committed,
reruns it, and compares the result with an uninterrupted build of the same sources.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecgfm.store.build import build_corpus
from ecgfm.store.format import Corpus, committed_parts
from test_store_build import ToyAdapter, comparable, manifest_of, write_toy

TESTS = Path(__file__).resolve().parent
SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_store_build import ToyAdapter
from ecgfm.store.build import build_corpus
build_corpus([ToyAdapter({src!r}, delay={delay})], {store!r}, workers={workers}, part_size=2, progress=False)
"""


def file_stats(store: Path, parts: list[str]) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every file of the given parts."""
    out = {}
    for part in parts:
        for path in (store / "shards" / f"{part}.npy", store / "parts" / f"{part}.parquet", store / "parts" / f"{part}.json"):
            st = path.stat()
            out[str(path)] = (st.st_ino, st.st_mtime_ns)
    return out


def assert_complete(store: Path, keys: list[str]) -> None:
    """The store opens with full checks, each key is in exactly one marker, no id repeats."""
    corpus = Corpus.open(store, verify="full")
    assert not corpus.manifest["record_id"].duplicated().any()
    marked = [k for m in committed_parts(store) for k in m.keys]
    assert sorted(marked) == sorted(keys)
    assert sorted(corpus.manifest["key"]) == sorted(keys)


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_and_resume_finishes_without_duplicates_gaps_or_redone_parts(tmp_path: Path, workers: int) -> None:
    src, store = tmp_path / "src", tmp_path / "store"
    write_toy(src, 20)  # 10 parts of 2 records
    script = SCRIPT.format(tests=str(TESTS), src=str(src), store=str(store), delay=0.08, workers=workers)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    try:
        while len(list((store / "parts").glob("*.json"))) < 3:
            assert proc.poll() is None, f"the build ended before it could be killed: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no part was committed within 60 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    time.sleep(0.3)  # let orphaned pool workers notice their build is gone
    before = [m.part for m in committed_parts(store)]
    assert 3 <= len(before) < 10, "the kill should land mid-build"
    assert not (store / "manifest.parquet").exists()
    stats = file_stats(store, before)

    summary = build_corpus([ToyAdapter(src)], store, workers=1, part_size=2, progress=False)
    assert summary.parts_written == 10 - len(before) and summary.keys_skipped == 2 * len(before)
    assert summary.records == 20 and summary.parts_total == 10
    assert file_stats(store, before) == stats  # finished parts were not rewritten
    assert_complete(store, ToyAdapter(src).keys())
    assert not [p for p in (store / "shards").iterdir() if p.name.startswith(".")]  # no temporaries

    build_corpus([ToyAdapter(src)], tmp_path / "straight", workers=1, part_size=2, progress=False)
    assert comparable(manifest_of(store)).equals(comparable(manifest_of(tmp_path / "straight")))


def test_a_crash_mid_part_is_invisible_and_redone(tmp_path: Path) -> None:
    src, store = tmp_path / "src", tmp_path / "store"
    write_toy(src, 6)
    build_corpus([ToyAdapter(src)], store, workers=1, part_size=2, progress=False)
    reference = comparable(manifest_of(store))
    parts = [m.part for m in committed_parts(store)]
    # crash after the shard and rows were renamed into place, before the marker
    (store / "parts" / f"{parts[1]}.json").unlink()
    # ... and leftovers of another crash: temporaries and an orphan shard
    (store / "shards" / f".{parts[0]}.npy.tmp-12345").write_bytes(b"\x93NUMPY half")
    (store / "parts" / f".{parts[0]}.json.tmp-12345").write_text("{")
    (store / "shards" / "toy-0123456789abcdef.npy").write_bytes(b"orphan")
    (store / "parts" / "toy-0123456789abcdef.parquet").write_bytes(b"orphan")

    seen = Corpus.open(store, verify="full")  # the uncommitted part is not visible
    assert len(seen) == 4 and parts[1] not in seen.shard_names

    summary = build_corpus([ToyAdapter(src)], store, workers=1, part_size=2, progress=False)
    assert summary.parts_written == 1 and summary.keys_processed == 2 and summary.keys_skipped == 4
    assert comparable(manifest_of(store)).equals(reference)
    names = sorted(p.name for p in (store / "shards").iterdir())
    assert names == sorted(f"{p}.npy" for p in parts)
    assert sorted(p.name for p in (store / "parts").iterdir()) == sorted(f"{p}.{s}" for p in parts for s in ("json", "parquet"))


def test_a_finished_store_is_left_alone(tmp_path: Path) -> None:
    src, store = tmp_path / "src", tmp_path / "store"
    write_toy(src, 4)
    build_corpus([ToyAdapter(src)], store, workers=1, part_size=2, progress=False)
    manifest = (store / "manifest.parquet").stat().st_mtime_ns
    errors = (store / "errors.jsonl").stat().st_mtime_ns
    summary = build_corpus([ToyAdapter(src)], store, workers=1, part_size=2, progress=False)
    assert summary.parts_written == 0 and summary.records_written == 0 and summary.records == 4
    assert (store / "manifest.parquet").stat().st_mtime_ns == manifest
    assert (store / "errors.jsonl").stat().st_mtime_ns == errors
    assert len((store / "builds.jsonl").read_text().splitlines()) == 2


def test_appending_a_source_adds_only_its_parts(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_toy(tmp_path / "a", 6, prefix="a")
    write_toy(tmp_path / "b", 5, prefix="b")
    build_corpus([ToyAdapter(tmp_path / "a")], store, workers=1, part_size=2, progress=False)
    first = manifest_of(store)
    parts_a = [m.part for m in committed_parts(store)]
    stats = file_stats(store, parts_a)

    summary = build_corpus([ToyAdapter(tmp_path / "a"), ToyAdapter(tmp_path / "b")], store,
                           workers=1, part_size=2, progress=False)
    assert summary.parts_written == 3 and summary.keys_skipped == 6 and summary.records == 11
    assert file_stats(store, parts_a) == stats
    after = manifest_of(store).set_index("record_id")
    # records already split keep their split
    assert (after.loc[first["record_id"], "split"].to_numpy() == first["split"].to_numpy()).all()
    info = json.loads((store / "store.json").read_text())
    assert sorted(s["root"] for s in info["sources"]) == sorted(str(tmp_path / f) for f in "ab")
    assert_complete(store, ToyAdapter(tmp_path / "a").keys() + ToyAdapter(tmp_path / "b").keys())


def test_new_files_in_a_source_are_pooled_into_new_parts(tmp_path: Path) -> None:
    src, store = tmp_path / "src", tmp_path / "store"
    write_toy(src, 8, start=0)
    build_corpus([ToyAdapter(src)], store, workers=1, part_size=4, progress=False)
    write_toy(src, 3, start=20)
    write_toy(src, 1, start=3, prefix="rec000")  # sorts into the first chunk: shifts every boundary
    summary = build_corpus([ToyAdapter(src)], store, workers=1, part_size=4, progress=False)
    assert summary.parts_written == 1 and summary.records_written == 4 and summary.records == 12
    assert_complete(store, ToyAdapter(src).keys())
