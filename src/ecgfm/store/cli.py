"""``ecgfm build-corpus`` and ``ecgfm corpus info|verify``: building and inspecting corpus stores.

``build-corpus`` is resumable: rerun the same command after an interruption and it finishes the
store; rerun it with more sources and it adds them. Exit status: 0 when every file of this run
was stored, the number of files that failed otherwise (capped at 100, as the other commands do);
a fatal problem (another pipeline in the store, a duplicate record id, patients crossing
splits) prints ``error: ...`` and exits with 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

MAX_EXIT = 100

app = typer.Typer(help="Inspect and check corpus stores built by 'ecgfm build-corpus'.", no_args_is_help=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _literal(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if value is None or isinstance(value, (bool, int, float)) else text


def parse_options(items: list[str] | None) -> dict[str | None, dict[str, Any]]:
    """``["rate=100", "mitbih.stride_s=60"]`` -> ``{None: {"rate": 100}, "mitbih": {"stride_s": 60}}``."""
    out: dict[str | None, dict[str, Any]] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise typer.BadParameter(f"expected key=value or dataset.key=value, got {item!r}", param_hint="--option")
        scope, _, name = key.strip().rpartition(".")
        out.setdefault(scope or None, {})[name] = _literal(value.strip())
    return out


def make_adapters(
    sources: list[Path], dataset: str = "auto", labels: Path | None = None,
    options: dict[str | None, dict[str, Any]] | None = None,
) -> list[Any]:
    """One adapter per source folder; ``options[None]`` go to every source, ``options[name]``
    to the sources of dataset ``name``."""
    from ecgfm.store.adapters import adapter_for, detect_dataset

    options = options or {}
    adapters = []
    for source in sources:
        if not source.exists():
            raise _fail(f"{source}: no such file or folder")
        name = detect_dataset(source) if dataset == "auto" else dataset
        kwargs = {**options.get(None, {}), **options.get(name, {})}
        adapters.append(adapter_for(source, name, labels=labels, **kwargs))
    return adapters


def build_corpus_command(
    sources: Annotated[list[Path], typer.Argument(help="Dataset folders (PTB-XL, LUDB, CinC, MIT-BIH ... or any folder of ECG files), walked recursively.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The store folder (created, resumed or extended).")],
    pipeline: Annotated[str, typer.Option("--pipeline", "-p", help="Preprocessing: 'standard', 'standard:missing=mask' (for 1- and 2-lead sources), a compact spec or a JSON file. One per store.")] = "standard",
    labels: Annotated[Path | None, typer.Option("--labels", help="A labels table (CSV/Parquet) joined to a folder source by record id or file name: 'labels' column of ';'-separated catalogue ids or 0/1 columns; other columns kept. Build sources that carry their own labels in a separate run into the same store.")] = None,
    workers: Annotated[int | None, typer.Option("--workers", "-j", min=1, help="Worker processes (default: every CPU).")] = None,
    scheduler: Annotated[str | None, typer.Option("--scheduler", help="Run on a Dask distributed cluster at this address (tcp://host:8786); its workers must see the sources and the store at the same paths.")] = None,
    dataset: Annotated[str, typer.Option("--dataset", help="Adapter for every source (ptbxl, ludb, cinc, cinc2017, mitbih, cpsc2021, folder, ...); default: detected per source.")] = "auto",
    option: Annotated[list[str] | None, typer.Option("--option", help="Adapter option key=value (all sources) or dataset.key=value, e.g. ptbxl.rate=100, mitbih.stride_s=5. Repeatable.")] = None,
    part_size: Annotated[int, typer.Option(min=1, help="Files per part (the unit of commit and of resuming).")] = 256,
    split: Annotated[str, typer.Option(help="Split fractions train,val,test for records without a native split.")] = "0.8,0.1,0.1",
    seed: Annotated[int, typer.Option(help="Split seed.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Build a corpus store: read every source, preprocess, check quality, write int16 shards and a Parquet manifest.

    Rerun the same command to resume after an interruption, or with more sources to extend the
    store. Bad files are reported on stderr and in STORE/errors.jsonl; the rest is built.
    """
    from ecgfm.errors import ECGError
    from ecgfm.store.build import build_corpus

    try:
        values = [float(x) for x in split.split(",")]
    except ValueError:
        raise typer.BadParameter(f"expected three numbers like 0.8,0.1,0.1, got {split!r}", param_hint="--split") from None
    if len(values) != 3 or any(v < 0 for v in values) or sum(values) <= 0:
        raise typer.BadParameter(f"expected three non-negative fractions like 0.8,0.1,0.1, got {split!r}", param_hint="--split")
    fractions = dict(zip(("train", "val", "test"), values))
    try:
        from ecgfm.preprocess import Pipeline

        steps = Pipeline.parse(pipeline)
    except ECGError as exc:
        raise typer.BadParameter(str(exc), param_hint="--pipeline") from None
    try:
        adapters = make_adapters(sources, dataset, labels, parse_options(option))
        summary = build_corpus(adapters, out, steps, workers=workers, scheduler=scheduler,
                               part_size=part_size, fractions=fractions, seed=seed)
    except ECGError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), default=str))
        typer.echo(summary.format(), err=True)
    else:
        typer.echo(summary.format())
    if summary.keys_failed:
        raise typer.Exit(min(summary.keys_failed, MAX_EXIT))


