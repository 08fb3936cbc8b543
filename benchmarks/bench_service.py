"""The profile service under bounded local load: throughput, p50/p99 latency, memory per worker.

The service (``ecgfm serve``'s app, with 1 and with 2 uvicorn workers) runs in its own process on a free
loopback port; a load generator in this process keeps ``N`` clients busy, each posting one of
the bundled PTB-XL records (its ``.hea`` and ``.dat``, a multipart upload, as a user's client
would; encoded once) to ``POST /v1/profile`` and waiting for the profile before sending the next,
on a new connection per request unless ``--keepalive``. Every
answer must be a 200 with ``status: "ok"``. For each backend (PyTorch, ONNX Runtime) and
``N`` in 1, 8 and 32:

- throughput: profiles completed per second over the timed window (after a warm-up);
- latency: p50 / p99 / max of request -> full JSON profile, as the client sees it;
- batching: the mean records per forward pass the service ran (from ``/v1/health``);
- memory: the worker's resident set size (RSS) after start-up and its peak under load.

The model is the bundled default model when ``ecgfm.models.default_model_path()`` holds one,
else a freshly initialised ``resnet1d18`` (100 Hz, 10 s, 12 leads, 90 outputs; random weights:
speed does not depend on them). The results say which. Profiles carry conditions, quality
flags and delineation measurements; no plot and no saliency (both are per-request options).

Nothing leaves the machine: server and clients talk over 127.0.0.1. On a 2-core machine the
load generator competes with the service for the CPU, so the figures are a lower bound.

    python benchmarks/bench_service.py [--seconds 15] [--clients 1,8,32] [--backends torch,onnx]
        [--workers 1,2] [--keepalive] [--out docs/benchmarks]

``--quick`` runs 4 s per point and writes to ``/tmp/ecgfm-bench-service`` unless ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _machine import load_note, machine, write_results

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "ptbxl"
TARGET_RATE, TARGET_P99_S, TARGET_CLIENTS = 50.0, 1.0, 8


def bench_model(folder: Path) -> tuple[Path, str]:
    """The default model if there is one, else a fresh resnet1d18 saved in ``folder``."""
    from ecgfm.models import default_model_path

    default = default_model_path()
    if (default / "config.json").is_file():
        return default, f"the bundled default model ({default.name})"
    import torch

    from ecgfm.models.heads import HeadSpec
    from ecgfm.models.portable import ModelCard, save_model
    from ecgfm.models.registry import create_encoder
    from ecgfm.preprocess import Pipeline

    torch.manual_seed(0)
    labels = [f"L{i:02d}" for i in range(90)]
    encoder = create_encoder("resnet1d18", num_outputs=len(labels)).eval()
    save_model(folder / "resnet1d18", encoder, head=HeadSpec("multilabel", len(labels), label_ids=labels),
               pipeline=Pipeline.standard(fs=100, seconds=10, notch=None),
               card=ModelCard(name="resnet1d18, random weights (benchmark)"), overwrite=True)
    return folder / "resnet1d18", "a freshly initialised resnet1d18 (100 Hz, 10 s, 12 leads, 90 outputs, random weights)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``uvicorn ecgfm.serve.app:app_from_env --factory`` in a child process."""

    def __init__(self, model: Path, backend: str, cache: Path, workers: int) -> None:
        self.port = free_port()
        self.workers = workers
        env = {**os.environ, "ECGFM_SERVE_MODEL": str(model), "ECGFM_SERVE_BACKEND": backend,
               "ECGFM_CACHE": str(cache), "PYTHONPATH": str(ROOT / "src")}
        if os.environ.get("BENCH_THREADS"):
            env["ECGFM_SERVE_THREADS"] = os.environ["BENCH_THREADS"]
        if workers > 1:  # as `ecgfm serve --workers N` does: each worker its share of the cores
            env["ECGFM_SERVE_MODEL_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "ecgfm.serve.app:app_from_env", "--factory",
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
             "--no-access-log", "--workers", str(workers)], env=env)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait(self, timeout: float = 300) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with {self.process.returncode}")
            try:
                if httpx.get(self.url + "/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the service did not start")

    def rss_mb(self) -> float:
        """Resident memory of one worker (the mean over workers when there are several), MiB."""
        import psutil

        parent = psutil.Process(self.process.pid)
        workers = [p for p in parent.children() if "multiprocessing" not in " ".join(p.cmdline())
                   or "spawn_main" in " ".join(p.cmdline())] if self.workers > 1 else [parent]
        sizes = [p.memory_info().rss for p in workers]
        return float(np.mean(sizes)) / 2**20 if sizes else 0.0

    def cpu_s(self) -> float:
        """CPU seconds (user + system) used so far by the service's processes."""
        import psutil

        parent = psutil.Process(self.process.pid)
        total = 0.0
        for p in [parent, *parent.children(recursive=True)]:
            times = p.cpu_times()
            total += times.user + times.system
        return total

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def uploads() -> list[tuple[bytes, dict[str, str]]]:
    """Each bundled record as a ready multipart body (its .hea and .dat) with its headers.

    Encoded once, so that the load generator, which shares the cores with the service, spends
    its time sending rather than re-encoding the same files for every request."""
    import httpx

    records = sorted(p.stem for p in EXAMPLES.glob("*.hea"))
    out = []
    for r in records:
        files = [("file", (f"{r}{ext}", (EXAMPLES / f"{r}{ext}").read_bytes())) for ext in (".hea", ".dat")]
        request = httpx.Request("POST", "http://localhost/v1/profile", files=files)
        out.append((request.read(), {"Content-Type": request.headers["Content-Type"]}))
    return out


