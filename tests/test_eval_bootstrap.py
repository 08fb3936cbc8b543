"""ecgfm.evaluate.bootstrap and ecgfm.evaluate.cohorts.

Reference: a plain loop over the same patient resamples (``resample_indices``), calling
scikit-learn on the resampled records, e.g. ``roc_auc_score(y[idx, c], s[idx, c])``, and
``np.percentile(values, [2.5, 97.5])`` for the interval.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from conftest import data_path
from ecgfm.errors import ValidationError
from ecgfm.evaluate.bootstrap import (
    bootstrap,
    paired_bootstrap,
    patient_codes,
    resample_indices,
    resample_weights,
)
from ecgfm.evaluate.cohorts import Cohort, cohort_table, evaluate_cohorts, to_markdown
from ecgfm.evaluate.metrics import evaluate, operating_thresholds

TOL = 1e-10


def data(n: int = 240, c: int = 5, seed: int = 0):
    """Labels (with missing), tied scores, and patients with 1-4 records each."""
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(n), rng.integers(1, 5, n))[:n]
    y = (rng.random((n, c)) < rng.uniform(0.05, 0.4, c)).astype(float)
    s = np.round(1 / (1 + np.exp(-(rng.normal(size=(n, c)) + 1.5 * y))), 2)
    y[rng.random((n, c)) < 0.05] = np.nan
    y[:, -1] = np.where(np.arange(n) < 3, 1.0, 0.0)  # rare: often no positive in a resample
    return y, s, patient


def sk_metric(name, yt, st, thr=None):
    if yt.size == 0:
        return np.nan
    if name in ("auroc", "ap") and (yt.sum() == 0 or yt.sum() == yt.size):
        return np.nan
    if name == "auroc":
        return skm.roc_auc_score(yt, st)
    if name == "ap":
        return skm.average_precision_score(yt, st)
    if name == "brier":
        return skm.brier_score_loss(yt, st, labels=[0, 1])
    pred = st >= thr
    kw = {"zero_division": np.nan}
    return {
        "sensitivity": lambda: skm.recall_score(yt, pred, **kw),
        "specificity": lambda: skm.recall_score(yt, pred, pos_label=0, **kw),
        "ppv": lambda: skm.precision_score(yt, pred, **kw),
        "npv": lambda: skm.precision_score(yt, pred, pos_label=0, **kw),
        "f1": lambda: skm.f1_score(yt, pred, **kw),
    }[name]()


def sk_loop(y, s, patient, metrics, b, seed, thr=None):
    out = {m: np.full((b, y.shape[1]), np.nan) for m in metrics}
    for k, idx in enumerate(resample_indices(patient, b, seed)):
        for c in range(y.shape[1]):
            ok = idx[~np.isnan(y[idx, c])]
            for m in metrics:
                out[m][k, c] = sk_metric(m, y[ok, c], s[ok, c], None if thr is None else thr[c])
    return out


def test_resample_weights_draw_patients():
    patient = np.array(["p1", "p1", "p2", "p3", "p3", "p3", "p4"], dtype=object)
    w = resample_weights(patient, 50, seed=3)
    assert w.shape == (50, 7) and w.dtype == np.int32
    codes, n_pat = patient_codes(patient, 7)
    assert n_pat == 4
    for row in w:
        assert np.all(row[0] == row[1]) and np.all(row[3] == row[4]) and row[4] == row[5]
        per_patient = np.array([row[codes == k][0] for k in range(4)])
        assert per_patient.sum() == 4  # 4 patients drawn out of 4
    assert np.array_equal(w, resample_weights(patient, 50, seed=3))
    assert not np.array_equal(w, resample_weights(patient, 50, seed=4))
    # resample b does not depend on the chunking
    assert np.array_equal(w[20:30], resample_weights(patient, 10, seed=3, start=20))
    for row, idx in zip(w, resample_indices(patient, 50, seed=3)):
        assert np.array_equal(np.bincount(idx, minlength=7), row)
    # no groups: each record its own patient
    w0 = resample_weights(None, 20, n_records=9)
    assert (w0.sum(1) == 9).all()
    with pytest.raises(ValidationError, match="one patient id per record"):
        patient_codes(np.arange(3), 4)
    with pytest.raises(ValidationError, match="missing"):
        patient_codes(np.array(["a", None], dtype=object), 2)


def test_bootstrap_equals_sklearn_loop_on_same_resamples():
    y, s, patient = data()
    b, seed = 30, 7
    res = bootstrap(y, s, patient, ("auroc", "average_precision"), n_resamples=b, seed=seed,
                    keep_samples=True, n_jobs=2, batch=8)
    assert res.metrics == ("auroc", "ap")
    ref = sk_loop(y, s, patient, ("auroc", "ap"), b, seed)
    for m in ("auroc", "ap"):
        got = res.samples[m]
        assert np.array_equal(np.isnan(got), np.isnan(ref[m]))
        assert np.nanmax(np.abs(got - ref[m])) < TOL
        lo, hi = np.nanpercentile(ref[m], [2.5, 97.5], axis=0)
        assert np.allclose(res.low[m], lo, atol=TOL) and np.allclose(res.high[m], hi, atol=TOL)
        assert np.array_equal(res.n_valid[m], (~np.isnan(ref[m])).sum(0))
        macro = np.nanmean(ref[m], axis=1)
        assert np.allclose(res.macro[m][1:], np.percentile(macro, [2.5, 97.5]), atol=TOL)
        assert abs(res.macro[m][0] - np.nanmean(res.point[m])) < TOL
    assert res.n_valid["auroc"][-1] < b  # the rare condition is undefined in some resamples
    ok = ~np.isnan(y[:, 0])
    assert abs(res.point["auroc"][0] - skm.roc_auc_score(y[ok, 0], s[ok, 0])) < TOL


def test_bootstrap_threshold_metrics_and_brier():
    y, s, patient = data(seed=1)
    thr = operating_thresholds(y, s, "youden")
    metrics = ("sensitivity", "specificity", "ppv", "npv", "f1", "brier")
    b, seed = 15, 2
    res = bootstrap(y, s, patient, metrics, n_resamples=b, seed=seed, thresholds=thr, keep_samples=True)
    ref = sk_loop(y, s, patient, metrics, b, seed, thr)
    for m in metrics:
        assert np.array_equal(np.isnan(res.samples[m]), np.isnan(ref[m])), m
        assert np.nanmax(np.abs(res.samples[m] - ref[m])) < TOL, m
    table = evaluate(y, s, thresholds=thr)
    for m in metrics:
        assert np.allclose(res.point[m], table[m], atol=TOL, equal_nan=True)


def test_record_level_when_no_groups_and_table():
    y, s, _ = data(seed=2)
    res = bootstrap(y, s, None, n_resamples=20, names=list("abcde"), keep_samples=True)
    ref = sk_loop(y, s, np.arange(y.shape[0]), ("auroc",), 20, 0)
    assert np.nanmax(np.abs(res.samples["auroc"] - ref["auroc"])) < TOL
    t = res.table(macro=True)
    assert list(t.index) == ["a", "b", "c", "d", "e", "macro"]
    assert list(t.columns) == ["auroc", "auroc_low", "auroc_high", "ap", "ap_low", "ap_high"]
    assert (t["auroc_low"] <= t["auroc"]).all() and (t["auroc"] <= t["auroc_high"]).all()


def test_basic_interval_reflects_percentiles_around_the_point():
    y, s, patient = data(seed=6)
    pct = bootstrap(y, s, patient, n_resamples=25, seed=2, keep_samples=True)
    basic = bootstrap(y, s, patient, n_resamples=25, seed=2, interval="basic")
    assert basic.interval == "basic" and pct.interval == "percentile"
    for m in ("auroc", "ap"):
        q_lo, q_hi = np.nanpercentile(pct.samples[m], [2.5, 97.5], axis=0)
        assert np.allclose(basic.low[m], 2 * pct.point[m] - q_hi, equal_nan=True)
        assert np.allclose(basic.high[m], 2 * pct.point[m] - q_lo, equal_nan=True)
        macro = np.nanmean(pct.samples[m], axis=1)
        mp = basic.macro[m][0]
        assert np.allclose(basic.macro[m][1:], 2 * mp - np.percentile(macro, [97.5, 2.5]))
    with pytest.raises(ValidationError, match="interval"):
        bootstrap(y, s, patient, n_resamples=5, interval="bca")


def test_paired_bootstrap():
    y, s, patient = data(seed=3)
    rng = np.random.default_rng(3)
    worse = np.where(np.isnan(y), 0.5, s + rng.normal(0, 0.5, s.shape))
    b = 40
    res = paired_bootstrap(y, s, worse, patient, ("auroc",), n_resamples=b, seed=1, keep_samples=True)
    ra = sk_loop(y, s, patient, ("auroc",), b, 1)["auroc"]
    rb = sk_loop(y, worse, patient, ("auroc",), b, 1)["auroc"]
    d = ra - rb
    assert np.nanmax(np.abs(res.samples["auroc"] - d)) < TOL
    assert np.allclose(res.diff["auroc"], res.point_a["auroc"] - res.point_b["auroc"])
    lo, hi = np.nanpercentile(d, [2.5, 97.5], axis=0)
    assert np.allclose(res.low["auroc"], lo, atol=TOL) and np.allclose(res.high["auroc"], hi, atol=TOL)
    n = (~np.isnan(d)).sum(0)
    p = np.minimum(1, 2 * np.minimum((d <= 0).sum(0) + 1, (d >= 0).sum(0) + 1) / (n + 1))
    assert np.allclose(res.p_value["auroc"], p)
    assert res.p_value["auroc"][0] < 0.05 and res.diff["auroc"][0] > 0
    assert res.macro["auroc"][0] > 0 and res.macro["auroc"][3] < 0.05
    # a model against itself: no difference, p = 1
    same = paired_bootstrap(y, s, s, patient, ("auroc", "ap"), n_resamples=10)
    assert np.nanmax(np.abs(same.diff["auroc"])) == 0 and np.all(same.p_value["ap"][:-1] == 1)
    t = res.table(macro=True)
    assert list(t.columns) == ["auroc_a", "auroc_b", "auroc_diff", "auroc_diff_low", "auroc_diff_high", "auroc_p"]
    assert t.index[-1] == "macro"


def test_bootstrap_errors():
    y, s, patient = data()
    with pytest.raises(ValidationError, match="thresholds"):
        bootstrap(y, s, patient, ("sensitivity",), n_resamples=5)
    with pytest.raises(ValidationError, match="alpha"):
        bootstrap(y, s, patient, n_resamples=5, alpha=5)
    with pytest.raises(ValidationError, match="names"):
        bootstrap(y, s, patient, n_resamples=5, names=["a"])


def test_real_ptbxl_patient_bootstrap():
    import pandas as pd

    from ecgfm.labels import ptbxl_groups

    db = pd.read_csv(data_path("ptb-xl", "ptbxl_database.csv"))
    sets = [ptbxl_groups(x)["superdiagnostic"] for x in db["scp_codes"]]
    names = ["CD", "HYP", "MI", "NORM", "STTC"]
    y = np.array([[c in st for c in names] for st in sets], dtype=float)
    y[[not st for st in sets]] = np.nan
    rng = np.random.default_rng(0)
    s = np.round(np.clip(0.5 * np.nan_to_num(y) + 0.3 * rng.random(y.shape) + 0.002 * db["age"].fillna(60).clip(upper=95).to_numpy()[:, None], 0, 1), 3)
    patient = db["patient_id"].to_numpy()
    res = bootstrap(y, s, patient, n_resamples=12, seed=5, names=names, keep_samples=True)
    ref = sk_loop(y, s, patient, ("auroc", "ap"), 12, 5)
    for m in ("auroc", "ap"):
        assert np.nanmax(np.abs(res.samples[m] - ref[m])) < TOL
        assert np.all(res.low[m] <= res.high[m])
    # patients with several records move together
    w = resample_weights(patient, 3, seed=5)
    multi = db.groupby("patient_id").size()
    pid = multi[multi > 1].index[0]
    rows = np.flatnonzero(patient == pid)
    assert (w[:, rows] == w[:, rows[:1]]).all()


# -- cohorts ----------------------------------------------------------------------------------


def test_evaluate_cohorts_and_cohort_table():
    y1, s1, p1 = data(seed=4)
    y2, s2, p2 = data(n=150, seed=5)
    names = [f"c{i}" for i in range(5)]
    thr = operating_thresholds(y1, s1, "sensitivity", 0.8)
    tables = evaluate_cohorts(
        {"internal": Cohort(y1, s1, p1), "external": (y2, s2, p2)}, names, thresholds=thr,
        n_resamples=20, seed=1,
    )
    assert list(tables) == ["internal", "external"]
    ext = tables["external"]
    assert list(ext.index) == [*names, "macro"]
    assert np.array_equal(ext["threshold"].to_numpy()[:-1], thr)  # carried, not refitted
    direct = bootstrap(y2, s2, p2, n_resamples=20, seed=1, names=names).table(macro=True)
    assert np.allclose(ext["auroc_low"], direct["auroc_low"], equal_nan=True)
    assert np.allclose(ext.loc["macro", "auroc"], direct.loc["macro", "auroc"])

    t = cohort_table(tables, "auroc")
    assert list(t.columns) == ["internal", "external"] and list(t.index) == [*names, "macro"]
    v, lo, hi = ext.loc["c1", ["auroc", "auroc_low", "auroc_high"]]
    assert t.loc["c1", "external"] == f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
    num = cohort_table(tables, "average_precision", ci=False)
    assert num.loc["c2", "internal"] == tables["internal"].loc["c2", "ap"]
    # cohorts with different conditions: missing cells are n/a
    partial = {"a": tables["internal"].drop(index="c0"), "b": tables["external"]}
    t2 = cohort_table(partial, "auroc", ci=False)
    assert np.isnan(t2.loc["c0", "a"]) and t2.index[-1] == "macro"
    md = to_markdown(t)
    assert md.startswith("| condition | internal | external |\n|---|---|---|\n| c0 |")
    with pytest.raises(ValidationError, match="no column"):
        cohort_table({"x": ext}, "npv_low_missing")
