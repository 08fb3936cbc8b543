"""Manifest operations at scale: 1,000,000 synthetic rows filtered, joined, split and checked.

A store of ten million ECGs is driven by its manifest, so filtering by quality, joining a
labels/outcomes table, a patient-level stratified split, the leakage check and the Parquet round
trip must take seconds, not hours. The rows are synthetic (300,000 patients, 50 labels with a
long-tailed frequency); nothing here is an accuracy claim.

    python benchmarks/bench_corpus_manifest.py [--rows 1000000]

Writes ``docs/benchmarks/corpus_manifest.{json,md}``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from _machine import machine, write_results
from ecgfm.store.splits import assign_splits, check_leakage, multi_hot

ROOT = Path(__file__).resolve().parents[1]


def synthetic(n: int, n_patients: int, n_labels: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A manifest (record, patient, quality) and a labels table in its own row order."""
    rng = np.random.default_rng(seed)
    names = np.array([f"C{c:02d}" for c in range(n_labels)])
    pool = rng.random((4000, n_labels)) < 0.4 * np.arange(1, n_labels + 1) ** -1.1
    pool_text = np.array([";".join(names[row]) for row in pool], dtype=object)
    record_id = "r" + pd.Series(np.arange(n)).astype(str)
    manifest = pd.DataFrame({
        "record_id": record_id,
        "patient_id": "p" + pd.Series(rng.integers(0, n_patients, n)).astype(str),
        "age": rng.uniform(18, 95, n).round(),
        "sex": rng.choice(["M", "F"], n),
        "quality_ok": rng.random(n) > 0.05,
    })
    labels = pd.DataFrame({"record_id": record_id, "labels": pool_text[rng.integers(0, len(pool), n)],
                           "outcome_days": rng.exponential(2000, n).round()})
    return manifest, labels.sample(frac=1, random_state=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = parser.parse_args()
    n = args.rows
    n_patients, n_labels = int(n * 0.3), 50
    manifest, labels = synthetic(n, n_patients, n_labels)

    times: dict[str, float] = {}

    def timed(name: str, fn):
        t0 = time.perf_counter()
        out = fn()
        times[name] = round(time.perf_counter() - t0, 3)
        return out

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "manifest.parquet"
        timed("write Parquet (zstd)", lambda: manifest.merge(labels, on="record_id").to_parquet(path, compression="zstd"))
        size = path.stat().st_size
        timed("read Parquet", lambda: pd.read_parquet(path))
    kept = timed("filter quality_ok and age >= 40", lambda: manifest[manifest["quality_ok"] & (manifest["age"] >= 40)])
    joined = timed("join labels table", lambda: kept.merge(labels, on="record_id", how="left"))
    joined["split"] = timed("patient-level stratified split", lambda: assign_splits(joined, seed=0))
    timed("leakage check", lambda: check_leakage(joined))
    matrix, classes = timed("multi-hot label matrix", lambda: multi_hot(joined["labels"]))
    total = round(sum(times.values()), 3)

    is_train = (joined["split"] == "train").to_numpy()
    counts = matrix.sum(0)
    deviation = float(np.abs(matrix[is_train].sum(0) / np.maximum(counts, 1) - 0.8)[counts >= 1000].max())
    result = {
        "machine": machine(), "command": "python benchmarks/bench_corpus_manifest.py",
        "rows": n, "patients": n_patients, "labels": n_labels, "rows_after_filter": len(joined),
        "seconds": times, "total_seconds": total, "parquet_bytes": size,
        "parquet_bytes_per_row": round(size / n, 1),
        "max_train_share_deviation_labels_ge_1000": round(deviation, 4),
        "split_shares": joined["split"].value_counts(normalize=True).round(4).to_dict(),
    }
    m = result["machine"]
    rows = "\n".join(f"| {k} | {v:.2f} s |" for k, v in times.items())
    page = f"""# Manifest operations at scale

Command: `python benchmarks/bench_corpus_manifest.py`
Machine: {m['cpu']} ({m['cores']} cores), Python {m['python']}

{n:,} synthetic manifest rows ({n_patients:,} patients, {n_labels} labels), a labels/outcomes table
in its own order; {len(joined):,} rows after the filter.

| step | time |
|---|---|
{rows}
| **total** | **{total:.2f} s** |

Parquet manifest: {size / 1e6:.1f} MB ({size / n:.0f} bytes per row; the store's manifest rows also
hold scales and lead masks, about 400 bytes per record, see `corpus_build.md`).
Stratification: every label with at least 1,000 records has a train share within
{deviation:.4f} of 0.8; split shares {result['split_shares']}.
"""
    write_results(args.out, "corpus_manifest", result, page)


if __name__ == "__main__":
    main()
