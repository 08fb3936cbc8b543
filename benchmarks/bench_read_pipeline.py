"""Read + standard pipeline throughput over the PTB-XL records500 in shared data.

Compares, on the same records and the same maths (resample to 500 Hz, band-pass 0.5-100 Hz,
50 Hz notch, per-lead z-score):

- ecgfm: ``ecgfm.read`` + a ``Pipeline`` (numpy decoding, cached filter designs, all leads at once);
- naive: ``wfdb.rdrecord`` then a per-lead scipy loop that designs and applies each filter per lead
  (how such code is usually written), with the same filter parameters and edge padding;
- neurokit2: ``wfdb.rdrecord`` then ``neurokit2.ecg_clean`` per lead (its own filters, timed only).

It checks that ecgfm's output equals the naive output to 1e-5, and estimates ecgfm's Python
overhead per record: ecgfm's time minus the time of the bare numerical kernels (decode the
samples, the band-pass ``sosfiltfilt``, the notch's edge fit and ``sosfiltfilt``, the z-score)
on the same record.

    python benchmarks/bench_read_pipeline.py [--data ../shared/data] [--limit N] [--out docs/benchmarks]

Needs the ``bench`` extra (``pip install ".[bench]"``) for neurokit2.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from _machine import machine

ROOT = Path(__file__).resolve().parents[1]
FS, LOW, HIGH, ORDER, MAINS, Q = 500.0, 0.5, 100.0, 2, 50.0, 30.0
BANDPASS_PAD = round(FS / LOW)  # ecgfm pads a band-pass by one period of its low cutoff
NOTCH_PAD = round(3 * Q / (np.pi * MAINS) * FS)  # and a notch by three envelope time constants


def ecgfm_pipeline():
    from ecgfm.preprocess import BandPass, Normalize, Notch, Pipeline, Resample

    return Pipeline((Resample(fs=FS), BandPass(low=LOW, high=HIGH, order=ORDER), Notch(freq=MAINS, q=Q), Normalize()))


def run_ecgfm(paths: list[Path]) -> tuple[list[float], list[np.ndarray]]:
    import ecgfm

    pipe = ecgfm_pipeline()
    pipe(ecgfm.read(paths[0]))  # design the filters once, as any long run would
    times, outs = [], []
    for path in paths:
        t0 = time.perf_counter()
        out = pipe(ecgfm.read(path)).signal
        times.append(time.perf_counter() - t0)
        outs.append(out)
    return times, outs


def naive_notch(x: np.ndarray, fs: float) -> np.ndarray:
    """One lead through the notch as ecgfm defines it, written out plainly.

    ecgfm pads each edge with the odd extension of the signal less its mains sinusoid, plus that
    sinusoid continued (fitted by least squares on the edge's pad + 1 samples), so the notch
    starts in phase with the mains line; then zero-phase filtering, then the padding is cut.
    """
    from scipy import signal as sps

    b, a = sps.iirnotch(MAINS, Q, fs=fs)
    sos = sps.tf2sos(b, a)
    pad, n, w = NOTCH_PAD, len(x), 2 * np.pi * MAINS / fs
    k = np.arange(pad + 1, dtype=np.float64)

    def fit(segment: np.ndarray) -> tuple[float, float]:
        design = np.column_stack([np.ones_like(k), k / (pad + 1), np.cos(w * k), np.sin(w * k)])
        coef = np.linalg.lstsq(design, segment, rcond=None)[0]
        return coef[2], coef[3]

    c, s = fit(x[: pad + 1])
    rest = x[: pad + 1] - (c * np.cos(w * k) + s * np.sin(w * k))
    before = -np.arange(pad, 0, -1, dtype=np.float64)
    head = 2 * rest[0] - rest[pad:0:-1] + c * np.cos(w * before) + s * np.sin(w * before)
    c, s = fit(x[n - pad - 1 :])
    rest = x[n - pad - 1 :] - (c * np.cos(w * k) + s * np.sin(w * k))
    after = np.arange(pad + 1, 2 * pad + 1, dtype=np.float64)
    tail = 2 * rest[-1] - rest[-2 : -pad - 2 : -1] + c * np.cos(w * after) + s * np.sin(w * after)
    y = sps.sosfiltfilt(sos, np.concatenate([head, x, tail]), padtype=None)
    return y[pad : pad + n]


def naive_one(path: Path) -> np.ndarray:
    import wfdb
    from scipy import signal as sps

    rec = wfdb.rdrecord(str(path.with_suffix("")))
    leads = []
    for i in range(rec.n_sig):
        x = rec.p_signal[:, i]
        if rec.fs != FS:
            ratio = (Fraction(FS) / Fraction(rec.fs)).limit_denominator(1000)
            x = sps.resample_poly(x, ratio.numerator, ratio.denominator, padtype="line")
        sos = sps.butter(ORDER, [LOW, HIGH], btype="bandpass", fs=FS, output="sos")
        x = sps.sosfiltfilt(sos, x, padlen=BANDPASS_PAD)
        x = naive_notch(x, FS)
        x = (x - x.mean()) / max(x.std(), 1e-6)
        leads.append(x)
    return np.array(leads)


def run_naive(paths: list[Path]) -> tuple[list[float], list[np.ndarray]]:
    times, outs = [], []
    for path in paths:
        t0 = time.perf_counter()
        out = naive_one(path)
        times.append(time.perf_counter() - t0)
        outs.append(out)
    return times, outs


def run_neurokit(paths: list[Path]) -> list[float]:
    import neurokit2 as nk
    import wfdb

    times = []
    for path in paths:
        t0 = time.perf_counter()
        rec = wfdb.rdrecord(str(path.with_suffix("")))
        np.array([nk.ecg_clean(rec.p_signal[:, i], sampling_rate=int(rec.fs), method="neurokit", powerline=50) for i in range(rec.n_sig)])
        times.append(time.perf_counter() - t0)
    return times


def kernel_times(paths: list[Path]) -> list[float]:
    """Bare numerical work per record: decode samples, two filtfilts, z-score."""
    import soundfile
    from scipy import signal as sps

    from ecgfm.io.wfdb import read_header
    from ecgfm.preprocess._filters import _tone_pad

    sos_bp = sps.butter(ORDER, [LOW, HIGH], btype="bandpass", fs=FS, output="sos")
    b, a = sps.iirnotch(MAINS, Q, fs=FS)
    sos_n = sps.tf2sos(b, a)
    times = []
    for path in paths:
        header = read_header(path)  # outside the timed region: it is Python work
        files = list(dict.fromkeys(s.file for s in header.signals))
        gain = np.array([s.gain for s in header.signals])[:, None]
        base = np.array([s.baseline for s in header.signals])[:, None]
        fmt = header.signals[0].fmt
        t0 = time.perf_counter()
        if fmt == "16":
            digital = np.fromfile(path.parent / files[0], "<i2").reshape(-1, header.n_signals).T
        else:
            digital = np.concatenate([soundfile.read(path.parent / f, dtype="int16", always_2d=True)[0] for f in files], axis=1).T
        x = (digital - base) / gain
        x = sps.sosfiltfilt(sos_bp, x, axis=-1, padlen=BANDPASS_PAD)
        x = _tone_pad(x, NOTCH_PAD, MAINS, FS)
        x = sps.sosfiltfilt(sos_n, x, axis=-1, padtype=None)[..., NOTCH_PAD:-NOTCH_PAD]
        x = (x - x.mean(axis=-1, keepdims=True)) / np.maximum(x.std(axis=-1, keepdims=True), 1e-6)
        times.append(time.perf_counter() - t0)
    return times


def markdown(r: dict) -> str:
    """The results as the Markdown page kept in docs/benchmarks/."""
    rps, ms, m = r["records_per_s"], r["ms_per_record"], r["machine"]
    rows = [f"| ecgfm (`ecgfm.read` + `Pipeline`) | {rps['ecgfm']:.1f} | {ms['ecgfm_median']:.2f} | 1.00x |",
            f"| naive (`wfdb.rdrecord` + per-lead scipy loop) | {rps['naive_wfdb_per_lead_scipy']:.1f} | {ms['naive_median']:.2f} | {rps['naive_wfdb_per_lead_scipy'] / rps['ecgfm']:.2f}x |"]
    if "wfdb_neurokit2_ecg_clean" in rps:
        rows.append(f"| `wfdb.rdrecord` + `neurokit2.ecg_clean` per lead | {rps['wfdb_neurokit2_ecg_clean']:.1f} | - | {rps['wfdb_neurokit2_ecg_clean'] / rps['ecgfm']:.2f}x |")
    targets = "\n".join(f"- {name}: {'met' if ok else 'NOT met'}" for name, ok in r["targets"].items())
    return f"""# Read + standard pipeline throughput

`{r['command']}` on {r['date']}: {r['records']} PTB-XL records500 (format 16: {r['formats']['16']},
format 516 FLAC: {r['formats']['516 (FLAC)']}); resample to 500 Hz, band-pass 0.5-100 Hz, 50 Hz
notch, per-lead z-score; page cache warm; one process.

| method | records/s | median ms/record | relative to ecgfm |
|---|---|---|---|
{chr(10).join(rows)}

- speed-up over the naive baseline: **{r['speedup_vs_naive']:.2f}x**
- largest difference from the naive output: **{r['max_abs_diff_vs_naive']:.2e}** (after z-score)
- ecgfm median per record: {ms['ecgfm_median']:.2f} ms, of which bare numerical kernels (decode,
  band-pass and notch filtering, z-score) {ms['kernels_median']:.2f} ms; Python overhead outside them
  **{ms['python_overhead_median']:.2f} ms** median, {ms['python_overhead_p90']:.2f} ms p90

Targets (issue: foundation):
{targets}

Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, numpy {m['numpy']}, scipy {m['scipy']},
{m['platform']}.
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("ECGFM_DATA", ROOT.parent / "shared" / "data")))
    parser.add_argument("--limit", type=int, default=None, help="use only the first N records")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    parser.add_argument("--skip-neurokit", action="store_true")
    args = parser.parse_args()

    folder = args.data / "ptb-xl" / "records500"
    paths = sorted(folder.rglob("*.hea"))[: args.limit]
    if not paths:
        print(f"no PTB-XL records500 under {folder}; set --data", file=sys.stderr)
        return 1
    print(f"{len(paths)} records from {folder}", flush=True)
    for path in paths:  # warm the page cache so every method reads from memory
        for f in path.parent.glob(path.stem + "*"):
            f.read_bytes()

    t_ecgfm, out_ecgfm = run_ecgfm(paths)
    print(f"ecgfm     {len(paths) / sum(t_ecgfm):8.1f} records/s", flush=True)
    t_naive, out_naive = run_naive(paths)
    print(f"naive     {len(paths) / sum(t_naive):8.1f} records/s", flush=True)
    t_kernel = kernel_times(paths)
    t_nk = [] if args.skip_neurokit else run_neurokit(paths)
    if t_nk:
        print(f"neurokit2 {len(paths) / sum(t_nk):8.1f} records/s", flush=True)

    max_diff = max(float(np.max(np.abs(a.astype(np.float64) - b))) for a, b in zip(out_ecgfm, out_naive))
    overhead_ms = [1e3 * (a - k) for a, k in zip(t_ecgfm, t_kernel)]
    results = {
        "records": len(paths),
        "formats": {"16": sum(1 for p in paths if not p.with_name(p.stem + "_1.dat").exists()), "516 (FLAC)": sum(1 for p in paths if p.with_name(p.stem + "_1.dat").exists())},
        "pipeline": ecgfm_pipeline().to_dict(),
        "records_per_s": {
            "ecgfm": len(paths) / sum(t_ecgfm),
            "naive_wfdb_per_lead_scipy": len(paths) / sum(t_naive),
            **({"wfdb_neurokit2_ecg_clean": len(paths) / sum(t_nk)} if t_nk else {}),
        },
        "speedup_vs_naive": sum(t_naive) / sum(t_ecgfm),
        **({"speedup_vs_neurokit2": sum(t_nk) / sum(t_ecgfm)} if t_nk else {}),
        "max_abs_diff_vs_naive": max_diff,
        "ms_per_record": {
            "ecgfm_median": 1e3 * statistics.median(t_ecgfm),
            "naive_median": 1e3 * statistics.median(t_naive),
            "kernels_median": 1e3 * statistics.median(t_kernel),
            "python_overhead_median": statistics.median(overhead_ms),
            "python_overhead_p90": float(np.percentile(overhead_ms, 90)),
        },
        "targets": {"speedup_vs_naive >= 3": sum(t_naive) / sum(t_ecgfm) >= 3, "max_abs_diff <= 1e-5": max_diff <= 1e-5, "python_overhead_median <= 5 ms": statistics.median(overhead_ms) <= 5},
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "read_pipeline.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "read_pipeline.md").write_text(markdown(results))
    print(json.dumps({k: results[k] for k in ("records_per_s", "speedup_vs_naive", "max_abs_diff_vs_naive", "ms_per_record", "targets")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
