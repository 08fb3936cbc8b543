"""Dataset adapters (ecgfm.store.adapters) on the real records in ../shared/data."""

from __future__ import annotations

import pickle
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import ecgfm
from conftest import data_path
from ecgfm.errors import ECGError, ReadError, ValidationError
from ecgfm.io.wfdb import read_annotations
from ecgfm.labels import load_catalogue, map_mitbih_beats
from ecgfm.store.adapters import (
    ADAPTERS,
    Adapter,
    FolderAdapter,
    Sample,
    adapter_for,
    detect_dataset,
)


def by_name(adapter: Adapter, *names: str) -> list[str]:
    """The adapter's keys whose file name is one of ``names`` (in that order)."""
    keys = {Path(k).name: k for k in adapter.keys()}
    return [keys[n] for n in names]


def one(adapter: Adapter, name: str) -> Sample:
    samples = adapter.load(by_name(adapter, name)[0])
    assert len(samples) == 1
    return samples[0]


def assert_catalogue_ids(samples: list[Sample]) -> None:
    cat = load_catalogue()
    for s in samples:
        assert all(i in cat for i in s.labels), (s.record_id, s.labels)


# -- detection and the registry ---------------------------------------------------------------------


@pytest.mark.parametrize(("folder", "name"), [
    ("ptb-xl", "ptbxl"), ("cinc2021", "cinc"), ("cinc2017", "cinc2017"), ("ludb", "ludb"),
    (("ludb", "data"), "ludb"), ("mitdb", "mitbih"), ("cpsc2019", "cpsc2019"), ("cpsc2021", "cpsc2021"),
    ("formats", "folder"), (("formats", "edf"), "folder"),
])
def test_detect_dataset(folder: str | tuple[str, ...], name: str) -> None:
    parts = (folder,) if isinstance(folder, str) else folder
    assert detect_dataset(data_path(*parts)) == name


def test_adapter_for_refuses_unknown_names_options_and_misplaced_labels(tmp_path: Path) -> None:
    ptbxl = data_path("ptb-xl")
    assert set(ADAPTERS) == {"ptbxl", "cinc", "cinc2017", "ludb", "mitbih", "cpsc2018", "cpsc2019", "cpsc2021", "folder"}
    assert adapter_for(ptbxl, rate=100).describe()["rate"] == 100
    with pytest.raises(ValidationError, match="unknown dataset 'nope'"):
        adapter_for(ptbxl, dataset="nope")
    with pytest.raises(ValidationError, match=r"ptbxl adapter: .*'window_s'.*options: rate, min_likelihood, groups"):
        adapter_for(ptbxl, window_s=5)
    with pytest.raises(ValidationError, match="rate must be 500, 100 or 'best'"):
        adapter_for(ptbxl, rate=250)
    with pytest.raises(ValidationError, match="labels= is for the folder adapter"):
        adapter_for(ptbxl, labels=tmp_path / "x.csv")
    with pytest.raises(ReadError, match="dataset folder not found"):
        adapter_for(tmp_path / "absent", dataset="ludb")


def test_samples_refuse_non_scalar_extras_and_unknown_splits() -> None:
    ecg = ecgfm.ECG(np.zeros((1, 100)), 100, ("I",))
    with pytest.raises(ValidationError, match="extra column 'peaks' holds list"):
        Sample("r1", ecg, extra={"peaks": [1, 2]})
    with pytest.raises(ValidationError, match="split 'dev'"):
        Sample("r1", ecg, split="dev")


# -- PTB-XL -------------------------------------------------------------------------------------------


