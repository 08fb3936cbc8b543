"""ecgfm.evaluate.metrics against scikit-learn, on random predictions and on PTB-XL labels.

Reference: scikit-learn 1.x ``roc_auc_score``, ``average_precision_score``, ``roc_curve``,
``precision_recall_curve``, ``brier_score_loss``, ``confusion_matrix``, ``f1_score`` (with
``zero_division=np.nan``), each called per condition on the records whose label is not missing,
e.g. ``roc_auc_score(y[ok, c], s[ok, c], sample_weight=w[ok])``.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from conftest import data_path
from ecgfm.errors import ValidationError
from ecgfm.evaluate import metrics as M

TOL = 1e-10


def random_predictions(n: int = 400, c: int = 12, seed: int = 0, missing: float = 0.05):
    """Labels with NaN (missing), a range of prevalences, scores with ties in half the columns."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < rng.uniform(0.01, 0.5, c)).astype(float)
    y[:, 0] = 0
    y[:3, 0] = 1  # a rare condition
    s = 1 / (1 + np.exp(-(rng.normal(size=(n, c)) + rng.uniform(0, 2, c) * y)))
    s[:, ::2] = np.round(s[:, ::2], 1)  # heavy ties
    y[rng.random((n, c)) < missing] = np.nan
    return y, s


def per_condition(fn, y, s, w=None, **kw):
    out = []
    for c in range(y.shape[1]):
        ok = ~np.isnan(y[:, c])
        out.append(fn(y[ok, c], s[ok, c], sample_weight=None if w is None else w[ok], **kw))
    return np.array(out)


@pytest.fixture(scope="module")
def ptbxl():
    """PTB-XL diagnostic subclasses (23) of the shared records, missing where a record has no
    diagnostic statement; scores: a noisy function of the label and the patient's age."""
    import pandas as pd

    from ecgfm.labels import ptbxl_groups

    db = pd.read_csv(data_path("ptb-xl", "ptbxl_database.csv"))
    sets = [ptbxl_groups(x)["subdiagnostic"] for x in db["scp_codes"]]
    names = sorted({c for s in sets for c in s})
    y = np.array([[c in s for c in names] for s in sets], dtype=float)
    y[[not s for s in sets]] = np.nan
    rng = np.random.default_rng(1)
    age = db["age"].fillna(60).clip(upper=95).to_numpy()
    s = np.round(1 / (1 + np.exp(-(2 * y + 0.02 * (age[:, None] - 60) + rng.normal(size=y.shape)))), 3)
    s = np.where(np.isnan(y), rng.random(y.shape), s)
    return y, s, names, db


# -- ranking metrics --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_and_ap_match_sklearn_random(seed):
    y, s = random_predictions(seed=seed)
    assert np.abs(M.auroc(y, s) - per_condition(skm.roc_auc_score, y, s)).max() < TOL
    assert np.abs(M.average_precision(y, s) - per_condition(skm.average_precision_score, y, s)).max() < TOL


def test_weighted_matches_sklearn_sample_weight_and_repetition():
    y, s = random_predictions(seed=3)
    rng = np.random.default_rng(3)
    w_int = rng.integers(0, 4, y.shape[0])
    w_float = rng.uniform(0.1, 3, y.shape[0])
    for w in (w_int, w_float):
        assert np.abs(M.auroc(y, s, w) - per_condition(skm.roc_auc_score, y, s, w)).max() < TOL
        assert np.abs(M.average_precision(y, s, w) - per_condition(skm.average_precision_score, y, s, w)).max() < TOL
    # integer weights = the records repeated
    idx = np.repeat(np.arange(y.shape[0]), w_int)
    assert np.abs(M.auroc(y, s, w_int) - M.auroc(y[idx], s[idx])).max() < TOL
    assert np.abs(M.average_precision(y, s, w_int) - per_condition(skm.average_precision_score, y[idx], s[idx])).max() < TOL