async def load(url: str, clients: int, seconds: float, warmup: float, server: Server, keepalive: bool = False) -> dict:
    """``clients`` closed-loop clients for ``warmup + seconds``; only the last ``seconds`` count."""
    import httpx

    bodies = uploads()
    latencies: list[float] = []
    failures: list[str] = []
    answered = [0]
    peak = [server.rss_mb()]
    start = time.perf_counter()
    t0, t1 = start + warmup, start + warmup + seconds

    async def client(k: int, http: httpx.AsyncClient) -> None:
        i = k
        while time.perf_counter() < t1:
            sent = time.perf_counter()
            body, headers = bodies[i % len(bodies)]
            response = await http.post(url + "/v1/profile", content=body, headers=headers)
            done = time.perf_counter()
            i += 1
            answered[0] += 1
            if response.status_code != 200 or response.json().get("status") != "ok":
                failures.append(f"{response.status_code}: {response.text[:200]}")
            elif sent >= t0 and done <= t1:
                latencies.append(done - sent)

    async def watch() -> None:
        while time.perf_counter() < t1:
            peak[0] = max(peak[0], server.rss_mb())
            await asyncio.sleep(0.25)

    # keepalive=False: a new connection per request, so each request goes to whichever worker
    # accepts it; kept-alive connections stay with the worker that accepted them first.
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients if keepalive else 0)
    async with httpx.AsyncClient(limits=limits, timeout=120) as http:
        # With several workers these are the counts of whichever worker answers: indicative only.
        before = (await http.get(url + "/v1/health")).json()["batching"]
        cpu, own = server.cpu_s(), time.process_time()
        await asyncio.gather(watch(), *(client(k, http) for k in range(clients)))
        cpu, own = server.cpu_s() - cpu, time.process_time() - own
        after = (await http.get(url + "/v1/health")).json()["batching"]
    lat = np.array(latencies)
    passes = after["batches"] - before["batches"]
    return {
        "clients": clients, "completed": len(lat), "failures": len(failures),
        "failure_examples": failures[:3], "seconds": seconds,
        "throughput_per_s": len(lat) / seconds,
        "p50_ms": float(np.percentile(lat, 50) * 1000) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99) * 1000) if len(lat) else None,
        "max_ms": float(lat.max() * 1000) if len(lat) else None,
        "records_per_forward_pass": (after["records"] - before["records"]) / passes if passes > 0 else None,
        "peak_rss_mb": peak[0],
        "server_cpu_ms_per_profile": 1000 * cpu / answered[0] if answered[0] else None,
        "client_cpu_ms_per_profile": 1000 * own / answered[0] if answered[0] else None,
    }


