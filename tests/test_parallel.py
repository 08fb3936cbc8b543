"""ecgfm.parallel: chunks in input order from worker processes, nothing lost or repeated."""

from __future__ import annotations

import os

import pytest

from ecgfm.parallel import THREAD_VARIABLES, map_chunks, one_blas_thread_per_process


def _square_chunk(items: list[int], offset: int) -> list[tuple[int, int, str | None]]:
    return [(x, x * x + offset, os.environ.get("OMP_NUM_THREADS")) for x in items]


@pytest.mark.parametrize("n", [0, 1, 7, 40])
def test_map_chunks_keeps_order_in_one_process(n) -> None:
    out = list(map_chunks(_square_chunk, list(range(n)), 1, jobs=1, chunk=3))
    assert [x for x, _, _ in out] == list(range(n)) and [y for _, y, _ in out] == [x * x + 1 for x in range(n)]


def test_map_chunks_workers_return_every_chunk_in_order_with_one_thread(monkeypatch) -> None:
    for name in THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    items = list(range(23))  # 12 chunks of 2, more than jobs * ahead in flight at once
    out = list(map_chunks(_square_chunk, items, 5, jobs=2, chunk=2, ahead=1))
    assert [x for x, _, _ in out] == items
    assert [y for _, y, _ in out] == [x * x + 5 for x in items]
    assert {threads for _, _, threads in out} == {"1"}
    assert "OMP_NUM_THREADS" not in os.environ  # set for the workers only


def test_one_blas_thread_keeps_what_the_user_set(monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with one_blas_thread_per_process():
        assert os.environ["OMP_NUM_THREADS"] == "3" and os.environ["MKL_NUM_THREADS"] == "1"
    assert "MKL_NUM_THREADS" not in os.environ