def test_ptbxl_labels_fold_split_patient_and_report() -> None:
    adapter = adapter_for(data_path("ptb-xl"), rate=500)
    keys = adapter.keys()
    assert len(keys) == 500 + 1498 and keys == sorted(keys)  # rows with a 500 Hz file
    assert adapter.describe()["rows_without_file_at_rate"] == 359
    best = adapter_for(data_path("ptb-xl")).keys()  # rate="best": every record once
    assert len(best) == 2357 and sum(k.endswith("_lr.hea") for k in best) == 359
    first = one(adapter, "00001_hr.hea")
    assert first.record_id == "00001_hr" and first.patient_id == "15709"
    assert first.labels == ("NORM", "LVOLT", "SR")  # {'NORM': 100.0, 'LVOLT': 0.0, 'SR': 0.0}
    assert first.split == "train" and first.extra["strat_fold"] == 3
    assert first.report == "sinusrhythmus periphere niederspannung"
    assert (first.ecg.meta.age, first.ecg.meta.sex, first.ecg.fs, first.ecg.n_samples) == (56.0, "F", 500.0, 5000)
    assert first.extra["superdiagnostic"] == "NORM" and first.extra["form"] == "LVOLT"
    val, test = one(adapter, "00008_hr.hea"), one(adapter, "00009_hr.hea")
    assert (val.split, val.extra["strat_fold"], val.labels) == ("val", 9, ("IMI", "ABQRS", "SR"))
    assert val.extra["superdiagnostic"] == "MI" and val.ecg.meta.sex == "M"
    assert (test.split, test.extra["strat_fold"]) == ("test", 10)
    old = one(adapter, "00932_hr.hea")  # PTB-XL writes 300 for "90 or older"
    assert old.ecg.meta.age == 90.0 and old.extra["age_censored"] is True
    flac = one(adapter, "01024_hr.hea")  # format 516 (FLAC), two signal files
    assert flac.labels == ("CRBBB", "SR") and flac.ecg.n_leads == 12
    strict = adapter_for(data_path("ptb-xl"), min_likelihood=50)
    assert one(strict, "00008_hr.hea").labels == ()  # IMI at 35 %, the rest at 0


def test_ptbxl_at_100_hz_and_unknown_keys() -> None:
    adapter = adapter_for(data_path("ptb-xl"), rate=100)
    assert len(adapter.keys()) == 500 + 359
    sample = one(adapter, "00001_lr.hea")
    assert sample.record_id == "00001_lr" and sample.ecg.fs == 100 and sample.ecg.n_samples == 1000
    with pytest.raises(ReadError, match="99999_lr.hea: not a record listed"):
        adapter.load("/nowhere/99999_lr.hea")


# -- CinC -------------------------------------------------------------------------------------------


def test_cinc2021_dx_codes_to_catalogue_ids() -> None:
    adapter = adapter_for(data_path("cinc2021"))
    assert len(adapter.keys()) == 50
    e = one(adapter, "E07500.hea")  # Dx: 67741000119109,426177001
    assert e.labels == ("LAO/LAE", "SBRAD") and e.patient_id is None and e.split is None
    assert e.extra == {"dx": "67741000119109;426177001", "unmapped": "", "source_db": "georgia"}
    assert (e.ecg.meta.age, e.ecg.meta.sex) == (78.0, "M")
    hr = one(adapter, "HR06000.hea")  # Dx: 164934002 (T wave abnormal), 426783006 (sinus rhythm)
    assert hr.labels == ("TAB_", "SR") and hr.extra["source_db"] == "ptbxl"
    js = one(adapter, "JS20000.hea")  # Dx: 284470004,427084000,698252002,55930002
    assert js.labels == ("PAC", "STACH", "IVCD", "NST_") and js.extra["source_db"] == "chapman_ningbo"


def test_cinc_unknown_codes_are_kept_not_dropped(tmp_path: Path) -> None:
    src = data_path("cinc2021")
    for suffix in (".hea", ".mat"):
        shutil.copy(src / f"E07500{suffix}", tmp_path / f"E07500{suffix}")
    hea = tmp_path / "E07500.hea"
    hea.write_text(hea.read_text().replace("# Dx: 67741000119109,426177001", "# Dx: 67741000119109,999999999"))
    sample = adapter_for(tmp_path, dataset="cinc").load(str(hea))[0]
    assert sample.labels == ("LAO/LAE",) and sample.extra["unmapped"] == "999999999"


