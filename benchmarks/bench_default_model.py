"""The default model against the PTB-XL benchmark's xresnet1d101: accuracy, inference cost, speed, memory.

Both models are trained here on the same PTB-XL records of the shared data (folds 1-8 train, 9
validation, 10 test; the standard pipeline at 100 Hz) with ``ecgfm train``:

    ecgfm build-corpus ../shared/data/ptb-xl --out corpora/ptbxl100 --pipeline standard:fs=100
    ecgfm train --config configs/train/ptbxl_default.yaml data.store=corpora/ptbxl100
    ecgfm train --config configs/train/ptbxl_xresnet1d101_benchmark.yaml data.store=corpora/ptbxl100

This script scores both on fold 10: macro AUROC over every PTB-XL statement the models predict,
over the diagnostic superclasses and over the subclasses, each with a patient-bootstrap 95%
interval, and the paired difference (default - baseline) with its interval. It then measures,
on this machine: multiply-accumulates per ECG (windows included), batched inference throughput
(2 threads), one ECG from file to probabilities (warm: model loaded; cold: a new process that
imports ecgfm and loads the model), training throughput of both recipes, and peak memory of
training and inference (each in its own process).

    python benchmarks/bench_default_model.py --baseline runs/ptbxl_xresnet1d101_benchmark/model
        [--model src/ecgfm/models/default] [--store corpora/ptbxl100] [--resamples 1000]

Writes ``docs/benchmarks/default_model.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from _machine import load_note, machine, write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = ROOT.parent / "shared" / "data"
DEFAULT_STORE = Path("/tmp/ecgfm-bench-cache/ptbxl100")
GROUPS = {
    "all statements": lambda label: ":" not in label,
    "superdiagnostic": lambda label: label.startswith("superdiagnostic:"),
    "subdiagnostic": lambda label: label.startswith("subdiagnostic:"),
}


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def ensure_store(path: Path) -> Path:
    """The PTB-XL store at 100 Hz (built once, then reused)."""
    from ecgfm.store.format import Corpus

    if (path / "store.json").is_file():
        return path
    from ecgfm.preprocess import Pipeline
    from ecgfm.store.adapters import adapter_for
    from ecgfm.store.build import build_corpus

    print(f"building {path} from {DATA / 'ptb-xl'} ...", file=sys.stderr)
    build_corpus([adapter_for(DATA / "ptb-xl")], path, pipeline=Pipeline.standard(fs=100), workers=2,
                 progress=False)
    Corpus.open(path)
    return path


def split_arrays(model: Any, store: Path, split: str, label_columns: list[str]) -> dict[str, np.ndarray]:
    """Inputs, labels and patients of ``split``, cut as the model's contract says."""
    from ecgfm.store.dataset import CorpusDataset
    from ecgfm.store.format import Corpus
    from ecgfm.train.run import with_label_columns

    corpus = with_label_columns(Corpus.open(store), label_columns)
    c = model.input
    ds = CorpusDataset(corpus, split=split, window=c.seconds, crop="center", leads=c.leads,
                       label_ids=list(model.labels))
    batch = ds.__getitems__(list(range(len(ds))))
    patients = corpus.manifest["patient_key"].to_numpy()[batch["record"].numpy()]
    return {"signal": batch["signal"], "mask": batch["mask"], "labels": batch["labels"].numpy(),
            "patients": patients}


def predict(model: Any, arrays: dict[str, Any], batch: int = 64) -> np.ndarray:

    from ecgfm.models.heads import predict_from_logits

    out = []
    for i in range(0, len(arrays["signal"]), batch):
        logits = model.forward(arrays["signal"][i:i + batch], arrays["mask"][i:i + batch])
        out.append(predict_from_logits(logits.float(), model.head).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(model.labels)), np.float32)


