"""The evaluation harness end to end on real predictions: ``evaluate_run``, the files it writes,
the HTML report and the ``ecgfm evaluate`` command.

The predictions are those of ``benchmarks/eval_ptbxl_baseline.py`` (a logistic regression on
hand-made features, trained on PTB-XL folds 1-8), regenerated once per session on a real subset:
the first 700 PTB-XL records with 100 Hz files (the whole script takes ~25 s, the subset ~5 s)
plus the 50 CinC 2021 records as external cohorts. References: scikit-learn's
``roc_auc_score``, ``average_precision_score`` and ``roc_curve`` on the same rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

from conftest import ROOT, data_path
from ecgfm.errors import ReadError, ValidationError
from ecgfm.evaluate.cli import app
from ecgfm.evaluate.run import EvaluationConfig, align, evaluate_run, load_table

SUBSET = 700
WEIGHTS_PARTS = ("challenge2021", "weights.csv")


@pytest.fixture(scope="session")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Baseline predictions on a real PTB-XL subset + CinC 2021: the folder of CSV files."""
    ptbxl = data_path("ptb-xl", "ptbxl_database.csv")
    cinc = data_path("cinc2021")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import eval_ptbxl_baseline as base
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    data = tmp_path_factory.mktemp("subset-data")
    (data / "ptb-xl").mkdir()
    db = pd.read_csv(ptbxl)
    db = db[db["filename_lr"].notna() & (db["filename_lr"].astype(str) != "")].head(SUBSET)
    db.to_csv(data / "ptb-xl" / "ptbxl_database.csv", index=False)
    for sub in ("records100", "records500"):
        if (ptbxl.parent / sub).exists():
            os.symlink(ptbxl.parent / sub, data / "ptb-xl" / sub)
    os.symlink(cinc, data / "cinc2021")
    out = tmp_path_factory.mktemp("baseline")
    saved = base.DATA
    base.DATA = data
    try:
        # one BLAS thread: the logistic fit is many small products, which threads only slow down
        with threadpool_limits(1):
            assert base.main(["--out", str(out)]) == 0
    finally:
        base.DATA = saved
    return out


@pytest.fixture(scope="session")
def tables(baseline: Path) -> dict[str, pd.DataFrame]:
    return {
        name: load_table(baseline / f"{name}.csv", id_column="record_id")
        for name in ("predictions", "labels", "external_predictions", "external_labels")
    }


@pytest.fixture(scope="session")
def result(baseline: Path):
    """Internal + external, fairness by sex and age, no temperature (thresholds on raw scores)."""
    return evaluate_run(
        [baseline / "predictions.csv", baseline / "external_predictions.csv"],
        [baseline / "labels.csv", baseline / "external_labels.csv"],
        groups=("sex", "age"), n_resamples=40, temperature=False,
    )