def test_cinc2017_classes() -> None:
    adapter = adapter_for(data_path("cinc2017"))
    keys = adapter.keys()
    assert len(keys) == 100 and adapter.unmatched() == {"files_without_row": [], "rows_without_file": []}
    expected = {"A00001.hea": ("SR", "N"), "A00004.hea": ("AFIB", "A"), "A00005.hea": ("OTHER_RHYTHM", "O")}
    for name, (label, letter) in expected.items():
        s = one(adapter, name)
        assert s.labels == (label,) and s.extra["cinc2017_class"] == letter
        assert s.ecg.leads == ("I",) and s.ecg.fs == 300
    counts = Counter(s.labels for k in keys[:40] for s in adapter.load(k))
    assert sum(counts.values()) == 40 and set(counts) <= {("SR",), ("AFIB",), ("OTHER_RHYTHM",), ("NOISE",)}


# -- LUDB -------------------------------------------------------------------------------------------


def test_ludb_header_diagnoses() -> None:
    adapter = adapter_for(data_path("ludb"))
    assert len(adapter.keys()) == 200
    s = one(adapter, "1.hea")
    assert set(s.labels) == {"SBRAD", "LAD", "LVH", "LVS", "NSSTTA"} and s.extra["unmapped"] == ""
    assert s.report.startswith("Rhythm: Sinus bradycardia.")
    assert (s.ecg.meta.age, s.ecg.meta.sex, s.ecg.n_leads, s.ecg.fs) == (51.0, "F", 12, 500)
    samples = [x for k in adapter.keys()[:20] for x in adapter.load(k)]
    assert_catalogue_ids(samples)
    assert all(x.labels for x in samples) and len({x.record_id for x in samples}) == 20


# -- MIT-BIH ------------------------------------------------------------------------------------------


def test_mitbih_windows_labels_and_beat_counts() -> None:
    adapter = adapter_for(data_path("mitdb"))
    assert [Path(k).stem for k in adapter.keys()] == ["101", "106", "119", "203"]
    k101, k203 = by_name(adapter, "101.hea", "203.hea")
    windows = adapter.load(k101)
    assert len(windows) == 650000 // 3600  # 10 s windows, the trailing 0.56 s dropped
    w = windows[3]
    assert w.record_id == "101_w0003" and w.patient_id == "101" and w.ecg.n_samples == 3600
    assert w.extra["start"] == 3 * 3600 and w.extra["window_start_s"] == 30.0
    assert np.array_equal(w.ecg.signal, ecgfm.read(k101).signal[:, 3 * 3600:4 * 3600])
    assert all(x.labels[0] == "SR" for x in windows)  # record 101 is sinus rhythm throughout
    # 101 has 3 APCs: exactly the windows holding one are labelled PAC and show class S
    assert sum("PAC" in x.labels for x in windows) == sum(x.extra["n_S"] for x in windows) == 3
    assert all(("PAC" in x.labels) == ("S" in x.extra["aami_classes"].split(";")) for x in windows)
    in_windows = sum(x.extra["n_beats"] for x in windows)
    ann = read_annotations(k101)
    beats = np.array([c is not None for c in map_mitbih_beats(ann.symbol).classes])
    assert in_windows == int((beats & (ann.sample < len(windows) * 3600)).sum())
    afib = adapter.load(k203)
    labels = Counter(label for x in afib for label in x.labels)
    assert labels["AFIB"] > 100 and labels["AFLT"] > 10 and labels["PVC"] > 100
    assert all(x.patient_id == "203" for x in afib)
    strided = adapter_for(data_path("mitdb"), window_s=5, stride_s=2.5).load(k101)
    assert len(strided) == (650000 - 1800) // 900 + 1 and strided[1].extra["start"] == 900


