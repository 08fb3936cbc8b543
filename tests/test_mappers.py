"""Dataset-native labels to catalogue ids, on the real headers, annotations and CSVs."""

from __future__ import annotations

import ast
import csv
from collections import Counter
from pathlib import Path

import pytest

import ecgfm
from conftest import data_path
from ecgfm.errors import ValidationError
from ecgfm.io.wfdb import read_annotations
from ecgfm.labels import load_catalogue
from ecgfm.labels.mappers import (
    AAMI_CLASSES,
    PTBXL_GROUPS,
    UnknownLabelError,
    beat_conditions,
    map_cinc2017,
    map_cinc_dx,
    map_cpsc2021_class,
    map_cpsc2021_episodes,
    map_ludb,
    map_mitbih_beats,
    map_ptbxl_scp,
    map_rhythm_episodes,
    map_rhythm_notes,
    parse_scp_codes,
    ptbxl_groups,
    read_cinc2017_reference,
    split_ludb_diagnoses,
    table_labels,
)


def _ptbxl_rows() -> list[dict[str, str]]:
    rows = []
    for name in ("ptbxl_database.csv", "ptbxl_reports_only.csv"):
        with data_path("ptb-xl", name).open(newline="", encoding="utf-8") as f:
            rows += list(csv.DictReader(f))
    return rows


def test_every_table_names_catalogue_ids_only() -> None:
    cat = load_catalogue()
    for table in ("ludb", "mitbih_rhythm", "mitbih_beats", "cinc2017", "cpsc2021"):
        for label, ids in table_labels(table).items():
            for cid in ids:
                assert cid in cat, (table, label, cid)


# -- PTB-XL -----------------------------------------------------------------------------------


def test_parse_scp_codes_reads_literals_only() -> None:
    assert parse_scp_codes("{'NORM': 100.0, 'SR': 0.0}") == {"NORM": 100.0, "SR": 0.0}
    assert parse_scp_codes("{}") == {} and parse_scp_codes("") == {}
    for bad in ("__import__('os').system('true')", "['NORM']", "{'NORM': 'x'}", "{'NORM': 150.0}", "{1: 2.0}", "{'A': True}"):
        with pytest.raises(ValidationError, match="PTB-XL scp_codes"):
            parse_scp_codes(bad)


def test_every_ptbxl_record_maps_without_unknowns() -> None:
    rows = _ptbxl_rows()
    assert len(rows) == 2357 + 4511
    seen: Counter[str] = Counter()
    for row in rows:
        ids, unknown = map_ptbxl_scp(row["scp_codes"], strict=True)
        assert unknown == [] and ids == list(ast.literal_eval(row["scp_codes"])), row["ecg_id"]
        seen.update(ids)
    assert len(seen) == 71  # every statement occurs in this subset
    assert (seen["NORM"], seen["SR"], seen["AFIB"]) == (2080, 3545, 1391)


def test_min_likelihood_and_unknown_codes() -> None:
    codes = "{'IMI': 15.0, 'LNGQT': 100.0, 'NST_': 100.0, 'DIG': 100.0, 'ABQRS': 0.0, 'SR': 0.0}"
    assert map_ptbxl_scp(codes).ids == ["IMI", "LNGQT", "NST_", "DIG", "ABQRS", "SR"]
    assert map_ptbxl_scp(codes, min_likelihood=50).ids == ["LNGQT", "NST_", "DIG"]
    assert map_ptbxl_scp(codes, min_likelihood=15).ids == ["IMI", "LNGQT", "NST_", "DIG"]
    assert map_ptbxl_scp(["IMI", "XYZ", "SR", "XYZ"]) == (["IMI", "SR"], ["XYZ"])
    with pytest.raises(UnknownLabelError, match="PTB-XL scp_codes: no catalogue mapping for 'XYZ'") as err:
        map_ptbxl_scp({"IMI": 100.0, "XYZ": 50.0}, strict=True)
    assert err.value.unknown == ["XYZ"]