def corpus_info(root: Path) -> dict[str, Any]:
    """What ``ecgfm corpus info`` reports, as a dict."""
    from collections import Counter

    from ecgfm.store.build import store_bytes
    from ecgfm.store.format import Corpus, committed_parts

    corpus = Corpus.open(root, verify=None)
    m = corpus.manifest
    parts = committed_parts(root)
    pipeline = corpus.pipeline
    out: dict[str, Any] = {
        "store": str(root),
        "records": len(m),
        "parts": len(parts),
        "bytes": store_bytes(root),
        "leads": list(corpus.leads),
        "fs": corpus.fs,
        "pipeline": None if pipeline is None else pipeline.to_spec(),
        "pipeline_hash": corpus.info.get("pipeline_hash"),
        "files_done": sum(len(p.keys) for p in parts),
        "files_failed": len({e.get("key") for p in parts for e in p.errors}),
        "consolidated": "split" in m.columns,
    }
    for column in ("dataset", "split"):
        if column in m.columns:
            out[f"{column}s"] = {str(k): int(v) for k, v in m[column].value_counts().items()}
    if "quality_ok" in m.columns and len(m):
        out["quality_blocked"] = int((~m["quality_ok"].astype(bool)).sum())
        codes = Counter(c for cell in m["quality"] for c in (cell if cell is not None else ()))
        out["quality_flags"] = dict(codes.most_common())
    if "labels" in m.columns and len(m):
        labels = Counter(c for cell in m["labels"] for c in (cell if cell is not None else ()))
        out["labels"] = dict(labels.most_common())
    if "duration_s" in m.columns and len(m):
        out["hours"] = float(m["duration_s"].sum() / 3600)
    return out


@app.command()
def info(
    store: Annotated[Path, typer.Argument(help="A corpus store folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object on stdout.")] = False,
) -> None:
    """Records, layout, pipeline, datasets, splits, quality and labels of a store."""
    from ecgfm.errors import ECGError

    try:
        d = corpus_info(store)
    except ECGError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(d))
        return
    fs = "per record" if d["fs"] is None else f"{d['fs']:g} Hz"

    def top(counts: dict[str, int], n: int = 10) -> str:
        shown = ", ".join(f"{k} {v}" for k, v in list(counts.items())[:n])
        return shown + (f", ... ({len(counts)} in all)" if len(counts) > n else "")

    lines = [
        d["store"],
        f"  records   {d['records']} in {d['parts']} parts, {d['bytes'] / 1e6:.1f} MB"
        + (f", {d['hours']:.3g} h of source ECG" if "hours" in d else ""),
        f"  layout    {len(d['leads'])} leads ({' '.join(d['leads'])}), {fs}, int16",
        f"  pipeline  {d['pipeline']}",
        f"  files     {d['files_done']} done, {d['files_failed']} failed (errors.jsonl)",
    ]
    if d.get("datasets"):
        lines.append(f"  datasets  {top(d['datasets'])}")
    if d.get("splits"):
        lines.append(f"  splits    {top(d['splits'])}")
    elif not d["consolidated"]:
        lines.append("  splits    none yet: the build did not finish (rerun build-corpus)")
    if "quality_blocked" in d:
        lines.append(f"  quality   {d['quality_blocked']} records with a blocking flag; flags: {top(d['quality_flags'], 6) or 'none'}")
    if d.get("labels"):
        lines.append(f"  labels    {top(d['labels'])}")
    typer.echo("\n".join(lines))


@app.command()
def verify(
    store: Annotated[Path, typer.Argument(help="A corpus store folder.")],
    full: Annotated[bool, typer.Option("--full/--quick", help="Checksum every shard (--full) or check sizes only.")] = True,
) -> None:
    """Check that the manifest and the shards agree (sizes, and checksums with --full).

    Exits 1 naming the part when they do not. Also reports an unfinished build (parts not in the
    manifest yet, files of parts that never committed).
    """
    import pyarrow.parquet as pq

    from ecgfm.errors import ECGError
    from ecgfm.store.format import Corpus, committed_parts

    try:
        corpus = Corpus.open(store, verify="full" if full else "sizes")
    except ECGError as exc:
        raise _fail(str(exc)) from None
    parts = committed_parts(store)
    notes = []
    path = store / "manifest.parquet"
    if path.is_file():
        recorded = json.loads((pq.read_schema(path).metadata or {}).get(b"ecgfm_parts", b"null"))
        if recorded != sorted(p.part for p in parts if p.n_records):
            notes.append("manifest.parquet does not cover the committed parts: rerun build-corpus to consolidate")
    else:
        notes.append("no manifest.parquet yet (the build did not finish): rerun build-corpus")
    marked = {p.part for p in parts}
    stray = [f for folder in ("shards", "parts") if (store / folder).is_dir()
             for f in (store / folder).iterdir() if f.name.split(".")[0] not in marked]
    if stray:
        notes.append(f"{len(stray)} file(s) of parts that never committed (removed by the next build)")
    keys = [k for p in parts for k in p.keys]
    if len(keys) != len(set(keys)):
        raise _fail(f"{store}: {len(keys) - len(set(keys))} file(s) are listed by more than one part")
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    how = "checksums" if full else "sizes"
    typer.echo(f"ok: {len(corpus)} records in {len(parts)} parts agree with the manifest ({how} checked)")