def test_mitbih_beats_have_the_aami_class_of_their_symbol() -> None:
    adapter = adapter_for(data_path("mitdb"), mode="beats")
    (k203,) = by_name(adapter, "203.hea")
    beats = adapter.load(k203)
    ann = read_annotations(k203)
    symbol_at = dict(zip(ann.sample.tolist(), ann.symbol))
    aami = {"N": "N", "L": "N", "R": "N", "A": "S", "a": "S", "V": "V", "F": "F", "Q": "Q", "/": "Q"}
    for b in beats:
        assert symbol_at[b.extra["sample"]] == b.extra["symbol"]
        assert b.extra["aami_class"] == aami[b.extra["symbol"]]
        assert b.ecg.n_samples == 90 + 162  # 0.25 s before and 0.45 s after the R peak at 360 Hz
    counts = Counter(b.extra["aami_class"] for b in beats)
    # The database directory counts for 203 (N 2529, S 2, V 444, F 1, Q 4), less beats too close
    # to either end of the record for a whole segment.
    directory = {"N": 2529, "S": 2, "V": 444, "F": 1, "Q": 4}
    assert all(0 <= directory[c] - counts[c] <= 2 for c in directory)
    v = next(b for b in beats if b.extra["symbol"] == "V")
    assert "PVC" in v.labels and v.labels[0] in {"AFIB", "AFLT", "VTACH", "VTRIG"}
    r = v.extra["sample"]
    assert np.array_equal(v.ecg.signal, ecgfm.read(k203).signal[:, r - 90:r + 162])
    assert v.record_id.startswith("203_b") and len(v.record_id) == len("203_b000123")


def test_mitbih_patient_table_joins_201_and_202(tmp_path: Path) -> None:
    src = data_path("mitdb")
    for suffix in (".hea", ".dat", ".atr"):
        shutil.copy(src / f"101{suffix}", tmp_path / f"202{suffix}")
    hea = tmp_path / "202.hea"
    hea.write_text(hea.read_text().replace("101", "202"))
    windows = adapter_for(tmp_path, dataset="mitbih").load(str(hea))
    assert windows[0].record_id == "202_w0000" and {w.patient_id for w in windows} == {"201"}


# -- CPSC -----------------------------------------------------------------------------------------------


def test_cpsc2021_records_and_windows() -> None:
    adapter = adapter_for(data_path("cpsc2021"))
    assert len(adapter.keys()) == 18
    (key,) = by_name(adapter, "data_101_6.hea")
    rec = adapter.load(key)[0]
    assert rec.record_id == "data_101_6" and rec.patient_id == "101"
    assert set(rec.labels) == {"PAF", "AFIB", "SR"} and rec.extra["cpsc2021_class"] == "paroxysmal atrial fibrillation"
    assert rec.extra["n_af_episodes"] >= 1 and 0 < rec.extra["af_fraction"] < 1
    windows = adapter_for(data_path("cpsc2021"), mode="windows").load(key)
    assert len(windows) == 22355 // 2000 and windows[0].ecg.n_samples == 2000
    assert windows[0].record_id == "data_101_6_w0000" and windows[0].patient_id == "101"
    assert windows[0].labels == ("SR",)  # the first AF episode starts at sample 3132
    assert all(("AFIB" in w.labels) == (w.extra["af_fraction"] > 0) for w in windows)
    patients = {adapter.load(k)[0].patient_id for k in adapter.keys()}
    assert patients == {"101", "21", "35", "84", "8", "92"}


def test_cpsc2019_records_carry_their_r_peaks() -> None:
    adapter = adapter_for(data_path("cpsc2019"))
    assert len(adapter.keys()) == 50 and all("/data/" in k for k in adapter.keys())
    s = one(adapter, "data_00014.mat")
    assert s.labels == () and s.extra["n_r_peaks"] == 13
    assert s.extra["r_peaks"].split(";")[:3] == ["282", "656", "1035"]
    assert s.ecg.fs == 500 and s.ecg.n_samples == 5000