# Hand-checked against scp_statements.csv (diagnostic/form/rhythm columns and
# diagnostic_class/diagnostic_subclass of each statement).
HAND_CHECKED = {
    "1": ("{'NORM': 100.0, 'LVOLT': 0.0, 'SR': 0.0}", {
        "superdiagnostic": ["NORM"], "subdiagnostic": ["NORM"], "diagnostic": ["NORM"],
        "form": ["LVOLT"], "rhythm": ["SR"], "all": ["LVOLT", "NORM", "SR"]}),
    "39": ("{'IMI': 15.0, 'LNGQT': 100.0, 'NST_': 100.0, 'DIG': 100.0, 'ABQRS': 0.0, 'SR': 0.0}", {
        "superdiagnostic": ["MI", "STTC"], "subdiagnostic": ["IMI", "NST_", "STTC"],
        "diagnostic": ["DIG", "IMI", "LNGQT", "NST_"], "form": ["ABQRS", "DIG", "LNGQT", "NST_"],
        "rhythm": ["SR"], "all": ["ABQRS", "DIG", "IMI", "LNGQT", "NST_", "SR"]}),
    "222": ("{'RVH': 100.0, 'RAO/RAE': 100.0, 'IRBBB': 100.0, 'ABQRS': 0.0, 'SR': 0.0}", {
        "superdiagnostic": ["CD", "HYP"], "subdiagnostic": ["IRBBB", "RAO/RAE", "RVH"],
        "diagnostic": ["IRBBB", "RAO/RAE", "RVH"], "form": ["ABQRS"], "rhythm": ["SR"],
        "all": ["ABQRS", "IRBBB", "RAO/RAE", "RVH", "SR"]}),
    "266": ("{'ALMI': 100.0, 'IMI': 80.0, 'LAFB': 100.0, 'PVC': 100.0, 'ANEUR': 50.0, 'QWAVE': 0.0, 'INVT': 0.0, 'SR': 0.0}", {
        "superdiagnostic": ["CD", "MI", "STTC"], "subdiagnostic": ["AMI", "IMI", "LAFB/LPFB", "STTC"],
        "diagnostic": ["ALMI", "ANEUR", "IMI", "LAFB"], "form": ["INVT", "PVC", "QWAVE"], "rhythm": ["SR"],
        "all": ["ALMI", "ANEUR", "IMI", "INVT", "LAFB", "PVC", "QWAVE", "SR"]}),
    "336": ("{'LVH': 100.0, 'ISC_': 100.0, 'PVC': 100.0, 'NST_': 0.0, 'AFLT': 0.0, 'SVTAC': 0.0}", {
        "superdiagnostic": ["HYP", "STTC"], "subdiagnostic": ["ISC_", "LVH", "NST_"],
        "diagnostic": ["ISC_", "LVH", "NST_"], "form": ["NST_", "PVC"], "rhythm": ["AFLT", "SVTAC"],
        "all": ["AFLT", "ISC_", "LVH", "NST_", "PVC", "SVTAC"]}),
}


@pytest.mark.parametrize("ecg_id", sorted(HAND_CHECKED))
def test_ptbxl_groups_of_known_records(ecg_id: str) -> None:
    rows = {r["ecg_id"]: r for r in _ptbxl_rows()}
    codes, expected = HAND_CHECKED[ecg_id]
    assert rows[ecg_id]["scp_codes"] == codes
    groups = ptbxl_groups(codes)
    assert tuple(groups) == PTBXL_GROUPS
    assert groups == expected


def test_ptbxl_groups_match_the_benchmark_aggregation_on_every_record() -> None:
    """Re-derive the groups as the benchmark's compute_label_aggregations does (pandas-free)."""
    with data_path("ptb-xl", "scp_statements.csv").open(newline="") as f:
        statements = {r[""]: r for r in csv.DictReader(f)}
    for row in _ptbxl_rows():
        codes = ast.literal_eval(row["scp_codes"])
        diag = {c for c in codes if statements[c]["diagnostic"] == "1.0"}
        expected = {
            "superdiagnostic": sorted({statements[c]["diagnostic_class"] for c in diag}),
            "subdiagnostic": sorted({statements[c]["diagnostic_subclass"] for c in diag}),
            "diagnostic": sorted(diag),
            "form": sorted(c for c in codes if statements[c]["form"] == "1.0"),
            "rhythm": sorted(c for c in codes if statements[c]["rhythm"] == "1.0"),
            "all": sorted(codes),
        }
        assert ptbxl_groups(row["scp_codes"]) == expected, row["ecg_id"]


def test_ptbxl_groups_keep_unknown_codes_in_all() -> None:
    groups = ptbxl_groups(["IMI", "XYZ"])
    assert groups["all"] == ["IMI", "XYZ"] and groups["diagnostic"] == ["IMI"]
    with pytest.raises(UnknownLabelError):
        ptbxl_groups(["IMI", "XYZ"], strict=True)


# -- CinC 2020/2021 ------------------------------------------------------------------------------


