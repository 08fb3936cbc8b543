"""Any-lead: the 12-lead default model, from-scratch subset models and aligned students, per lead subset.

On PTB-XL fold 10 (the test split of the store), for each lead subset (I, II, I+II, the six limb
leads, V1-V6), macro AUROC with a patient-bootstrap 95% interval over all PTB-XL statements the
default model predicts and over its rhythm statements (catalogue category ``rhythm``) of:

- (a) the 12-lead default model given only the subset, the other leads masked;
- (b) a model trained from scratch on the subset: the default recipe
  (``configs/train/ptbxl_default.yaml``) with ``data.leads`` set;
- (c) the aligned student: ``ecgfm transfer --teacher src/ecgfm/models/default --leads ...``
  with the same recipe (MMD alignment + distillation, :mod:`ecgfm.train.transfer`);

plus the default model on all 12 leads as the reference, and the paired differences (c) - 12
leads and (c) - (b) with their intervals. External check: the challenge F1 (mean of the normal,
AF and other-rhythm F1) of the lead-I student on the CinC 2017 records of the shared data, read
from their files (AliveCor lead I, 300 Hz) through the student's contract, with no training on
CinC 2017; the rule mapping its outputs to the three classes is fitted on PTB-XL validation
(fold 9) only.

It trains what is missing, caching each run under ``--work`` (a rerun reuses finished runs and
resumes interrupted ones), then scores::

    OMP_NUM_THREADS=1 python benchmarks/bench_any_lead.py [--store /work/corpora/ptbxl100]
        [--work /tmp/ecgfm-bench-cache/any_lead] [--resamples 1000] [--train-only]

Writes ``docs/benchmarks/any_lead.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from _machine import load_note, machine, write_results

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
DATA = ROOT.parent / "shared" / "data"
SUBSETS: dict[str, tuple[str, ...]] = {
    "I": ("I",),
    "II": ("II",),
    "I+II": ("I", "II"),
    "limb": ("I", "II", "III", "aVR", "aVL", "aVF"),
    "V1-V6": ("V1", "V2", "V3", "V4", "V5", "V6"),
}
SLUG = {"I": "I", "II": "II", "I+II": "I_II", "limb": "limb", "V1-V6": "V1-V6"}
COLUMNS = ["labels", "superdiagnostic", "subdiagnostic"]
CINC_CLASSES = ("N", "A", "O")


# ---------------------------------------------------------------------------------------------
# training (cached)
# ---------------------------------------------------------------------------------------------
def _common(store: Path, out: Path) -> list[str]:
    return [f"data.store={store}", f"out_dir={out}", "trainer.progress=none", "trainer.loggers=[csv]"]


def _resume(out: Path) -> list[str]:
    return ["resume=auto"] if (out / "checkpoints" / "last.ckpt").is_file() else []


def scratch_model(name: str, args: argparse.Namespace) -> Path:
    """(b): the default recipe on the subset's leads only (trained unless cached)."""
    out = args.work / f"scratch_{SLUG[name]}"
    if not (out / "model" / "config.json").is_file():
        from ecgfm.train.config import load_config
        from ecgfm.train.run import train

        leads = ",".join(SUBSETS[name])
        print(f"training (b) from scratch on {name} -> {out}", file=sys.stderr)
        train(load_config(args.config, [*_common(args.store, out), f"data.leads=[{leads}]",
                                        f"card={{name: scratch resnet1d18 on leads {SLUG[name]} (any-lead benchmark)}}",
                                        *_resume(out)]))
    return out / "model"


def student_model(name: str, args: argparse.Namespace) -> Path:
    """(c): the aligned student of the default model (trained unless cached)."""
    out = args.work / f"student_{SLUG[name]}"
    if not (out / "model" / "config.json").is_file():
        from ecgfm.train.transfer import transfer

        print(f"training (c) the student on {name} -> {out}", file=sys.stderr)
        transfer(args.teacher, SUBSETS[name], args.config, [*_common(args.store, out), *_resume(out)])
    return out / "model"


# ---------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------
def split_arrays(store: Path, split: str, labels: list[str], leads: tuple[str, ...]) -> dict[str, Any]:
    """Centre 10 s windows of ``split`` in ``leads`` order, with labels and patients."""
    from ecgfm.store.dataset import CorpusDataset
    from ecgfm.store.format import Corpus
    from ecgfm.train.run import with_label_columns

    corpus = with_label_columns(Corpus.open(store), COLUMNS)
    ds = CorpusDataset(corpus, split=split, window=10.0, crop="center", leads=leads, label_ids=labels)
    batch = ds.__getitems__(list(range(len(ds))))
    rows = batch["record"].numpy()
    manifest = corpus.manifest
    return {"signal": batch["signal"], "mask": batch["mask"], "labels": batch["labels"].numpy(),
            "patients": manifest["patient_key"].to_numpy()[rows],
            "record_labels": [list(manifest["labels"].iloc[r]) for r in rows]}