def _rows(tables: dict[str, pd.DataFrame], split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    lab = tables["labels"]
    lab = lab[lab["split"] == split].set_index("record_id")
    pred = tables["predictions"].set_index("record_id").loc[lab.index]
    return pred, lab


# ---------------------------------------------------------------------------------------------
# numbers against scikit-learn


def test_metrics_csv_matches_sklearn_on_test_rows(result, tables, tmp_path: Path) -> None:
    result.save(tmp_path, formats=("csv",))
    metrics = pd.read_csv(tmp_path / "metrics.csv", index_col="condition")
    pred, lab = _rows(tables, "test")
    assert result.summary["primary"] == "PTB-XL" and result.summary["n_records"] == len(lab)
    checked = 0
    for name in result.names:
        y, s = lab[name].to_numpy(), pred[name].to_numpy()
        if 0 < y.sum() < len(y):
            assert metrics.at[name, "auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-6)
            assert metrics.at[name, "ap"] == pytest.approx(average_precision_score(y, s), abs=1e-6)
            lo, hi = metrics.at[name, "auroc_low"], metrics.at[name, "auroc_high"]
            assert lo <= metrics.at[name, "auroc"] + 1e-9 and hi >= metrics.at[name, "auroc"] - 1e-9
            checked += 1
        else:
            assert np.isnan(metrics.at[name, "auroc"])
    assert checked >= 10
    assert metrics.at["macro", "auroc"] == pytest.approx(metrics["auroc"].drop("macro").mean())
    assert result.summary["n_auroc_gt_0.7"] == (metrics["auroc"].drop("macro") > 0.7).sum()


def test_thresholds_fitted_on_val_and_carried_to_test(result, tables) -> None:
    """Youden thresholds recomputed with sklearn's roc_curve on the validation rows, then the
    test sensitivity/specificity at those thresholds by hand."""
    val_pred, val_lab = _rows(tables, "val")
    test_pred, test_lab = _rows(tables, "test")
    th = result.thresholds
    assert not result.summary["thresholds_optimistic"]
    assert set(th["fitted_on"]) == {"val"}
    checked = 0
    for name in result.names:
        y, s = val_lab[name].to_numpy(), val_pred[name].to_numpy()
        if not 0 < y.sum() < len(y):
            assert np.isnan(th.at[name, "threshold"])
            continue
        fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
        expected = thr[int(np.argmax(tpr - fpr))]
        assert th.at[name, "threshold"] == pytest.approx(expected, rel=1e-12)
        yt, st = test_lab[name].to_numpy(), test_pred[name].to_numpy()
        pred = st >= expected
        if yt.sum() > 0:
            sens = (pred & (yt == 1)).sum() / (yt == 1).sum()
            assert result.metrics.at[name, "sensitivity"] == pytest.approx(sens)
            assert th.at[name, "sensitivity_test"] == pytest.approx(sens)
        spec = (~pred & (yt == 0)).sum() / (yt == 0).sum()
        assert result.metrics.at[name, "specificity"] == pytest.approx(spec)
        checked += 1
    assert checked >= 10


def test_cohorts_table_per_cohort_matches_sklearn(result, tables) -> None:
    assert list(result.cohorts) == ["PTB-XL", "CinC2021-E", "CinC2021-HR", "CinC2021-J"]
    ext = tables["external_labels"].set_index("record_id")
    pred = tables["external_predictions"].set_index("record_id").loc[ext.index]
    for cohort in ("CinC2021-E", "CinC2021-J"):
        rows = ext["cohort"] == cohort
        table = result.cohorts[cohort]
        assert table.loc[result.names[0], "n"] == rows.sum()
        for name in result.names:
            y = ext.loc[rows, name].to_numpy()
            if 0 < y.sum() < len(y):
                assert table.at[name, "auroc"] == pytest.approx(roc_auc_score(y, pred.loc[rows, name]), abs=1e-9)
                # thresholds are carried from PTB-XL validation, not refitted per cohort
                assert table.at[name, "threshold"] == result.thresholds.at[name, "threshold"] or (
                    np.isnan(table.at[name, "threshold"]))
    wide = result.cohort_table("auroc", ci=False)
    assert list(wide.columns) == list(result.cohorts) and wide.index[-1] == "macro"


def test_fairness_subgroups_and_macro_gaps(result, tables) -> None:
    fair = result.fairness
    assert set(fair["attribute"]) == {"sex", "age"}
    assert set(fair.loc[fair["attribute"] == "sex", "subgroup"]) == {"F", "M"}
    bands = list(dict.fromkeys(fair.loc[fair["attribute"] == "age", "subgroup"]))
    assert bands == sorted(bands, key=lambda b: -1 if b.startswith("<") else int(b.split("-")[0].rstrip("+")))
    pred, lab = _rows(tables, "test")
    female = (lab["sex"] == "F").to_numpy()
    row = fair[(fair["attribute"] == "sex") & (fair["subgroup"] == "F")].set_index("condition")
    name = result.metrics.drop(index="macro")["n_pos"].idxmax()
    assert row.at[name, "auroc"] == pytest.approx(roc_auc_score(lab[name][female], pred[name][female]), abs=1e-9)
    gaps = result.fairness_gaps
    macro = gaps[(gaps["attribute"] == "sex") & (gaps["condition"] == "macro")].set_index(["metric", "comparison"])
    sub = result.summary["fairness"]["sex"]["subgroups"]
    tpr_gap = abs(sub["F"]["macro_tpr"] - sub["M"]["macro_tpr"])
    assert macro.at[("sensitivity", "max-min"), "gap"] == pytest.approx(tpr_gap)


def test_temperature_scaling_fitted_on_val(baseline: Path, result, tables) -> None:
    from ecgfm.evaluate.calibration import TemperatureScaling

    scaled = evaluate_run(baseline / "predictions.csv", baseline / "labels.csv", n_resamples=0,
                          temperature=True)
    assert scaled.resolved["temperature"] and "ece_calibrated" in scaled.calibration.columns
    val_pred, val_lab = _rows(tables, "val")
    name = scaled.metrics.drop(index="macro")["n_pos"].idxmax()
    ts = TemperatureScaling(inputs="probabilities").fit(val_pred[[name]].to_numpy(), val_lab[[name]].to_numpy(float))
    assert scaled.thresholds.at[name, "temperature"] == pytest.approx(ts.temperature_[0], rel=1e-6)
    # ranking metrics do not move; the Brier score does
    a, b = scaled.metrics["auroc"], result.cohorts["PTB-XL"]["auroc"]
    np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), atol=1e-9)
    assert scaled.calibration.at["macro", "ece_calibrated"] != scaled.calibration.at["macro", "ece"]