def test_weighted_metrics_engine_many_weightings():
    y, s = random_predictions(n=300, c=6, seed=4)
    rng = np.random.default_rng(4)
    w = rng.integers(0, 3, (7, y.shape[0]))
    got = M.WeightedMetrics(y, s, ("auroc", "average_precision", "fmax"), n_jobs=2, chunk=3)(w)
    assert set(got) == {"auroc", "ap", "fmax"} and got["auroc"].shape == (7, 6)
    for b in range(7):
        assert np.abs(got["auroc"][b] - per_condition(skm.roc_auc_score, y, s, w[b])).max() < TOL
        assert np.abs(got["ap"][b] - per_condition(skm.average_precision_score, y, s, w[b])).max() < TOL
        idx = np.repeat(np.arange(y.shape[0]), w[b])
        assert np.allclose(got["fmax"][b], M.fmax(y[idx], s[idx])[0], atol=TOL, equal_nan=True)


def test_undefined_conditions_are_nan_and_1d_gives_float():
    y = np.array([[0, 1, 1], [0, 1, 0], [0, 1, np.nan]])
    s = np.array([[0.1, 0.2, 0.9], [0.5, 0.3, 0.2], [0.4, 0.1, 0.5]])
    a = M.auroc(y, s)
    assert np.isnan(a[0]) and np.isnan(a[1]) and a[2] == 1.0
    assert np.isnan(M.average_precision(y, s)[:2]).all()
    v = M.auroc([0, 1, 0, 1], [0.1, 0.8, 0.3, 0.3])
    assert isinstance(v, float) and v == skm.roc_auc_score([0, 1, 0, 1], [0.1, 0.8, 0.3, 0.3])


def test_cumsum_strip_scan_is_exact():
    rng = np.random.default_rng(5)
    for g, b in ((1, 3), (63, 5), (64, 7), (65, 1), (1000, 9), (4097, 4)):
        x = rng.integers(0, 5, (g, b)).astype(np.float32)
        assert np.array_equal(M._cumsum0(x), np.cumsum(x, axis=0, dtype=np.float64))


def test_fmax_matches_brute_force_and_f1_at_threshold():
    y, s = random_predictions(seed=6)
    fm, thr = M.fmax(y, s)
    for c in range(y.shape[1]):
        ok = ~np.isnan(y[:, c])
        if y[ok, c].sum() == 0:
            assert np.isnan(fm[c])
            continue
        p, r, _ = skm.precision_recall_curve(y[ok, c], s[ok, c])
        with np.errstate(invalid="ignore"):
            f = np.nan_to_num(2 * p * r / (p + r))
        assert abs(fm[c] - f.max()) < TOL
        assert abs(skm.f1_score(y[ok, c], s[ok, c] >= thr[c]) - fm[c]) < TOL
    assert np.allclose(M.f1_at(y, s, thr), fm, atol=TOL, equal_nan=True)


# -- operating points -------------------------------------------------------------------------


def test_threshold_metrics_match_sklearn():
    y, s = random_predictions(seed=7)
    rng = np.random.default_rng(7)
    thr = rng.uniform(0.2, 0.8, y.shape[1])
    thr[3] = 2.0  # nothing predicted positive: PPV undefined
    got = M.threshold_metrics(y, s, thr)
    conf = M.confusion_at(y, s, thr)
    for c in range(y.shape[1]):
        ok = ~np.isnan(y[:, c])
        yt, yp = y[ok, c], s[ok, c] >= thr[c]
        tn, fp, fn, tp = skm.confusion_matrix(yt, yp, labels=[0, 1]).ravel()
        assert (conf["tp"][c], conf["fp"][c], conf["tn"][c], conf["fn"][c]) == (tp, fp, tn, fn)
        kw = {"zero_division": np.nan}
        assert np.allclose(got["sensitivity"][c], skm.recall_score(yt, yp, **kw), equal_nan=True)
        assert np.allclose(got["specificity"][c], skm.recall_score(yt, yp, pos_label=0, **kw), equal_nan=True)
        assert np.allclose(got["ppv"][c], skm.precision_score(yt, yp, **kw), equal_nan=True)
        assert np.allclose(got["npv"][c], skm.precision_score(yt, yp, pos_label=0, **kw), equal_nan=True)
        assert np.allclose(got["f1"][c], skm.f1_score(yt, yp, **kw), equal_nan=True)
    assert np.isnan(got["ppv"][3])
    w = rng.integers(0, 3, y.shape[0])
    got_w = M.threshold_metrics(y, s, thr, sample_weight=w)
    assert np.allclose(got_w["sensitivity"], per_condition(lambda a, b, sample_weight: skm.recall_score(a, b, sample_weight=sample_weight, zero_division=np.nan), y, s >= thr, w), equal_nan=True)