def probabilities(model: Any, signal: Any, mask: Any, batch: int = 64) -> np.ndarray:
    from ecgfm.models.heads import predict_from_logits

    out = [predict_from_logits(model.forward(signal[i:i + batch], mask[i:i + batch]).float(), model.head).numpy()
           for i in range(0, len(signal), batch)]
    return np.concatenate(out)


def subset_inputs(arrays: dict[str, Any], teacher_leads: tuple[str, ...], leads: tuple[str, ...]) -> tuple[Any, Any]:
    rows = [teacher_leads.index(lead) for lead in leads]
    return arrays["signal"][:, rows], arrays["mask"][:, rows]


def groups_of(labels: list[str]) -> dict[str, list[str]]:
    from ecgfm.labels import load_catalogue

    catalogue = load_catalogue()
    plain = [label for label in labels if ":" not in label]
    rhythm = [label for label in plain if label in catalogue and catalogue[label].category == "rhythm"]
    return {"all statements": plain, "rhythm": rhythm}


def score(args: argparse.Namespace, models: dict[str, dict[str, Path]]) -> dict[str, Any]:
    import torch

    from ecgfm.evaluate.bootstrap import bootstrap, paired_bootstrap
    from ecgfm.models.portable import load_model

    teacher = load_model(args.teacher)
    labels = list(teacher.labels)
    leads12 = teacher.input.leads
    test = split_arrays(args.store, "test", labels, leads12)
    y = test["labels"]
    preds: dict[str, dict[str, np.ndarray]] = {"12 leads": {"all": probabilities(teacher, test["signal"], test["mask"])}}
    for name, leads in SUBSETS.items():
        keep = torch.zeros(len(leads12), dtype=torch.bool)
        keep[[leads12.index(lead) for lead in leads]] = True
        row = {"a": probabilities(teacher, test["signal"], test["mask"] & keep)}
        for kind in ("b", "c"):
            model = load_model(models[name][kind])
            if list(model.labels) != labels:
                raise RuntimeError(f"{models[name][kind]}: its labels differ from the default model's")
            row[kind] = probabilities(model, *subset_inputs(test, leads12, model.input.leads))
        preds[name] = row
    groups = groups_of(labels)
    out: dict[str, Any] = {"n_test": int(len(y)), "n_patients": int(len(set(test["patients"]))), "groups": {}}
    kw = dict(metrics="auroc", n_resamples=args.resamples)
    for group, names in groups.items():
        cols = [labels.index(n) for n in names if 0 < y[:, labels.index(n)].sum() < len(y)]
        col_names = [labels[j] for j in cols]
        yy = y[:, cols]
        reference = preds["12 leads"]["all"][:, cols]

        def ci(p: np.ndarray, names: list[str] = col_names, yy: np.ndarray = yy) -> list[float]:
            return [round(float(v), 4) for v in bootstrap(yy, p, test["patients"], names=names, **kw).macro["auroc"]]

        def diff(pa: np.ndarray, pb: np.ndarray, names: list[str] = col_names, yy: np.ndarray = yy) -> list[float]:
            d, lo, hi, p = paired_bootstrap(yy, pa, pb, test["patients"], names=names, **kw).macro["auroc"]
            return [round(float(d), 4), round(float(lo), 4), round(float(hi), 4), round(float(p), 4)]

        entry: dict[str, Any] = {"labels": col_names, "12 leads": ci(reference), "subsets": {}}
        for name in SUBSETS:
            row = {kind: preds[name][kind][:, cols] for kind in ("a", "b", "c")}
            entry["subsets"][name] = {
                "a": ci(row["a"]), "b": ci(row["b"]), "c": ci(row["c"]),
                "c - 12 leads": diff(row["c"], reference), "c - b": diff(row["c"], row["b"]),
                "c - a": diff(row["c"], row["a"]),
            }
        out["groups"][group] = entry
    return out