def stages(model_dir: Path, repeats: int = 10) -> dict:
    """CPU milliseconds per record of each stage of a profile, in this process, one thread.

    What the service's throughput is made of: on C cores it cannot exceed
    ``C * 1000 / build_profile`` profiles/s whatever the batching does.
    """
    import torch
    from threadpoolctl import threadpool_limits

    import ecgfm
    from ecgfm.delineate import measure
    from ecgfm.models.portable import load_model
    from ecgfm.profile import build_profile
    from ecgfm.quality import check_quality
    from ecgfm.serve.profiler import render_plot

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    blas = threadpool_limits(limits=1, user_api="blas")  # as the service runs them
    model = load_model(model_dir)
    path = EXAMPLES / "00351_hr.hea"
    ecg = ecgfm.read(path)
    x, m = model.prepare(ecg)
    x8, m8 = x[None].repeat(8, 1, 1), m[None].repeat(8, 1)

    def cpu_ms(job, n: int = repeats, per: int = 1) -> float:
        job()
        start = time.process_time()
        for _ in range(n):
            job()
        return 1000 * (time.process_time() - start) / n / per

    out = {"read": cpu_ms(lambda: ecgfm.read(path)), "quality": cpu_ms(lambda: check_quality(ecg)),
           "prepare": cpu_ms(lambda: model.prepare(ecg)),
           "forward_batch_1": cpu_ms(lambda: model.forward(x[None], m[None])),
           "forward_batch_8": cpu_ms(lambda: model.forward(x8, m8), per=8),
           "measure": cpu_ms(lambda: measure(ecg)),
           "measure_beats": cpu_ms(lambda: measure(ecg, method="beats")),
           "build_profile": cpu_ms(lambda: build_profile(ecg, model, saliency=0).to_dict()),
           "plot": cpu_ms(lambda: render_plot(ecg), n=3)}
    torch.set_num_threads(threads)
    blas.restore_original_limits()
    return out