def test_no_split_column_is_flagged_optimistic(tables) -> None:
    labels = tables["labels"].drop(columns=["split"])
    res = evaluate_run(tables["predictions"], labels, n_resamples=0)
    assert res.summary["thresholds_optimistic"] and not res.resolved["temperature"]
    assert res.summary["n_records"] == len(labels)
    assert any("optimistic" in w for w in res.warnings)
    with pytest.raises(ValidationError, match="temperature scaling needs validation rows"):
        evaluate_run(tables["predictions"], labels, n_resamples=0, temperature=True)


def test_missing_labels_are_left_out_per_condition(tables) -> None:
    labels = tables["labels"].copy()
    name = "NORM"
    test_ids = labels.index[labels["split"] == "test"]
    labels.loc[test_ids[:20], name] = np.nan
    res = evaluate_run(tables["predictions"], labels, n_resamples=0, temperature=False)
    pred, lab = _rows({"predictions": tables["predictions"], "labels": labels}, "test")
    keep = lab[name].notna()
    assert res.metrics.at[name, "n"] == keep.sum() == len(lab) - 20
    assert res.metrics.at[name, "auroc"] == pytest.approx(roc_auc_score(lab[name][keep], pred[name][keep]))


def test_perfect_predictions_score_one_on_the_challenge_metric(tables) -> None:
    weights = data_path(*WEIGHTS_PARTS)
    labels = tables["labels"]
    val = labels[labels["split"] == "val"]
    # conditions without a positive among the validation rows get no threshold (never output)
    names = [c for c in tables["predictions"].columns if c != "record_id" and 0 < val[c].sum() < len(val)]
    perfect = labels[["record_id", *names]].copy()
    res = evaluate_run(perfect, labels, n_resamples=0, temperature=False, challenge_weights=str(weights))
    ch = res.challenge
    assert ch is not None and "AFIB" in ch["conditions_used"] and "NORM" not in ch["conditions_used"]
    assert ch["by_cohort"]["PTB-XL"]["challenge_score"] == pytest.approx(1.0)
    assert res.summary["macro_auroc"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# reading and alignment errors name the file


def test_alignment_errors_name_the_file(baseline: Path, tmp_path: Path, tables) -> None:
    pred, lab = tables["predictions"], tables["labels"]

    def write(df: pd.DataFrame, name: str) -> Path:
        path = tmp_path / name
        df.to_csv(path, index=False)
        return path

    good_p, good_l = baseline / "predictions.csv", baseline / "labels.csv"
    bad = write(lab.drop(columns=["AFIB"]), "labels_no_afib.csv")
    with pytest.raises(ReadError, match=r"labels_no_afib\.csv: no label column .*AFIB"):
        align(good_p, bad)
    high = pred.copy()
    high.loc[3, "NORM"] = 1.7
    bad = write(high, "preds_high.csv")
    with pytest.raises(ReadError, match=r"preds_high\.csv: column 'NORM': 1 predictions outside \[0, 1\]"):
        align(bad, good_l)
    dup = pd.concat([pred, pred.iloc[[5]]])
    bad = write(dup, "preds_dup.csv")
    with pytest.raises(ReadError, match=rf"preds_dup\.csv: duplicate record_id '{pred.record_id[5]}'"):
        align(bad, good_l)
    text = pred.astype({"SR": object})
    text.loc[2, "SR"] = "high"
    bad = write(text, "preds_text.csv")
    with pytest.raises(ReadError, match=r"preds_text\.csv: column 'SR': predictions must be numbers"):
        align(bad, good_l)
    gap = pred.copy()
    gap.loc[4, "MI"] = np.nan
    bad = write(gap, "preds_nan.csv")
    with pytest.raises(ReadError, match=r"preds_nan\.csv: column 'MI': 1 predictions missing"):
        align(bad, good_l)
    two = lab.copy()
    two.loc[0, "MI"] = 2
    bad = write(two, "labels_two.csv")
    with pytest.raises(ReadError, match=r"labels_two\.csv: label column 'MI': values must be 0, 1"):
        align(good_p, bad)
    bad = write(lab.iloc[10:], "labels_short.csv")
    with pytest.raises(ReadError, match=r"predictions\.csv: 10 record ids have no row in the labels"):
        align(good_p, bad)
    bad = write(pred.rename(columns={"record_id": "ecg_id"}), "preds_noid.csv")
    with pytest.raises(ReadError, match=r"preds_noid\.csv: no id column 'record_id'"):
        align(bad, good_l)
    copy = write(pred, "preds_copy.csv")
    with pytest.raises(ReadError, match=r"predictions\.csv and .*preds_copy\.csv: record_id .* more than one file"):
        align([good_p, copy], good_l)
    with pytest.raises(ReadError, match="no such file"):
        load_table(tmp_path / "absent.csv")
    with pytest.raises(ValidationError, match="conditions"):
        align(good_p, good_l, conditions=["NOT_A_COLUMN"])


def test_formats_and_extra_label_rows(tables, tmp_path: Path) -> None:
    """Parquet and JSON Lines read like CSV; ids keep leading zeros; extra label rows ignored."""
    pred = tables["predictions"].iloc[:60].copy()
    lab = tables["labels"].copy()
    pred["record_id"] = "00" + pred["record_id"]
    lab["record_id"] = "00" + lab["record_id"]
    pred.to_parquet(tmp_path / "p.parquet", index=False)
    lab.to_json(tmp_path / "l.jsonl", orient="records", lines=True)
    al = align(tmp_path / "p.parquet", tmp_path / "l.jsonl")
    assert al.ids[0].startswith("00") and len(al.ids) == 60
    assert al.n_unmatched_labels == len(lab) - 60
    ref = align(pred, lab)
    np.testing.assert_array_equal(al.y, ref.y)
    np.testing.assert_allclose(al.scores, ref.scores)


def test_config_rejects_bad_options() -> None:
    with pytest.raises(ValidationError, match="operating point"):
        EvaluationConfig(operating_point="sensitivity:1.5")
    assert EvaluationConfig(groups="sex, age").groups == ("sex", "age")
    with pytest.raises(ValidationError, match="unknown option"):
        evaluate_run(pd.DataFrame(), pd.DataFrame(), resamples=10)


# ---------------------------------------------------------------------------------------------
# report and CLI


def test_report_sections_and_escaping(tables, tmp_path: Path) -> None:
    from ecgfm.evaluate.report import render_report

    hostile = "<script>alert('x')</script>"
    pred = tables["predictions"].rename(columns={"NORM": hostile})
    lab = tables["labels"].rename(columns={"NORM": hostile}).copy()
    lab.loc[lab["sex"] == "F", "sex"] = "<b>F</b>"
    res = evaluate_run(pred, lab, groups=("sex", "age"), n_resamples=20, report_conditions=(hostile, "SR"))
    page = render_report(res)
    for section in ("summary", "roc-pr", "auroc-distribution", "calibration", "fairness", "cohorts",
                    "conditions", "configuration"):
        assert f'id="{section}"' in page, section
    assert page.count("data:image/png;base64,") >= 5  # curves, histogram, calibration, 2 fairness
    assert hostile not in page and "<b>F</b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&lt;b&gt;F&lt;/b&gt;" in page
    assert page.count("<script") == 1  # the inline sorter, nothing else
    assert "http://" not in page and "https://" not in page and "<link" not in page
    res.save(tmp_path, formats=("html",))
    assert (tmp_path / "report.html").stat().st_size > 50_000
    assert not (tmp_path / "metrics.csv").exists() and (tmp_path / "config.json").exists()


def test_cli_end_to_end(baseline: Path, tmp_path: Path) -> None:
    weights = data_path(*WEIGHTS_PARTS)
    out = tmp_path / "out"
    args = [
        "--predictions", str(baseline / "predictions.csv"),
        "--predictions", str(baseline / "external_predictions.csv"),
        "--labels", str(baseline / "labels.csv"), "--labels", str(baseline / "external_labels.csv"),
        "--groups", "sex,age", "--out", str(out), "--resamples", "30", "--seed", "3",
        "--operating-point", "sensitivity:0.9", "--challenge-weights", str(weights),
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "macro AUROC" in res.stdout and "evaluate: fitting" in res.stderr
    for name in ("metrics.csv", "summary.json", "fairness.csv", "cohorts.csv", "thresholds.csv",
                 "calibration.csv", "config.json", "report.html"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["groups"] == ["sex", "age"] and config["options"]["seed"] == 3
    assert config["options"]["operating_point"] == "sensitivity:0.9"
    assert config["resolved"]["temperature"] is True and config["resolved"]["primary"] == "PTB-XL"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["summary"]["cohorts"]) == {"PTB-XL", "CinC2021-E", "CinC2021-HR", "CinC2021-J"}
    assert "challenge" in summary
    thresholds = pd.read_csv(out / "thresholds.csv", index_col="condition")
    fitted = thresholds.dropna(subset=["threshold"])
    assert (fitted["sensitivity_fit"] >= 0.9 - 1e-9).all()  # the target holds where it was fitted
    assert set(pd.read_csv(out / "cohorts.csv")["cohort"]) == set(summary["summary"]["cohorts"])


def test_cli_bad_input_exits_2_naming_the_file(tables, tmp_path: Path, baseline: Path) -> None:
    pred = tables["predictions"].copy()
    pred.loc[0, "SR"] = 3.0
    bad = tmp_path / "bad_preds.csv"
    pred.to_csv(bad, index=False)
    res = CliRunner().invoke(app, ["--predictions", str(bad), "--labels", str(baseline / "labels.csv"),
                                   "--out", str(tmp_path / "o"), "--resamples", "0"])
    assert res.exit_code == 2
    assert f"error: {bad}: column 'SR'" in res.stderr and "outside [0, 1]" in res.stderr
    res = CliRunner().invoke(app, ["--predictions", str(baseline / "predictions.csv"), "--labels",
                                   str(baseline / "labels.csv"), "--out", str(tmp_path / "o"),
                                   "--groups", "site"])
    assert res.exit_code == 2 and "no group column 'site'" in res.stderr
    res = CliRunner().invoke(app, ["--predictions", str(baseline / "predictions.csv"), "--labels",
                                   str(baseline / "labels.csv"), "--out", str(tmp_path / "o"),
                                   "--operating-point", "best"])
    assert res.exit_code == 2 and "operating point" in res.output


def test_import_is_light() -> None:
    code = ("import sys, ecgfm.evaluate, ecgfm.evaluate.cli; "
            "print(sorted(m for m in ('pandas', 'scipy', 'matplotlib', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