# ---------------------------------------------------------------------------------------------
# accuracy
# ---------------------------------------------------------------------------------------------
def accuracy(default: Any, baseline: Any, store: Path, resamples: int) -> dict[str, Any]:
    from ecgfm.evaluate.bootstrap import bootstrap, paired_bootstrap

    shared = [label for label in default.labels if label in set(baseline.labels)]
    columns = ["labels", "superdiagnostic", "subdiagnostic"]
    a = split_arrays(default, store, "test", columns)
    b = split_arrays(baseline, store, "test", columns)
    if not np.array_equal(a["patients"], b["patients"]):
        raise RuntimeError("the two models see the test records in different orders")
    pa = predict(default, a)[:, [default.labels.index(x) for x in shared]]
    pb = predict(baseline, b)[:, [baseline.labels.index(x) for x in shared]]
    y = a["labels"][:, [default.labels.index(x) for x in shared]]
    out: dict[str, Any] = {"n_test": int(len(y)), "n_patients": int(len(set(a["patients"]))), "groups": {}}
    for group, keep in GROUPS.items():
        cols = [j for j, label in enumerate(shared) if keep(label) and 0 < y[:, j].sum() < len(y)]
        if not cols:
            continue
        names = [shared[j] for j in cols]
        ra = bootstrap(y[:, cols], pa[:, cols], a["patients"], metrics="auroc", n_resamples=resamples, names=names)
        rb = bootstrap(y[:, cols], pb[:, cols], a["patients"], metrics="auroc", n_resamples=resamples, names=names)
        rd = paired_bootstrap(y[:, cols], pa[:, cols], pb[:, cols], a["patients"], metrics="auroc",
                              n_resamples=resamples, names=names)
        d, lo, hi, p = rd.macro["auroc"]
        out["groups"][group] = {
            "labels": len(cols),
            "default": [round(float(v), 4) for v in ra.macro["auroc"]],
            "baseline": [round(float(v), 4) for v in rb.macro["auroc"]],
            "difference": [round(float(d), 4), round(float(lo), 4), round(float(hi), 4)],
            "p_value": round(float(p), 4),
        }
    return out


# ---------------------------------------------------------------------------------------------
# cost and speed (each measured in its own process for clean peak memory)
# ---------------------------------------------------------------------------------------------
def macs_per_ecg(model: Any) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    c = model.input
    x = torch.zeros(1, len(c.leads), c.samples)
    m = torch.ones(1, len(c.leads), dtype=torch.bool)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model.inference_module()(x, m)
    return counter.get_total_flops() / 2