def write_cpsc2018(folder: Path) -> None:
    import scipy.io

    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, sex, age in (("A0001", "Male", 74), ("A0002", "Female", 49), ("A0003", "Male", 60)):
        scipy.io.savemat(folder / f"{name}.mat", {"ECG": {"sex": sex, "age": age, "data": rng.normal(size=(12, 2500))}})
    (folder / "REFERENCE.csv").write_text("Recording,First_label,Second_label,Third_label\n"
                                          "A0001,5,,\nA0002,1,,\nA0003,2,7,12\nA0009,3,,\n")


def test_cpsc2018_classes(tmp_path: Path) -> None:
    folder = tmp_path / "cpsc2018"
    write_cpsc2018(folder)
    assert detect_dataset(folder) == "cpsc2018"
    adapter = adapter_for(folder)
    assert [Path(k).name for k in adapter.keys()] == ["A0001.mat", "A0002.mat", "A0003.mat"]
    a1, a2, a3 = (adapter.load(k)[0] for k in adapter.keys())
    assert a1.labels == ("CRBBB",) and (a1.ecg.meta.sex, a1.ecg.meta.age) == ("M", 74.0)
    assert a2.labels == ("NORM", "SR")
    assert a3.labels == ("AFIB", "PVC") and a3.extra == {"cpsc2018_classes": "2;7;12", "unmapped": "12"}
    assert adapter.unmatched() == {"files_without_row": [], "rows_without_file": ["A0009"]}


# -- a user's own folder ----------------------------------------------------------------------------------


def user_folder(tmp_path: Path) -> Path:
    root = tmp_path / "mine"
    (root / "sub").mkdir(parents=True)
    for name in ("A00001", "A00002"):
        for suffix in (".hea", ".mat"):
            shutil.copy(data_path("cinc2017", f"{name}{suffix}"), root / f"{name}{suffix}")
    shutil.copy(data_path("cpsc2019", "data", "data_00014.mat"), root / "sub" / "data_00014.mat")
    (root / "labels.csv").write_text(
        "record_id,patient_id,labels,PVC,split,death_1y,site,offset\n"
        "A00001,p1,AFIB;NOT_A_LABEL,0,train,1,x,7\n"
        "sub/data_00014,p2,,1,validation,0,y,8\n"
        "ghost,p3,SR,0,test,0,z,9\n"
    )
    return root


def test_folder_adapter_joins_the_labels_table_and_reports_unmatched(tmp_path: Path) -> None:
    root = user_folder(tmp_path)
    assert detect_dataset(root) == "folder"
    adapter = adapter_for(root, labels=root / "labels.csv")
    keys = adapter.keys()
    assert [Path(k).name for k in keys] == ["A00001.hea", "A00002.hea", "data_00014.mat"]  # not labels.csv
    assert adapter.unmatched() == {"files_without_row": ["A00002.hea"], "rows_without_file": ["ghost"]}
    described = adapter.describe()
    assert described["files_without_row"] == 1 and described["rows_without_file"] == 1
    a1, a2, sub = (adapter.load(k)[0] for k in keys)
    assert (a1.record_id, a1.patient_id, a1.labels, a1.split) == ("A00001", "p1", ("AFIB",), "train")
    assert a1.extra == {"death_1y": 1, "site": "x", "table_offset": 7, "in_table": True, "unmapped": "NOT_A_LABEL"}
    assert a1.ecg.meta.patient_id == "p1" and a1.ecg.meta.record_id == "A00001"
    assert (sub.record_id, sub.labels, sub.split, sub.extra["death_1y"]) == ("sub/data_00014", ("PVC",), "val", 0)
    assert (a2.labels, a2.split, a2.patient_id) == ((), None, None)
    assert a2.extra == {"death_1y": None, "site": None, "table_offset": None, "in_table": False, "unmapped": ""}
    only_labelled = adapter_for(root, labels=root / "labels.csv", require_labels=True)
    assert [Path(k).name for k in only_labelled.keys()] == ["A00001.hea", "data_00014.mat"]