def test_all_cinc2021_headers_map_without_unknowns() -> None:
    headers = sorted(data_path("cinc2021").glob("*.hea"))
    assert len(headers) == 50
    mapped = {}
    for hea in headers:
        dx = ecgfm.read(hea).meta.extra["dx"]
        ids, unknown = map_cinc_dx(dx, strict=True)
        assert unknown == [] and len(ids) == len({load_catalogue().by_snomed(c).id for c in dx}) >= 1
        mapped[hea.stem] = ids
    assert mapped["E07500"] == ["LAO/LAE", "SBRAD"]  # Dx: 67741000119109,426177001
    counts = Counter(i for ids in mapped.values() for i in ids)
    assert counts["STACH"] == 23 and counts["PAC"] == 20 and counts["SR"] == 15


def test_cinc_dx_equivalences_unknowns_and_text() -> None:
    assert map_cinc_dx("713427006,59118001, 164889003") == (["CRBBB", "AFIB"], [])
    assert map_cinc_dx(["427172004", "17338001"]).ids == ["PVC"]
    assert map_cinc_dx(["164889003", "12345"]) == (["AFIB"], ["12345"])
    with pytest.raises(UnknownLabelError, match="CinC Dx: no catalogue mapping for '12345'"):
        map_cinc_dx(["12345"], strict=True)


# -- CinC 2017 --------------------------------------------------------------------------------


def test_cinc2017_reference_maps() -> None:
    ref = read_cinc2017_reference(data_path("cinc2017", "REFERENCE.csv"), strict=True)
    assert len(ref) == 100 and ref["A00001"].ids == ["SR"] and ref["A00004"].ids == ["AFIB"]
    assert ref["A00005"].ids == ["OTHER_RHYTHM"]
    assert Counter(m.ids[0] for m in ref.values()) == {"SR": 59, "OTHER_RHYTHM": 31, "AFIB": 10}
    assert map_cinc2017("~").ids == ["NOISE"] and load_catalogue().get("NOISE").category == "measurement"
    assert map_cinc2017(["X"]) == ([], ["X"])


# -- MIT-BIH --------------------------------------------------------------------------------------

# Beat counts per AAMI class from the MIT-BIH Arrhythmia Database directory (Moody & Mark):
# 101: 1860 normal, 3 APC, 2 unclassifiable; 106: 1507 normal, 520 PVC; 119: 1543 normal,
# 444 PVC; 203: 2529 normal, 2 aberrated APC, 444 PVC, 1 fusion, 4 unclassifiable.
MITDB_AAMI = {
    "101": {"N": 1860, "S": 3, "V": 0, "F": 0, "Q": 2},
    "106": {"N": 1507, "S": 0, "V": 520, "F": 0, "Q": 0},
    "119": {"N": 1543, "S": 0, "V": 444, "F": 0, "Q": 0},
    "203": {"N": 2529, "S": 2, "V": 444, "F": 1, "Q": 4},
}
MITDB_RHYTHMS = {"101": {"SR"}, "106": {"SR", "VBIG", "VTACH", "VTRIG"}, "119": {"SR", "VBIG", "VTRIG"},
                 "203": {"AFIB", "AFLT", "VTACH", "VTRIG"}}


@pytest.mark.parametrize("record", sorted(MITDB_AAMI))
def test_mitbih_beats_and_rhythms(record: str) -> None:
    hea = data_path("mitdb", f"{record}.hea")
    ann = read_annotations(hea)
    beats = map_mitbih_beats(ann.symbol, strict=True)
    assert beats.unknown == [] and len(beats.classes) == len(ann.symbol)
    assert beats.counts() == MITDB_AAMI[record]
    assert set(beat_conditions(ann.symbol, strict=True).ids) == (
        {"PVC"} if MITDB_AAMI[record]["V"] else set()) | ({"PAC"} if record == "101" else set()) | (
        {"PAC", "ABERR", "FB"} if record == "203" else set())
    notes = map_rhythm_notes(ann.aux_note, strict=True)
    assert set(notes.ids) == MITDB_RHYTHMS[record]
    n_samples = ecgfm.read(hea).n_samples
    episodes, unknown = map_rhythm_episodes(ann, n_samples, strict=True)
    assert unknown == [] and {e.id for e in episodes} == MITDB_RHYTHMS[record]
    assert episodes[-1].stop == n_samples == 650000
    assert all(a.stop == b.start for a, b in zip(episodes, episodes[1:]))  # contiguous


