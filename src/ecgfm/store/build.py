"""Building a corpus store from ECG sources: resumable, idempotent, parallel.

:func:`build_corpus` turns one or more dataset :class:`~ecgfm.store.adapters.Adapter` s into a
store in the layout of :mod:`ecgfm.store.format`::

    adapters --keys()--> work items (files) --chunks of part_size--> parts
    part: adapter.load(key) -> samples -> check_quality(raw) -> pipeline -> ShardWriter.commit
    all parts committed -> consolidate rows -> splits -> leakage + duplicate checks
                        -> manifest.parquet, errors.jsonl, builds.jsonl

**Store layout from the pipeline.** The store's leads are those of the pipeline's last
``select`` step and its rate that of the last ``resample`` step. A pipeline without a ``select``
step stores :data:`~ecgfm.leads.STANDARD_12`: each processed record is placed into those rows,
leads it lacks are masked (zeros, ``lead_mask`` False), leads outside them are dropped, and no
lead is derived after processing (a normalised lead III is not normalised I and II combined).
A pipeline without ``resample`` keeps each record's rate: ``store.json`` has ``fs: null`` and
the manifest's ``fs`` column holds the rate per row. A pipeline whose ``select`` step has
``missing="error"`` (the default of ``standard``) fails records that lack a lead and cannot
derive it; use ``standard:missing=mask`` for single-lead or two-lead sources (CinC 2017,
MIT-BIH).

**Resumable and idempotent.** A part is the unit of work and of commit. Each adapter's sorted
keys are cut into chunks of ``part_size``; a part is named ``<adapter>-<sha1 of its keys>``, so
the same keys always give the same part. A key is *done* once it appears in any committed
part's marker, whether it produced records or failed (failures are logged, not retried). On a
rerun a chunk none of whose keys is done runs under its original name (so a build that was
killed and resumed lays out exactly the parts of an uninterrupted one); the pending keys of
chunks that are partly done (new files that shifted the chunk boundaries of an appended
source) are pooled and cut into new parts. Files of parts that never committed (temporaries,
a shard without its marker) are deleted at the start of a run. Only one build may run on a
store at a time (an advisory lock on ``STORE/.lock``).

**Parallel.** ``workers`` processes on this machine (``concurrent.futures`` with the
``forkserver`` start method where available; ``workers=1`` runs in this process), or a Dask
distributed cluster when ``scheduler`` is given (its address, or a ``distributed.Client``);
Dask workers must see the store folder and the sources at the same paths. (As with any
``spawn``/``forkserver`` pool, a script that calls :func:`build_corpus` with ``workers > 1``
must do so under ``if __name__ == "__main__":``.) Every executor runs
the same part function on the same chunks, and the consolidated manifest is sorted by
``(source, record_id)``, so stores built with different worker counts or executors have
identical manifests.

**Manifest columns** (besides the array columns of :class:`~ecgfm.store.format.ShardWriter`):
``record_id``, ``patient_id`` (as the dataset writes it; the record id where unknown),
``patient_key`` (``<dataset>/<patient_id>``: what splits group by, so that patient 123 of one
dataset is not patient 123 of another), ``dataset`` (adapter name),
``source`` (file path), ``source_format``, ``key`` (the work item), ``fs_original`` (Hz),
``fs`` (Hz, stored), ``leads_present`` (the source's lead names), ``duration_s`` (of the
source record, s), ``age`` (years), ``sex``, ``labels`` (catalogue ids), ``report``,
``quality`` (codes of :func:`~ecgfm.quality.check_quality` on the raw record), ``quality_ok``,
``masked_samples`` (samples of the present leads the pipeline marked unobserved, e.g. padding
of a record shorter than the crop length: they are stored as zeros), ``native_split`` (the
dataset's own split, where it has one), the adapter's extra columns (``extra_<name>`` where
a name is one of the above), and ``split``
(``train``/``val``/``test``, assigned at consolidation by
:func:`ecgfm.store.splits.assign_splits`, keeping native splits and, when appending, the
splits of records already in the manifest).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgfm.errors import ECGError, ReadError
from ecgfm.leads import STANDARD_12
from ecgfm.store.format import (
    STORE_FORMAT,
    CorpusError,
    PartMarker,
    ShardWriter,
    committed_parts,
    read_parts,
    store_info,
    write_json_atomic,
    write_manifest,
)

if TYPE_CHECKING:
    import pandas as pd

    from ecgfm.preprocess import Pipeline
    from ecgfm.store.adapters import Adapter, Sample

DEFAULT_PIPELINE = "standard"
DEFAULT_FRACTIONS: Mapping[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}
DEFAULT_PART_SIZE = 256  # keys per part: ~256 x 12 x 5000 int16 = 30 MB shards for 10 s records
# Columns the builder writes itself; an adapter's extra of the same name becomes extra_<name>.
BUILDER_COLUMNS = (
    "record_id", "patient_id", "patient_key", "dataset", "source", "source_format", "key", "fs_original", "fs",
    "leads_present", "duration_s", "age", "sex", "labels", "report", "quality", "quality_ok",
    "masked_samples", "native_split", "split", "shard", "offset", "n_samples", "scale",
    "lead_mask",
)
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_TMP = re.compile(r"^\..+\.tmp-\d+$")


# -- the plan ---------------------------------------------------------------------------------


def store_layout(pipeline: Pipeline) -> tuple[tuple[str, ...], float | None]:
    """The store's leads and rate for ``pipeline``: its last ``select`` leads (else the
    standard 12) and its last ``resample`` rate in Hz (else None: the rate is kept per record)."""
    from ecgfm.preprocess import Resample, SelectLeads

    leads: tuple[str, ...] | None = None
    fs: float | None = None
    for step in pipeline.steps:
        if isinstance(step, SelectLeads):
            leads = tuple(step.leads)
        elif isinstance(step, Resample):
            fs = float(step.fs)
    return (leads or STANDARD_12), fs


def part_name(adapter_name: str, keys: Sequence[str]) -> str:
    """``<adapter>-<16 hex of sha1 over the keys>``: the same keys always name the same part."""
    digest = hashlib.sha1("\n".join(keys).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    safe = _SAFE.sub("_", adapter_name).strip("._") or "source"
    return f"{safe}-{digest}"


@dataclass(frozen=True)
class PartPlan:
    """One part to build: which adapter, its keys, its name."""

    adapter: int  # index into the build's adapters
    part: str  # the part name (file stem under shards/ and parts/)
    keys: tuple[str, ...]  # the work items it loads, sorted


def plan_parts(
    adapter_index: int, name: str, keys: Sequence[str], done: set[str], committed: set[str],
    part_size: int,
) -> tuple[list[PartPlan], int]:
    """Cut one adapter's keys into the parts still to build; also return how many keys are done.

    Chunks of ``part_size`` over the sorted keys keep their name when none of their keys is done
    (resuming reproduces an uninterrupted build); the pending keys of partly done chunks are
    pooled and cut again, so appending files to a source does not leave many tiny parts.
    """
    keys = sorted(set(keys))
    plans: list[PartPlan] = []
    pooled: list[str] = []
    n_done = 0
    for start in range(0, len(keys), part_size):
        chunk = keys[start:start + part_size]
        pending = [k for k in chunk if k not in done]
        n_done += len(chunk) - len(pending)
        if not pending:
            continue
        if len(pending) == len(chunk):
            name_ = part_name(name, chunk)
            if name_ not in committed:
                plans.append(PartPlan(adapter_index, name_, tuple(chunk)))
        else:
            pooled.extend(pending)
    for start in range(0, len(pooled), part_size):
        chunk = pooled[start:start + part_size]
        plans.append(PartPlan(adapter_index, part_name(name, chunk), tuple(chunk)))
    return plans, n_done


# -- the part task (runs in worker processes) ------------------------------------------------------


@dataclass
class BuildContext:
    """What every part task needs; sent once to each worker process (picklable)."""

    root: str  # the store folder
    adapters: tuple[Any, ...]  # the Adapter objects
    pipeline_json: str  # the pipeline's canonical JSON
    leads: tuple[str, ...]  # the store's leads
    fs: float | None  # the store's rate, or None when kept per record
    owner_pid: int | None = None  # the driver's process id when workers run on its machine
    _pipeline: Any = field(default=None, repr=False, compare=False)

    @property
    def pipeline(self) -> Pipeline:
        if self._pipeline is None:
            from ecgfm.preprocess import Pipeline

            self._pipeline = Pipeline.from_json(self.pipeline_json)
        return self._pipeline

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pipeline": None}


@dataclass(frozen=True)
class PartResult:
    """What a part task reports back: its marker's contents plus timing."""

    part: str
    n_keys: int
    n_records: int
    n_values: int
    errors: tuple[dict[str, Any], ...]
    seconds: float


