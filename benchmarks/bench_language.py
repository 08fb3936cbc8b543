"""Signal-language models on PTB-XL (issue 8): zero-shot superclasses, linear probes, retrieval,
report generation against a nearest-neighbour baseline.

Three models are trained on the PTB-XL store's ECG-report pairs (folds 1-8 train, 9 validation
for early stopping and every choice below, 10 test): ``clip`` (configs/language/ptbxl_clip.yaml),
``multitask`` (configs/language/ptbxl_multitask.yaml: contrast + generation + normal/abnormal +
CPC) and ``caption_supervised`` (configs/language/ptbxl_caption_supervised.yaml: generation only,
over the bundled default model's encoder, locked; that encoder was trained on the labels of the
same training folds). On the test fold:

1. zero-shot macro AUROC over the 5 diagnostic superclasses (NORM, MI, STTC, CD, HYP; labels:
   the store's ``superdiagnostic`` column) from catalogue prompts, each scoring method and
   descendant expansion; the one reported is chosen on the validation fold; 95 % bootstrap
   interval by patient;
2. linear probes (logistic regression on the encoder's pooled features, standardised on the
   training fold; C chosen on validation) at 10 % (patient-grouped subsets, the mean of the
   repeats) and 100 % of the training labels, for the CLIP encoder, the multitask encoder and the
   same architecture at random initialisation;
3. ECG -> report and report -> ECG recall@1/5/10, instance matching and text matching (an
   identical report counts);
4. report generation (greedy and beam 4; the decoding reported is chosen on the validation
   fold) of the multitask model and of ``caption_supervised``
   (configs/language/ptbxl_caption_supervised.yaml: a decoder over the bundled supervised
   encoder, locked): corpus BLEU-4 (epsilon smoothing), ROUGE-L (F1), and clinical label
   precision/recall/F1 of the rule-based report labeler on generated vs reference reports,
   against the nearest-neighbour baseline (the report of the most similar training ECG by the
   same encoder's pooled features) and the most frequent training report; paired bootstrap of
   the micro-F1 difference by patient.

Resumable: every stage writes its result under ``--cache`` (trained models, embeddings, stage
JSON) and is skipped when present, so an interrupted run continues where it stopped (training
itself resumes from its last checkpoint). ``--quick`` trains small models for a few epochs (a
smoke test of the whole pipeline; its figures say little about the method).

    python benchmarks/bench_language.py --quick                # ~10 min on 2 busy cores
    python benchmarks/bench_language.py                        # the full run (see docs/language.md)
    python benchmarks/bench_language.py --time-steps 5         # also time the full configs' steps

Targets (issue 8): zero-shot superclass macro AUROC >= 0.75; generated reports beat the
nearest-neighbour baseline on clinical label F1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from _machine import load_note, machine, write_results

ROOT = Path(__file__).resolve().parents[1]
SUPER = ("NORM", "MI", "STTC", "CD", "HYP")
QUICK = [
    "trainer.max_epochs=10", "trainer.early_stopping_patience=null", "optim.lr=0.001", "optim.warmup_steps=20",
    "model.encoder_args={widths: [32, 32, 64, 64], stem_width: 32, layers: [1, 1, 1, 1]}",
    "language.text_encoder={width: 64, depth: 2, heads: 2, dropout: 0.1}",
    "language.decoder={width: 64, depth: 2, heads: 2, dropout: 0.1}", "language.embed_dim=64",
]
QUICK_CPC = ["language.cpc_args={latents: patches, patch_seconds: 1.0, steps: 4, context: gru, context_dim: 64}"]
# The models: their objective and configuration file (configs/language/).
MODELS = {"clip": ("clip", "ptbxl_clip.yaml"), "multitask": ("multitask", "ptbxl_multitask.yaml"),
          "caption_supervised": ("caption", "ptbxl_caption_supervised.yaml")}
CONTRASTIVE = ("clip", "multitask")  # the models with a text side (zero-shot, probes, retrieval)
GENERATORS = ("multitask", "caption_supervised")  # the models that write reports
# caption_supervised keeps its encoder (the bundled default model, locked): quick shrinks the decoder only.
QUICK_CAPTION = ["trainer.max_epochs=10", "trainer.early_stopping_patience=null", "optim.lr=0.001",
                 "optim.warmup_steps=20", "language.decoder={width: 64, depth: 2, heads: 2, dropout: 0.1}"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Cache:
    """Stage results as JSON files under ``root/results``; a present file means the stage is done."""

    def __init__(self, root: Path, force: bool) -> None:
        self.root = root
        self.force = force
        (root / "results").mkdir(parents=True, exist_ok=True)

    def get(self, name: str) -> Any:
        p = self.root / "results" / f"{name}.json"
        if self.force or not p.is_file():
            return None
        return json.loads(p.read_text())

    def put(self, name: str, value: Any) -> Any:
        p = self.root / "results" / f"{name}.json"
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(value, indent=1, default=float))
        os.replace(tmp, p)
        return value


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def train(kind: str, args: argparse.Namespace, cache: Cache) -> dict[str, Any]:
    done = cache.get(f"train_{kind}")
    model_dir = cache.root / kind / "model"
    if done is not None and (model_dir / "language.json").is_file():
        log(f"{kind}: trained model found in {model_dir}")
        return done
    import torch

    from ecgfm.train.language import pretrain_language

    torch.set_num_threads(args.threads)
    overrides = [f"data.store={args.store}", f"out_dir={cache.root / kind}", "resume=auto", "trainer.progress=none",
                 f"language.extra_texts=[{args.data / 'ptb-xl' / 'ptbxl_reports_only.csv'}]"]
    objective, config = MODELS[kind]
    if args.quick:
        overrides += QUICK_CAPTION if kind == "caption_supervised" else QUICK + (QUICK_CPC if kind == "multitask" else [])
    log(f"{kind}: pretraining ({'quick' if args.quick else 'full'}) into {cache.root / kind}")
    t0 = time.perf_counter()
    result = pretrain_language(objective, ROOT / "configs" / "language" / config, overrides)
    seconds = time.perf_counter() - t0
    keep = {k: result[k] for k in ("global_step", "epoch", "n_train", "n_val", "model_dir", "best_checkpoint")}
    keep.update(val=result["val"], test=result.get("test"), seconds=seconds)
    log(f"{kind}: {result['global_step']} steps in {seconds:.0f} s; val {result['val']}")
    return cache.put(f"train_{kind}", keep)


# ---------------------------------------------------------------------------------------------
# data and embeddings
# ---------------------------------------------------------------------------------------------
def load_split(corpus: Any, split: str) -> dict[str, Any]:
    """The split's 10 s windows (as training saw them: from the start), lead masks, superclass
    labels, patients and reports."""
    import torch

    from ecgfm.store.dataset import CorpusDataset

    ds = CorpusDataset(corpus, split=split, window=10.0, crop="start", leads=corpus.leads, label_ids=())
    batch = ds.__getitems__(list(range(len(ds))))
    m = corpus.manifest.iloc[ds.rows]
    y = np.zeros((len(m), len(SUPER)), np.float32)
    for i, value in enumerate(m["superdiagnostic"].fillna("").tolist()):
        for code in str(value).split(";"):
            if code in SUPER:
                y[i, SUPER.index(code)] = 1.0
    return {"signal": batch["signal"].to(torch.float32), "mask": batch["mask"].bool(), "y": y,
            "patients": m["patient_id"].astype(str).to_numpy(), "reports": m["report"].fillna("").tolist(),
            "record_id": m["record_id"].astype(str).tolist()}


def embed(lm: Any, data: dict[str, Any], batch: int = 64) -> dict[str, np.ndarray]:
    """Pooled encoder features, joint embeddings (with a text side) and the feature maps' batches."""
    import torch

    pooled, joint = [], []
    net = lm.net
    with torch.inference_mode():
        for s in range(0, len(data["signal"]), batch):
            f = net.ecg_features(data["signal"][s:s + batch], data["mask"][s:s + batch])
            p = net.ecg_pooled(f)
            pooled.append(p.float().numpy())
            if net.text_encoder is not None:
                joint.append(net.ecg_embedding(p).float().numpy())
    out = {"pooled": np.concatenate(pooled)}
    if joint:
        out["joint"] = np.concatenate(joint)
    return out