def run(args: argparse.Namespace) -> dict:
    import ecgfm

    work = Path(tempfile.mkdtemp(prefix="ecgfm-bench-service-"))
    model_dir, model_note = bench_model(work)
    results = []
    for backend, workers in [(b, w) for w in args.workers for b in args.backends]:
        server = Server(model_dir, backend, work / "cache", workers)
        try:
            started = time.perf_counter()
            server.wait()
            startup_s = time.perf_counter() - started
            idle = server.rss_mb()
            for clients in args.clients:
                point = asyncio.run(load(server.url, clients, args.seconds, args.warmup, server, args.keepalive))
                point.update(backend=backend, workers=workers, startup_s=startup_s, idle_rss_mb=idle)
                results.append(point)
                print(f"{backend:5s} x{workers} {clients:3d} clients: {point['throughput_per_s']:6.1f} profiles/s  "
                      f"p50 {_ms(point['p50_ms'])}  p99 {_ms(point['p99_ms'])}  "
                      f"batch {point['records_per_forward_pass'] or 0:4.1f}  RSS {point['peak_rss_mb']:.0f} MB  "
                      f"CPU/profile {_ms(point['server_cpu_ms_per_profile'])}, clients {_ms(point['client_cpu_ms_per_profile'])}"
                      + (f"  FAILURES {point['failures']}" if point["failures"] else ""), flush=True)
        finally:
            server.stop()
    target = [r for r in results if r["clients"] == TARGET_CLIENTS]
    return {"benchmark": "service", "machine": machine(), "load": load_note(), "model": model_note,
            "ecgfm": ecgfm.__version__, "seconds_per_point": args.seconds, "keepalive": args.keepalive,
            "warmup_s": args.warmup, "results": results, "stages_cpu_ms": stages(model_dir),
            "target": {"clients": TARGET_CLIENTS, "min_profiles_per_s": TARGET_RATE, "max_p99_s": TARGET_P99_S,
                       "met": {f"{r['backend']} x{r['workers']}": bool(
                           r["throughput_per_s"] >= TARGET_RATE and r["p99_ms"] is not None
                           and r["p99_ms"] <= TARGET_P99_S * 1000) for r in target}}}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def page(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Service throughput and latency", "",
        "`python benchmarks/bench_service.py` (see its docstring for the method). The service, with 1 "
        "and with 2 uvicorn workers, serves `POST /v1/profile` over loopback; closed-loop clients each "
        "upload a bundled PTB-XL "
        "record (.hea + .dat) and wait for its full JSON profile (conditions, quality, measurements; "
        "no plot, no saliency) before sending the next.", "",
        f"- Model: {result['model']}",
        f"- Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; {result['load']}",
        f"- {result['seconds_per_point']:g} s timed per point after {result['warmup_s']:g} s of warm-up; "
        "the load generator runs on the same cores as the service (its CPU per profile is a column below)",
        "- " + ("Clients keep their connections (`--keepalive`): each stays with the worker that accepted it, so "
                "with 2 workers the split of 8 clients can be uneven and throughput varies from run to run."
                if result.get("keepalive") else
                "Each request opens a new connection, so it goes to whichever worker accepts it (with kept-alive "
                "connections, `--keepalive`, each client stays with one worker and 8 clients may split 6/2: "
                "measured 23-52 profiles/s for PyTorch with 2 workers, against 48-49 with new connections)."),
        "", "| backend | workers | clients | profiles/s | p50 | p99 | max | records per forward pass | "
        "RSS per worker, idle / peak MiB | server CPU per profile | load generator CPU per profile | failures |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["results"]:
        lines.append(f"| {r['backend']} | {r['workers']} | {r['clients']} | {r['throughput_per_s']:.1f} | "
                     f"{_ms(r['p50_ms'])} | {_ms(r['p99_ms'])} | {_ms(r['max_ms'])} | "
                     f"{r['records_per_forward_pass'] or 0:.1f} | "
                     f"{r['idle_rss_mb']:.0f} / {r['peak_rss_mb']:.0f} | {_ms(r['server_cpu_ms_per_profile'])} | "
                     f"{_ms(r.get('client_cpu_ms_per_profile'))} | {r['failures']} |")
    st = result["stages_cpu_ms"]
    cores = m["cores"] or 1
    lines += ["", "Where a profile's time goes (CPU ms per record, one thread, in-process; "
              "`forward` per record at batch 1 and 8):", "",
              "| " + " | ".join(st) + " |", "|" + "---:|" * len(st),
              "| " + " | ".join(f"{v:.1f}" for v in st.values()) + " |", "",
              f"`build_profile` is the whole profile without HTTP; at {st['build_profile']:.0f} ms CPU each, "
              f"{cores} cores cannot give more than {cores * 1000 / st['build_profile']:.0f} profiles/s "
              "however requests are batched. The column *server CPU per profile* above is what the "
              "service's processes spent per answered request (HTTP, multipart, staging, JSON "
              "included; warm-up requests counted). *Records per forward pass* comes from "
              "`/v1/health`, of one worker when there are two. `measure` is what the profile runs (the "
              "median-beat route); `measure_beats` the beat-by-beat route, for comparison. Every stage runs "
              "with one BLAS thread, as the service sets it (`ServiceLimits.numeric_threads`)."]
    t = result["target"]
    met = ", ".join(f"{k}: {'met' if v else 'not met'}" for k, v in t["met"].items())
    lines += ["", f"Target: at least {t['min_profiles_per_s']:g} profiles/s with p99 under "
                  f"{t['max_p99_s']:g} s at {t['clients']} clients ({met}).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--backends", default="torch,onnx")
    parser.add_argument("--workers", default="1,2", help="uvicorn worker processes, e.g. 1,2")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keepalive", action="store_true",
                        help="clients keep their connection (each stays with one worker) instead of one per request")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    args.backends = [b.strip() for b in args.backends.split(",")]
    args.workers = [int(w) for w in args.workers.split(",")]
    if args.quick:
        args.seconds, args.warmup = 4.0, 1.0
    out = args.out or (Path("/tmp/ecgfm-bench-service") if args.quick else ROOT / "docs" / "benchmarks")
    result = run(args)
    write_results(out, "service", result, page(result))
    print(json.dumps(result["target"]))


if __name__ == "__main__":
    main()