def test_folder_adapter_table_errors(tmp_path: Path) -> None:
    root = user_folder(tmp_path)
    table = root / "labels.csv"
    table.write_text("name,labels\nA00001,SR\n")
    with pytest.raises(ReadError, match=r"labels.csv: no id column .*pass id_column="):
        adapter_for(root, labels=table).keys()
    assert adapter_for(root, labels=table, id_column="name").load(str(root / "A00001.hea"))[0].labels == ("SR",)
    table.write_text("record_id,labels\nA00001,SR\nA00001,AFIB\n")
    with pytest.raises(ReadError, match="'A00001' appears more than once"):
        adapter_for(root, labels=table).keys()
    table.write_text("record_id,split\nA00001,holdout\n")
    with pytest.raises(ReadError, match="A00001: split 'holdout' is not train, val or test"):
        adapter_for(root, labels=table).load(str(root / "A00001.hea"))


def test_folder_adapter_reads_parquet_tables_with_list_labels(tmp_path: Path) -> None:
    import pandas as pd

    root = user_folder(tmp_path)
    pd.DataFrame({"id": ["A00002"], "labels": [["AFIB", "PVC"]], "age": [61]}).to_parquet(tmp_path / "t.parquet")
    sample = adapter_for(root, labels=tmp_path / "t.parquet").load(str(root / "A00002.hea"))[0]
    assert sample.labels == ("AFIB", "PVC") and sample.ecg.meta.age == 61.0


# -- bad items and workers ------------------------------------------------------------------------------------


def test_a_bad_item_raises_an_ecg_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "X0001.hea"
    bad.write_text("X0001 12 500 5000\nthis is not a signal line\n")
    with pytest.raises(ECGError, match="X0001.hea"):
        adapter_for(tmp_path, dataset="cinc").load(str(bad))
    src = data_path("mitdb")
    for suffix in (".hea", ".atr"):  # the signal file is missing
        shutil.copy(src / f"101{suffix}", tmp_path / f"101{suffix}")
    with pytest.raises(ECGError, match="101"):
        adapter_for(tmp_path, dataset="mitbih").load(str(tmp_path / "101.hea"))
    (tmp_path / "broken.xml").write_text("<AnnotatedECG><unclosed>")
    with pytest.raises(ECGError, match="broken.xml"):
        FolderAdapter(tmp_path).load(str(tmp_path / "broken.xml"))


def test_adapters_pickle_for_worker_processes(tmp_path: Path) -> None:
    cpsc2018 = tmp_path / "cpsc2018"
    write_cpsc2018(cpsc2018)
    root = user_folder(tmp_path)
    adapters = {
        "ptbxl": adapter_for(data_path("ptb-xl")),
        "cinc": adapter_for(data_path("cinc2021")),
        "cinc2017": adapter_for(data_path("cinc2017")),
        "ludb": adapter_for(data_path("ludb")),
        "mitbih": adapter_for(data_path("mitdb"), mode="beats"),
        "cpsc2018": adapter_for(cpsc2018),
        "cpsc2019": adapter_for(data_path("cpsc2019")),
        "cpsc2021": adapter_for(data_path("cpsc2021")),
        "folder": adapter_for(root, labels=root / "labels.csv"),
    }
    assert set(adapters) == set(ADAPTERS)
    for name, adapter in adapters.items():
        key = adapter.keys()[-1]  # fills the per-process caches, which must not travel
        state = pickle.dumps(adapter)
        assert len(state) < 2000, (name, len(state))
        copy = pickle.loads(state)
        assert copy.describe() == adapter.describe() and copy.keys() == adapter.keys()
        mine, theirs = adapter.load(key), copy.load(key)
        assert [(s.record_id, s.labels, s.patient_id, s.split, dict(s.extra)) for s in mine] == \
               [(s.record_id, s.labels, s.patient_id, s.split, dict(s.extra)) for s in theirs], name
        assert_catalogue_ids(mine)
        assert all(isinstance(s, Sample) and s.ecg.meta.source_path for s in mine)
