"""Building corpus stores: layout, manifest columns, errors, executors, real datasets, the CLI.

Most tests use :class:`ToyAdapter`, a folder of synthetic 12-lead records written with
``ecgfm.io.write``; the real-data tests build from ``../shared/data`` (skipped where absent).
Resuming after a kill and appending are in ``test_store_resume.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conftest import data_path
from ecgfm.leads import STANDARD_12, derive_limb_leads
from ecgfm.record import ECG, Metadata
from ecgfm.store.adapters.base import Adapter, Sample
from ecgfm.store.build import (
    BuildContext,
    PartPlan,
    build_corpus,
    failure_group,
    part_name,
    plan_parts,
    run_part,
    store_layout,
)
from ecgfm.store.format import Corpus, CorpusError, committed_parts

FS = 500
SECONDS = 10


# -- a toy dataset ------------------------------------------------------------------------------


def synthetic_ecg(seed: int, fs: float = FS, seconds: float = SECONDS, leads: tuple[str, ...] = STANDARD_12) -> ECG:
    """A plausible 12-lead ECG in mV: Gaussian QRS and T waves at 60-90 bpm, consistent limb
    leads (III, aVR, aVL, aVF from I and II), a little noise."""
    rng = np.random.default_rng(seed)
    n = round(seconds * fs)
    t = np.arange(n) / fs
    rr = 60 / rng.uniform(60, 90)
    beat = np.zeros(n)
    for c in np.arange(0.3, seconds, rr):
        beat += np.exp(-0.5 * ((t - c) / 0.012) ** 2) - 0.15 * np.exp(-0.5 * ((t - c - 0.03) / 0.01) ** 2)
        beat += 0.25 * np.exp(-0.5 * ((t - c - 0.28) / 0.04) ** 2)
    gains = rng.uniform(0.4, 1.5, 8) * rng.choice([-1, 1], 8)
    i, ii = 0.6 * beat, 1.1 * beat + 0.05 * np.sin(2 * np.pi * 0.3 * t)
    limb = derive_limb_leads(i, ii)
    rows = {"I": i, "II": ii, **limb}
    for k, lead in enumerate(STANDARD_12[6:]):
        rows[lead] = gains[k] * beat
    signal = np.stack([rows[lead] for lead in leads]) + rng.normal(0, 0.01, (len(leads), n))
    return ECG(signal.astype(np.float32), fs, leads)


def write_toy(folder: Path, n: int, start: int = 0, prefix: str = "rec", **kwargs: Any) -> list[Path]:
    """``n`` synthetic records as ``<prefix><k>.npz`` (k = start ...), age and sex set."""
    from ecgfm.io.write import write

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(start, start + n):
        ecg = synthetic_ecg(k, **kwargs)
        meta = Metadata(record_id=f"{prefix}{k:04d}", age=40 + k % 30, sex="MF"[k % 2])
        paths.append(write(ecg.replace(meta=meta), folder / f"{prefix}{k:04d}.npz", "npz"))
    return paths


class ToyAdapter(Adapter):
    """Every ``.npz``/``.hea`` file of a folder is one record; two records per patient; every
    fifth record has native split ``test``. ``delay`` (s) slows each load (for kill tests)."""

    name = "toy"
    options = ("delay",)

    def __init__(self, root: str | Path, delay: float = 0.0) -> None:
        super().__init__(root)
        self.delay = delay

    def keys(self) -> list[str]:
        return sorted(str(p) for p in self.root.rglob("*") if p.suffix in (".npz", ".hea"))

    def load(self, key: str) -> list[Sample]:
        import ecgfm

        if self.delay:
            time.sleep(self.delay)
        ecg = ecgfm.read(key)
        stem = Path(key).stem
        k = int(stem[-4:]) if stem[-4:].isdigit() else 0
        return [Sample(
            record_id=stem, ecg=ecg, patient_id=f"p{stem[:-4]}{k // 2}", labels=("SR",) if k % 3 else ("AFIB",),
            report=f"record {k}", split="test" if k % 5 == 0 else None, extra={"index": k},
        )]


class FirstKeys(Adapter):
    """The first ``n`` keys of another adapter (real-data tests on a subset)."""

    def __init__(self, inner: Adapter, n: int) -> None:
        self.inner, self.n, self.root, self._cache = inner, n, inner.root, {}
        self.name = inner.name  # type: ignore[misc]

    def keys(self) -> list[str]:
        return self.inner.keys()[: self.n]

    def load(self, key: str) -> list[Sample]:
        return self.inner.load(key)

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "first_keys": self.n}


def manifest_of(store: Path) -> pd.DataFrame:
    return Corpus.open(store, verify="full").manifest


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """A manifest with list cells as tuples, so frames compare with ``equals``."""
    return frame.apply(lambda col: col.map(lambda v: tuple(v) if isinstance(v, (list, np.ndarray)) else v))


# -- layout and planning --------------------------------------------------------------------------


def test_store_layout_follows_the_pipeline() -> None:
    from ecgfm.preprocess import Pipeline

    assert store_layout(Pipeline.standard(fs=250, leads="I;II")) == (("I", "II"), 250.0)
    assert store_layout(Pipeline.parse("resample:fs=100|normalize")) == (STANDARD_12, 100.0)
    assert store_layout(Pipeline.parse("highpass:cutoff=0.5")) == (STANDARD_12, None)


def test_parts_are_named_by_content_and_resume_keeps_chunks() -> None:
    keys = [f"/d/{k:03d}.hea" for k in range(10)]
    plans, done = plan_parts(0, "toy", keys, set(), set(), 4)
    assert [p.keys for p in plans] == [tuple(keys[0:4]), tuple(keys[4:8]), tuple(keys[8:])]
    assert done == 0 and plans[0].part == part_name("toy", keys[0:4])
    assert part_name("toy", keys[:4]) != part_name("toy", keys[:3])
    # the middle part committed: the others keep their names
    again, done = plan_parts(0, "toy", keys, set(keys[4:8]), {plans[1].part}, 4)
    assert [p.part for p in again] == [plans[0].part, plans[2].part] and done == 4
    # new keys that shift the chunks: only the pending keys are planned, pooled
    more = sorted(keys + ["/d/000a.hea", "/d/005a.hea"])
    appended, done = plan_parts(0, "toy", more, set(keys), {p.part for p in plans}, 4)
    assert [p.keys for p in appended] == [("/d/000a.hea", "/d/005a.hea")] and done == 10


# -- building --------------------------------------------------------------------------------------


def test_build_writes_arrays_and_manifest(tmp_path: Path) -> None:
    paths = write_toy(tmp_path / "src", 12)
    summary = build_corpus([ToyAdapter(tmp_path / "src")], tmp_path / "store", "standard",
                           workers=1, part_size=5, progress=False)
    assert summary.records == summary.records_written == 12 and summary.parts_written == 3
    assert summary.keys_total == summary.keys_processed == 12 and summary.keys_failed == 0
    info = json.loads((tmp_path / "store" / "store.json").read_text())
    assert info["leads"] == list(STANDARD_12) and info["fs"] == 500.0
    assert info["sources"][0]["name"] == "toy" and info["split"]["seed"] == 0

    corpus = Corpus.open(tmp_path / "store", verify="full")
    m = corpus.manifest
    assert list(m["record_id"]) == sorted(p.stem for p in paths)  # sorted by source, record id
    row = m.iloc[3]
    assert row["dataset"] == "toy" and row["source"] == str(paths[3]) and row["source_format"] == "npz"
    assert row["fs_original"] == 500 and row["fs"] == 500 and row["duration_s"] == 10.0
    assert list(row["leads_present"]) == list(STANDARD_12) and row["age"] == 43 and row["sex"] == "F"
    assert list(row["labels"]) == ["AFIB"] and row["report"] == "record 3" and row["index"] == 3
    assert row["patient_id"] == "prec1" and row["quality_ok"] and row["masked_samples"] == 0
    assert set(m["split"]) <= {"train", "val", "test"}
    assert (m.loc[m["native_split"] == "test", "split"] == "test").all()
    # the stored record is the pipeline's output, to int16 precision
    from ecgfm import read
    from ecgfm.preprocess import Pipeline

    expected = Pipeline.standard()(read(paths[3])).signal
    got = corpus.signal(3)
    assert got.shape == (12, 5000)
    assert np.abs(got - expected).max() <= np.abs(expected).max() / 32767 * 0.51 + 1e-6
    assert corpus.ecg(3).meta.record_id == "rec0003"


def test_quality_is_checked_on_the_raw_record(tmp_path: Path) -> None:
    from ecgfm.io.write import write

    write_toy(tmp_path / "src", 2)
    flat = synthetic_ecg(7)
    signal = flat.signal.copy()
    signal[6] = 0.0  # V1 flat in mV: z-scoring afterwards would hide it
    write(ECG(signal, FS, STANDARD_12, Metadata(record_id="rec0007")), tmp_path / "src" / "rec0007.npz", "npz")
    build_corpus([ToyAdapter(tmp_path / "src")], tmp_path / "store", workers=1, progress=False)
    m = manifest_of(tmp_path / "store").set_index("record_id")
    assert "flat_lead" in list(m.loc["rec0007", "quality"]) and not m.loc["rec0007", "quality_ok"]
    assert m.loc["rec0000", "quality_ok"]


def test_missing_leads_are_masked_and_rates_kept_without_resample(tmp_path: Path) -> None:
    from ecgfm.io.write import write

    folder = tmp_path / "src"
    folder.mkdir()
    for k, (fs, leads) in enumerate([(300, ("II",)), (360, ("II", "V1")), (500, STANDARD_12)]):
        ecg = synthetic_ecg(k, fs=fs, leads=leads)
        write(ecg.replace(meta=Metadata(record_id=f"r{k:04d}")), folder / f"r{k:04d}.npz", "npz")
    # no select, no resample: the standard 12 leads, the rate of each record
    build_corpus([ToyAdapter(folder)], tmp_path / "a", "highpass:cutoff=0.5", workers=1, progress=False)
    corpus = Corpus.open(tmp_path / "a", verify="full")
    assert corpus.fs is None and list(corpus.manifest["fs"]) == [300.0, 360.0, 500.0]
    assert corpus.lead_mask.sum(axis=1).tolist() == [1, 2, 12]
    assert corpus.lead_mask[1, [1, 6]].all() and corpus.signal(1)[0].max() == 0  # lead I absent
    assert corpus.ecg(0).fs == 300 and list(corpus.manifest["leads_present"][1]) == ["II", "V1"]
    # standard with missing=mask: one rate, padded records counted as masked samples
    build_corpus([ToyAdapter(folder)], tmp_path / "b", "standard:missing=mask,seconds=12",
                 workers=1, progress=False)
    m = manifest_of(tmp_path / "b")
    assert list(m["fs"]) == [500.0] * 3 and list(m["n_samples"]) == [6000] * 3
    assert list(m["masked_samples"]) == [1000, 2000, 12000]
    # with missing=error the records that lack a lead fail, and are reported, not stored
    errors: list[dict[str, Any]] = []
    summary = build_corpus([ToyAdapter(folder)], tmp_path / "c", "standard", workers=1,
                           progress=False, on_error=errors.append)
    assert summary.records == 1 and summary.keys_failed == 2 and len(errors) == 2
    assert all("has no lead" in e["problem"] and e["kind"] == "ValidationError" for e in errors)


def test_a_corrupt_file_is_logged_and_skipped(tmp_path: Path) -> None:
    write_toy(tmp_path / "src", 4)
    (tmp_path / "src" / "broken.hea").write_text("this is not a header\n")
    (tmp_path / "src" / "zz_truncated.npz").write_bytes(b"PK\x03\x04garbage")
    errors: list[dict[str, Any]] = []
    summary = build_corpus([ToyAdapter(tmp_path / "src")], tmp_path / "store", workers=1,
                           part_size=2, progress=False, on_error=errors.append)
    assert summary.records == 4 and summary.keys_failed == 2 and summary.keys_processed == 6
    logged = [json.loads(line) for line in (tmp_path / "store" / "errors.jsonl").read_text().splitlines()]
    assert sorted(Path(e["key"]).name for e in logged) == ["broken.hea", "zz_truncated.npz"]
    assert all(e["problem"] and e["reason"] and e["part"] for e in logged)
    assert all(str(tmp_path / "src") in e["problem"] for e in logged)  # the message names the file
    assert sum(summary.failures.values()) == 2 and "files with errors" in summary.format()
    assert set(manifest_of(tmp_path / "store")["record_id"]) == {f"rec{k:04d}" for k in range(4)}
    # the failed files count as done: a rerun neither retries nor duplicates them
    again = build_corpus([ToyAdapter(tmp_path / "src")], tmp_path / "store", workers=1, part_size=2, progress=False)
    assert again.parts_written == 0 and again.keys_skipped == 6 and again.records == 4


class Boom(ToyAdapter):
    def load(self, key: str) -> list[Sample]:
        if "boom" in key:
            raise RuntimeError("adapter bug")
        return super().load(key)


def test_failing_keys_are_logged_and_the_rest_of_the_part_is_written(tmp_path: Path) -> None:
    write_toy(tmp_path / "src", 2)
    ctx = BuildContext(str(tmp_path / "store"), (Boom(tmp_path / "src"),), _standard_json(), STANDARD_12, 500.0)
    keys = ctx.adapters[0].keys()
    plan = PartPlan(0, "toy-x", ("/no/such/file.npz", keys[0], "/x/boom.npz", keys[1]))
    result = run_part(ctx, plan)
    assert result.n_records == 2 and [e["key"] for e in result.errors] == ["/no/such/file.npz", "/x/boom.npz"]
    missing, bug = result.errors
    assert missing["kind"] == "ReadError" and missing["problem"].startswith("/no/such/file.npz: ")
    assert bug["kind"] == "unexpected RuntimeError" and bug["problem"] == "/x/boom.npz: adapter bug"
    assert committed_parts(tmp_path / "store")[0].keys == plan.keys


def _standard_json() -> str:
    from ecgfm.preprocess import Pipeline

    return Pipeline.standard().to_json()


def test_failures_group_by_reason() -> None:
    a = {"kind": "ValidationError", "reason": "lead 3 has 12 non-finite samples (use with_gaps)"}
    b = {"kind": "ValidationError", "reason": "lead 7 has 4 non-finite samples (use with_gaps)"}
    assert failure_group(a) == failure_group(b) == "ValidationError: lead # has # non-finite samples"
    assert failure_group({"kind": "ReadError", "reason": "bad header"}) != failure_group(a)


def test_an_existing_store_refuses_another_pipeline_or_split(tmp_path: Path) -> None:
    write_toy(tmp_path / "src", 2)
    build_corpus([ToyAdapter(tmp_path / "src")], tmp_path / "store", "standard", workers=1, progress=False)
    with pytest.raises(CorpusError, match="built with pipeline 'select.*not 'select.*same --pipeline"):
        build_corpus([ToyAdapter(tmp_path / "src")], tmp_path / "store", "standard:fs=250", workers=1, progress=False)
    with pytest.raises(CorpusError, match="seed 0"):
        build_corpus([ToyAdapter(tmp_path / "src")], tmp_path / "store", "standard", seed=1, workers=1, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(CorpusError, match="not a corpus store"):
        build_corpus([ToyAdapter(tmp_path / "src")], tmp_path / "other", workers=1, progress=False)


def test_duplicate_record_ids_across_sources_are_refused(tmp_path: Path) -> None:
    write_toy(tmp_path / "a", 3)
    write_toy(tmp_path / "b", 2, start=2)  # rec0002 in both
    with pytest.raises(CorpusError, match=r"record id 'rec0002' occurs more than once: in .*a/rec0002.npz.*b/rec0002.npz"):
        build_corpus([ToyAdapter(tmp_path / "a"), ToyAdapter(tmp_path / "b")], tmp_path / "store",
                     workers=1, progress=False)


class OtherToy(ToyAdapter):
    """Another dataset whose patient ids collide with ToyAdapter's, all natively ``train``."""

    name = "other"

    def load(self, key: str) -> list[Sample]:
        sample = super().load(key)[0]
        k = int(Path(key).stem[-4:])
        return [Sample(sample.record_id, sample.ecg, f"prec{k // 2}", sample.labels, split="train")]