def test_operating_thresholds_against_roc_curve():
    y, s = random_predictions(seed=8, missing=0)
    youden = M.operating_thresholds(y, s, "youden")
    sens90 = M.operating_thresholds(y, s, "sensitivity", 0.9)
    spec90 = M.operating_thresholds(y, s, "specificity", 0.9)
    for c in range(1, y.shape[1]):
        fpr, tpr, t = skm.roc_curve(y[:, c], s[:, c], drop_intermediate=False)
        assert youden[c] == t[np.argmax(tpr - fpr)]
        assert sens90[c] == t[np.argmax(tpr >= 0.9)]
        # the best sensitivity with specificity >= 0.9, at the lowest positive score reaching it
        best = tpr[1 - fpr >= 0.9].max()
        pred = s[:, c] >= spec90[c]
        assert skm.recall_score(y[:, c], pred) == best
        assert skm.recall_score(y[:, c], pred, pos_label=0) >= 0.9
        assert spec90[c] in s[y[:, c] == 1, c]
    assert np.array_equal(M.operating_thresholds(y, s, "f1"), M.fmax(y, s)[1], equal_nan=True)
    assert M.operating_thresholds([0, 0, 1], [0.9, 0.8, 0.1], "specificity", 0.9) == np.inf


# -- curves -----------------------------------------------------------------------------------


@pytest.mark.parametrize("drop", [True, False])
def test_roc_curve_matches_sklearn(drop):
    y, s = random_predictions(seed=9)
    w = np.random.default_rng(9).uniform(0.5, 2, y.shape[0])
    for c in (1, 2, 5):
        ok = ~np.isnan(y[:, c])
        for weight in (None, w):
            ours = M.roc_curve(y[:, c], s[:, c], None if weight is None else weight, drop_intermediate=drop)
            ref = skm.roc_curve(y[ok, c], s[ok, c], sample_weight=None if weight is None else weight[ok], drop_intermediate=drop)
            for a, b in zip(ours, ref):
                assert a.shape == b.shape and np.allclose(a, b, rtol=0, atol=1e-12)


def test_pr_curve_matches_sklearn_and_gives_ap():
    y, s = random_predictions(seed=10)
    for c in (1, 2, 5):
        ok = ~np.isnan(y[:, c])
        p, r, t = M.pr_curve(y[:, c], s[:, c])
        rp, rr, rt = skm.precision_recall_curve(y[ok, c], s[ok, c])
        assert np.allclose(p, rp, atol=1e-12) and np.allclose(r, rr, atol=1e-12) and np.array_equal(t, rt)
        assert abs(-np.sum(np.diff(r) * p[:-1]) - M.average_precision(y[:, c], s[:, c])) < TOL
    with pytest.raises(ValidationError, match="one condition"):
        M.roc_curve(y, s)


# -- Brier, tables ----------------------------------------------------------------------------


def test_brier_matches_sklearn():
    y, s = random_predictions(seed=11)
    assert np.abs(M.brier_score(y, s) - per_condition(skm.brier_score_loss, y, s)).max() < TOL
    w = np.random.default_rng(11).uniform(0.5, 2, y.shape[0])
    assert np.abs(M.brier_score(y, s, w) - per_condition(skm.brier_score_loss, y, s, w)).max() < TOL
    with pytest.raises(ValidationError, match=r"\[0, 1\]"):
        M.brier_score([0, 1], [0.5, 1.5])


