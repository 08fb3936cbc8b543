"""ecgfm.evaluate.fairness: metrics per subgroup and TPR/FPR gaps.

Reference: scikit-learn on each subgroup's records (``roc_auc_score(y[g], s[g])``,
``recall_score(y[g], s[g] >= t)``), and for the intervals a loop over the same patient
resamples of the whole cohort (``resample_indices``), each resample split by subgroup.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from conftest import data_path
from ecgfm.errors import ValidationError
from ecgfm.evaluate.bootstrap import resample_indices
from ecgfm.evaluate.fairness import age_bands, subgroup_labels, subgroup_table
from ecgfm.evaluate.metrics import operating_thresholds

TOL = 1e-10


def test_age_bands():
    ages = [0, 17.9, 18, 39, 39.5, 40, 59, 60, 79, 80, 300, np.nan, None]
    assert age_bands(ages).tolist() == [
        "<18", "<18", "18-39", "18-39", "18-39", "40-59", "40-59", "60-79", "60-79", "80+", "80+",
        "unknown", "unknown",
    ]
    assert age_bands([10, 50, 70], edges=(45.5, 65)).tolist() == ["<45.5", "45.5-<65", "65+"]
    with pytest.raises(ValidationError, match="increasing"):
        age_bands([1], edges=(60, 40))


def test_subgroup_labels_leave_out_missing():
    codes, levels = subgroup_labels(["F", "M", None, "", "F", np.nan], 6)
    assert levels == ["F", "M"] and codes.tolist() == [0, 1, -1, -1, 0, -1]


def cohort(n=300, c=3, seed=0):
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(n), 2)[:n]
    sex = np.where(rng.random(n) < 0.45, "F", "M")
    sex = np.array([sex[p] for p in patient])  # a patient's sex is fixed
    y = (rng.random((n, c)) < 0.25).astype(float)
    shift = np.where(sex == "F", 0.2, 2.5)[:, None]  # the model is worse in F
    s = np.round(1 / (1 + np.exp(-(rng.normal(size=(n, c)) + shift * y))), 2)
    y[rng.random((n, c)) < 0.03] = np.nan
    return y, s, patient, sex


def test_subgroup_metrics_and_gaps_match_sklearn_loop():
    y, s, patient, sex = cohort()
    thr = operating_thresholds(y, s, "youden")
    b, seed = 25, 4
    res = subgroup_table(y, s, sex, thr, patient, ("auroc", "sensitivity"), n_resamples=b,
                         seed=seed, names=["a", "b", "c"], reference="M")
    assert res.levels == ["F", "M"] and res.reference == "M"
    t = res.table
    assert t.index.names == ["subgroup", "condition"]
    assert list(t.columns) == ["n", "n_pos", "auroc", "auroc_low", "auroc_high", "sensitivity",
                               "sensitivity_low", "sensitivity_high"]
    loops = {g: {"auroc": [], "sensitivity": [], "fpr": []} for g in ("F", "M")}
    idxs = list(resample_indices(patient, b, seed))
    for c, name in enumerate(["a", "b", "c"]):
        for g in ("F", "M"):
            ok = (sex == g) & ~np.isnan(y[:, c])
            row = t.loc[(g, name)]
            assert row["n"] == ok.sum() and row["n_pos"] == y[ok, c].sum()
            assert abs(row["auroc"] - skm.roc_auc_score(y[ok, c], s[ok, c])) < TOL
            assert abs(row["sensitivity"] - skm.recall_score(y[ok, c], s[ok, c] >= thr[c])) < TOL
            aucs, sens, fprs = [], [], []
            for idx in idxs:
                k = idx[ok[idx]]
                yt, pred = y[k, c], s[k, c] >= thr[c]
                aucs.append(skm.roc_auc_score(yt, s[k, c]) if 0 < yt.sum() < yt.size else np.nan)
                sens.append(yt[pred].sum() / yt.sum() if yt.sum() else np.nan)
                fprs.append((1 - yt)[pred].sum() / (1 - yt).sum() if (1 - yt).sum() else np.nan)
            loops[g]["auroc"].append(aucs)
            loops[g]["sensitivity"].append(sens)
            loops[g]["fpr"].append(fprs)
            lo, hi = np.nanpercentile(aucs, [2.5, 97.5])
            assert abs(row["auroc_low"] - lo) < TOL and abs(row["auroc_high"] - hi) < TOL
        for m in ("sensitivity", "fpr"):
            f, mm = np.array(loops["F"][m][c]), np.array(loops["M"][m][c])
            gap = res.gaps.loc[(name, m, "F - M")]
            pf = t.loc[("F", name), "sensitivity"] if m == "sensitivity" else None
            if pf is not None:
                assert abs(gap["gap"] - (pf - t.loc[("M", name), "sensitivity"])) < TOL
            d = f - mm
            lo, hi = np.nanpercentile(d, [2.5, 97.5])
            assert abs(gap["low"] - lo) < TOL and abs(gap["high"] - hi) < TOL
            n = (~np.isnan(d)).sum()
            p = min(1, 2 * min((d <= 0).sum() + 1, (d >= 0).sum() + 1) / (n + 1))
            assert abs(gap["p_value"] - p) < TOL
            spread = res.gaps.loc[(name, m, "max-min")]
            assert abs(spread["gap"] - abs(gap["gap"])) < TOL and np.isnan(spread["p_value"])
            lo, hi = np.nanpercentile(np.abs(d), [2.5, 97.5])
            assert abs(spread["low"] - lo) < TOL and abs(spread["high"] - hi) < TOL
    # the model is built to find fewer positives in F
    assert (res.gaps.xs(("sensitivity", "F - M"), level=("metric", "comparison"))["gap"] < 0).all()


def test_default_reference_thresholds_and_no_bootstrap():
    y, s, patient, sex = cohort(seed=1)
    res = subgroup_table(y, s, sex, n_resamples=0)
    assert res.reference == ("M" if (sex == "M").sum() > (sex == "F").sum() else "F")
    assert np.array_equal(res.thresholds, operating_thresholds(y, s, "youden"))
    assert res.table["auroc_low"].isna().all()
    with pytest.raises(ValidationError, match="not a subgroup"):
        subgroup_table(y, s, sex, n_resamples=0, reference="X")


def test_real_ptbxl_sex_and_age_subgroups():
    import pandas as pd

    from ecgfm.labels import ptbxl_groups

    db = pd.read_csv(data_path("ptb-xl", "ptbxl_database.csv"))
    names = ["CD", "HYP", "MI", "NORM", "STTC"]
    sets = [ptbxl_groups(x)["superdiagnostic"] for x in db["scp_codes"]]
    y = np.array([[c in st for c in names] for st in sets], dtype=float)
    rng = np.random.default_rng(2)
    s = np.round(np.clip(0.4 * y + 0.6 * rng.random(y.shape), 0, 1), 2)
    sex = np.where(db["sex"] == 1, "female", "male")  # PTB-XL: 0 male, 1 female
    val = db["strat_fold"].to_numpy() <= 8
    thr = operating_thresholds(y[val], s[val], "sensitivity", 0.8)  # fitted on folds 1-8
    test = ~val
    res = subgroup_table(y[test], s[test], sex[test], thr, db["patient_id"].to_numpy()[test],
                         n_resamples=10, names=names)
    for g in ("female", "male"):
        k = test & (sex == g)
        for c, name in enumerate(names):
            assert abs(res.table.loc[(g, name), "auroc"] - skm.roc_auc_score(y[k, c], s[k, c])) < TOL
            assert abs(res.table.loc[(g, name), "specificity"]
                       - skm.recall_score(y[k, c], s[k, c] >= thr[c], pos_label=0)) < TOL
    bands = age_bands(db["age"].to_numpy())
    res_age = subgroup_table(y, s, bands, thr, db["patient_id"].to_numpy(), ("auroc",), n_resamples=0, names=names)
    assert set(res_age.levels) <= {"<18", "18-39", "40-59", "60-79", "80+", "unknown"}
    assert res_age.table.loc[(res_age.levels, "NORM"), "n"].sum() == len(db)
