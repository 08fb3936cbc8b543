"""Encoder size and speed on the CPU: parameters, MACs, training and inference throughput, memory.

For every registered encoder (or ``--encoders a,b``) and two inputs, 12 x 5000 (500 Hz, 10 s)
and 12 x 1000 (100 Hz, 10 s):

- parameters, with a 71-output linear head (PTB-XL's statements);
- forward MACs per ECG (``torch.utils.flop_counter.FlopCounterMode`` on one ECG, FLOPs / 2;
  convolutions, matrix products and attention are counted, element-wise work is not);
- training throughput, ECGs/s: forward + BCE loss + backward + AdamW step on a batch of 32;
- inference throughput, ECGs/s: ``torch.inference_mode`` forward in eval mode, batch 64;
- peak resident memory (``ru_maxrss``) of the process doing each; every measurement runs in
  its own process, so each peak is that measurement's own (the table also gives the RSS of a
  process that has only imported torch and ecgfm).

Encoders over 20M parameters (net1d, conv_transformer, vit1d_base) train on batches of 4 and
infer on batches of 8: at batch 32 they would need tens of GB and minutes per step on this
machine; throughput per ECG changes little with batch size at these input sizes. The batch
used is in the table. Inputs are random (speed does not depend on content); one warm-up step
is not timed; the rate is ``batch / median step time``. Threads: ``--threads`` (default 2,
``torch.set_num_threads`` and ``OMP_NUM_THREADS``).

    python benchmarks/bench_encoders.py [--quick] [--encoders resnet1d18,vit1d]
        [--threads 2] [--out docs/benchmarks]

``--quick`` times one step at batch 8 / 16 and writes to ``/tmp/ecgfm-bench-encoders`` unless
``--out`` is given, so a smoke run never replaces the published figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _machine import load_note, machine, write_results

ROOT = Path(__file__).resolve().parents[1]
INPUTS = {"500 Hz x 10 s": 5000, "100 Hz x 10 s": 1000}  # label -> samples per lead
LEADS, NUM_OUTPUTS = 12, 71
TRAIN_BATCH, INFER_BATCH = 32, 64
LARGE_PARAMS, LARGE_TRAIN_BATCH, LARGE_INFER_BATCH = 20e6, 4, 8
QUICK_TRAIN_BATCH, QUICK_INFER_BATCH = 8, 16


# --------------------------------------------------------------------------------------------
# one measurement, in its own process
# --------------------------------------------------------------------------------------------
def measure(spec: dict) -> dict:
    """Run one measurement (``spec``: name, samples, mode, batch, threads, min_seconds, ...)."""
    import resource

    import torch

    from ecgfm.models import create_encoder

    torch.set_num_threads(spec["threads"])
    if spec["mode"] == "baseline":
        return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    torch.manual_seed(0)
    model = create_encoder(spec["name"], num_outputs=NUM_OUTPUTS)
    batch, samples = spec["batch"], spec["samples"]
    x = torch.randn(batch, LEADS, samples)
    if spec["mode"] == "train":
        model.train()
        optimiser = torch.optim.AdamW(model.parameters(), lr=1e-4)
        y = (torch.rand(batch, NUM_OUTPUTS) < 0.1).float()

        def step() -> None:
            optimiser.zero_grad(set_to_none=True)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
            loss.backward()
            optimiser.step()
    else:
        model.eval()

        def step() -> None:
            with torch.inference_mode():
                model(x)

    step()  # warm-up: kernel selection, allocator, optimiser state
    times: list[float] = []
    while True:
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        if len(times) >= spec["max_steps"] or (
            sum(times) >= spec["min_seconds"] and len(times) >= spec["min_steps"]
        ):
            break
    times.sort()
    median = times[len(times) // 2]
    out = {"ecgs_per_s": batch / median, "batch": batch, "steps": len(times),
           "seconds_per_step": median,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if spec["mode"] == "infer":
        from torch.utils.flop_counter import FlopCounterMode

        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(x[:1])
        out["gmacs_per_ecg"] = counter.get_total_flops() / 2 / 1e9
    return out


def run_measurement(spec: dict, timeout: float) -> dict:
    """``measure(spec)`` in a fresh Python process (its own peak RSS); errors are recorded."""
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    try:
        done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {done.returncode}: {tail[0][:200]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------
def parameter_counts(names: list[str]) -> dict[str, int]:
    """Parameters of each encoder with the 71-output head (built on the meta device)."""
    import torch

    from ecgfm.models import create_encoder

    counts = {}
    for name in names:
        with torch.device("meta"):
            model = create_encoder(name, num_outputs=NUM_OUTPUTS)
        counts[name] = sum(p.numel() for p in model.parameters())
    return counts


def run(names: list[str], threads: int, quick: bool) -> dict:
    params = parameter_counts(names)
    timing = ({"min_seconds": 0.0, "min_steps": 1, "max_steps": 1} if quick
              else {"min_seconds": 5.0, "min_steps": 2, "max_steps": 20})
    baseline = run_measurement({"mode": "baseline", "threads": threads}, 300)
    start_load, loads = load_note(), []
    rows = []
    for name in names:
        large = params[name] > LARGE_PARAMS
        for label, samples in INPUTS.items():
            row: dict = {"encoder": name, "input": label, "samples": samples,
                         "params": params[name]}
            for mode in ("train", "infer"):
                if quick:
                    batch = QUICK_TRAIN_BATCH if mode == "train" else QUICK_INFER_BATCH
                elif mode == "train":
                    batch = LARGE_TRAIN_BATCH if large else TRAIN_BATCH
                else:
                    batch = LARGE_INFER_BATCH if large else INFER_BATCH
                spec = {"name": name, "samples": samples, "mode": mode, "batch": batch,
                        "threads": threads, **timing}
                started = time.perf_counter()
                row[mode] = run_measurement(spec, timeout=1800)
                row[mode]["wall_s"] = round(time.perf_counter() - started, 1)
                loads.append(os.getloadavg()[0])  # includes this benchmark's own threads
                print(f"{name:24s} {label:14s} {mode:5s} {_fmt(row[mode])}", flush=True)
            rows.append(row)
    return {"machine": machine(), "load": start_load, "load_end": load_note(),
            "max_load_1min": max(loads, default=None), "threads": threads, "quick": quick,
            "num_outputs": NUM_OUTPUTS, "baseline_rss_mb": baseline.get("peak_rss_mb"),
            "rows": rows}


def _fmt(result: dict) -> str:
    if "error" in result:
        return f"ERROR {result['error']}"
    return (f"{result['ecgs_per_s']:8.2f} ECGs/s (batch {result['batch']}, "
            f"{result['steps']} steps) peak {result['peak_rss_mb']:.0f} MB")


def page(result: dict) -> str:
    def cell(r: dict, key: str, fmt: str) -> str:
        return "error" if "error" in r else format(r[key], fmt)

    lines = [
        "# Encoder size and speed (CPU)",
        "",
        "Written by `benchmarks/bench_encoders.py`"
        + (" **with --quick (one step, small batches): indicative only**" if result["quick"]
           else "") + ". Every registered encoder with a "
        f"{result['num_outputs']}-output head; random inputs of 12 leads; "
        f"{result['threads']} threads. Training: forward + BCE + backward + AdamW step; "
        "inference: `torch.inference_mode`, eval mode. Rate = batch / median step time. "
        "MACs: forward, per ECG (FlopCounterMode FLOPs / 2). Peak RSS: the measuring "
        f"process's peak resident memory; a process with only torch and ecgfm imported peaks at "
        f"{result['baseline_rss_mb']:.0f} MB. Encoders over 20M parameters use batches of "
        f"{LARGE_TRAIN_BATCH} (training) and {LARGE_INFER_BATCH} (inference) instead of "
        f"{TRAIN_BATCH} and {INFER_BATCH}.",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, Python "
        f"{result['machine']['python']}. At the start: {result['load']}; the highest 1-minute "
        f"load average seen after a measurement was {result['max_load_1min']:.1f} (this "
        f"benchmark itself accounts for about {result['threads']}); where it exceeds the core "
        "count, other jobs shared the CPU and the timings are low.",
        "",
    ]
    for label in INPUTS:
        lines += [
            f"## {label} ({INPUTS[label]} samples per lead)",
            "",
            "| encoder | params (M) | GMACs / ECG | train ECGs/s | train batch | train peak RSS (MB) "
            "| infer ECGs/s | infer batch | infer peak RSS (MB) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in result["rows"]:
            if row["input"] != label:
                continue
            tr, inf = row["train"], row["infer"]
            lines.append(
                f"| {row['encoder']} | {row['params'] / 1e6:.2f} | "
                f"{cell(inf, 'gmacs_per_ecg', '.2f')} | {cell(tr, 'ecgs_per_s', '.1f')} | "
                f"{tr.get('batch', '')} | {cell(tr, 'peak_rss_mb', '.0f')} | "
                f"{cell(inf, 'ecgs_per_s', '.1f')} | {inf.get('batch', '')} | "
                f"{cell(inf, 'peak_rss_mb', '.0f')} |"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="one step at small batches")
    parser.add_argument("--encoders", default=None, help="comma-separated names (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default docs/benchmarks; /tmp/... with --quick)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(json.loads(args.worker))))
        return
    sys.path.insert(0, str(ROOT / "src"))
    from ecgfm.models import list_encoders

    names = list_encoders()
    if args.encoders:
        wanted = [n.strip() for n in args.encoders.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            parser.error(f"unknown encoder(s) {', '.join(unknown)} (known: {', '.join(names)})")
        names = wanted
    out = args.out or (Path("/tmp/ecgfm-bench-encoders") if args.quick
                       else ROOT / "docs" / "benchmarks")
    result = run(names, args.threads, args.quick)
    write_results(out, "encoders", result, page(result))


if __name__ == "__main__":
    main()
