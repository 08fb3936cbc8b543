"""Health-profile speed on the CPU: latency of one ECG from file to JSON, batch throughput, memory.

- Latency: ``build_profile(file)`` then ``json.dumps(profile.to_dict())`` for one bundled record
  (``examples/ptbxl/00351_hr.hea``, 500 Hz, 10 s, 12 leads), ``--runs`` times after two
  untimed warm-up runs; median and 95th percentile, in four settings: with and without
  saliency (integrated gradients, 32 steps, top 3 positive findings), and with and without
  rendering the HTML report (``render_html``) as well. Beside them, the median time of each
  stage on its own (quality checks, measurements, read + prepare + forward, saliency, HTML).
- Throughput: ``profile_many`` over ``--records`` PTB-XL records (``records100`` then
  ``records500`` of the shared data, cycled if fewer), batch 32, each profile serialised to
  JSON; without saliency over all records, with saliency over ``--saliency-records``.
- The command line: ``ecgfm profile FILES --out DIR --no-saliency --jobs N`` over the same
  ``--records`` records, wall time of the whole command (start-up, model loading, worker
  processes and writing one JSON file per record included), for N = 1 and ``--jobs``.
- Memory: peak resident set size (``ru_maxrss``) of the process doing each measurement; every
  measurement runs in its own process.

The model is the bundled default (``ecgfm.load_model()``) when ``ecgfm.models.default_model_path()``
holds one, else a freshly initialised ``resnet1d18`` at 100 Hz x 10 s with 90 outputs (PTB-XL
statement ids and benchmark groups); speed does not depend on the weights' values, but which
one ran is in the results. Threads: ``--threads`` (default 2; ``torch.set_num_threads``).

    python benchmarks/bench_profile.py [--quick] [--runs 50] [--records 1000]
        [--saliency-records 100] [--threads 2] [--jobs 2] [--out docs/benchmarks]

``--quick`` does 5 runs and 64 records and writes to ``/tmp/ecgfm-bench-profile`` unless
``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import load_note, machine, write_results

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "examples" / "ptbxl" / "00351_hr.hea"
DATA = Path(os.environ.get("ECGFM_DATA", ROOT.parent / "shared" / "data")) / "ptb-xl"
BATCH = 32
TOP = 3
SETTINGS = {  # name -> (saliency findings, render HTML)
    "json": (0, False),
    "json + saliency": (TOP, False),
    "json + html": (0, True),
    "json + saliency + html": (TOP, True),
}


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------
def benchmark_model(directory: Path) -> tuple[Path | None, str]:
    """The default model's folder, or a fresh 90-output resnet1d18 saved in ``directory``."""
    from ecgfm.models import default_model_path

    default = default_model_path()
    if (default / "config.json").is_file():
        return None, f"bundled default model ({default})"
    import torch

    from ecgfm.labels import load_catalogue
    from ecgfm.models.heads import HeadSpec
    from ecgfm.models.portable import save_model
    from ecgfm.models.registry import create_encoder
    from ecgfm.preprocess import Pipeline
    from ecgfm.preprocess.steps import CropOrPad

    catalogue = load_catalogue()
    statements = [c.id for c in catalogue if any(c.in_ptbxl(g) for g in ("diagnostic", "form", "rhythm"))]
    groups = [f"superdiagnostic:{c}" for c in ("NORM", "MI", "STTC", "CD", "HYP")]
    labels = (statements + groups)[:90]
    labels += [f"subdiagnostic:{c.id}" for c in catalogue if c.in_ptbxl("subclass")][: 90 - len(labels)]
    torch.manual_seed(0)
    encoder = create_encoder("resnet1d18", num_outputs=len(labels)).eval()
    standard = Pipeline.parse("standard:fs=100")
    pipeline = Pipeline((*standard.steps, CropOrPad(seconds=10, mode="center")))
    save_model(directory, encoder, head=HeadSpec("multilabel", len(labels), label_ids=tuple(labels)),
               pipeline=pipeline, overwrite=True)
    return directory, (f"freshly initialised resnet1d18 (3.9 M parameters), 100 Hz x 10 s x 12 leads, "
                       f"{len(labels)} outputs (no default model in this checkout)")


def ptbxl_records(n: int) -> list[str]:
    files = [str(p) for folder in ("records100", "records500") for p in sorted((DATA / folder).rglob("*.hea"))]
    if not files:
        raise SystemExit(f"no PTB-XL records under {DATA} (set ECGFM_DATA)")
    return [files[i % len(files)] for i in range(n)]


