"""The conditions catalogue: coverage of PTB-XL and the CinC SNOMED codes, hierarchy, search,
user extensions and validation of malformed tables."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import data_path
from ecgfm.labels import CATALOGUE_VERSION, CATEGORIES, Catalogue, CatalogueError, load_catalogue
from ecgfm.labels.catalogue import COLUMNS, fold

CHALLENGE_PAIRS = {  # weights.csv joins these; the catalogue holds each pair in one entry
    ("733534002", "164909002"): "CLBBB",
    ("713427006", "59118001"): "CRBBB",
    ("284470004", "63593006"): "PAC",
    ("427172004", "17338001"): "PVC",
}


@pytest.fixture(scope="module")
def cat() -> Catalogue:
    return load_catalogue()


def _statements() -> dict[str, dict[str, str]]:
    with data_path("ptb-xl", "scp_statements.csv").open(newline="") as f:
        return {row[""]: row for row in csv.DictReader(f)}


def _dx_rows() -> list[dict[str, str]]:
    rows = []
    for name in ("dx_mapping_scored.csv", "dx_mapping_unscored.csv"):
        with data_path("challenge2021", name).open(newline="") as f:
            rows += list(csv.DictReader(f))
    return rows


# -- the packaged table -----------------------------------------------------------------------


def test_packaged_catalogue_loads_with_version_and_size(cat: Catalogue) -> None:
    assert cat.version == CATALOGUE_VERSION == "2026.11"
    assert 170 <= len(cat) <= 400  # the union of the sources: 179 entries in 2026.11
    assert {c.category for c in cat} <= set(CATEGORIES)
    assert {c.category for c in cat} == set(CATEGORIES)  # every category is used
    for c in cat:
        assert c.id == c.id.strip().upper() and " " not in c.id, c.id
        assert c.name and c.description, c.id


def test_csv_header_is_the_documented_columns() -> None:
    path = Path(__file__).resolve().parents[1] / "src" / "ecgfm" / "labels" / "data" / "catalogue.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("#") and f"version {CATALOGUE_VERSION}" in lines[0]
    assert lines[1].split(",") == list(COLUMNS)


def test_every_ptbxl_statement_resolves_with_its_aha_code_and_groups(cat: Catalogue) -> None:
    statements = _statements()
    assert len(statements) == 71
    for code, row in statements.items():
        cond = cat.by_scp(code)
        assert cond is not None and cond.id == code, code
        assert cond.scp == (code,)
        assert cond.aha == ((row["AHA code"],) if row["AHA code"] else ()), code
        for group in ("diagnostic", "form", "rhythm"):
            assert cond.in_ptbxl(group) == (row[group] == "1.0"), (code, group)
        assert cond.ptbxl_class == (row["diagnostic_class"] or None), code
        assert cond.ptbxl_subclass == (row["diagnostic_subclass"] or None), code


def test_ptbxl_super_and_subclasses_are_entries_and_roll_up_as_ptbxl_says(cat: Catalogue) -> None:
    statements = _statements()
    supers = {r["diagnostic_class"] for r in statements.values() if r["diagnostic_class"]}
    subs = {r["diagnostic_subclass"] for r in statements.values() if r["diagnostic_subclass"]}
    assert supers == {"NORM", "MI", "STTC", "CD", "HYP"} and len(subs) == 23
    assert {c.id for c in cat if c.in_ptbxl("superclass")} == supers
    assert {c.id for c in cat if c.in_ptbxl("subclass")} == subs
    for code, row in statements.items():
        lineage = cat.roll_up([code])
        if row["diagnostic"] == "1.0":
            # The statement reaches its own subclass and superclass, and no other superclass.
            assert row["diagnostic_subclass"] in lineage, code
            assert lineage & supers == {row["diagnostic_class"]}, code
        else:  # form and rhythm statements never roll up into a diagnostic superclass
            assert not lineage & supers, code


def test_every_challenge_snomed_code_is_in_exactly_one_entry(cat: Catalogue) -> None:
    rows = _dx_rows()
    codes = {r["SNOMEDCTCode"] for r in rows}
    assert len(codes) == len(rows) == 133
    held = [code for c in cat for code in c.snomed]
    assert len(held) == len(set(held))
    for code in codes:
        assert held.count(code) == 1, code
        assert cat.by_snomed(code) is not None and code in cat.by_snomed(code).snomed


def test_challenge_equivalence_pairs_resolve_to_one_entry(cat: Catalogue) -> None:
    with data_path("challenge2021", "weights.csv").open() as f:
        header = next(csv.reader(f))[1:]
    pairs = {tuple(h.split("|")) for h in header if "|" in h}
    assert pairs == set(CHALLENGE_PAIRS)
    for pair, cid in CHALLENGE_PAIRS.items():
        assert {cat.by_snomed(code).id for code in pair} == {cid}
        assert set(cat.equivalent_snomed(pair[0])) == set(pair)


@pytest.mark.parametrize(
    "snomed, cid",
    [
        ("164889003", "AFIB"), ("164890007", "AFLT"), ("426783006", "SR"), ("270492004", "1AVB"),
        ("27885002", "3AVB"), ("54329005", "AMI"), ("57054005", "ACUTE_MI"), ("164865005", "MI"),
        ("698247007", "DYSRHYTHMIA"), ("233917008", "_AVB"), ("251146004", "LVOLT"),
        ("55827005", "VCLVH"), ("67741000119109", "LAO/LAE"), ("446358003", "RAH"),
        ("164884008", "VEB"), ("10370003", "PACE"), ("55930002", "NST_"), ("111975006", "LNGQT"),
    ],
)
def test_curated_snomed_equivalences(cat: Catalogue, snomed: str, cid: str) -> None:
    assert cat.by_snomed(snomed).id == cid
    assert cat.by_snomed(int(snomed)).id == cid


def test_unknown_codes_give_none(cat: Catalogue) -> None:
    assert cat.by_snomed("999999999") is None
    assert cat.by_scp("NOPE") is None
    assert cat.by_scp("nst_").id == "NST_"  # SCP codes are upper case; lower case is accepted


# -- hierarchy --------------------------------------------------------------------------------


def test_roll_up_and_descendants(cat: Catalogue) -> None:
    assert cat.roll_up(["IMI"]) == {"IMI", "MI"}
    assert cat.roll_up(["ASMI", "SR"]) == {"ASMI", "AMI", "MI", "SR"}
    assert cat.ancestors("CLBBB") == {"BBB", "CD"}
    assert cat.ancestors("PVC") == {"PRC(S)", "VEB"}  # two parents
    assert cat.ancestors("VTRIG") == {"TRIGU", "PVC", "PRC(S)", "VEB"}
    assert cat.ancestors("MI") == set()
    assert {"IMI", "ILMI", "IPMI", "ASMI", "AMI", "PMI", "LMI", "OLDMI", "STEMI"} <= cat.descendants("MI")
    assert cat.descendants("_AVB") == {"1AVB", "2AVB", "3AVB", "MOI", "IIAVBII", "CIAHB"}
    assert cat.children("LAFB/LPFB") == ("LAFB", "LPFB")
    assert cat.parents("IMI") == ("MI",) and cat.get("IMI").parent == "MI"
    with pytest.raises(KeyError, match="'XMI' is not a catalogue id"):
        cat.roll_up(["XMI"])


def test_get_suggests_close_ids(cat: Catalogue) -> None:
    with pytest.raises(KeyError, match="did you mean AFIB"):
        cat.get("afib")
    assert cat["AFIB"].name == "atrial fibrillation"
    assert "AFIB" in cat and "afib" not in cat


# -- search -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query, first",
    [
        ("vorhofflimmern", "AFIB"), ("Vorhofflattern", "AFLT"), ("Linksschenkelblock", "CLBBB"),
        ("inferiorer infarkt", "IMI"), ("ueberdrehter linkstyp", "LAD"), ("Überdrehter Linkstyp", "LAD"),
        ("uberdrehter linkstyp", "LAD"), ("p-sinistrocardiale", "LAO/LAE"), ("NST_", "NST_"),
        ("164889003", "AFIB"), ("lao/lae", "LAO/LAE"), ("right bundle branch block", "CRBBB"),
        ("periphere niederspannung", "LVOLT"), ("QT-Verlaengerung", "LNGQT"), ("Wenckebach", "MOI"),
        ("sinus brady", "SBRAD"), ("ST-Hebungsinfarkt", "STEMI"), ("ischemia in inferior leads", "ISCIN"),
        ("Ischämie", "ISC_"), ("Hyperkaliaemie", "EL"),
    ],
)
def test_search_finds_names_synonyms_and_codes(cat: Catalogue, query: str, first: str) -> None:
    found = cat.search(query)
    assert found and found[0].id == first, [c.id for c in found[:5]]


def test_search_ranks_and_filters(cat: Catalogue) -> None:
    assert [c.id for c in cat.search("Linksschenkelblock")] == ["CLBBB", "ILBBB"]
    hits = [c.id for c in cat.search("infarct", category="ischaemia")]
    assert hits[0] == "MI" and all(cat.get(h).category == "ischaemia" for h in hits)
    assert len(cat.search("block", limit=3)) == 3
    assert cat.search("no such condition anywhere") == []
    assert len(cat.search("")) == len(cat)
    with pytest.raises(ValueError, match="unknown category"):
        cat.search("block", category="ischemia")


def test_fold_treats_umlaut_and_british_spellings_alike() -> None:
    assert fold("Überleitungsstörung") == fold("Ueberleitungsstoerung") == fold("uberleitungsstorung")
    assert fold("Verlängerung") == fold("Verlaengerung")
    assert fold("Größe") == fold("groesse")
    assert fold("ischaemia") == fold("ischemia") == fold("ISCHÄMIA")
    assert fold("ST-T_Veränderung") == "st t verenderung"
    assert fold("  LAO/LAE ") == fold("lao-lae") == "lao le"


# -- user tables ------------------------------------------------------------------------------

_HEADER = "id,name,category,parent,synonyms_en,synonyms_de,scp,snomed,aha,ptbxl_groups,description\n"


def _write(tmp_path: Path, body: str, name: str = "mine.csv", header: str = _HEADER) -> Path:
    path = tmp_path / name
    path.write_text(header + body, encoding="utf-8")
    return path


def test_user_csv_adds_a_condition_without_code_changes(tmp_path: Path, cat: Catalogue) -> None:
    path = _write(
        tmp_path,
        "HYPERK,hyperkalaemia,systemic,EL,hyperkalaemia|peaked T waves,Hyperkaliämie,,,,,serum K+ above 5.5 mmol/l\n",
    )
    mine = load_catalogue(path)
    assert len(mine) == len(cat) + 1 and "HYPERK" not in cat
    assert mine.get("HYPERK").source == f"{path}:2"
    assert mine.roll_up(["HYPERK"]) == {"HYPERK", "EL", "STTC"}
    assert mine.search("Hyperkalaemia")[0].id == "HYPERK"  # its name ranks above EL's synonym
    assert {"HYPERK", "EL"} <= {c.id for c in mine.search("Hyperkaliaemie")}  # umlaut folded
    assert "HYPERK" in mine.descendants("EL")


def test_user_csv_with_only_the_required_columns_overrides_by_id(tmp_path: Path) -> None:
    path = _write(tmp_path, "AFIB,atrial fibrillation (site term),rhythm\nNEWX,new one,morphology\n",
                  header="id,name,category\n")
    mine = load_catalogue(path)
    assert mine.get("AFIB").name == "atrial fibrillation (site term)"
    assert mine.by_snomed("164889003") is None  # the override replaced the whole row
    assert mine.ids[-1] == "NEWX" and mine.version == f"{CATALOGUE_VERSION}"


def test_write_csv_round_trips(tmp_path: Path, cat: Catalogue) -> None:
    cat.write_csv(tmp_path / "copy.csv")
    again = Catalogue.from_csv(tmp_path / "copy.csv")
    assert again.version == cat.version
    assert list(again) == list(cat)


@pytest.mark.parametrize(
    "body, message",
    [
        ("AAA,a,rhythm\nAAA,again,rhythm\n", r"mine\.csv:3: duplicate id 'AAA' \(first defined at .*mine\.csv:2\)"),
        ("AAA,a,rhythm,NOPE\n", r"mine\.csv:2 \(id 'AAA'\): parent 'NOPE' is not a catalogue id"),
        ("AAA,a,rhythm,BBBB\nBBBB,b,rhythm,CCC\nCCC,c,rhythm,AAA\n", r"mine\.csv:\d \(id '\w+'\): parents form a cycle: (\w+ -> ){3}\w+"),
        ("AAA,a,rhythm,AAA\n", r"mine\.csv:2 \(id 'AAA'\): is its own parent"),
        ("AAA,a,rhythms\n", r"mine\.csv:2 \(id 'AAA'\): category 'rhythms' is not one of rhythm, conduction"),
        ("AAA,a,rhythm,,,,,164889003\n", r"mine\.csv:2 \(id 'AAA'\): SNOMED CT code 164889003 is already in 'AFIB'"),
        ("AAA,a,rhythm,,,,IMI\n", r"mine\.csv:2 \(id 'AAA'\): SCP code IMI is already in 'IMI'"),
        ("aaa,a,rhythm\n", r"mine\.csv:2: id 'aaa' must be upper case"),
        (",a,rhythm\n", r"mine\.csv:2: empty id"),
        ("AAA,,rhythm\n", r"mine\.csv:2 \(id 'AAA'\): empty name"),
        ("AAA,a,rhythm,,,,,12x\n", r"mine\.csv:2 \(id 'AAA'\): SNOMED CT code '12x' is not a number"),
        ("AAA,a,rhythm,,,,,,,,,extra\n", r"mine\.csv:2: more fields than the 11 header columns"),
    ],
)
def test_malformed_rows_name_the_row(tmp_path: Path, body: str, message: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(CatalogueError, match=message):
        load_catalogue(path)


def test_cycle_in_a_standalone_table_and_multiline_rows_keep_line_numbers(tmp_path: Path) -> None:
    body = 'XA,"a name\nover two lines",rhythm\nXB,b,rhythm,XC\nXC,c,rhythm,XB\n'
    path = _write(tmp_path, body)
    with pytest.raises(CatalogueError, match=r"mine\.csv:\d \(id 'X[BC]'\): parents form a cycle: X[BC] -> X[BC] -> X[BC]"):
        Catalogue.from_csv(path)
    path = _write(tmp_path, 'XA,"a name\nover two lines",rhythm\nXB,b,rhythm,NOPE\n')
    with pytest.raises(CatalogueError, match=r"mine\.csv:4 \(id 'XB'\)"):
        Catalogue.from_csv(path)


def test_missing_columns_and_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match=r"header lacks column\(s\) category"):
        load_catalogue(_write(tmp_path, "AAA,a\n", header="id,name\n"))
    with pytest.raises(CatalogueError, match="cannot read catalogue"):
        load_catalogue(tmp_path / "absent.csv")


def test_to_frame(cat: Catalogue) -> None:
    pytest.importorskip("pandas")
    frame = cat.to_frame()
    assert frame.shape == (len(cat), len(COLUMNS))
    assert frame.loc["IMI", "parent"] == "MI"
    assert frame.loc["CRBBB", "snomed"] == "713427006|59118001"


def test_import_is_light() -> None:
    code = "import sys, ecgfm.labels; assert 'pandas' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
