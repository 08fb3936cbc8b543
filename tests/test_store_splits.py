"""Patient-level stratified splits and the leakage check (ecgfm.store.splits)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ecgfm.errors import ValidationError
from ecgfm.store.format import CorpusError
from ecgfm.store.splits import (
    _deal,
    _water_fill,
    assign_splits,
    check_leakage,
    iterative_stratification,
    multi_hot,
)


def exact_iterative_stratification(x: np.ndarray, fractions: list[float], seed: int = 0) -> np.ndarray:
    """Reference: Algorithm 1 of Sechidis, Tsoumakas & Vlahavas (ECML PKDD 2011), one example at a
    time, written from the paper: the label with the fewest remaining examples first (ties at
    random); each example to the fold with the largest remaining need of that label, ties to the
    largest overall need, then at random; examples without labels to the largest overall need."""
    rng = np.random.default_rng(seed)
    r = np.asarray(fractions, float) / np.sum(fractions)
    need = r[:, None] * x.sum(0)[None, :].astype(float)
    need_total = r * len(x)
    fold = np.full(len(x), -1)
    free = np.ones(len(x), bool)
    while True:
        counts = x[free].sum(0)
        if counts.max(initial=0) == 0:
            break
        candidates = np.flatnonzero(counts > 0)
        fewest = candidates[counts[candidates] == counts[candidates].min()]
        label = rng.choice(fewest)
        for g in np.flatnonzero(free & x[:, label]):
            best = np.flatnonzero(need[:, label] == need[:, label].max())
            best = best[need_total[best] == need_total[best].max()]
            j = rng.choice(best)
            fold[g], free[g] = j, False
            need[j] -= x[g]
            need_total[j] -= 1
    for g in np.flatnonzero(free):
        best = np.flatnonzero(need_total == need_total.max())
        j = rng.choice(best)
        fold[g] = j
        need_total[j] -= 1
    return fold


def deviation(x: np.ndarray, fold: np.ndarray, fractions: list[float]) -> np.ndarray:
    """|share of each label's examples in each fold - the fold's fraction|, ``[F, C]``."""
    r = np.asarray(fractions) / np.sum(fractions)
    share = np.stack([x[fold == j].sum(0) for j in range(len(r))]) / np.maximum(x.sum(0), 1)
    return np.abs(share - r[:, None])


def synthetic_labels(n: int, c: int, seed: int) -> np.ndarray:
    """Correlated multi-label data with a long tail (label c has prevalence ~ 0.3 / c)."""
    rng = np.random.default_rng(seed)
    prevalence = 0.3 / np.arange(1, c + 1)
    severity = rng.random((n, 1))  # correlates the labels, as comorbid findings are
    return rng.random((n, c)) < prevalence * (0.5 + severity)


# -- iterative stratification ------------------------------------------------------------------


def test_water_fill_deals_as_the_one_at_a_time_rule() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        need = rng.normal(5, 10, size=rng.integers(2, 6))
        m = int(rng.integers(1, 60))
        greedy = need.copy()
        counts = np.zeros(len(need), int)
        for _ in range(m):
            j = int(np.argmax(greedy))
            counts[j] += 1
            greedy[j] -= 1
        amounts = _water_fill(need, m)
        assert amounts.min() >= 0 and amounts.sum() == pytest.approx(m)
        dealt = np.bincount(_deal(amounts, np.ones(m)), minlength=len(need))
        assert dealt.sum() == m and np.abs(dealt - counts).max() <= 1


def test_stratification_is_close_to_the_exact_algorithm_and_far_better_than_random() -> None:
    x = synthetic_labels(3000, 25, seed=1)
    fractions = [0.8, 0.1, 0.1]
    fast = deviation(x, iterative_stratification(x, fractions, seed=0), fractions)
    exact = deviation(x, exact_iterative_stratification(x, fractions, seed=0), fractions)
    rng = np.random.default_rng(0)
    random = np.mean([deviation(x, rng.choice(3, len(x), p=fractions), fractions).mean() for _ in range(5)])
    assert fast.mean() <= 1.3 * exact.mean() + 0.001, (fast.mean(), exact.mean())
    assert fast.mean() < random / 4, (fast.mean(), random)
    # every label with at least 100 examples is within 2 points of its target in every fold
    common = x.sum(0) >= 100
    assert fast[:, common].max() < 0.02


def test_fold_sizes_and_unlabelled_groups() -> None:
    x = synthetic_labels(2000, 10, seed=2)
    x[:500] = False  # a quarter without any label
    fold = iterative_stratification(x, [0.7, 0.15, 0.15], seed=3)
    assert set(np.unique(fold)) == {0, 1, 2}
    assert np.abs(np.bincount(fold) - np.array([1400, 300, 300])).max() <= 1


def test_weights_make_folds_sized_in_records() -> None:
    rng = np.random.default_rng(4)
    x = synthetic_labels(4000, 8, seed=4)
    records = rng.integers(1, 20, size=len(x)).astype(float)
    fold = iterative_stratification(x, [0.5, 0.5], seed=0, weights=records)
    per_fold = np.bincount(fold, weights=records)
    assert abs(per_fold[0] / records.sum() - 0.5) < 0.005
    for c in range(x.shape[1]):
        w = records * x[:, c]
        assert abs(w[fold == 0].sum() / w.sum() - 0.5) < 0.03


def test_iterative_stratification_is_reproducible_from_the_seed() -> None:
    x = synthetic_labels(1000, 12, seed=5)
    a = iterative_stratification(x, [0.8, 0.1, 0.1], seed=7)
    assert np.array_equal(a, iterative_stratification(x, [0.8, 0.1, 0.1], seed=7))
    assert not np.array_equal(a, iterative_stratification(x, [0.8, 0.1, 0.1], seed=8))


def test_bad_arguments_are_refused() -> None:
    x = np.zeros((3, 2), bool)
    with pytest.raises(ValidationError, match="fractions"):
        iterative_stratification(x, [0.5, -0.5])
    with pytest.raises(ValidationError, match="weights"):
        iterative_stratification(x, [1, 1], weights=np.array([1.0, 0.0, 1.0]))
    with pytest.raises(ValidationError, match="groups, labels"):
        iterative_stratification(np.zeros(3, bool), [1, 1])
    assert iterative_stratification(np.zeros((0, 2), bool), [1, 1]).shape == (0,)


# -- labels -----------------------------------------------------------------------------------------


def test_multi_hot_reads_text_lists_and_missing_values_alike() -> None:
    as_text = pd.Series(["AFIB;CLBBB", None, "SR", "", "CLBBB;AFIB"], dtype=object)
    as_lists = pd.Series([np.array(["AFIB", "CLBBB"]), None, ["SR"], [], ("CLBBB", "AFIB")], dtype=object)
    m1, names1 = multi_hot(as_text)
    m2, names2 = multi_hot(as_lists)
    assert names1 == names2 == ["AFIB", "CLBBB", "SR"]
    assert np.array_equal(m1, m2)
    assert m1.astype(int).tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 1], [0, 0, 0], [1, 1, 0]]
    m3, names3 = multi_hot(as_text, classes=["SR", "PVC"])
    assert names3 == ["SR", "PVC"] and m3.astype(int).tolist() == [[0, 0], [0, 0], [1, 0], [0, 0], [0, 0]]


# -- manifests ----------------------------------------------------------------------------------------


def small_manifest(seed: int = 0, n_patients: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        labels = ";".join(c for c, prev in (("AFIB", 0.2), ("CLBBB", 0.05), ("SR", 0.7)) if rng.random() < prev)
        for k in range(int(rng.integers(1, 5))):
            rows.append({"record_id": f"r{p}_{k}", "patient_id": f"p{p}", "labels": labels})
    return pd.DataFrame(rows)


def test_assign_splits_is_patient_level_stratified_and_independent_of_row_order() -> None:
    m = small_manifest()
    split = assign_splits(m, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=1)
    assert split.index.equals(m.index) and split.name == "split"
    assert set(split) == {"train", "val", "test"}
    check_leakage(m.assign(split=split))
    share = split.value_counts(normalize=True)
    assert abs(share["train"] - 0.6) < 0.01 and abs(share["val"] - 0.2) < 0.01
    afib = m["labels"].str.contains("AFIB")
    assert abs((split[afib] == "train").mean() - 0.6) < 0.05
    shuffled = m.sample(frac=1, random_state=3)
    again = assign_splits(shuffled, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=1)
    assert again.reindex(m.index).equals(split)
    assert not assign_splits(m, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=2).equals(split)


def test_native_splits_are_kept_and_followed_by_the_patients_other_records() -> None:
    m = small_manifest(n_patients=100)
    m["split"] = None
    m.loc[m["patient_id"] == "p0", "split"] = "test"  # a dataset with its own split (PTB-XL)
    first_of_p1 = m.index[m["patient_id"] == "p1"][0]
    m.loc[first_of_p1, "split"] = "val"  # one record of p1 has a native split: the others follow
    split = assign_splits(m, seed=0)
    assert (split[m["patient_id"] == "p0"] == "test").all()
    assert (split[m["patient_id"] == "p1"] == "val").all()
    check_leakage(m.assign(split=split))
    reassigned = assign_splits(m, seed=0, keep_native=False)
    assert reassigned.notna().all()
    check_leakage(m.assign(split=reassigned))


def test_missing_patient_ids_make_each_record_its_own_patient() -> None:
    m = pd.DataFrame({"record_id": [f"r{i}" for i in range(1000)], "patient_id": [None] * 1000,
                      "labels": ["SR"] * 1000})
    split = assign_splits(m, seed=0)
    assert split.value_counts().to_dict() == {"train": 800, "val": 100, "test": 100}
    no_column = assign_splits(m.drop(columns=["patient_id", "labels"]), seed=0)
    assert no_column.value_counts().to_dict() == {"train": 800, "val": 100, "test": 100}


def test_check_leakage_names_the_patients_that_cross_splits() -> None:
    m = pd.DataFrame({
        "record_id": ["a", "b", "c", "d", "e", "f"],
        "patient_id": ["p1", "p1", "p2", "p3", "p3", "p3"],
        "split": ["train", "test", "train", "val", "val", "train"],
    })
    with pytest.raises(CorpusError) as err:
        check_leakage(m)
    text = str(err.value)
    assert text.startswith("2 patient(s) with 5 record(s) cross splits")
    assert "patient 'p1': test (1), train (1)" in text and "patient 'p3': train (1), val (2)" in text
    assert "p2" not in text
    check_leakage(m.assign(split=["train", "train", "test", "val", "val", "val"]))
    check_leakage(m.assign(split=[None, "train", "test", "val", None, "val"]))  # unsplit rows ignored
    with pytest.raises(CorpusError, match="no 'split' column"):
        check_leakage(m.drop(columns="split"))


def test_million_row_manifest_filter_join_split_and_leakage_check() -> None:
    """The issue's benchmark item: 10^6 synthetic rows (300k patients, 50 labels) are filtered,
    joined with a labels table, split and checked; this runs in a few seconds."""
    rng = np.random.default_rng(0)
    n, n_patients, n_labels = 1_000_000, 300_000, 50
    names = np.array([f"C{c:02d}" for c in range(n_labels)])
    pool = rng.random((4000, n_labels)) < 0.4 * np.arange(1, n_labels + 1) ** -1.1  # label sets
    pool_text = np.array([";".join(names[row]) for row in pool], dtype=object)
    record_id = "r" + pd.Series(np.arange(n)).astype(str)
    manifest = pd.DataFrame({
        "record_id": record_id,
        "patient_id": "p" + pd.Series(rng.integers(0, n_patients, n)).astype(str),
        "quality_ok": rng.random(n) > 0.05,
    })
    labels = pd.DataFrame({"record_id": record_id, "labels": pool_text[rng.integers(0, len(pool), n)]})
    labels = labels.sample(frac=1, random_state=0)  # the table comes in its own order

    kept = manifest[manifest["quality_ok"]]
    joined = kept.merge(labels, on="record_id", how="left")
    joined["split"] = assign_splits(joined, seed=0)
    check_leakage(joined)

    assert len(joined) == int(manifest["quality_ok"].sum()) and joined["labels"].notna().all()
    share = joined["split"].value_counts(normalize=True)
    assert abs(share["train"] - 0.8) < 0.002 and abs(share["val"] - 0.1) < 0.002
    matrix, classes = multi_hot(joined["labels"])
    is_train = (joined["split"] == "train").to_numpy()
    counts = matrix.sum(0)
    train_share = matrix[is_train].sum(0) / counts
    assert len(classes) == n_labels
    assert np.abs(train_share - 0.8)[counts >= 5000].max() < 0.01  # every common label stratified
    leak = joined.copy()
    leak.loc[leak.index[:2], "patient_id"] = leak["patient_id"].iloc[2]
    leak.loc[leak.index[:3], "split"] = ["train", "val", "test"]
    with pytest.raises(CorpusError, match="cross splits"):
        check_leakage(leak)
