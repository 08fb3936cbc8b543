"""Array formats for the corpus store, measured: memory-mapped int16 shards vs Zarr v3.

The same preprocessed PTB-XL records (``Pipeline.standard()``: 12 leads, 500 Hz, 10 s, z-scored;
the store of ``bench_corpus_loader.py``, built once and cached) are written as:

- ``npy-shards``: the store's format: ``ShardWriter`` parts of 256 records, one flat int16
  ``.npy`` per part, memory-mapped for reading (plus the part's Parquet rows and marker);
- Zarr v3 int16 ``[N, 12, 5000]`` arrays with lossless codecs, and the per-record scales as a
  float32 ``[N, 12]`` array: zstd with chunks of 16 records; Blosc-zstd with byte shuffle and
  chunks of 16 and 64 records; a delta filter before Blosc-zstd (the best compression we
  found for ECG samples); and per-record chunks inside shards of 256 records (Zarr v3's
  sharding codec: one file per 256 records, one record decompressed per random read).

Measured for each: bytes per ECG (signal arrays only; the manifest is the same for all), write
time (quantisation included, from float32 records in memory), random single-record reads, random
batches of 256 records (the training access pattern; float32 out), the same with a cold page cache
(the files evicted with ``posix_fadvise(DONTNEED)``), and a sequential pass. Every read returns
float32 ``[12, 5000]`` records (int16 times scale), and the Zarr round trip is checked to be
lossless.

    python benchmarks/bench_corpus_formats.py [--data ../shared/data] [--records 2000]
        [--cache /tmp/ecgfm-bench-cache] [--out docs/benchmarks]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _machine import load_note, machine, write_results
from bench_corpus_loader import evict, ptbxl_store

ROOT = Path(__file__).resolve().parents[1]
PART = 256


def dir_bytes(path: Path, pattern: str = "**/*") -> int:
    return sum(p.stat().st_size for p in path.glob(pattern) if p.is_file())


def evict_dir(path: Path) -> None:
    evict([p for p in path.glob("**/*") if p.is_file()])


# --------------------------------------------------------------------------------------------
# writers and readers
# --------------------------------------------------------------------------------------------
class NpyShards:
    name = "npy-shards"
    describe = "int16 .npy shards of 256 records, memory-mapped (the store's format)"

    def write(self, root: Path, x: np.ndarray) -> None:
        import pandas as pd

        from ecgfm.leads import STANDARD_12
        from ecgfm.store import format as F

        for p in range(0, len(x), PART):
            writer = F.ShardWriter(root, f"part-{p // PART:04d}", STANDARD_12)
            for i in range(p, min(p + PART, len(x))):
                writer.add({"record_id": f"r{i:05d}"}, x[i])
            writer.commit()
        F.write_json_atomic(root / "store.json", F.store_info(STANDARD_12, 500.0, None))
        F.write_manifest(root, pd.DataFrame(F.read_parts(root)))

    def signal_bytes(self, root: Path) -> int:
        return dir_bytes(root, "shards/*.npy")

    def open(self, root: Path):
        from ecgfm.store.format import Corpus

        corpus = Corpus.open(root)
        for k in range(len(corpus.shard_names)):
            corpus.shard(k)
        return corpus

    def one(self, corpus, i: int) -> np.ndarray:
        return corpus.signal(i)

    def batch(self, corpus, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), 12, 5000), np.float32)
        for b, i in enumerate(idx):
            q, scale = corpus.raw(int(i))
            np.copyto(out[b], q, casting="unsafe")
            out[b] *= scale[:, None]
        return out

    def range(self, corpus, start: int, stop: int) -> np.ndarray:
        return self.batch(corpus, np.arange(start, stop))

    def ints(self, corpus) -> np.ndarray:
        return np.stack([corpus.raw(i)[0] for i in range(len(corpus))])


class ZarrArray:
    def __init__(self, name: str, describe: str, chunk: int, compressors, *, filters=(), shard: int | None = None) -> None:
        self.name, self.describe, self.chunk = name, describe, chunk
        self.compressors, self.filters, self.shard = compressors, filters, shard

    def write(self, root: Path, x: np.ndarray) -> None:
        import zarr

        from ecgfm.store.format import quantise

        n = len(x)
        group = zarr.open_group(root, mode="w", zarr_format=3)
        sig = group.create_array(
            "signal", shape=(n, 12, 5000), dtype="int16", chunks=(self.chunk, 12, 5000),
            shards=None if self.shard is None else (self.shard, 12, 5000),
            compressors=self.compressors, filters=list(self.filters) or None, fill_value=0)
        scales = group.create_array("scale", shape=(n, 12), dtype="float32", chunks=(4096, 12),
                                    compressors=None, fill_value=0)
        step = self.shard or PART
        step = max(step // self.chunk, 1) * self.chunk  # write whole chunks
        for p in range(0, n, step):
            block = [quantise(x[i]) for i in range(p, min(p + step, n))]
            sig[p:p + len(block)] = np.stack([q for q, _ in block])
            scales[p:p + len(block)] = np.stack([s for _, s in block])

    def signal_bytes(self, root: Path) -> int:
        return dir_bytes(root)

    def open(self, root: Path):
        import zarr

        group = zarr.open_group(root, mode="r")
        return group["signal"], group["scale"][:]

    def one(self, handle, i: int) -> np.ndarray:
        sig, scales = handle
        return sig[i].astype(np.float32) * scales[i][:, None]

    def batch(self, handle, idx: np.ndarray) -> np.ndarray:
        sig, scales = handle
        order = np.argsort(idx)
        q = sig.get_orthogonal_selection((idx[order], slice(None), slice(None)))
        out = np.empty(q.shape, np.float32)
        out[order] = q
        out *= scales[idx][:, :, None]
        return out

    def range(self, handle, start: int, stop: int) -> np.ndarray:
        sig, scales = handle
        return sig[start:stop].astype(np.float32) * scales[start:stop][:, :, None]

    def ints(self, handle) -> np.ndarray:
        return handle[0][:]


def formats() -> list:
    from zarr.codecs import BloscCodec, BloscShuffle, Delta, ZstdCodec

    blosc = BloscCodec(cname="zstd", clevel=5, shuffle=BloscShuffle.shuffle, typesize=2)
    return [
        NpyShards(),
        ZarrArray("zarr-zstd-c16", "Zarr v3, zstd level 3, chunks of 16 records", 16, [ZstdCodec(level=3)]),
        ZarrArray("zarr-blosc-c16", "Zarr v3, Blosc-zstd 5 + byte shuffle, chunks of 16 records", 16, [blosc]),
        ZarrArray("zarr-blosc-c64", "Zarr v3, Blosc-zstd 5 + byte shuffle, chunks of 64 records", 64, [blosc]),
        ZarrArray("zarr-delta-blosc-c16", "Zarr v3, delta filter + Blosc-zstd 5 + shuffle, chunks of 16", 16, [blosc],
                  filters=[Delta(dtype="int16")]),
        ZarrArray("zarr-blosc-c1-shard256", "Zarr v3, Blosc-zstd 5 + shuffle, 1-record chunks in shards of 256",
                  1, [blosc], shard=PART),
    ]


# --------------------------------------------------------------------------------------------
# measurement
# --------------------------------------------------------------------------------------------
def measure(fmt, x: np.ndarray, q_ref: np.ndarray, work: Path, *, singles: int, batches: int, batch: int) -> dict:
    root = work / fmt.name
    shutil.rmtree(root, ignore_errors=True)
    n = len(x)
    t0 = time.perf_counter()
    fmt.write(root, x)
    write_s = time.perf_counter() - t0
    nbytes = fmt.signal_bytes(root)
    handle = fmt.open(root)
    lossless = bool(np.array_equal(fmt.ints(handle), q_ref))
    rng = np.random.default_rng(0)

    def timed(fn, reps: int) -> float:
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        return time.perf_counter() - t

    single_idx = rng.integers(n, size=singles)
    it = iter(single_idx)
    fmt.one(handle, 0)
    single_s = timed(lambda: fmt.one(handle, int(next(it))), singles)
    batch_idx = [rng.choice(n, batch, replace=False) for _ in range(batches)]
    bt = iter(batch_idx)
    batch_s = timed(lambda: fmt.batch(handle, next(bt)), batches)
    # Cold: the format's files out of the page cache, then the same kind of batches.
    evict_dir(root)
    handle = fmt.open(root)
    cold_idx = [rng.choice(n, batch, replace=False) for _ in range(batches)]
    ct = iter(cold_idx)
    cold_s = timed(lambda: fmt.batch(handle, next(ct)), batches)
    t = time.perf_counter()
    for p in range(0, n, PART):
        fmt.range(handle, p, min(p + PART, n))
    seq_s = time.perf_counter() - t
    return {
        "format": fmt.name, "describe": fmt.describe, "lossless": lossless,
        "bytes_per_ecg": round(nbytes / n), "total_mb": round(nbytes / 1e6, 1),
        "compression_vs_int16": round(n * 12 * 5000 * 2 / nbytes, 2),
        "write_s": round(write_s, 2), "write_ecgs_per_s": round(n / write_s, 1),
        "random_single_ecgs_per_s": round(singles / single_s, 1),
        "random_batch_ecgs_per_s": round(batches * batch / batch_s, 1),
        "random_batch_cold_ecgs_per_s": round(batches * batch / cold_s, 1),
        "sequential_ecgs_per_s": round(n / seq_s, 1),
    }


def page(result: dict) -> str:
    r, m = result, result["machine"]
    head = ("| format | bytes/ECG | vs raw int16 | write ECGs/s | random single ECGs/s | "
            "random batch of 256, ECGs/s | same, cold cache | sequential ECGs/s | lossless |")
    rows = [
        f"| {f['format']} | {f['bytes_per_ecg']:,} | {f['compression_vs_int16']:.2f}x | {f['write_ecgs_per_s']:,.0f} | "
        f"{f['random_single_ecgs_per_s']:,.0f} | {f['random_batch_ecgs_per_s']:,.0f} | "
        f"{f['random_batch_cold_ecgs_per_s']:,.0f} | {f['sequential_ecgs_per_s']:,.0f} | {'yes' if f['lossless'] else 'NO'} |"
        for f in r["formats"]
    ]
    by = {f["format"]: f for f in r["formats"]}
    npy = by["npy-shards"]
    smallest = min(r["formats"], key=lambda f: f["bytes_per_ecg"])
    zarrs = [f for f in r["formats"] if f["format"] != "npy-shards"]
    fastest_zarr = max(zarrs, key=lambda f: f["random_batch_ecgs_per_s"])
    best_single = max(zarrs, key=lambda f: f["random_single_ecgs_per_s"])
    best_seq = max(zarrs, key=lambda f: f["sequential_ecgs_per_s"])
    bits = smallest["bytes_per_ecg"] * 8 / (12 * 5000)
    lines = [
        "# Corpus array formats: memory-mapped int16 shards vs Zarr v3",
        "",
        f"`{r['command'].strip()}` on {r['date']}: {r['records']} PTB-XL records500 after "
        "`Pipeline.standard()` (12 leads x 5000 samples, z-scored, stored as int16 with one scale per "
        f"record and lead: {r['raw_bytes_per_ecg']:,} bytes per ECG uncompressed). Reads return float32 "
        f"`[12, 5000]`; random batches are {r['batch']} distinct random records ({r['batches']} batches), "
        f"random singles {r['singles']} records one at a time. One process; Zarr {r['zarr']} with its "
        "default codec threads (it may use both cores; the shards use one). "
        f"Load: {load_note()}.",
        "",
        "Formats:",
        *[f"- `{f['format']}`: {f['describe']}" for f in r["formats"]],
        "",
        head,
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "## Choice",
        "",
        f"The store keeps **memory-mapped int16 `.npy` shards**. On the access pattern that matters "
        f"for training, random batches, they read {npy['random_batch_ecgs_per_s']:,.0f} ECGs/s against "
        f"{fastest_zarr['random_batch_ecgs_per_s']:,.0f} for the fastest Zarr layout "
        f"(`{fastest_zarr['format']}`), {npy['random_batch_ecgs_per_s'] / fastest_zarr['random_batch_ecgs_per_s']:.0f}x "
        f"more; random single records {npy['random_single_ecgs_per_s'] / best_single['random_single_ecgs_per_s']:.0f}x "
        f"more than the best Zarr layout for them (`{best_single['format']}`), and a sequential pass "
        f"{npy['sequential_ecgs_per_s'] / best_seq['sequential_ecgs_per_s']:.0f}x more. A shard read is a "
        "page-cache memory copy: no decompression, and no chunk amplification (a random record "
        "from a chunk of 16 records decompresses all 16; one-record chunks avoid that but pay "
        "Zarr's per-chunk overhead on every record). Writing costs about the same in every format.",
        "",
        f"Zarr wins on size: `{smallest['format']}` takes {smallest['bytes_per_ecg']:,} bytes per ECG "
        f"({bits:.1f} bits per sample), {npy['bytes_per_ecg'] / smallest['bytes_per_ecg']:.2f}x less than the "
        f"shards' {npy['bytes_per_ecg']:,}; byte shuffle is what makes the codecs work on int16 ECG samples "
        "(zstd alone gains 9%), and a delta filter adds a little more (it is a numcodecs codec, outside the "
        "Zarr v3 specification, so other Zarr readers may not open it). For 1 M ten-second 12-lead "
        f"ECGs that is {npy['bytes_per_ecg'] * 1e6 / 1e9:,.0f} GB as shards against "
        f"{smallest['bytes_per_ecg'] * 1e6 / 1e9:,.0f} GB compressed. At 10-20x slower random reads a "
        "compressed store could not feed the loader's target from two cores; disk is cheaper than "
        "loader CPUs, and the shards keep the format dependency-free (numpy reads them) and the "
        "commit protocol simple (one file per part, renamed into place).",
        "",
        "The cold-cache column evicts the files from this VM's page cache (`posix_fadvise`); the "
        "virtual disk behind it is itself cached by the host, so it is not a cold-disk figure.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, numpy {m['numpy']}, {m['platform']}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("ECGFM_DATA", ROOT.parent / "shared" / "data")))
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--singles", type=int, default=300)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/ecgfm-bench-cache"))
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    args = parser.parse_args(argv)
    if not (args.data / "ptb-xl" / "ptbxl_database.csv").is_file():
        print(f"PTB-XL not found under {args.data}; pass --data", file=sys.stderr)
        return 2
    import zarr

    from ecgfm.store.format import Corpus

    corpus = Corpus.open(ptbxl_store(args.data, args.records, args.cache))
    x = np.stack([corpus.signal(i) for i in range(len(corpus))])       # [N, 12, 5000] float32
    q_ref = np.stack([corpus.raw(i)[0] for i in range(len(corpus))])
    work = args.work or Path(tempfile.mkdtemp(prefix="ecgfm-formats-"))
    results = []
    try:
        for fmt in formats():
            print(f"{fmt.name} ...", file=sys.stderr)
            res = measure(fmt, x, q_ref, work, singles=args.singles, batches=args.batches, batch=args.batch)
            print(f"  {res}", file=sys.stderr)
            results.append(res)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "corpus_formats",
        "date": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/bench_corpus_formats.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(), "zarr": zarr.__version__, "load": load_note(),
        "records": len(x), "raw_bytes_per_ecg": 12 * 5000 * 2, "singles": args.singles,
        "batches": args.batches, "batch": args.batch, "formats": results,
    }
    write_results(args.out, "corpus_formats", result, page(result), marker="## Notes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
