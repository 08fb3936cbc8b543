"""Data-efficiency harness on real PTB-XL metadata with a small logistic model.

Training set: PTB-XL folds 1-8 of the shared subset (patients never cross folds), test set:
fold 10; labels: the benchmark's 5 diagnostic superclasses (``ptbxl_groups``); features: age and
sex only, so the fits take milliseconds and the score is a real, modest AUROC (older patients
are less often NORM). AUROC comes from scikit-learn.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from conftest import data_path
from ecgfm.errors import ValidationError
from ecgfm.evaluate.efficiency import (
    META_COLUMNS,
    data_efficiency,
    efficiency_subsets,
    plot_efficiency,
    summarise,
)
from ecgfm.labels import ptbxl_groups

SUPER = ("NORM", "MI", "STTC", "CD", "HYP")


@pytest.fixture(scope="module")
def ptbxl() -> dict[str, np.ndarray]:
    df = pd.read_csv(data_path("ptb-xl", "ptbxl_database.csv"))
    groups = [set(ptbxl_groups(s)["superdiagnostic"]) for s in df["scp_codes"]]
    y = np.array([[c in g for c in SUPER] for g in groups], dtype=float)
    age = df["age"].clip(upper=90).fillna(df["age"].median()).to_numpy()  # 300 = anonymised > 89
    x = np.column_stack([(age - 60) / 17, ((age - 60) / 17) ** 2, df["sex"].to_numpy(dtype=float)])
    train = df["strat_fold"].between(1, 8).to_numpy()
    test = (df["strat_fold"] == 10).to_numpy()
    return {
        "x_train": x[train], "y_train": y[train], "groups": df["patient_id"].to_numpy()[train],
        "x_test": x[test], "y_test": y[test],
    }


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-2) -> np.ndarray:
    """Independent L2-regularised logistic regressions, one per column of y; weights [d + 1, C]."""
    xb = np.column_stack([np.ones(len(x)), x])
    d, c = xb.shape[1], y.shape[1]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        w = w.reshape(d, c)
        z = xb @ w
        p = expit(z)
        val = np.sum(np.logaddexp(0, z) - y * z) / len(x) + 0.5 * l2 * np.sum(w[1:] ** 2)
        grad = xb.T @ (p - y) / len(x)
        grad[1:] += l2 * w[1:]
        return val, grad.ravel()

    return minimize(loss, np.zeros(d * c), jac=True, method="L-BFGS-B").x.reshape(d, c)


def _macro_auroc(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    per = {c: roc_auc_score(y[:, k], s[:, k]) for k, c in enumerate(SUPER)}
    return {"macro_auroc": float(np.mean(list(per.values()))), "auroc_NORM": per["NORM"]}


# -- subsets ----------------------------------------------------------------------------------


def test_subsets_nested_grouped_sized(ptbxl) -> None:
    y, groups = ptbxl["y_train"], ptbxl["groups"]
    n = len(y)
    fractions = (0.01, 0.1, 0.5, 1.0)
    subsets = efficiency_subsets(y, groups, fractions=fractions, repeats=3, seed=0)
    assert list(subsets) == [(f, r) for r in range(3) for f in fractions]
    sizes = pd.Series(groups).value_counts()
    largest = int(sizes.max())
    by_patient = pd.Series(np.arange(n)).groupby(groups).apply(set)
    for r in range(3):
        for small, big in zip(fractions, fractions[1:]):
            assert set(subsets[(small, r)]) <= set(subsets[(big, r)])  # nested within a repeat
        np.testing.assert_array_equal(subsets[(1.0, r)], np.arange(n))
        for f in fractions:
            idx = subsets[(f, r)]
            assert np.all(np.diff(idx) > 0)  # sorted, unique
            target = max(1, round(f * n))
            assert target <= len(idx) < target + largest  # reaches the target by < 1 patient
            for p in set(groups[idx]):  # no patient is split
                assert by_patient[p] <= set(idx)
            assert np.all(y[idx].sum(axis=0) >= 1)  # every superclass has a positive
    # different repeats draw different small subsets
    assert set(subsets[(0.1, 0)]) != set(subsets[(0.1, 1)])


def test_subsets_reproducible_from_seed(ptbxl) -> None:
    y, groups = ptbxl["y_train"], ptbxl["groups"]
    a = efficiency_subsets(y, groups, repeats=2, seed=11)
    b = efficiency_subsets(y, groups, repeats=2, seed=11)
    c = efficiency_subsets(y, groups, repeats=2, seed=12)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a[(0.1, 0)], c[(0.1, 0)])
    # a repeat's subsets do not depend on how many repeats are asked for
    one = efficiency_subsets(y, groups, repeats=1, seed=11)
    np.testing.assert_array_equal(one[(0.01, 0)], a[(0.01, 0)])


def test_rare_condition_is_covered_even_at_one_percent() -> None:
    rng = np.random.default_rng(0)
    n = 1000
    groups = np.repeat(np.arange(500), 2)  # 500 patients, 2 records each
    y = (rng.random((n, 3)) < 0.3).astype(float)
    y[:, 2] = 0
    y[[801], 2] = 1  # one positive record (patient 400) for condition 2
    y[5, 0] = np.nan  # NaN labels are allowed and count as not positive
    subsets = efficiency_subsets(y, groups, fractions=(0.002, 0.01, 1.0), repeats=5, seed=3)
    for r in range(5):
        idx = subsets[(0.002, r)]
        assert 801 in idx and 800 in idx  # the positive record, with its patient's other record
        assert np.all(np.nansum(y[idx], axis=0) >= 1)
    # without the guarantee, the tiny subset is exactly the target of 2 records (one patient)
    plain = efficiency_subsets(y, groups, fractions=(0.002,), repeats=5, seed=3, ensure_positives=False)
    assert {len(v) for v in plain.values()} == {2}
    # a condition without any positive cannot be covered and is skipped, not an error
    y[:, 2] = 0
    idx = efficiency_subsets(y, groups, fractions=(0.002,), repeats=1)[(0.002, 0)]
    assert len(idx) in (2, 4) and np.all(np.nansum(y[idx, :2], axis=0) >= 1)


def test_missing_patient_ids_are_single_records() -> None:
    # patients: id 1 -> records {0, 1}; NaN, NaN, None -> one patient each; id 2 -> {4}
    groups = np.array([1.0, 1.0, np.nan, np.nan, 2.0, None], dtype=object)
    y = np.zeros((6, 1))
    subsets = efficiency_subsets(y, groups, fractions=(0.2, 1.0), repeats=30, seed=0)
    smallest = [frozenset(subsets[(0.2, r)].tolist()) for r in range(30)]  # target: 1 record
    assert set(smallest) == {frozenset({0, 1}), frozenset({2}), frozenset({3}), frozenset({4}), frozenset({5})}


def test_validation() -> None:
    y = np.zeros((4, 2))
    with pytest.raises(ValidationError, match="outside"):
        efficiency_subsets(y, [1, 2, 3, 4], fractions=(0.0, 1.0))
    with pytest.raises(ValidationError, match="entries"):
        efficiency_subsets(y, [1, 2, 3])
    with pytest.raises(ValidationError, match="float or a dict"):
        data_efficiency(lambda idx: None, y, [1, 2, 3, 4], None, score=lambda yt, s: "high", repeats=1)


# -- the harness with a real fit ------------------------------------------------------------


def test_data_efficiency_ptbxl(ptbxl) -> None:
    seen: list[np.ndarray] = []

    def fit_predict(idx: np.ndarray) -> np.ndarray:
        seen.append(idx)
        w = _fit_logistic(ptbxl["x_train"][idx], ptbxl["y_train"][idx])
        return expit(np.column_stack([np.ones(len(ptbxl["x_test"])), ptbxl["x_test"]]) @ w)

    rows: list[dict] = []
    table = data_efficiency(
        fit_predict, ptbxl["y_train"], ptbxl["groups"], ptbxl["y_test"],
        score=_macro_auroc, fractions=(0.01, 0.1, 1.0), repeats=3, seed=0, progress=rows.append,
    )
    assert len(table) == 9 and len(rows) == 9
    assert list(table.columns) == [*META_COLUMNS, "macro_auroc", "auroc_NORM"]
    # fit_predict got exactly the subsets efficiency_subsets draws for that seed
    subsets = efficiency_subsets(ptbxl["y_train"], ptbxl["groups"], seed=0)
    for got, idx in zip(seen, subsets.values()):
        np.testing.assert_array_equal(got, idx)
    assert table["n_train"].tolist() == [len(v) for v in subsets.values()]
    assert (table["min_positives"] >= 1).all()
    full = table[table["fraction"] == 1.0]
    assert full["macro_auroc"].nunique() == 1  # deterministic fit on the same full set
    assert full["n_patients"].iloc[0] == len(set(ptbxl["groups"]))
    # age and sex carry real signal: NORM is predicted well above chance with all labels
    assert full["auroc_NORM"].iloc[0] > 0.65
    assert full["macro_auroc"].iloc[0] > 0.6

    s = summarise(table)
    assert s["fraction"].tolist() == [0.01, 0.1, 1.0]
    assert s["repeats"].tolist() == [3, 3, 3]
    one = table[table["fraction"] == 0.1]["macro_auroc"]
    assert s.loc[1, "macro_auroc_mean"] == pytest.approx(one.mean())
    assert s.loc[1, "macro_auroc_sd"] == pytest.approx(one.std(ddof=1))
    assert s.loc[2, "macro_auroc_sd"] == pytest.approx(0.0)

    ax = plot_efficiency(None, table, "macro_auroc", label="age + sex")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1%", "10%", "100%"]
    ax.figure.canvas.draw()


def test_reuse_identical_and_float_scores(ptbxl) -> None:
    calls = []

    def fit_predict(idx: np.ndarray) -> float:
        calls.append(len(idx))
        return float(len(idx))

    table = data_efficiency(
        fit_predict, ptbxl["y_train"], ptbxl["groups"], None,
        score=lambda y, s: s, repeats=3, reuse_identical=True,
    )
    assert len(calls) == 7  # 1 % and 10 % in three repeats, 100 % once
    assert (table["score"] == table["n_train"]).all()
    single = data_efficiency(
        fit_predict, ptbxl["y_train"], ptbxl["groups"], None, score=lambda y, s: s, repeats=1
    )
    assert summarise(single)["score_sd"].isna().all()  # one repeat: no spread