def random_pooled(lm: Any, data: dict[str, Any], seed: int = 0) -> np.ndarray:
    """Pooled features of the same architecture at random initialisation."""
    import torch

    from ecgfm.models.registry import create_encoder

    cfg = dict(lm.model.config["encoder_config"])
    cfg["num_outputs"] = 0
    torch.manual_seed(seed)
    enc = create_encoder(lm.model.config["encoder"], **cfg).eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(data["signal"]), 64):
            x, m = data["signal"][s:s + 64], data["mask"][s:s + 64]
            out.append(enc.forward_head(enc.forward_features(x, m), pre_logits=True).float().numpy())
    return np.concatenate(out)


def cached_embeddings(kind: str, lm: Any, splits: dict[str, dict[str, Any]], cache: Cache) -> dict[str, np.ndarray]:
    path = cache.root / f"embeddings_{kind}.npz"
    if path.is_file() and not cache.force:
        return dict(np.load(path))
    out: dict[str, np.ndarray] = {}
    for split, data in splits.items():
        for key, value in embed(lm, data).items():
            out[f"{key}_{split}"] = value
        out[f"random_{split}"] = random_pooled(lm, data)
    np.savez(path, **out)
    return out


# ---------------------------------------------------------------------------------------------
# evaluations
# ---------------------------------------------------------------------------------------------
def macro_auroc(y: np.ndarray, s: np.ndarray) -> float:
    from ecgfm.evaluate.metrics import auroc

    per = np.atleast_1d(auroc(y, s))
    return float(np.nanmean(per))