def test_evaluate_and_summary():
    y, s = random_predictions(seed=12)
    names = [f"c{i}" for i in range(y.shape[1])]
    thr = M.operating_thresholds(y, s, "youden")
    t = M.evaluate(y, s, names)
    assert list(t.columns) == ["n", "n_pos", "prevalence", "auroc", "ap", "brier", "fmax", "fmax_threshold",
                               "threshold", "sensitivity", "specificity", "ppv", "npv", "f1"]
    assert t.index.name == "condition" and list(t.index) == names
    assert np.array_equal(t["threshold"], thr)
    assert np.abs(t["auroc"] - per_condition(skm.roc_auc_score, y, s)).max() < TOL
    assert np.abs(t["brier"] - per_condition(skm.brier_score_loss, y, s)).max() < TOL
    assert np.array_equal(t["n_pos"], np.nansum(y, 0)) and np.array_equal(t["n"], (~np.isnan(y)).sum(0))
    rec = per_condition(lambda a, b, sample_weight: skm.recall_score(a, b, zero_division=np.nan), y, s >= thr)
    assert np.allclose(t["sensitivity"], rec, equal_nan=True)
    # thresholds carried from elsewhere are used as given
    t2 = M.evaluate(y, s, names, thresholds=np.full(y.shape[1], 0.5))
    assert (t2["threshold"] == 0.5).all()
    # logits: no Brier score, everything else still there
    assert np.isnan(M.evaluate(y, np.log(s / (1 - s + 1e-9) + 1e-9))["brier"]).all()

    summ = M.summary(y, s, table=t)
    ok = ~np.isnan(y)
    assert abs(summ["micro_auroc"] - skm.roc_auc_score(y[ok], s[ok])) < TOL
    assert abs(summ["micro_ap"] - skm.average_precision_score(y[ok], s[ok])) < TOL
    assert abs(summ["macro_auroc"] - np.nanmean(t["auroc"])) < TOL
    a = t["auroc"].to_numpy()
    assert summ["n_auroc_gt_0.7"] == (a > 0.7).sum() and summ["n_auroc_gt_0.9"] == (a > 0.9).sum()
    pred = s >= thr
    assert abs(summ["micro_sensitivity"] - skm.recall_score(y[ok], pred[ok])) < TOL
    assert summ == M.summary(y, s)


def test_input_errors_name_the_problem():
    with pytest.raises(ValidationError, match="0, 1 or NaN"):
        M.auroc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValidationError, match="finite"):
        M.auroc([0, 1, 1], [0.1, np.nan, 0.3])
    assert M.auroc([0, 1, np.nan, 1], [0.1, 0.5, np.nan, 0.3]) == 1.0  # NaN score where unlabelled
    with pytest.raises(ValidationError, match="shape"):
        M.auroc(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValidationError, match="unknown metric"):
        M.WeightedMetrics([0, 1], [0.1, 0.2], metrics=("roc",))
    with pytest.raises(ValidationError, match="thresholds"):
        M.WeightedMetrics([0, 1], [0.1, 0.2], metrics=("sensitivity",))
    with pytest.raises(ValidationError, match="one per condition"):
        M.confusion_at(np.zeros((3, 2)), np.zeros((3, 2)), [0.5, 0.5, 0.5])
    with pytest.raises(ValidationError, match="target"):
        M.operating_thresholds([0, 1], [0.1, 0.2], "sensitivity")
    assert M.canonical_metric("average_precision") == "ap" and M.canonical_metric("TPR") == "sensitivity"


# -- real labels ------------------------------------------------------------------------------


def test_real_ptbxl_labels_match_sklearn(ptbxl):
    y, s, names, _ = ptbxl
    assert y.shape == (2357, len(names)) and len(names) >= 20 and np.isnan(y).any()
    assert np.abs(M.auroc(y, s) - per_condition(skm.roc_auc_score, y, s)).max() < TOL
    assert np.abs(M.average_precision(y, s) - per_condition(skm.average_precision_score, y, s)).max() < TOL
    t = M.evaluate(y, s, names)
    assert np.abs(t["brier"] - per_condition(skm.brier_score_loss, y, s)).max() < TOL
    for c in range(len(names)):
        ok = ~np.isnan(y[:, c])
        pred = s[ok, c] >= t["threshold"].iloc[c]
        assert abs(t["f1"].iloc[c] - skm.f1_score(y[ok, c], pred)) < TOL
        assert abs(t["specificity"].iloc[c] - skm.recall_score(y[ok, c], pred, pos_label=0)) < TOL
    # the score grows with age, so the age-only score ranks like sklearn says too
    age = ptbxl[3]["age"].fillna(60).to_numpy(dtype=float)
    age_scores = np.repeat(age[:, None], len(names), axis=1)
    assert np.abs(M.auroc(y, age_scores) - per_condition(skm.roc_auc_score, y, age_scores)).max() < TOL