# ---------------------------------------------------------------------------------------------
# CinC 2017: single-lead rhythm, no training on it
# ---------------------------------------------------------------------------------------------
def ptbxl_rhythm_class(labels: list[str], rhythm_ids: set[str]) -> str | None:
    """PTB-XL statements -> CinC 2017 class: A (AFIB or AFLT), N (sinus rhythm and no other
    rhythm statement), O (any other rhythm statement); None without a rhythm statement."""
    present = {label for label in labels if label in rhythm_ids}
    if present & {"AFIB", "AFLT"}:
        return "A"
    if not present:
        return None
    return "N" if present == {"SR"} else "O"


def three_class(p_af: np.ndarray, p_sr: np.ndarray, t_af: float, t_sr: float) -> np.ndarray:
    """The rule: A if p(AFIB) >= t_af, else N if p(SR) >= t_sr, else O."""
    return np.where(p_af >= t_af, "A", np.where(p_sr >= t_sr, "N", "O"))


def challenge_f1(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """CinC 2017 scoring: F1 per class ``2 n_cc / (n_true_c + n_pred_c)``; ``F1`` = mean over N, A, O."""
    out = {}
    for c in CINC_CLASSES:
        both = int(((truth == c) & (pred == c)).sum())
        denominator = int((truth == c).sum() + (pred == c).sum())
        out[c] = 2 * both / denominator if denominator else float("nan")
    out["F1"] = float(np.mean([out[c] for c in CINC_CLASSES]))
    return out


def fit_rule(p_af: np.ndarray, p_sr: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """Thresholds maximising the challenge F1 on PTB-XL validation: ``(t_af, t_sr, F1)``."""
    grid_af = np.unique(np.quantile(p_af, np.linspace(0.5, 0.995, 100)))
    grid_sr = np.unique(np.quantile(p_sr, np.linspace(0.01, 0.9, 90)))
    best = (0.5, 0.5, -1.0)
    for t_af in grid_af:
        for t_sr in grid_sr:
            f1 = challenge_f1(truth, three_class(p_af, p_sr, t_af, t_sr))["F1"]
            if f1 > best[2]:
                best = (float(t_af), float(t_sr), float(f1))
    return best


def cinc2017(args: argparse.Namespace, model_dirs: dict[str, Path]) -> dict[str, Any]:
    from ecgfm.labels import load_catalogue
    from ecgfm.labels.mappers import read_cinc2017_reference
    from ecgfm.models.portable import load_model

    folder = args.cinc
    reference = read_cinc2017_reference(folder / "REFERENCE.csv")
    letters = {"SR": "N", "AFIB": "A", "OTHER_RHYTHM": "O", "NOISE": "~"}
    records = sorted(reference)
    truth = np.array([letters[reference[r].ids[0]] for r in records])
    files = [folder / f"{r}.hea" for r in records]
    catalogue = load_catalogue()
    rhythm_ids = {c.id for c in catalogue if c.category == "rhythm"}
    out: dict[str, Any] = {"records": len(records), "classes": {c: int((truth == c).sum()) for c in "NAO~"},
                           "models": {}}
    for kind, path in model_dirs.items():
        model = load_model(path)
        val = split_arrays(args.store, "val", list(model.labels), model.input.leads)
        p_val = probabilities(model, val["signal"], val["mask"])
        val_truth = [ptbxl_rhythm_class(labels, rhythm_ids) for labels in val["record_labels"]]
        keep = np.array([t is not None for t in val_truth])
        af, sr = model.labels.index("AFIB"), model.labels.index("SR")
        t_af, t_sr, f1_val = fit_rule(p_val[keep, af], p_val[keep, sr], np.array(val_truth)[keep])
        t0 = time.perf_counter()
        probs, failures = model.predict(files, errors="skip")
        seconds = time.perf_counter() - t0
        variants = {"first 10 s": probs, "10 s windows, mean": window_probabilities(model, files)}
        entry: dict[str, Any] = {
            "model": str(path), "rule": {"t_af": round(t_af, 4), "t_sr": round(t_sr, 4),
                                         "ptbxl_val_F1": round(f1_val, 4), "ptbxl_val_records": int(keep.sum())},
            "refused": [f.error for f in failures], "seconds_first_10s": round(seconds, 2), "inputs": {},
        }
        for name, p in variants.items():
            ok = np.isfinite(p).all(axis=1)
            pred = three_class(p[ok, af], p[ok, sr], t_af, t_sr)
            scored = challenge_f1(truth[ok], pred)
            confusion = {f"{t}->{c}": int(((truth[ok] == t) & (pred == c)).sum()) for t in "NAO~" for c in CINC_CLASSES}
            entry["inputs"][name] = {
                "scored": int(ok.sum()), "F1": round(scored["F1"], 4),
                "per_class_F1": {c: round(scored[c], 4) for c in CINC_CLASSES},
                "auroc_AF_vs_rest": round(_auroc(truth[ok] == "A", p[ok, af]), 4),
                "confusion": {k: v for k, v in confusion.items() if v},
            }
        out["models"][kind] = entry
    return out


def window_probabilities(model: Any, files: list[Path], seconds: float = 10.0, stride: float = 5.0) -> np.ndarray:
    """Mean probabilities over a record's windows of ``seconds`` every ``stride`` s (each window
    through the model's contract; NaN rows where the record is refused)."""
    import dataclasses

    import ecgfm

    out = np.full((len(files), len(model.labels)), np.nan, np.float32)
    for i, f in enumerate(files):
        ecg = ecgfm.read(f)
        n, step = round(seconds * ecg.fs), round(stride * ecg.fs)
        starts = range(0, max(ecg.n_samples - n, 0) + 1, step)
        windows = [dataclasses.replace(ecg, signal=ecg.signal[:, s:s + n],
                                       mask=None if ecg.mask is None else ecg.mask[:, s:s + n]) for s in starts]
        probs, _ = model.predict(windows, errors="skip")
        if np.isfinite(probs).all(axis=1).any():
            out[i] = np.nanmean(probs, axis=0)
    return out


def _auroc(y: np.ndarray, score: np.ndarray) -> float:
    from ecgfm.evaluate.metrics import auroc

    return float(auroc(y.astype(float), score))


# ---------------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------------
def _ci(v: list[float]) -> str:
    return f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"


def _d(v: list[float]) -> str:
    return f"{v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]"


def targets(acc: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, on the rhythm statements, for the lead-I student."""
    row = acc["groups"]["rhythm"]["subsets"]["I"]
    gap = row["c - 12 leads"]
    vs_b = row["c - b"]
    return {
        "within_0.03_of_12_lead_teacher": {"difference": gap, "met": bool(gap[0] >= -0.03)},
        "beats_scratch_by_more_than_the_CI": {"difference": vs_b, "met": bool(vs_b[1] > 0)},
    }


def page(result: dict[str, Any]) -> str:
    acc = result["accuracy"]
    lines = [
        "# Any-lead: reduced-lead students of the 12-lead default model",
        "",
        "Produced by `python benchmarks/bench_any_lead.py` (it trains the missing models, then scores them). "
        f"PTB-XL fold 10: {acc['n_test']} ECGs of {acc['n_patients']} patients; macro AUROC with a "
        f"patient-bootstrap 95% interval ({result['settings']['resamples']} resamples); differences are paired "
        "(same resamples), with their interval.",
        "",
        "- **12 leads**: the default model (`src/ecgfm/models/default`) on all 12 leads (the teacher).",
        "- **(a)** the default model given only the subset, the other leads masked (it was trained on 12 leads "
        "without lead dropout).",
        "- **(b)** from scratch on the subset: `configs/train/ptbxl_default.yaml` with `data.leads` set.",
        "- **(c)** the aligned student: `ecgfm transfer --teacher src/ecgfm/models/default --leads ... "
        "--config configs/train/ptbxl_default.yaml` (the same recipe; first layer sliced from the teacher; "
        "loss = BCE + 1 x MMD(pooled features, teacher's on 12 leads) + 1 x distillation, T = 2).",
        "",
    ]
    for group, entry in acc["groups"].items():
        lines += [f"## {group} ({len(entry['labels'])} labels with positives in the test fold)", "",
                  f"12 leads: {_ci(entry['12 leads'])}", "",
                  "| subset | (a) 12-lead model, masked | (b) from scratch | (c) aligned student | (c) - 12 leads | (c) - (b) |",
                  "|---|---|---|---|---|---|"]
        for name, row in entry["subsets"].items():
            lines.append(f"| {name} | {_ci(row['a'])} | {_ci(row['b'])} | {_ci(row['c'])} | "
                         f"{_d(row['c - 12 leads'])} | {_d(row['c - b'])} |")
        lines.append("")
        if group == "rhythm":
            lines += ["Rhythm labels: " + ", ".join(f"`{x}`" for x in entry["labels"]), ""]
    t = result["targets"]
    a, b = t["within_0.03_of_12_lead_teacher"], t["beats_scratch_by_more_than_the_CI"]
    lines += [
        "## Targets (lead-I student, rhythm statements)", "",
        f"- Within 0.03 of the 12-lead teacher: difference {_d(a['difference'])}: "
        f"**{'met' if a['met'] else 'not met'}**.",
        f"- Beats (b) by more than the interval (the paired difference's 95% interval above 0): "
        f"{_d(b['difference'])}: **{'met' if b['met'] else 'not met'}**.",
        "",
    ]
    cinc = result.get("cinc2017")
    if cinc:
        lines += [
            "## External check: CinC 2017 (AliveCor lead I, 300 Hz), no training on it", "",
            f"{cinc['records']} records of the shared data (classes: "
            + ", ".join(f"{k} {v}" for k, v in cinc["classes"].items() if v) + "), each read from its file "
            "and prepared by the model's contract (resampled to 100 Hz, filtered, the first 10 s). Rule, "
            "fitted on PTB-XL validation (fold 9; records with a rhythm statement, mapped A = AFIB/AFLT, N = "
            "sinus rhythm and no other rhythm statement, O = any other rhythm statement) by a grid search of "
            "the two thresholds for the best challenge F1: **A if p(AFIB) >= t_af, else N if p(SR) >= t_sr, "
            "else O**. Challenge F1 = mean of the N, A and O F1.", "",
            "Inputs: *first 10 s* is what `model.predict(file)` does (the contract's window); *10 s windows, "
            "mean* averages the probabilities of the record's 10 s windows every 5 s (no other change).", "",
            "| model | input | t_af | t_sr | F1 on PTB-XL val | CinC 2017 F1 | F1 N | F1 A | F1 O | AUROC p(AFIB), A vs rest | refused |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for kind, m in cinc["models"].items():
            r = m["rule"]
            for name, v in m["inputs"].items():
                f = v["per_class_F1"]
                lines.append(f"| {kind} | {name} | {r['t_af']:.3f} | {r['t_sr']:.3f} | {r['ptbxl_val_F1']:.3f} | "
                             f"**{v['F1']:.3f}** | {f['N']:.3f} | {f['A']:.3f} | {f['O']:.3f} | "
                             f"{v['auroc_AF_vs_rest']:.3f} | {len(m['refused'])} |")
        lines += ["", "Confusion (truth->prediction): " + "; ".join(
            f"{kind}, {name}: " + ", ".join(f"{k} {c}" for k, c in v["confusion"].items())
            for kind, m in cinc["models"].items() for name, v in m["inputs"].items()), ""]
    lines += ["## Training", "", "| model | optimizer steps | epochs | wall time (s) |", "|---|---|---|---|"]
    for name, info in result["training"].items():
        lines.append(f"| {name} | {info['global_step']} | {info['epochs']} | {info['wall_seconds']} |")
    lines += ["", f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; {result['load']} "
              "when scoring. The models were trained one or two at a time on this 2-core machine while other "
              "jobs ran, so the wall times are indicative only.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=Path("/work/corpora/ptbxl100"),
                        help="PTB-XL store at 100 Hz (ecgfm build-corpus ... --pipeline standard:fs=100)")
    parser.add_argument("--teacher", type=Path, default=ROOT / "src" / "ecgfm" / "models" / "default")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "train" / "ptbxl_default.yaml")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ecgfm-bench-cache/any_lead"),
                        help="where the trained models are cached (reused by reruns)")
    parser.add_argument("--cinc", type=Path, default=DATA / "cinc2017")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    parser.add_argument("--train-only", action="store_true", help="train the missing models and stop")
    args = parser.parse_args()
    import torch

    torch.manual_seed(0)
    models: dict[str, dict[str, Path]] = {}
    for name in SUBSETS:
        models[name] = {"b": scratch_model(name, args), "c": student_model(name, args)}
    if args.train_only:
        return
    training = {}
    for name, pair in models.items():
        for kind, path in pair.items():
            info = json.loads((path / "config.json").read_text())["training"]
            training[f"({kind}) {name}"] = {k: info.get(k) for k in ("global_step", "epochs", "wall_seconds")}
    result: dict[str, Any] = {
        "settings": {"store": str(args.store), "teacher": str(args.teacher), "config": str(args.config),
                     "resamples": args.resamples, "subsets": {k: list(v) for k, v in SUBSETS.items()}},
        "accuracy": score(args, models), "training": training,
    }
    result["targets"] = targets(result["accuracy"])
    if (args.cinc / "REFERENCE.csv").is_file():
        result["cinc2017"] = cinc2017(args, {"(c) lead-I student": models["I"]["c"],
                                             "(b) lead I from scratch": models["I"]["b"]})
    result["machine"], result["load"] = machine(), load_note()
    write_results(args.out, "any_lead", result, page(result))


if __name__ == "__main__":
    main()