def with_ci(y: np.ndarray, s: np.ndarray, patients: np.ndarray, n: int) -> dict[str, Any]:
    from ecgfm.evaluate.bootstrap import bootstrap

    r = bootstrap(y, s, groups=patients, metrics=("auroc",), n_resamples=n, seed=0, names=list(SUPER))
    point, low, high = r.macro["auroc"]
    return {"macro_auroc": point, "ci": [low, high],
            "per_class": {c: float(v) for c, v in zip(SUPER, r.point["auroc"])}}


def zero_shot(kind: str, lm: Any, emb: dict[str, np.ndarray], splits: dict[str, Any], args: argparse.Namespace,
              cache: Cache) -> dict[str, Any]:
    done = cache.get(f"zero_shot_{kind}")
    if done is not None:
        return done
    from ecgfm.language.zero_shot import EXPANSIONS, METHODS

    table = []
    for method in METHODS:
        for expand in EXPANSIONS:
            clf = lm.zero_shot_classifier(method=method, expand=expand)
            row = {"method": method, "expand": expand}
            for split in ("val", "test"):
                row[split] = macro_auroc(splits[split]["y"], clf.scores(emb[f"joint_{split}"], SUPER))
            table.append(row)
    best = max(table, key=lambda r: r["val"])
    clf = lm.zero_shot_classifier(method=best["method"], expand=best["expand"])
    test = splits["test"]
    chosen = with_ci(test["y"], clf.scores(emb["joint_test"], SUPER), test["patients"], args.resamples)
    result = {"chosen": {"method": best["method"], "expand": best["expand"], **chosen}, "all": table}
    log(f"{kind}: zero-shot test macro AUROC {chosen['macro_auroc']:.3f} ({best['method']}, {best['expand']})")
    return cache.put(f"zero_shot_{kind}", result)


def probes(kind: str, emb: dict[str, np.ndarray], splits: dict[str, Any], args: argparse.Namespace,
           cache: Cache) -> dict[str, Any]:
    done = cache.get(f"probe_{kind}")
    if done is not None:
        return done
    from ecgfm.evaluate.efficiency import efficiency_subsets
    from ecgfm.models.probe import LogisticProbe

    train, val, test = splits["train"], splits["val"], splits["test"]
    subsets = efficiency_subsets(train["y"], train["patients"], fractions=(0.1,), repeats=args.repeats, seed=0)
    out: dict[str, Any] = {}
    for name, key in (("pretrained", "pooled"), ("random_init", "random")):
        xtr, xva, xte = emb[f"{key}_train"], emb[f"{key}_val"], emb[f"{key}_test"]
        mu, sd = xtr.mean(axis=0), xtr.std(axis=0) + 1e-6
        xtr, xva, xte = (xtr - mu) / sd, (xva - mu) / sd, (xte - mu) / sd
        scores = {}
        for c in (0.01, 0.1, 1.0):
            probe = LogisticProbe(C=c, max_iter=500).fit(xtr, train["y"])
            scores[c] = macro_auroc(val["y"], probe.predict_proba(xva))
        c_best = max(scores, key=scores.get)
        full = LogisticProbe(C=c_best, max_iter=500).fit(xtr, train["y"])
        row = {"C": c_best, "val_by_C": {str(k): v for k, v in scores.items()},
               "full": with_ci(test["y"], full.predict_proba(xte), test["patients"], args.resamples)}
        tenth = [macro_auroc(test["y"], LogisticProbe(C=c_best, max_iter=500).fit(xtr[idx], train["y"][idx])
                             .predict_proba(xte)) for idx in subsets.values()]
        row["tenth"] = {"macro_auroc": float(np.mean(tenth)), "repeats": tenth,
                        "n_train": [int(len(i)) for i in subsets.values()]}
        out[name] = row
        log(f"{kind} probe {name}: 100% {row['full']['macro_auroc']:.3f}, 10% {row['tenth']['macro_auroc']:.3f}")
    return cache.put(f"probe_{kind}", out)


