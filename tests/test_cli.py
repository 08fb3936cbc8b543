"""The ecgfm command line, run as a user would (a subprocess of the installed console script)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLES, data_path

EXAMPLE = EXAMPLES / "ptbxl" / "00351_hr.hea"


def ecgfm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ecgfm.cli", *args], capture_output=True, text=True)


def test_info_json_describes_the_record() -> None:
    result = ecgfm("info", "--json", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["format"] == "wfdb" and info["fs"] == 500 and len(info["leads"]) == 12
    assert info["duration_s"] == 10.0 and "quality" in info


def test_a_bad_file_is_reported_and_the_rest_proceed(tmp_path: Path) -> None:
    bad = tmp_path / "broken.xml"
    bad.write_text('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><AnnotatedECG>&a;</AnnotatedECG>')
    result = ecgfm("info", "--json", "--no-quality", str(EXAMPLE), str(bad), str(tmp_path / "absent.hea"))
    assert result.returncode == 2
    assert len(result.stdout.strip().splitlines()) == 1
    assert "broken.xml" in result.stderr and "absent.hea: no such file" in result.stderr
    assert "2 of 3 files failed" in result.stderr


def test_convert_a_folder_with_a_pipeline(tmp_path: Path) -> None:
    src = tmp_path / "in"
    shutil.copytree(EXAMPLES / "ptbxl", src)
    out = tmp_path / "out"
    result = ecgfm("convert", str(src), "--to", "npz", "--out", str(out), "--pipeline", "resample:fs=250|highpass:cutoff=0.5")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.npz")) == ["00003_hr.npz", "00257_hr.npz", "00351_hr.npz"]
    assert json.loads((out / "pipeline.json").read_text())["steps"][0]["name"] == "resample"
    import ecgfm as lib

    assert lib.read(out / "00003_hr.npz").fs == 250


def test_plot_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "ecg.png"
    result = ecgfm("plot", str(EXAMPLE), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_info_over_a_shared_data_folder() -> None:
    folder = data_path("cinc2021")
    result = ecgfm("info", "--json", "--no-quality", str(folder))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 50 and all(r["format"] == "wfdb" for r in rows)


def test_unknown_output_format_is_a_usage_error(tmp_path: Path) -> None:
    result = ecgfm("convert", str(EXAMPLE), "--to", "xls", "--out", str(tmp_path))
    assert result.returncode == 2 and "unknown format 'xls'" in result.stderr


@pytest.mark.parametrize("command", ["info", "plot", "convert", "formats"])
def test_help(command: str) -> None:
    assert ecgfm(command, "--help").returncode == 0


def test_labels_catalogue_search_in_german() -> None:
    result = ecgfm("labels", "catalogue", "vorhofflimmern")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split()[:2] == ["AFIB", "rhythm"]


def test_labels_catalogue_extended_by_a_user_csv(tmp_path: Path) -> None:
    extra = tmp_path / "mine.csv"
    extra.write_text("id,name,category\nXEPSILON,epsilon wave pattern of the right precordium,morphology\n")
    result = ecgfm("labels", "catalogue", "epsilon wave", "--catalogue", str(extra), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[0])["id"] == "XEPSILON"
    assert ecgfm("labels", "catalogue", "--category", "nonsense").returncode == 2


def test_labels_extract_one_report() -> None:
    result = ecgfm("labels", "extract", "Vorhofflimmern. Kein Hinweis auf Infarkt.")
    assert result.returncode == 0, result.stderr
    found = {f["id"]: f["status"] for f in map(json.loads, result.stdout.splitlines())}
    assert found == {"AFIB": "present", "MI": "negated"}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_labels_extract_a_csv_of_reports(tmp_path: Path, suffix: str) -> None:
    reports = tmp_path / "reports.csv"
    reports.write_text('id,report\n7,"sinus rhythm. left ventricular hypertrophy."\n8,"normales ekg"\n9,""\n')
    out = tmp_path / f"labels{suffix}"
    result = ecgfm("labels", "extract", "--csv", str(reports), "--id-column", "id", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "for 2 of 3 reports" in result.stdout
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert {(r["record"], r["id"]) for r in rows} == {("7", "SR"), ("7", "LVH"), ("8", "NORM")}
        lvh = next(r for r in rows if r["id"] == "LVH")
        assert reports.read_text().splitlines()[1].split(",", 1)[1].strip('"')[lvh["start"]:lvh["end"]] == "left ventricular hypertrophy"


def test_labels_extract_reports_a_missing_column(tmp_path: Path) -> None:
    reports = tmp_path / "reports.csv"
    reports.write_text("id,text\n1,x\n")
    result = ecgfm("labels", "extract", "--csv", str(reports), "--out", str(tmp_path / "o.csv"))
    assert result.returncode == 2 and "no column 'report'" in result.stderr