def _peak_mb() -> float:
    """This process's peak resident memory (VmHWM: ru_maxrss would include the parent's peak
    at the fork that started it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_inference(model_dir: str, record: str, batch: int, repeats: int) -> dict[str, Any]:
    import torch

    from ecgfm.models.portable import load_model

    torch.set_num_threads(2)
    model = load_model(model_dir)
    c = model.input
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, len(c.leads), c.samples, generator=g)
    m = torch.ones(batch, len(c.leads), dtype=torch.bool)
    for _ in range(2):
        model.forward(x, m)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.forward(x, m)
        times.append(time.perf_counter() - t)
    batched = batch / statistics.median(times)
    model.predict(record)
    one = []
    for _ in range(max(repeats, 20)):
        t = time.perf_counter()
        probs = model.predict(record)
        one.append(time.perf_counter() - t)
    assert probs.shape == (1, len(model.labels))
    one.sort()
    peak = round(_peak_mb())  # before counting MACs (the counter holds its own tensors)
    return {"batched_ecgs_per_s": round(batched, 1), "batch": batch,
            "one_file_ms_median": round(1000 * statistics.median(one), 1),
            "one_file_ms_p95": round(1000 * one[int(0.95 * (len(one) - 1))], 1),
            "macs_per_ecg_g": round(macs_per_ecg(model) / 1e9, 3),
            "params_m": round(sum(p.numel() for p in model.encoder.parameters()) / 1e6, 2),
            "peak_rss_mb": peak}


def measure_training(config: str, store: str, steps: int) -> dict[str, Any]:
    """Optimizer steps of the recipe on the real store (the data loader included)."""
    import torch

    from ecgfm.train.config import load_config
    from ecgfm.train.run import build

    torch.set_num_threads(2)
    cfg = load_config(config, [f"data.store={store}", "data.num_workers=0"])
    parts = build(cfg)
    module = parts.module
    parts.data.setup("fit")
    loader = parts.data.train_dataloader()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    module.train()
    seen, t0 = 0, None
    for i, batch in enumerate(loader):
        if i == 2:
            t0, seen = time.perf_counter(), 0
        if i == steps + 2:
            break
        out = module.training_step(batch, i)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        seen += int(batch["signal"].shape[0])
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    return {"train_ecgs_per_s": round(seen / elapsed, 1) if elapsed > 0 else None,
            "batch": cfg.data.batch_size, "window_s": cfg.data.window,
            "steps": steps, "peak_rss_mb": round(_peak_mb())}


def _subprocess(kind: str, **kwargs: Any) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--measure", kind, "--args", json.dumps(kwargs)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cold_start(model_dir: str, record: str, repeats: int = 3) -> float:
    """Median wall time of a new Python process: import ecgfm, load the model, one file to probabilities."""
    code = ("import ecgfm, sys; m = ecgfm.load_model(sys.argv[1]); p = m.predict(sys.argv[2]); "
            "assert p.shape[0] == 1")
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, model_dir, record], check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        times.append(time.perf_counter() - t)
    return round(statistics.median(times), 2)


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def _ci(triple: list[float]) -> str:
    return f"{triple[0]:.3f} [{triple[1]:.3f}, {triple[2]:.3f}]"


def page(result: dict[str, Any]) -> str:
    acc, sp = result["accuracy"], result["speed"]
    lines = [
        "# The default model against xresnet1d101 (PTB-XL benchmark recipe)",
        "",
        "Written by `benchmarks/bench_default_model.py`. Both models trained here with `ecgfm train` on "
        "the same PTB-XL records of the shared data (standard pipeline at 100 Hz; folds 1-8 train = "
        f"{result['records']['train']} records, 9 validation = {result['records']['val']}, "
        f"10 test = {acc['n_test']} records of {acc['n_patients']} patients). Configs: "
        "`configs/train/ptbxl_default.yaml` and `configs/train/ptbxl_xresnet1d101_benchmark.yaml`.",
        "",
        f"Machine: {result['machine'].get('cpu', '?')}, {result['machine'].get('cores', '?')} cores. {result['load']}",
        "",
        "## Accuracy on fold 10 (macro AUROC, patient bootstrap 95% interval, "
        f"{result['resamples']} resamples)",
        "",
        "| labels | n | default | xresnet1d101 (benchmark recipe) | default - baseline [95% CI] | p |",
        "|---|---:|---|---|---|---:|",
    ]
    for group, g in acc["groups"].items():
        lines.append(f"| {group} | {g['labels']} | {_ci(g['default'])} | {_ci(g['baseline'])} | "
                     f"{_ci(g['difference'])} | {g['p_value']:.3f} |")
    lines += [
        "",
        "Labels with no positive test record are left out of the macro average (AUROC undefined).",
        "",
        "## Training (as run)",
        "",
        "| model | encoder | window (s) | batch | epochs run | train ECGs/s (2 threads) | training compute (min at that rate) | train peak RSS (MB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("default", "baseline"):
        t = result["training"][name]
        lines.append(f"| {name} | {t['encoder']} | {t['window_s']} | {t['batch']} | {t['epochs']} | "
                     f"{t['train_ecgs_per_s']} | {t['compute_min']} | {t['peak_rss_mb']} |")
    lines += [
        "",
        "Throughput and memory are measured by this script in a fresh process: optimizer steps of each "
        "recipe on the real store, data loading and augmentation included. Training compute = epochs run "
        "x training records / that throughput, i.e. the time each run needs on this machine alone (the "
        "runs themselves shared the machine with other jobs, so their wall times are not comparable).",
        "",
        "## Inference (2 threads)",
        "",
        "| model | params (M) | GMACs / ECG | batched ECGs/s | one file -> probabilities, warm (median / p95 ms) | "
        "cold process (s) | peak RSS (MB) |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for name in ("default", "baseline"):
        s = sp[name]
        lines.append(f"| {name} | {s['params_m']} | {s['macs_per_ecg_g']} | {s['batched_ecgs_per_s']} | "
                     f"{s['one_file_ms_median']} / {s['one_file_ms_p95']} | {s['cold_start_s']} | {s['peak_rss_mb']} |")
    lines += [
        "",
        f"Batched: forward passes of {sp['default']['batch']} prepared ECGs, median of repeats. One file: "
        f"`model.predict(path)` on `{result['record']}` (read the 500 Hz WFDB record, check the contract, "
        "preprocess, infer). Cold: a new Python process that imports ecgfm, loads the model and predicts "
        "that file. The baseline's cost includes its 7 sliding windows per ECG.",
        "",
        "## Targets",
        "",
    ]
    for line in result["targets"]:
        lines.append(f"- {line}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="default: the model shipped in the package")
    ap.add_argument("--baseline", required=False, default=None)
    ap.add_argument("--store", type=Path, default=DEFAULT_STORE)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--train-steps", type=int, default=10)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    ap.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--args", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        fn = {"inference": measure_inference, "training": measure_training}[args.measure]
        print(json.dumps(fn(**json.loads(args.args))))
        return {}
    if not (DATA / "ptb-xl" / "ptbxl_database.csv").is_file():
        print(f"skipped: PTB-XL not found under {DATA}", file=sys.stderr)
        return {}
    if not args.baseline:
        ap.error("--baseline MODEL_DIR is required (the model folder written by the xresnet1d101 run)")

    from ecgfm.models import default_model_path
    from ecgfm.models.portable import load_model

    model_dir = args.model or str(default_model_path())
    default, baseline = load_model(model_dir), load_model(args.baseline)
    store = ensure_store(args.store)
    load = load_note()
    acc = accuracy(default, baseline, store, args.resamples)
    record = str(DATA / "ptb-xl" / "records500" / "00000" / "00001_hr.hea")
    if not Path(record).is_file():
        record = str(next((DATA / "ptb-xl" / "records500").rglob("*.hea")))
    speed, training = {}, {}
    configs = {"default": ROOT / "configs" / "train" / "ptbxl_default.yaml",
               "baseline": ROOT / "configs" / "train" / "ptbxl_xresnet1d101_benchmark.yaml"}
    for name, directory, model in (("default", model_dir, default), ("baseline", args.baseline, baseline)):
        speed[name] = _subprocess("inference", model_dir=str(directory), record=record, batch=64, repeats=10)
        speed[name]["cold_start_s"] = cold_start(str(directory), record)
        t = _subprocess("training", config=str(configs[name]), store=str(store), steps=args.train_steps)
        info = model.training
        epochs = int(info.get("epochs", 0))
        n_train = int((info.get("records") or {}).get("train") or 0)
        rate = t["train_ecgs_per_s"] or float("nan")
        t.update(encoder=model.config["encoder"], epochs=epochs,
                 compute_min=round(epochs * n_train / rate / 60, 1))
        training[name] = t
    records = dict(default.training.get("records") or {})
    g = acc["groups"]
    targets = []
    for group in ("all statements", "superdiagnostic"):
        if group in g:
            d = g[group]["difference"]
            verdict = "met" if d[0] >= 0 or d[2] >= 0 else "not met"
            targets.append(f"not worse than the baseline on {group} macro AUROC: default - baseline = {_ci(d)} -> "
                           f"{verdict} ({'point estimate >= 0' if d[0] >= 0 else 'interval includes 0' if d[2] >= 0 else 'worse'})")
    cheaper = speed["default"]["macs_per_ecg_g"] < speed["baseline"]["macs_per_ecg_g"]
    targets.append(f"lower inference cost: {speed['default']['macs_per_ecg_g']} vs {speed['baseline']['macs_per_ecg_g']} "
                   f"GMACs per ECG, {speed['default']['batched_ecgs_per_s']} vs {speed['baseline']['batched_ecgs_per_s']} "
                   f"ECGs/s -> {'met' if cheaper else 'not met'}")
    targets.append(f">= 100 ECGs/s batched on 2 cores: {speed['default']['batched_ecgs_per_s']} -> "
                   f"{'met' if speed['default']['batched_ecgs_per_s'] >= 100 else 'not met'}")
    targets.append(f"< 1 s for one ECG from file to probabilities: {speed['default']['one_file_ms_median']} ms warm "
                   f"(p95 {speed['default']['one_file_ms_p95']} ms) -> "
                   f"{'met' if speed['default']['one_file_ms_p95'] < 1000 else 'not met'}; a cold process "
                   f"(Python start, imports, model load) takes {speed['default']['cold_start_s']} s")
    result = {"machine": machine(), "load": load, "resamples": args.resamples, "records": records,
              "record": str(Path(record).relative_to(DATA)), "accuracy": acc, "speed": speed,
              "training": training, "targets": targets}
    write_results(args.out, "default_model", result, page(result))
    print(page(result))
    return result


if __name__ == "__main__":
    main()