def retrieval(kind: str, lm: Any, emb: dict[str, np.ndarray], splits: dict[str, Any], cache: Cache) -> dict[str, Any]:
    done = cache.get(f"retrieval_{kind}")
    if done is not None:
        return done
    from ecgfm.language.retrieval import retrieval_recall, text_groups

    test = splits["test"]
    texts = [lm.tokenizer.normalize(t) for t in test["reports"]]
    keep = [i for i, t in enumerate(texts) if t]
    e = emb["joint_test"][keep]
    t = lm.embed_text([texts[i] for i in keep])
    groups = text_groups([texts[i] for i in keep])
    out = {"instance": retrieval_recall(e, t), "text": retrieval_recall(e, t, groups=groups),
           "n": len(keep), "distinct_reports": int(groups.max() + 1)}
    log(f"{kind}: retrieval R@1 e2t {out['instance']['ecg_to_report@1']:.3f} (text-matched "
        f"{out['text']['ecg_to_report@1']:.3f})")
    return cache.put(f"retrieval_{kind}", out)


def generation(kind: str, lm: Any, emb: dict[str, np.ndarray], splits: dict[str, Any], args: argparse.Namespace,
               cache: Cache) -> dict[str, Any]:
    name = "generation" if kind == "multitask" else f"generation_{kind}"
    done = cache.get(name)
    if done is not None:
        return done
    import torch

    from ecgfm.language.metrics import corpus_bleu, label_set_scores, report_labels, rouge_l
    from ecgfm.language.retrieval import nearest_neighbour_reports

    train, test = splits["train"], splits["test"]
    norm = lm.tokenizer.normalize
    refs = [norm(t) for t in test["reports"]]

    def write(data: dict[str, Any], beam: int) -> list[str]:
        texts: list[str] = []
        with torch.inference_mode():
            for s in range(0, len(data["reports"]), 32):
                feats = lm.net.ecg_features(data["signal"][s:s + 32], data["mask"][s:s + 32])
                texts += lm.generate_from_features(feats, beam=beam)
        return texts

    systems: dict[str, list[str]] = {}
    seconds: dict[str, float] = {}
    val_f1: dict[str, float] = {}
    val_refs = report_labels([norm(t) for t in splits["val"]["reports"]])
    for beam in (1, 4):
        key = "generated, greedy" if beam == 1 else "generated, beam 4"
        val_f1[key] = label_set_scores(val_refs, report_labels(write(splits["val"], beam)))["micro_f1"]
        t0 = time.perf_counter()
        systems[key] = write(test, beam)
        seconds[f"beam{beam}"] = time.perf_counter() - t0
    train_texts = [norm(t) for t in train["reports"]]
    from collections import Counter

    common = Counter(t for t in train_texts if t).most_common(1)[0][0]
    systems["nearest neighbour (pooled features)"] = nearest_neighbour_reports(
        emb["pooled_test"], emb["pooled_train"], train_texts)
    if "joint_test" in emb:
        systems["nearest neighbour (joint embedding)"] = nearest_neighbour_reports(
            emb["joint_test"], emb["joint_train"], train_texts)
    systems["most frequent training report"] = [common] * len(refs)
    ref_sets = report_labels(refs)
    rows: dict[str, Any] = {}
    per_record: dict[str, np.ndarray] = {}
    for name, hyps in systems.items():
        hyp_sets = report_labels(hyps)
        clinical = label_set_scores(ref_sets, hyp_sets)
        rows[name] = {"bleu4": corpus_bleu(refs, hyps)["bleu"], "rouge_l": rouge_l(refs, hyps)["rouge_l"],
                      "distinct": len(set(hyps)), "share_most_frequent": float(np.mean([h == common for h in hyps])),
                      **{k: clinical[k] for k in ("micro_precision", "micro_recall", "micro_f1", "macro_f1",
                                                  "example_f1", "n_labels")}}
        per_record[name] = np.array([[len(r & h), len(h - r), len(r - h)] for r, h in zip(ref_sets, hyp_sets)])
        log(f"generation {name}: BLEU-4 {rows[name]['bleu4']:.3f}, ROUGE-L {rows[name]['rouge_l']:.3f}, "
            f"label micro-F1 {rows[name]['micro_f1']:.3f}")
    best_gen = max(val_f1, key=lambda k: val_f1[k])  # the decoding chosen on the validation fold
    diff = paired_f1(per_record[best_gen], per_record["nearest neighbour (pooled features)"], test["patients"],
                     args.resamples)
    examples = [{"record_id": test["record_id"][i], "reference": refs[i],
                 **{name: systems[name][i] for name in ("generated, beam 4", "nearest neighbour (pooled features)")}}
                for i in range(0, len(refs), max(1, len(refs) // 8))][:8]
    result = {"systems": rows, "best_generated": best_gen, "val_micro_f1": val_f1, "micro_f1_difference_vs_nn": diff,
              "generation_seconds": seconds, "n": len(refs), "examples": examples}
    log(f"{kind}: {best_gen} - nearest neighbour, label micro-F1 {diff['difference']:+.3f} "
        f"({diff['ci'][0]:+.3f} to {diff['ci'][1]:+.3f})")
    return cache.put(name, result)


def paired_f1(a: np.ndarray, b: np.ndarray, patients: np.ndarray, n: int) -> dict[str, float]:
    """Micro-F1 of ``a`` minus that of ``b`` (per-record [tp, fp, fn] counts) with a 95 % bootstrap
    interval by patient (``ecgfm.evaluate.bootstrap``'s resampling rule)."""
    from ecgfm.evaluate.bootstrap import resample_weights

    def f1(c: np.ndarray) -> np.ndarray:
        tp, fp, fn = c[..., 0], c[..., 1], c[..., 2]
        return np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)

    w = resample_weights(patients, n_resamples=n, seed=0).astype(np.float64)  # [B, N]
    d = f1(w @ a) - f1(w @ b)
    point = float(f1(a.sum(0)) - f1(b.sum(0)))
    return {"difference": point, "ci": [float(np.quantile(d, 0.025)), float(np.quantile(d, 0.975))],
            "p_not_better": float((1 + (d <= 0).sum()) / (1 + len(d)))}


# ---------------------------------------------------------------------------------------------
# timing of the full configuration
# ---------------------------------------------------------------------------------------------
def time_full_steps(args: argparse.Namespace, cache: Cache) -> dict[str, Any]:
    """Seconds per training step of the full configs (a few steps each, on this machine now)."""
    import shutil

    import lightning as L
    import torch

    from ecgfm.train.language import pretrain_language

    torch.set_num_threads(args.threads)

    class Clock(L.Callback):
        def __init__(self) -> None:
            self.t: list[float] = []

        def on_train_batch_end(self, *a: Any) -> None:
            self.t.append(time.perf_counter())

    out = {}
    for kind in CONTRASTIVE:
        clock = Clock()
        folder = cache.root / f"timing_{kind}"
        shutil.rmtree(folder, ignore_errors=True)
        pretrain_language(kind, ROOT / "configs" / "language" / f"ptbxl_{kind}.yaml",
                          [f"data.store={args.store}", f"out_dir={folder}", "trainer.progress=none",
                           f"trainer.max_steps={args.time_steps + 1}", "trainer.max_epochs=-1", "trainer.export=false",
                           "data.val_split=val", "data.test_split=null", "trainer.loggers=[]",
                           f"language.extra_texts=[{args.data / 'ptb-xl' / 'ptbxl_reports_only.csv'}]"],
                          callbacks=[clock])
        steps = np.diff(clock.t)
        out[kind] = {"seconds_per_step": float(np.median(steps)), "steps_timed": len(steps)}
        shutil.rmtree(folder, ignore_errors=True)
    return out


# ---------------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------------
def fmt_ci(r: dict[str, Any]) -> str:
    lo, hi = r["ci"]
    return f"{r['macro_auroc']:.3f} ({lo:.3f}-{hi:.3f})"


def generation_section(kind: str, g: dict[str, Any]) -> list[str]:
    """The report-generation table, target line and examples of one generating model."""
    lines = [f"### {kind}", "",
              "| system | BLEU-4 | ROUGE-L | label micro-P | micro-R | micro-F1 | macro-F1 | example-F1 | distinct texts | = most frequent report |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in g["systems"].items():
        lines.append(f"| {name} | {row['bleu4']:.3f} | {row['rouge_l']:.3f} | {row['micro_precision']:.3f} | "
                     f"{row['micro_recall']:.3f} | {row['micro_f1']:.3f} | {row['macro_f1']:.3f} | {row['example_f1']:.3f} | "
                     f"{row['distinct']} | {row['share_most_frequent']:.0%} |")
    d = g["micro_f1_difference_vs_nn"]
    best_row = g["systems"][g["best_generated"]]
    collapsed = best_row["share_most_frequent"] > 0.9 or best_row["distinct"] <= max(2, 0.02 * g["n"])
    chosen = (" (the decoding with the better label micro-F1 on the validation fold: "
              + ", ".join(f"{k} {v:.3f}" for k, v in g["val_micro_f1"].items()) + ")") if "val_micro_f1" in g else ""
    lines += ["", f"{g['best_generated']}{chosen} minus nearest neighbour (pooled features), label micro-F1: "
              f"{d['difference']:+.3f} (95 % CI {d['ci'][0]:+.3f} to {d['ci'][1]:+.3f}, paired bootstrap by patient; "
              f"one-sided p of no improvement {d['p_not_better']:.3f}).", "",
              f"Target: generated reports beat the nearest-neighbour baseline on clinical label F1: "
              f"**{'met' if d['difference'] > 0 else 'not met'}** (point estimate"
              f"{'' if d['ci'][0] > 0 else '; the interval includes 0'})"
              + (f". **But** the generator writes {best_row['distinct']} distinct text(s) for {g['n']} ECGs (mode "
                 "collapse onto the commonest findings): its label F1 is that of a constant report, so the comparison "
                 "says nothing about generation; an undertrained decoder does this." if collapsed else "."), "",
              f"Generation time for {g['n']} test ECGs: greedy {g['generation_seconds']['beam1']:.1f} s, beam 4 "
              f"{g['generation_seconds']['beam4']:.1f} s (batches of 32, one thread, no key-value cache).", "",
              "Examples (every n-th test record):", "", "| record | reference | generated (beam 4) | nearest neighbour |",
              "|---|---|---|---|"]
    for ex in g["examples"]:
        lines.append(f"| {ex['record_id']} | {ex['reference']} | {ex['generated, beam 4']} | "
                     f"{ex['nearest neighbour (pooled features)']} |")
    lines.append("")
    return lines


def page(result: dict[str, Any]) -> str:
    m = result["machine"]
    quick = result["quick"]
    lines = [
        "# Signal-language models on PTB-XL" + (" (quick run)" if quick else ""), "",
        f"Command: `python benchmarks/bench_language.py{' --quick' if quick else ''}`  ",
        f"Machine: {m['cpu']} ({m['cores']} CPUs), Python {m['python']}, {m['platform']}  ",
        f"Load: {result['load']}; torch threads: {result['threads']}  ",
        f"Data: `{result['store']}` (PTB-XL at 100 Hz: {result['n']['train']} train / {result['n']['val']} "
        f"validation / {result['n']['test']} test ECG-report pairs; folds 1-8 / 9 / 10). Models: "
        "`configs/language/ptbxl_clip.yaml`, `ptbxl_multitask.yaml` and `ptbxl_caption_supervised.yaml`"
        + (" with the `--quick` overrides (small encoder and text side, 10 epochs): a smoke test of the pipeline, "
           "not a measurement of the method." if quick else "."), "",
    ]
    pending = [k for k in MODELS if k not in result["train"]]
    if pending:
        lines += [f"> Not yet in this run: {', '.join(pending)} (its training is resumable; rerun the command "
                  "to add it, finished stages are cached).", ""]
    if quick:
        lines += ["> These are **quick-run** figures (tiny models, 10 epochs, on a machine shared with other jobs). "
                  "The full run is `python benchmarks/bench_language.py` (estimate below).", ""]
    lines += ["## Training", "", "| model | objective, configuration | optimizer steps | epochs | wall time (s) | "
              "val loss | val R@1 (ECG->report) | val mean recall |", "|---|---|---|---|---|---|---|---|"]
    for kind in result["train"]:
        t = result["train"][kind]
        objective, config = MODELS[kind]
        lines.append(f"| {kind} | {objective}, `{config}` | {t['global_step']} | {t['epoch']} | {t['seconds']:.0f} | "
                     f"{t['val'].get('loss', float('nan')):.3f} | {t['val'].get('e2t_r1', float('nan')):.3f} | "
                     f"{t['val'].get('recall_mean', float('nan')):.3f} |")
    lines += ["", "## Zero-shot diagnosis: 5 superclasses, test fold", "",
              "Macro AUROC over NORM, MI, STTC, CD, HYP from catalogue prompts (English and German templates, "
              f"ensembled); 95 % bootstrap interval by patient ({result['resamples']} resamples). The method and "
              "expansion reported were chosen on the validation fold; every combination is listed below.", "",
              "| model | method (chosen on val) | macro AUROC (95 % CI) | " + " | ".join(SUPER) + " |",
              "|---|---|---|" + "---|" * len(SUPER)]
    for kind in result["zero_shot"]:
        z = result["zero_shot"][kind]["chosen"]
        lines.append(f"| {kind} | {z['method']}, {z['expand']} | {fmt_ci(z)} | "
                     + " | ".join(f"{z['per_class'][c]:.3f}" for c in SUPER) + " |")
    lines += ["", "| model | method | expand | val macro AUROC | test macro AUROC |", "|---|---|---|---|---|"]
    for kind in result["zero_shot"]:
        for row in result["zero_shot"][kind]["all"]:
            lines.append(f"| {kind} | {row['method']} | {row['expand']} | {row['val']:.3f} | {row['test']:.3f} |")
    target = max((result["zero_shot"][k]["chosen"]["macro_auroc"] for k in result["zero_shot"]), default=float("nan"))
    lines += ["", f"Target: zero-shot superclass macro AUROC >= 0.75: best {target:.3f}, "
              f"**{'met' if target >= 0.75 else 'not met'}**.", ""]
    lines += ["## Linear probes: 5 superclasses, test fold", "",
              "Logistic regression on the encoder's pooled features (standardised on the training fold, C from "
              "{0.01, 0.1, 1} chosen on validation). 10 %: patient-grouped subsets of the training fold "
              f"(`ecgfm.evaluate.efficiency_subsets`, every superclass represented), mean over {result['probe_repeats']} repeats. The "
              "self-supervised encoders' rows are added by the SSL benchmark.", "",
              "| encoder | 10 % labels (mean) | 100 % labels (95 % CI) | C |", "|---|---|---|---|"]
    for kind in result["probe"]:
        for name, label in (("pretrained", f"{kind} pretrained"), ("random_init", f"random init ({kind} architecture)")):
            p = result["probe"][kind][name]
            lines.append(f"| {label} | {p['tenth']['macro_auroc']:.3f} (n = {p['tenth']['n_train'][0]}) | "
                         f"{fmt_ci(p['full'])} | {p['C']:g} |")
    lines += ["", "## Retrieval, test fold", "",
              "Cosine similarity of joint embeddings over the test pairs with a report. *Instance*: only the "
              "record's own report (or ECG) counts; *text*: any identical report text counts (PTB-XL repeats "
              "reports word for word).", "",
              "| model | matching | ECG->report R@1 | R@5 | R@10 | report->ECG R@1 | R@5 | R@10 |",
              "|---|---|---|---|---|---|---|---|"]
    for kind in result["retrieval"]:
        r = result["retrieval"][kind]
        for how in ("instance", "text"):
            x = r[how]
            lines.append(f"| {kind} | {how} | " + " | ".join(f"{x[f'{d}@{k}']:.3f}" for d in ("ecg_to_report", "report_to_ecg")
                                                             for k in (1, 5, 10)) + " |")
    for r in list(result["retrieval"].values())[:1]:
        lines += ["", f"{r['n']} test pairs, {r['distinct_reports']} distinct normalised report texts; chance R@1 = "
                  f"{1 / max(r['n'], 1):.4f} (instance).", ""]
    lines += ["## Report generation, test fold", "",
              "References and outputs are the normalised report texts (lower case, PTB-XL boilerplate removed). "
              "BLEU-4: corpus level, epsilon smoothing (Chen & Cherry method 1, only used when an n-gram order "
              "has no match). ROUGE-L: mean F1 over reports. Clinical: the rule-based report labeler "
              "(`ecgfm.labels.report`) on both texts; micro precision/recall/F1 over (report, label) pairs, "
              "macro F1 over labels present in the references, example F1 = mean per-report F1. Each model's "
              "nearest-neighbour baseline uses that model's own pooled encoder features (and its joint "
              "embedding where it has a text side).", ""]
    for kind, g in result["generation"].items():
        lines += generation_section(kind, g)
    est = result.get("full_run_estimate")
    if est:
        lines += ["", "## CPU time of the full run (estimate)", "", est["text"], ""]
    lines.append("")
    return "\n".join(lines)


def estimate(timing: dict[str, Any] | None, n_train: int) -> dict[str, Any] | None:
    if not timing:
        return None
    steps = (n_train // 64) * 40  # configs: batch 64, at most 40 epochs (early stopping may end sooner)
    parts = {k: v["seconds_per_step"] * steps for k, v in timing.items()}
    total = sum(parts.values()) * 1.15  # + validation passes (~15 %)
    measured = ", ".join(f"{k}: {v['seconds_per_step']:.2f} s per step of 64" for k, v in timing.items())
    text = (f"Measured {measured} "
            f"(median of {next(iter(timing.values()))['steps_timed']} steps, one torch thread, this machine as loaded at the time). "
            f"At most 40 epochs of {n_train // 64} steps: about {total / 3600:.1f} CPU-hours for the two pretraining runs "
            f"(validation included, early stopping can shorten it), plus about 10-20 minutes for the evaluation "
            f"(embeddings, probes, beam search).")
    return {"seconds": total, "per_model_seconds": parts, "steps_per_model": steps, "text": text}


# ---------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, default=ROOT / "corpora" / "ptbxl100")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--cache", type=Path, default=None, help="default: runs/bench_language[_quick]")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    ap.add_argument("--quick", action="store_true", help="small models, 10 epochs: a smoke test of the pipeline")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default 1000; quick 200)")
    ap.add_argument("--repeats", type=int, default=None, help="10 %% probe repeats (default 5; quick 2)")
    ap.add_argument("--time-steps", type=int, default=0, help="also time N steps of each full config (estimate)")
    ap.add_argument("--models", default=",".join(MODELS),
                    help="train and evaluate only these (comma-separated); the page lists the others as pending")
    ap.add_argument("--force", action="store_true", help="recompute the evaluation stages (training resumes anyway)")
    args = ap.parse_args()
    args.resamples = args.resamples or (200 if args.quick else 1000)
    args.repeats = args.repeats or (2 if args.quick else 5)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if not (args.store / "store.json").is_file():
        sys.exit(f"{args.store}: no corpus store; build it with: ecgfm build-corpus {args.data / 'ptb-xl'} "
                 f"--out {args.store} --pipeline standard:fs=100")
    cache = Cache(args.cache or ROOT / "runs" / ("bench_language_quick" if args.quick else "bench_language"), args.force)
    import torch

    torch.set_num_threads(args.threads)
    from ecgfm.language import load_language_model
    from ecgfm.store.format import Corpus

    t0 = time.perf_counter()
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(MODELS))
    if unknown:
        sys.exit(f"--models: unknown {', '.join(unknown)} (known: {', '.join(MODELS)})")
    trained = {kind: train(kind, args, cache) for kind in kinds}
    corpus = Corpus.open(args.store)
    splits = {s: load_split(corpus, s) for s in ("train", "val", "test")}
    result: dict[str, Any] = {"machine": machine(), "load": load_note(), "threads": args.threads, "quick": args.quick,
                              "resamples": args.resamples, "probe_repeats": args.repeats,
                              "store": str(args.store), "n": {s: len(v["y"]) for s, v in splits.items()},
                              "train": trained, "zero_shot": {}, "probe": {}, "retrieval": {}, "generation": {}}
    for kind in kinds:
        lm = load_language_model(trained[kind]["model_dir"])
        emb = cached_embeddings(kind, lm, splits, cache)
        if kind in CONTRASTIVE:
            result["zero_shot"][kind] = zero_shot(kind, lm, emb, splits, args, cache)
            result["probe"][kind] = probes(kind, emb, splits, args, cache)
            result["retrieval"][kind] = retrieval(kind, lm, emb, splits, cache)
        if kind in GENERATORS:
            result["generation"][kind] = generation(kind, lm, emb, splits, args, cache)
    timing = cache.get("timing") if args.time_steps else None
    if args.time_steps and timing is None:
        timing = cache.put("timing", time_full_steps(args, cache))
    result["full_run_estimate"] = estimate(timing, result["n"]["train"])
    result["seconds"] = time.perf_counter() - t0
    write_results(args.out, "language", result, page(result))


if __name__ == "__main__":
    main()