def test_mitbih_unknown_symbols_and_notes_are_reported() -> None:
    beats = map_mitbih_beats(["N", "Z", "+", "V", "Z"])
    assert beats.classes == ["N", None, None, "V", None] and beats.unknown == ["Z"]
    with pytest.raises(UnknownLabelError, match="WFDB beat symbols"):
        map_mitbih_beats(["Z"], strict=True)
    assert map_rhythm_notes(["(N\x00", "(XYZ", "", "(SVTA"]) == (["SR", "SVTAC"], ["(XYZ"])
    assert set(AAMI_CLASSES) == {"N", "S", "V", "F", "Q"}
    assert map_mitbih_beats("NLRejnAaJSVrEF/fQ?").classes == list("NNNNNNSSSSVVVFQQQQ")


# -- LUDB -------------------------------------------------------------------------------------------


def test_all_ludb_headers_and_csv_map_without_unknowns() -> None:
    headers = sorted(data_path("ludb", "data").glob("*.hea"), key=lambda p: int(p.stem))
    assert len(headers) == 200
    from_headers = {}
    for hea in headers:
        ids, unknown = map_ludb(ecgfm.read(hea).meta.interpretation, strict=True)
        assert unknown == [] and ids, hea.name
        from_headers[hea.stem] = set(ids)
    assert from_headers["1"] == {"SBRAD", "LAD", "LVH", "LVS", "NSSTTA"}
    with data_path("ludb", "ludb.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        cells = [row[k] for k in list(row)[3:]]
        ids = {i for cell in cells for i in map_ludb(cell.split("\n"), strict=True).ids}
        # ludb.csv adds "Pacemaker presence, undefined" where the header only names the mode
        assert from_headers[row["ID"]] <= ids and ids - from_headers[row["ID"]] <= {"PACE"}, row["ID"]
    counts = Counter(i for ids in from_headers.values() for i in ids)
    assert counts["SR"] == 143 and counts["AFIB"] == 15 and counts["LVH"] == 108


def test_ludb_statement_splitting_and_wall_ids() -> None:
    text = "Rhythm: Sinus rhythm. Undefined ischemia/scar/supp.NSTEMI: apical. STEMI: septal. #Scar formation: inferior wall."
    assert split_ludb_diagnoses(text) == [
        "Rhythm: Sinus rhythm", "Undefined ischemia/scar/supp.NSTEMI: apical", "STEMI: septal",
        "Scar formation: inferior wall",
    ]
    assert map_ludb(text).ids == ["SR", "ISC_OR_SCAR", "STEMI", "ASMI", "OLDMI", "IMI"]
    assert map_ludb(["iii degree  AV-block", "Made-up statement."]) == (["3AVB"], ["Made-up statement"])


# -- CPSC 2021 --------------------------------------------------------------------------------------


def test_cpsc2021_classes_and_af_episodes() -> None:
    headers = sorted(data_path("cpsc2021").glob("*.hea"))
    assert len(headers) == 18
    for hea in headers:
        ecg = ecgfm.read(hea)
        (comment,) = ecg.meta.extra["comments"]
        cls = map_cpsc2021_class(comment, strict=True)
        episodes, unknown = map_cpsc2021_episodes(read_annotations(hea), ecg.n_samples, strict=True)
        assert unknown == []
        # The episodes tile the record.
        assert episodes[0].start == 0 and episodes[-1].stop == ecg.n_samples
        assert all(a.stop == b.start for a, b in zip(episodes, episodes[1:]))
        kinds = {e.id for e in episodes}
        if comment == "persistent atrial fibrillation":
            assert cls.ids == ["PERSAF"] and kinds == {"AFIB"}
        elif comment == "paroxysmal atrial fibrillation":
            assert cls.ids == ["PAF"] and kinds == {"AFIB", "SR"}
        else:
            assert comment == "non atrial fibrillation" and cls.ids == [] and kinds == {"SR"}
    ann = read_annotations(data_path("cpsc2021", "data_101_6.hea"))
    af = [(e.start, e.stop) for e in map_cpsc2021_episodes(ann, 22355).episodes if e.id == "AFIB"]
    assert af == [(3132, 5639), (8468, 9100), (11121, 16050), (21303, 22355)]  # (AFIB ... (N marks
    assert map_cpsc2021_class(" Paroxysmal  atrial fibrillation") == (["PAF"], [])
    assert map_cpsc2021_class("Something else") == ([], ["Something else"])


def test_mappers_use_a_user_catalogue(tmp_path: Path) -> None:
    path = tmp_path / "mine.csv"
    path.write_text("id,name,category,snomed\nMYDX,my condition,systemic,12345\n", encoding="utf-8")
    mine = load_catalogue(path)
    assert map_cinc_dx(["164889003", "12345"], catalogue=mine) == (["AFIB", "MYDX"], [])