# --------------------------------------------------------------------------------------------
# one measurement, in its own process
# --------------------------------------------------------------------------------------------
def measure(spec: dict) -> dict:
    import resource

    import numpy as np
    import torch

    import ecgfm
    from ecgfm.profile import build_profile, profile_many, render_html

    torch.set_num_threads(spec["threads"])
    model = ecgfm.load_model(spec["model"])
    out: dict = {}
    if spec["mode"] == "latency":
        top, html = spec["saliency"], spec["html"]

        def once() -> None:
            profile = build_profile(RECORD, model, saliency=top)
            json.dumps(profile.to_dict())
            if html:
                render_html(profile)

        for _ in range(2):
            once()
        times = []
        for _ in range(spec["runs"]):
            start = time.perf_counter()
            once()
            times.append(time.perf_counter() - start)
        t = np.asarray(times) * 1000
        out = {"runs": len(times), "median_ms": float(np.median(t)), "p95_ms": float(np.percentile(t, 95)),
               "min_ms": float(t.min()), "mean_ms": float(t.mean())}
    elif spec["mode"] == "stages":
        out = stages(model, spec["runs"])
    else:
        sources = ptbxl_records(spec["records"])
        failures: list[str] = []
        start = time.perf_counter()
        n = refused = 0
        for profile in profile_many(sources, model, batch_size=BATCH, saliency=spec["saliency"],
                                    on_error=lambda s, e: failures.append(f"{s}: {e}")):
            json.dumps(profile.to_dict())
            n += 1
            refused += not profile.ok
        seconds = time.perf_counter() - start
        out = {"records": len(sources), "profiles": n, "refused": refused, "failed": len(failures),
               "seconds": seconds, "profiles_per_s": n / seconds, "batch": BATCH,
               "saliency": spec["saliency"], "first_failures": failures[:3]}
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def stages(model, runs: int) -> dict:
    """Median ms of each stage on its own, for the same record."""
    import numpy as np

    import ecgfm
    from ecgfm.profile import build_profile
    from ecgfm.profile.core import measure_record
    from ecgfm.profile.render import render_html
    from ecgfm.profile.saliency import explain
    from ecgfm.quality import check_quality

    ecg = ecgfm.read(RECORD)
    profile = build_profile(RECORD, model, saliency=TOP)
    signal, mask = model.prepare(ecg)
    index = {label: i for i, label in enumerate(model.labels)}
    targets = [index[s.label] for s in profile.saliency]
    jobs = {
        "read + prepare + forward": lambda: model.forward(model.prepare(ecgfm.read(RECORD))[0][None]),
        "quality checks": lambda: check_quality(ecg),
        "measurements (delineation)": lambda: measure_record(ecg),
        f"saliency ({len(targets)} findings x 32 steps)": lambda: explain(
            model, signal, mask, targets, ecg=ecg, probabilities=[0.0] * len(targets),
            names=[""] * len(targets)),
        "HTML report (plot + overlays)": lambda: render_html(profile),
    }
    out = {}
    for name, job in jobs.items():
        job()
        times = []
        for _ in range(max(3, runs // 3)):
            start = time.perf_counter()
            job()
            times.append(time.perf_counter() - start)
        out[name] = float(np.median(times) * 1000)
    return {"stage_median_ms": out, "saliency_findings": len(targets)}


def cli_throughput(model: str | None, n: int, jobs: int) -> dict:
    """Wall time of ``ecgfm profile`` over ``n`` PTB-XL records, one JSON file each."""
    files = ptbxl_records(n)
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-c", "from ecgfm.cli import main; main()", "profile", *files, "--no-saliency",
                   "--out", str(Path(tmp) / "out"), "--jobs", str(jobs), *(["--model", model] if model else [])]
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - start
        written = len(list((Path(tmp) / "out").glob("*.json"))) - 1  # less profile_run.json
    if result.returncode != 0:
        raise SystemExit(f"ecgfm profile --jobs {jobs} failed:\n{result.stderr[-3000:]}")
    return {"jobs": jobs, "records": n, "written": written, "seconds": seconds, "profiles_per_s": n / seconds}


def run(spec: dict) -> dict:
    result = subprocess.run([sys.executable, __file__, "--measure", json.dumps(spec)],
                            capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"measurement {spec} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------
def page(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Health profile speed (CPU)", "",
        "Written by `benchmarks/bench_profile.py`. Model: " + result["model"] + f". Threads: {result['threads']}.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}. At the start: "
        f"{result['load_before']}; at the end: {result['load_after']}.",
        "",
        f"## Latency of one ECG, file to JSON ({result['latency_record']})", "",
        "| setting | median (ms) | p95 (ms) | min (ms) | runs | peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in result["latency"].items():
        lines.append(f"| {name} | {r['median_ms']:.0f} | {r['p95_ms']:.0f} | {r['min_ms']:.0f} | "
                     f"{r['runs']} | {r['peak_rss_mb']:.0f} |")
    target = result["latency"]["json"]["median_ms"]
    lines += ["", f"Target: one profile under 1 s. Without saliency the median is {target:.0f} ms "
              f"({'met' if target < 1000 else 'not met'}); with saliency for the top {TOP} findings "
              f"{result['latency']['json + saliency']['median_ms']:.0f} ms.", "",
              "Each stage on its own (median ms, same record):", "",
              "| stage | median (ms) |", "|---|---:|"]
    for name, ms in result["stages"]["stage_median_ms"].items():
        lines.append(f"| {name} | {ms:.0f} |")
    lines += _table("Throughput of `profile_many` (PTB-XL records, batch 32, JSON per profile)",
                    ["saliency", "records", "profiles", "refused", "failed", "seconds", "profiles/s", "peak RSS (MB)"],
                    [[f"top {r['saliency']}", r["records"], r["profiles"], r["refused"], r["failed"],
                      f"{r['seconds']:.1f}", f"{r['profiles_per_s']:.1f}", f"{r['peak_rss_mb']:.0f}"]
                     for r in result["throughput"]])
    if result.get("cli"):
        lines += _table("The command line: `ecgfm profile FILES --out DIR --no-saliency --jobs N`",
                        ["jobs", "records", "JSON files written", "seconds (whole command)", "profiles/s"],
                        [[r["jobs"], r["records"], r["written"], f"{r['seconds']:.1f}", f"{r['profiles_per_s']:.1f}"]
                         for r in result["cli"]])
        lines += ["", "Start-up (imports, model loading; with `--jobs`, each worker's too) is in the time. "
                  f"Load when these runs started: {result.get('cli_load', 'not recorded')}."]
    lines += ["", "Records are read from the shared PTB-XL folders (`records100` at 100 Hz, then "
              "`records500` at 500 Hz), so reading and resampling are part of the time. Refused "
              "records (quality or contract) are profiles too and are counted.", ""]
    return "\n".join(lines)


def _table(title: str, header: list[str], rows: list[list]) -> list[str]:
    """A section: its title and a Markdown table, the first column left-aligned, the others right."""
    lines = ["", f"## {title}", "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    return lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--saliency-records", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2, help="worker processes of the command-line run")
    parser.add_argument("--cli-only", action="store_true", help="only the command-line runs (the page keeps the rest)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
        return
    if args.quick:
        args.runs, args.records, args.saliency_records = 5, 64, 16
    out = args.out or (Path("/tmp/ecgfm-bench-profile") if args.quick else ROOT / "docs" / "benchmarks")
    load_before = load_note()
    with tempfile.TemporaryDirectory() as tmp:
        path, described = benchmark_model(Path(tmp) / "model")
        model = None if path is None else str(path)
        base = {"model": model, "threads": args.threads}
        if args.cli_only:
            result = json.loads((out / "profile.json").read_text())
        else:
            latency = {}
            for name, (top, html) in SETTINGS.items():
                latency[name] = run({**base, "mode": "latency", "saliency": top, "html": html, "runs": args.runs})
                print(f"latency {name}: median {latency[name]['median_ms']:.0f} ms", file=sys.stderr)
            stage = run({**base, "mode": "stages", "runs": args.runs})
            throughput = []
            for top, n in ((0, args.records), (TOP, args.saliency_records)):
                throughput.append(run({**base, "mode": "throughput", "saliency": top, "records": n}))
                print(f"throughput top {top}: {throughput[-1]['profiles_per_s']:.1f}/s", file=sys.stderr)
            result = {"machine": machine(), "model": described, "threads": args.threads,
                      "latency_record": str(RECORD.relative_to(ROOT)), "latency": latency, "stages": stage,
                      "throughput": throughput, "load_before": load_before}
        result["cli"], result["cli_load"] = [], load_note()
        for jobs in sorted({1, args.jobs}):
            result["cli"].append(cli_throughput(model, args.records, jobs))
            print(f"ecgfm profile --jobs {jobs}: {result['cli'][-1]['profiles_per_s']:.1f}/s", file=sys.stderr)
    result["load_after"] = load_note()
    write_results(out, "profile", result, page(result))


if __name__ == "__main__":
    main()