def run_part(ctx: BuildContext, plan: PartPlan) -> PartResult:
    """Load, check, preprocess and write one part; commit it with its keys and errors.

    A key whose loading fails is logged as an error of that key; a sample that cannot be
    processed is logged with its record id; the other samples of the part are written.
    """
    t0 = time.perf_counter()
    adapter = ctx.adapters[plan.adapter]
    writer = ShardWriter(ctx.root, plan.part, ctx.leads)
    errors: list[dict[str, Any]] = []
    for key in plan.keys:
        try:
            samples = adapter.load(key)
        except Exception as exc:  # an unexpected error in one file must not stop the build
            errors.append(_error(key, None, exc))
            continue
        for sample in samples:
            try:
                row, signal, mask = prepare_sample(sample, ctx, adapter.name, key)
            except Exception as exc:
                errors.append(_error(key, getattr(sample, "record_id", None), exc))
                continue
            writer.add(row, signal, mask)
    if ctx.owner_pid is not None and not _alive(ctx.owner_pid):
        # The build that sent this task was killed: committing now could race a rerun that is
        # already cleaning up; the rerun builds this part itself.
        raise CorpusError(f"{ctx.root}: part {plan.part} abandoned, its build (pid {ctx.owner_pid}) is gone")
    marker = writer.commit(keys=plan.keys, errors=errors)
    return PartResult(plan.part, len(plan.keys), marker["n_records"], marker["n_values"],
                      tuple(errors), time.perf_counter() - t0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


# Set by the process pool's initializer: the context every task of this worker uses.
_WORKER_CONTEXT: BuildContext | None = None


def _init_worker(ctx: BuildContext) -> None:
    global _WORKER_CONTEXT
    _WORKER_CONTEXT = ctx
    _limit_threads()
    if ctx.owner_pid is not None:
        import threading

        threading.Thread(target=_exit_with_owner, args=(ctx.owner_pid,), daemon=True).start()


def _exit_with_owner(pid: int, every_s: float = 0.5) -> None:
    """End this worker process once the build that started it is gone (killed with -9, the
    pool's queues never close, and an orphaned worker would wait for tasks forever)."""
    while _alive(pid):
        time.sleep(every_s)
    os._exit(1)


def _run_in_worker(plan: PartPlan) -> PartResult:
    assert _WORKER_CONTEXT is not None, "worker started without a build context"
    return run_part(_WORKER_CONTEXT, plan)


def prepare_sample(
    sample: Sample, ctx: BuildContext, dataset: str, key: str,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """One sample -> (manifest row, float32 signal ``[L, n]`` in store lead order, lead mask ``[L]``).

    Quality is checked on the raw record (in mV), before the pipeline normalises it.
    """
    from ecgfm.quality import check_quality

    raw = sample.ecg
    quality = check_quality(raw)
    out = ctx.pipeline(raw)
    if out.leads != ctx.leads:
        out = out.select(ctx.leads, derive=False, missing="mask")
    if ctx.fs is not None and not math.isclose(out.fs, ctx.fs):
        raise CorpusError(f"{raw.name}: the pipeline produced {out.fs:g} Hz, the store holds {ctx.fs:g} Hz")
    if out.mask is None:
        lead_mask = np.ones(len(ctx.leads), bool)
        masked = 0
    else:
        lead_mask = out.mask.any(axis=1)
        masked = int((~out.mask[lead_mask]).sum())
    meta = raw.meta
    record_id = str(sample.record_id)
    patient = str(sample.patient_id or meta.patient_id or record_id)
    row: dict[str, Any] = {
        "record_id": record_id,
        "patient_id": patient,
        "patient_key": f"{dataset}/{patient}",
        "dataset": dataset,
        "source": meta.source_path or key,
        "source_format": meta.source_format,
        "key": key,
        "fs_original": float(raw.fs),
        "fs": float(out.fs),
        "leads_present": list(raw.leads),
        "duration_s": float(raw.duration),
        "age": None if meta.age is None else float(meta.age),
        "sex": meta.sex,
        "labels": [str(x) for x in sample.labels],
        "report": sample.report if sample.report is not None else meta.interpretation,
        "quality": sorted(quality.codes),
        "quality_ok": bool(quality.ok),
        "masked_samples": masked,
        "native_split": sample.split,
    }
    for name, value in dict(getattr(sample, "extra", {}) or {}).items():
        row[f"extra_{name}" if name in BUILDER_COLUMNS else name] = _scalar(value)
    return row, out.signal, lead_mask


def _scalar(value: Any) -> Any:
    """A manifest cell: numpy scalars to Python, containers to JSON text."""
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def _error(key: str, record_id: str | None, exc: BaseException) -> dict[str, Any]:
    problem = str(exc)
    reason = exc.problem if isinstance(exc, ReadError) else problem
    for prefix in (key, record_id, getattr(exc, "path", None)):
        if prefix and reason.startswith(f"{prefix}: "):
            reason = reason[len(prefix) + 2:]
    kind = type(exc).__name__
    if not isinstance(exc, ECGError):
        kind = f"unexpected {kind}"
    if key not in problem and (record_id is None or record_id not in problem):
        problem = f"{key}: {problem}"
    return {"key": key, "record_id": record_id, "kind": kind, "problem": problem, "reason": reason}


def failure_group(error: Mapping[str, Any]) -> str:
    """A short grouping key for an error: its kind and reason, without the numbers and the
    parenthesised details that differ from file to file."""
    reason = re.sub(r"\s*\([^)]*\)", "", str(error.get("reason", error.get("problem", ""))))
    reason = re.sub(r"\d+(?:\.\d+)?", "#", reason).strip()
    return f"{error.get('kind', 'error')}: {reason}"


# -- executors -----------------------------------------------------------------------------------


def _run_local(ctx: BuildContext, plans: Sequence[PartPlan]) -> Iterator[PartResult]:
    for plan in plans:
        yield run_part(ctx, plan)


def _run_pool(ctx: BuildContext, plans: Sequence[PartPlan], workers: int) -> Iterator[PartResult]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    methods = multiprocessing.get_all_start_methods()
    # forkserver: workers fork from a clean server process, not from this one (which may hold
    # threads: pyarrow's pool, the progress bar), and start fast with the modules preloaded.
    mp = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if "forkserver" in methods:
        mp.set_forkserver_preload(["ecgfm.store.build", "ecgfm.preprocess", "ecgfm.quality"])
    window = 2 * workers  # tasks in flight: enough to keep workers busy, no more
    from ecgfm.parallel import one_blas_thread_per_process

    with one_blas_thread_per_process(), ProcessPoolExecutor(
            workers, mp_context=mp, initializer=_init_worker, initargs=(ctx,)) as pool:
        todo = list(plans)[::-1]
        running: set[Any] = set()
        try:
            while todo or running:
                while todo and len(running) < window:
                    running.add(pool.submit(_run_in_worker, todo.pop()))
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield future.result()
        except BrokenProcessPool:
            raise CorpusError(
                f"{ctx.root}: a worker process died (out of memory, or killed); the parts "
                "committed so far are kept, rerun the build to finish"
            ) from None
        finally:
            for future in running:
                future.cancel()


def _limit_threads() -> None:
    """In a worker whose numpy was loaded before the variables were set (a forkserver started
    earlier): limit the loaded BLAS through threadpoolctl where it is installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(1)


def _run_dask(ctx: BuildContext, plans: Sequence[PartPlan], scheduler: Any) -> Iterator[PartResult]:
    from dask.distributed import Client, as_completed

    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        shared = client.scatter(ctx, broadcast=True, hash=False)
        n = max(sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()), 1)
        todo = list(plans)[::-1]
        running = as_completed()

        def submit() -> None:
            plan = todo.pop()
            running.add(client.submit(run_part, shared, plan, pure=False,
                                      key=f"ecgfm-part-{plan.part}-{time.time_ns()}"))

        for _ in range(min(2 * n, len(todo))):
            submit()
        for future in running:
            result = future.result()
            future.release()
            if todo:
                submit()
            yield result
    finally:
        if client is not scheduler:
            client.close()


# -- the build -----------------------------------------------------------------------------------


@dataclass
class BuildSummary:
    """What a build did, and the state of the store afterwards."""

    store: Path  # the store folder
    records: int  # records in the store after the build
    records_written: int  # records written by this run
    keys_total: int  # work items (files) in the sources
    keys_skipped: int  # already done by an earlier run (committed parts)
    keys_processed: int  # done by this run, including those that failed
    keys_failed: int  # work items of this run that failed entirely or in part
    failures: dict[str, int]  # failure group -> count of errors (this run)
    examples: dict[str, str]  # failure group -> one full error message
    parts_written: int  # parts committed by this run
    parts_total: int  # committed parts in the store
    bytes: int  # bytes on disk of the store (shards, parts, manifest)
    seconds: float  # wall time of this run
    quality_flagged: int  # records in the store with a blocking quality flag
    splits: dict[str, int]  # records per split in the store
    sources: list[dict[str, Any]] = field(default_factory=list)  # each adapter's describe()

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}

    def format(self) -> str:
        """A few lines for people: what was built, skipped and why."""
        rate = self.records_written / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"{self.store}: {self.records} records in {self.parts_total} parts, "
            f"{self.bytes / 1e6:.1f} MB",
            f"this run: {self.records_written} records from {self.keys_processed} files in "
            f"{self.parts_written} parts, {self.seconds:.1f} s ({rate:.1f} records/s); "
            f"{self.keys_skipped} files already done",
        ]
        if self.splits:
            lines.append("splits: " + ", ".join(f"{k} {v}" for k, v in sorted(self.splits.items())))
        if self.quality_flagged:
            lines.append(f"quality: {self.quality_flagged} records have a blocking flag "
                         "(kept, quality_ok False)")
        for source in self.sources:
            counts = {k: v for k, v in source.items() if isinstance(v, int) and not isinstance(v, bool)
                      and v and any(w in k for w in ("without", "passed", "skipped", "unmatched"))}
            if counts:
                lines.append(f"source {source.get('name')} {source.get('root', '')}: "
                             + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()))
        if self.failures:
            lines.append(f"skipped: {self.keys_failed} files with errors:")
            for group, count in sorted(self.failures.items(), key=lambda kv: (-kv[1], kv[0]))[:20]:
                lines.append(f"  {count:6d}  {group}")
                lines.append(f"          e.g. {self.examples[group][:300]}")
        return "\n".join(lines)


def build_corpus(
    adapters: Sequence[Adapter],
    out: str | os.PathLike[str],
    pipeline: Pipeline | str = DEFAULT_PIPELINE,
    *,
    workers: int | None = None,
    scheduler: Any = None,
    part_size: int = DEFAULT_PART_SIZE,
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
    progress: bool = True,
    on_error: Callable[[dict[str, Any]], None] | None = None,
) -> BuildSummary:
    """Build (or finish, or extend) the corpus store ``out`` from ``adapters``.

    Args:
        adapters: one :class:`~ecgfm.store.adapters.Adapter` per source (see
            :func:`~ecgfm.store.adapters.adapter_for`).
        out: the store folder; created if absent, resumed or extended if it exists.
        pipeline: a :class:`~ecgfm.preprocess.Pipeline` or a spec for
            :meth:`~ecgfm.preprocess.Pipeline.parse`; an existing store refuses another one.
        workers: worker processes (default: the CPU count; 1 runs in this process).
        scheduler: a Dask distributed scheduler address (or ``Client``); overrides ``workers``.
        part_size: work items (files) per part; a part is the unit of commit and of redoing.
        fractions: split fractions (default train 0.8, val 0.1, test 0.1) for records without a
            native split; with ``seed``, recorded in ``store.json`` and fixed for the store.
        seed: split seed.
        progress: show a progress bar on stderr when it is a terminal.
        on_error: called with each error dict (``key``, ``record_id``, ``kind``, ``problem``,
            ``reason``) as its part completes; default: print ``problem`` to stderr.

    Returns:
        A :class:`BuildSummary`.

    Raises:
        CorpusError: the store holds another pipeline or split setting, another build holds
            the store, a record id occurs twice, or patients cross splits.

    >>> from ecgfm.store.adapters import adapter_for                   # doctest: +SKIP
    >>> build_corpus([adapter_for(Path("ptb-xl"))], "corpus", "standard")  # doctest: +SKIP
    """
    from ecgfm.preprocess import Pipeline

    t0 = time.perf_counter()
    if isinstance(pipeline, str):
        pipeline = Pipeline.parse(pipeline)
    if part_size < 1:
        raise CorpusError(f"part_size must be at least 1, got {part_size}")
    fractions = dict(DEFAULT_FRACTIONS if fractions is None else fractions)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    leads, fs = store_layout(pipeline)
    report = on_error or _print_error
    with _store_lock(root):
        info = _open_or_create(root, pipeline, leads, fs, fractions, seed, part_size)
        _remove_uncommitted(root)
        markers = committed_parts(root)
        done = {k for m in markers for k in m.keys}
        committed = {m.part for m in markers}
        plans: list[PartPlan] = []
        keys_total = keys_skipped = 0
        for i, adapter in enumerate(adapters):
            keys = adapter.keys()
            adapter_plans, n_done = plan_parts(i, adapter.name, keys, done, committed, part_size)
            done.update(k for p in adapter_plans for k in p.keys)  # a key twice: first adapter
            plans.extend(adapter_plans)
            keys_total += len(set(keys))
            keys_skipped += n_done
        ctx = BuildContext(str(root), tuple(adapters), pipeline.to_json(), leads, fs)
        n_workers = max(1, min(workers or os.cpu_count() or 1, len(plans)))
        if scheduler is not None:
            results = _run_dask(ctx, plans, scheduler)
        elif n_workers == 1:
            results = _run_local(ctx, plans)
        else:
            ctx.owner_pid = os.getpid()
            results = _run_pool(ctx, plans, n_workers)

        written = processed = failed_keys = 0
        failures: Counter[str] = Counter()
        examples: dict[str, str] = {}
        with _progress_bar(sum(len(p.keys) for p in plans), progress) as advance:
            for result in results:
                written += result.n_records
                processed += result.n_keys
                failed_keys += len({e["key"] for e in result.errors})
                for error in result.errors:
                    group = failure_group(error)
                    failures[group] += 1
                    examples.setdefault(group, error["problem"])
                    report(error)
                advance(result.n_keys, written, failed_keys)

        markers = committed_parts(root)
        manifest = _consolidate(root, markers, fractions, seed, wrote=bool(plans))
        _write_errors(root, markers)
        described = [_describe(a) for a in adapters]
        # store.json lists every source ever built into the store, the latest description of each
        by_source = {(str(d.get("name")), str(d.get("root"))): d for d in info.get("sources", [])}
        by_source.update({(str(d.get("name")), str(d.get("root"))): json.loads(json.dumps(d, default=str))
                          for d in described})
        sources = [by_source[k] for k in sorted(by_source)]
        if sources != info.get("sources"):
            info["sources"] = sources
            write_json_atomic(root / "store.json", info)
        summary = BuildSummary(
            store=root,
            records=len(manifest),
            records_written=written,
            keys_total=keys_total,
            keys_skipped=keys_skipped,
            keys_processed=processed,
            keys_failed=failed_keys,
            failures=dict(failures),
            examples=examples,
            parts_written=len(plans),
            parts_total=len(markers),
            bytes=store_bytes(root),
            seconds=time.perf_counter() - t0,
            quality_flagged=int((~manifest["quality_ok"].astype(bool)).sum()) if len(manifest) else 0,
            splits={str(k): int(v) for k, v in manifest["split"].value_counts().items()} if len(manifest) else {},
            sources=described,
        )
        with open(root / "builds.jsonl", "a", encoding="utf-8") as fh:
            record = {
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "workers": None if scheduler is not None else n_workers,
                "scheduler": None if scheduler is None else str(getattr(scheduler, "scheduler", scheduler)),
                **{k: v for k, v in summary.to_dict().items() if k != "examples"},
            }
            fh.write(json.dumps(record, default=str) + "\n")
    return summary


def _describe(adapter: Adapter) -> dict[str, Any]:
    try:
        return dict(adapter.describe())
    except Exception:  # describing a source is informational only
        return {"name": getattr(adapter, "name", type(adapter).__name__)}


def _print_error(error: Mapping[str, Any]) -> None:
    print(f"error: {error['problem']}", file=sys.stderr)


def _open_or_create(
    root: Path, pipeline: Pipeline, leads: tuple[str, ...], fs: float | None,
    fractions: dict[str, float], seed: int, part_size: int,
) -> dict[str, Any]:
    """Create ``store.json``, or check that the existing one has this pipeline and split."""
    path = root / "store.json"
    split = {"fractions": fractions, "seed": seed}
    if not path.is_file():
        if any(not p.name.startswith(".") for p in root.iterdir()) and not (root / "parts").is_dir():
            raise CorpusError(f"{root}: folder is not empty and is not a corpus store; choose another --out")
        info = store_info(leads, fs, pipeline, split=split, part_size=part_size, sources=[])
        write_json_atomic(path, info)
        return info
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CorpusError(f"{path}: unreadable ({exc})") from None
    if info.get("format") != STORE_FORMAT:
        raise CorpusError(f"{path}: format is {info.get('format')!r}, expected {STORE_FORMAT!r}")
    if info.get("pipeline_hash") != pipeline.hash:
        from ecgfm.preprocess import Pipeline

        theirs = info.get("pipeline")
        spec = Pipeline.from_dict(theirs).to_spec() if theirs else None
        raise CorpusError(
            f"{root}: the store was built with pipeline {spec!r}, not {pipeline.to_spec()!r}; "
            "a store holds one preprocessing (use the same --pipeline, or another --out)"
        )
    recorded = info.get("split")
    if recorded is not None and (recorded.get("seed") != seed or
                                 {k: float(v) for k, v in recorded.get("fractions", {}).items()} != fractions):
        raise CorpusError(
            f"{root}: the store splits with fractions {recorded.get('fractions')} and seed "
            f"{recorded.get('seed')}, not {fractions} and {seed}; pass the same split settings"
        )
    return info


@contextlib.contextmanager
def _store_lock(root: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``root/.lock`` (released by the OS if we die)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one build at a time is up to the user
        yield
        return
    with open(root / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise CorpusError(f"{root}: another build is running on this store") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _remove_uncommitted(root: Path) -> list[Path]:
    """Delete what a crashed part left: temporaries, shards and rows without a commit marker."""
    shards, parts = root / "shards", root / "parts"
    markers = {p.stem for p in parts.glob("*.json")} if parts.is_dir() else set()
    removed = []
    for folder, suffix in ((shards, ".npy"), (parts, ".parquet")):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            if _TMP.match(path.name) or (path.suffix == suffix and path.stem not in markers):
                path.unlink(missing_ok=True)
                removed.append(path)
    for path in root.glob(".*.tmp-*"):
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _consolidate(
    root: Path, markers: Sequence[PartMarker], fractions: Mapping[str, float], seed: int,
    wrote: bool,
) -> pd.DataFrame:
    """Write ``manifest.parquet`` over the committed parts (when it does not already cover them)."""
    import pyarrow.parquet as pq

    path = root / "manifest.parquet"
    covered = sorted(m.part for m in markers if m.n_records)
    previous = None
    if path.is_file():
        recorded = json.loads((pq.read_schema(path).metadata or {}).get(b"ecgfm_parts", b"null"))
        previous = pq.read_table(path).to_pandas()
        if recorded == covered and not wrote:
            return previous
    with warnings.catch_warnings():
        # pandas warns that all-empty columns of some parts (no report in this dataset) will
        # take part in dtype inference some day; the manifest's columns are typed below anyway.
        warnings.simplefilter("ignore", FutureWarning)
        frame = read_parts(root, markers)
    if len(frame) == 0:
        frame["split"] = []
        write_manifest(root, frame, markers)
        return frame
    frame = frame.sort_values(["source", "record_id"], kind="stable").reset_index(drop=True)
    _check_duplicates(root, frame)
    frame["split"] = _assign(frame, previous, fractions, seed)
    from ecgfm.store.splits import check_leakage

    check_leakage(frame, patient_column="patient_key")
    frame = _uniform_columns(frame)
    write_manifest(root, frame, markers)
    return frame


def _check_duplicates(root: Path, frame: pd.DataFrame) -> None:
    dup = frame["record_id"].duplicated(keep=False)
    if dup.any():
        rows = frame[dup].sort_values("record_id")
        first = rows.iloc[0]
        other = rows[rows["record_id"] == first["record_id"]].iloc[1]
        raise CorpusError(
            f"{root}: record id {first['record_id']!r} occurs more than once: in "
            f"{first['source']} (part {first['shard']}) and in {other['source']} (part "
            f"{other['shard']}); {int(dup.sum())} rows share an id. Record ids must be unique "
            "across sources: remove one source's parts (parts/<part>.* and shards/<part>.npy) "
            "and rebuild it with distinct ids"
        )


def _assign(frame: pd.DataFrame, previous: pd.DataFrame | None, fractions: Mapping[str, float], seed: int) -> pd.Series:
    """Splits: native where the dataset has one, kept where an earlier manifest assigned one
    (appending never moves a record to another split), assigned otherwise."""
    import pandas as pd

    from ecgfm.store.splits import assign_splits

    fixed = frame["native_split"].astype(object).where(frame["native_split"].notna(), None)
    if previous is not None and "split" in previous.columns and len(previous):
        earlier = previous.set_index("record_id")["split"]
        earlier = earlier[~earlier.index.duplicated()]
        carried = frame["record_id"].map(earlier)
        fixed = fixed.where(fixed.notna(), carried)
    work = frame.copy()
    work["split"] = fixed.where(pd.notna(fixed), None)
    split = assign_splits(work, fractions=dict(fractions), seed=seed, patient_column="patient_key", keep_native=True)
    return pd.Series(np.asarray(split, dtype=object), index=frame.index, name="split")


def _uniform_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Make every object column writable to Parquet: a column whose non-null cells mix types
    (an extra that is a number in one dataset and text in another) becomes text."""
    for name in frame.columns:
        column = frame[name]
        if column.dtype != object:
            continue
        kinds = {type(v) for v in column if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if len(kinds) > 1 and not kinds <= {int, float, bool} and not kinds <= {np.ndarray, list}:
            frame[name] = column.map(lambda v: v if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    return frame


def _write_errors(root: Path, markers: Sequence[PartMarker]) -> None:
    """``errors.jsonl``: every error of every committed part, rewritten whole (so it matches
    the markers however often a build was interrupted)."""
    lines = [json.dumps({"part": m.part, **e}, ensure_ascii=False, default=str)
             for m in markers for e in m.errors]
    text = "".join(line + "\n" for line in lines)
    path = root / "errors.jsonl"
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def store_bytes(root: str | os.PathLike[str]) -> int:
    """Bytes on disk of a store's shards, part rows and markers, and manifest."""
    root = Path(root)
    total = 0
    for pattern in ("shards/*.npy", "parts/*.parquet", "parts/*.json", "manifest.parquet"):
        total += sum(p.stat().st_size for p in root.glob(pattern))
    return total


@contextlib.contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Callable[[int, int, int], None]]:
    """``advance(n_keys, records, failed)`` updates a rich bar on stderr (a terminal only)."""
    if not enabled or total == 0 or not sys.stderr.isatty():
        yield lambda n, records, failed: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]build-corpus"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
        TextColumn("{task.fields[records]} records, {task.fields[failed]} failed"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("build", total=total, records=0, failed=0)

        def advance(n: int, records: int, failed: int) -> None:
            bar.update(task, advance=n, records=records, failed=failed)

        yield advance