def test_patients_of_different_datasets_are_different_patients(tmp_path: Path) -> None:
    write_toy(tmp_path / "a", 4)  # rec0000 (patient prec0) natively test
    write_toy(tmp_path / "b", 4, prefix="oth")  # oth0000 claims patient prec0 too, natively train
    build_corpus([ToyAdapter(tmp_path / "a"), OtherToy(tmp_path / "b")], tmp_path / "store", workers=1, progress=False)
    m = manifest_of(tmp_path / "store").set_index("record_id")
    assert m.loc["rec0000", "patient_id"] == m.loc["oth0000", "patient_id"] == "prec0"
    assert (m.loc["rec0000", "patient_key"], m.loc["oth0000", "patient_key"]) == ("toy/prec0", "other/prec0")
    assert (m.loc["rec0000", "split"], m.loc["rec0001", "split"], m.loc["oth0000", "split"]) == ("test", "test", "train")


def test_a_second_build_on_the_same_store_is_refused(tmp_path: Path) -> None:
    import fcntl

    write_toy(tmp_path / "src", 1)
    (tmp_path / "store").mkdir()
    with open(tmp_path / "store" / ".lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        with pytest.raises(CorpusError, match="another build is running"):
            build_corpus([ToyAdapter(tmp_path / "src")], tmp_path / "store", workers=1, progress=False)


def test_a_tampered_shard_is_detected_on_open(tmp_path: Path) -> None:
    write_toy(tmp_path / "src", 3)
    build_corpus([ToyAdapter(tmp_path / "src")], tmp_path / "store", workers=1, progress=False)
    shard = next((tmp_path / "store" / "shards").glob("*.npy"))
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0xFF
    shard.write_bytes(bytes(data))
    Corpus.open(tmp_path / "store")  # sizes still agree
    with pytest.raises(CorpusError, match="checksum"):
        Corpus.open(tmp_path / "store", verify="full")


# -- executors: same store whatever runs it -------------------------------------------------------


def test_worker_processes_build_the_same_store(tmp_path: Path) -> None:
    write_toy(tmp_path / "src", 10)
    one = build_corpus([ToyAdapter(tmp_path / "src")], tmp_path / "one", workers=1, part_size=3, progress=False)
    two = build_corpus([ToyAdapter(tmp_path / "src")], tmp_path / "two", workers=2, part_size=3, progress=False)
    assert one.records == two.records == 10 and two.parts_written == 4
    assert comparable(manifest_of(tmp_path / "one")).equals(comparable(manifest_of(tmp_path / "two")))
    for a, b in zip(sorted((tmp_path / "one" / "shards").iterdir()), sorted((tmp_path / "two" / "shards").iterdir())):
        assert a.name == b.name and a.read_bytes() == b.read_bytes()


def test_a_dask_local_cluster_builds_the_same_store(tmp_path: Path) -> None:
    distributed = pytest.importorskip("dask.distributed")
    write_toy(tmp_path / "src", 8)
    build_corpus([ToyAdapter(tmp_path / "src")], tmp_path / "local", workers=1, part_size=3, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        summary = build_corpus([ToyAdapter(tmp_path / "src")], tmp_path / "dask",
                               scheduler=cluster.scheduler_address, part_size=3, progress=False)
    assert summary.records == 8 and summary.parts_written == 3
    assert comparable(manifest_of(tmp_path / "local")).equals(comparable(manifest_of(tmp_path / "dask")))


# -- real datasets ------------------------------------------------------------------------------

# adapter name: (folder, adapter options, first keys, pipeline, expected records)
REAL = {
    "ptbxl": ("ptb-xl", {"rate": 500}, 12, "standard", 12),
    "ludb": ("ludb", {}, 8, "standard", 8),
    "cinc": ("cinc2021", {}, 10, "standard", 10),
    "cinc2017": ("cinc2017", {}, 10, "standard:missing=mask", 10),
    "mitbih": ("mitdb", {"stride_s": 300}, 1, "standard:missing=mask", 6),  # 6 windows of record 101
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_datasets_build(tmp_path: Path, name: str) -> None:
    from ecgfm.labels import load_catalogue
    from ecgfm.store.adapters import adapter_for

    folder, options, n_keys, pipeline, n_records = REAL[name]
    adapter = adapter_for(data_path(folder), **options)
    assert adapter.name == name
    summary = build_corpus([FirstKeys(adapter, n_keys)], tmp_path / "store", pipeline, workers=1, progress=False)
    assert summary.keys_failed == 0, summary.format()
    corpus = Corpus.open(tmp_path / "store", verify="full")
    m = corpus.manifest
    assert len(m) == n_records and corpus.fs == 500 and corpus.leads == STANDARD_12
    assert (m["dataset"] == name).all() and (m["n_samples"] == 5000).all()
    assert not m["record_id"].duplicated().any() and m["patient_id"].notna().all()
    assert set(m["split"]) <= {"train", "val", "test"}
    known = {c.id for c in load_catalogue()}
    labels = [x for cell in m["labels"] for x in cell]
    assert labels and set(labels) <= known  # every dataset here is labelled with catalogue ids
    signal = corpus.signal(0)
    observed = signal[corpus.lead_mask[0]]
    assert np.isfinite(signal).all() and np.allclose(observed.mean(axis=1), 0, atol=0.05)  # z-scored
    if name == "ptbxl":
        assert (m["split"] == m["native_split"]).all()  # strat_fold 1-8/9/10
        assert m["report"].notna().all() and m["age"].notna().all() and set(m["sex"]) <= {"M", "F"}
        assert corpus.lead_mask.all()
    if name == "cinc2017":
        assert corpus.lead_mask.sum(axis=1).tolist() == [1] * 10 and (m["fs_original"] == 300).all()
        assert (m["duration_s"] >= 9).all() and (m["n_samples"] == 5000).all()
    if name == "mitbih":
        assert corpus.lead_mask.sum(axis=1).tolist() == [2] * 6 and (m["fs_original"] == 360).all()
        assert list(m["record_id"]) == [f"101_w{k:04d}" for k in range(6)]
        assert m["patient_id"].nunique() == 1


# -- the command line ---------------------------------------------------------------------------


def cli() -> Any:
    import typer

    from ecgfm.store.cli import app as corpus_app
    from ecgfm.store.cli import build_corpus_command

    app = typer.Typer()
    app.command("build-corpus")(build_corpus_command)
    app.add_typer(corpus_app, name="corpus")
    return app


def test_cli_builds_a_folder_with_a_labels_table_then_info_and_verify(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    write_toy(tmp_path / "src", 6)
    (tmp_path / "src" / "broken.hea").write_text("broken 1 500 5000\nbroken.dat 16 1000 16 0 0 0 0 II\n")  # no .dat
    (tmp_path / "src" / "notes.hea").write_text("not a header at all\n")  # not an ECG file: passed over
    table = pd.DataFrame({"record_id": [f"rec{k:04d}" for k in range(6)],
                          "labels": ["AFIB", "SR", "AFIB;CLBBB", "", "SR", "SR"],
                          "outcome_1y": [0, 1, 0, 0, 1, 0]})
    table.to_csv(tmp_path / "labels.csv", index=False)
    runner = CliRunner()
    args = ["build-corpus", str(tmp_path / "src"), "--out", str(tmp_path / "store"), "--workers", "1",
            "--labels", str(tmp_path / "labels.csv"), "--part-size", "3"]
    result = runner.invoke(cli(), args)
    assert result.exit_code == 1, result.output  # the broken header
    assert "broken.hea" in result.output and "6 records" in result.output
    m = manifest_of(tmp_path / "store").set_index("record_id")
    assert list(m.loc["rec0002", "labels"]) == ["AFIB", "CLBBB"] and m.loc["rec0001", "outcome_1y"] == 1
    assert m.loc["rec0003", "dataset"] == "folder"

    again = runner.invoke(cli(), [*args, "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout.splitlines()[0])["keys_skipped"] == 7

    other = runner.invoke(cli(), [*args[:-4], "--pipeline", "standard:fs=250"])
    assert other.exit_code == 1 and "error:" in other.output and "same --pipeline" in other.output

    info = runner.invoke(cli(), ["corpus", "info", str(tmp_path / "store"), "--json"])
    assert info.exit_code == 0, info.output
    d = json.loads(info.stdout)
    assert d["records"] == 6 and d["files_failed"] == 1 and d["labels"]["SR"] == 3 and d["datasets"] == {"folder": 6}
    text = runner.invoke(cli(), ["corpus", "info", str(tmp_path / "store")])
    assert "records   6 in 3 parts" in text.output and "files     7 done, 1 failed" in text.output

    ok = runner.invoke(cli(), ["corpus", "verify", str(tmp_path / "store")])
    assert ok.exit_code == 0 and "ok: 6 records in 3 parts" in ok.output
    shard = next((tmp_path / "store" / "shards").glob("*.npy"))
    shard.write_bytes(shard.read_bytes()[:-2])
    bad = runner.invoke(cli(), ["corpus", "verify", str(tmp_path / "store")])
    assert bad.exit_code == 1 and "error:" in bad.output and shard.stem in bad.output


def test_cli_options_are_scoped_by_dataset(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ecgfm.store.cli import parse_options

    assert parse_options(["rate=100", "mitbih.stride_s=60", "x.y=abc"]) == {
        None: {"rate": 100}, "mitbih": {"stride_s": 60}, "x": {"y": "abc"}}
    result = CliRunner().invoke(cli(), ["build-corpus", str(data_path("cinc2017")), "--out", str(tmp_path / "s"),
                                        "--option", "cinc2017.nonsense=1"])
    assert result.exit_code == 1 and "nonsense" in result.output
