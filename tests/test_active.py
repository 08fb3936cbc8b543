"""Active learning for noisy labels (ecgfm.active): the rankings on hand-made matrices with the
answers computed by hand, confident learning against a transcription of cleanlab's confident
joint, precision@K, the review queue and its reasons, the fold-back of corrections through
``data.overrides`` (and ``with_overrides`` itself), a tiny out-of-fold run on real LUDB records
whose predictions are the training module's own test outputs, and the CLI end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ecgfm.active.rank import (
    confident_learning,
    confident_thresholds,
    label_issues,
    precision_at_k,
    random_ranking,
    rank,
    recall_at_k,
    sample_loss,
    uncertainty,
)
from ecgfm.errors import ReadError, ValidationError

# ---------------------------------------------------------------------------------------------
# rankings: known answers
# ---------------------------------------------------------------------------------------------
Y = np.array([[1, 0], [1, 0], [1, 1], [0, 1], [0, 0], [0, 1]], float)
P = np.array([[0.9, 0.1], [0.2, 0.3], [0.8, 0.7], [0.1, 0.9], [0.7, 0.2], [0.3, 0.05]])


def test_confident_learning_multilabel_by_hand() -> None:
    # thresholds: A given in rows 0-2 -> (0.9 + 0.2 + 0.8) / 3; not given in rows 3-5 -> (0.1 + 0.7 + 0.3) / 3
    #             B given in rows 2, 3, 5 -> (0.7 + 0.9 + 0.05) / 3; not given 0, 1, 4 -> (0.1 + 0.3 + 0.2) / 3
    present, absent = confident_thresholds(Y, P)
    np.testing.assert_allclose(present, [1.9 / 3, 1.65 / 3])
    np.testing.assert_allclose(absent, [1.1 / 3, 0.2])
    # row 1: given A, P(A) = 0.2 <= 0.367 (confidently absent)        -> issue
    # row 4: not given A, P(A) = 0.7 >= 0.633 (confidently present)   -> issue
    # row 5: given B, P(B) = 0.05 <= 0.2                              -> issue
    # row 1, B: P(B) = 0.3 is neither >= 0.55 nor <= 0.2              -> not counted
    # row 4, B: P(B) = 0.2 <= 0.2 (equal, within the 1e-6 tolerance)  -> agrees with "not given"
    issues, guess = label_issues(Y, P)
    expected = np.zeros_like(Y, bool)
    expected[1, 0] = expected[4, 0] = expected[5, 1] = True
    np.testing.assert_array_equal(issues, expected)
    np.testing.assert_array_equal(guess, [[1, 0], [0, 0], [1, 1], [0, 1], [1, 0], [0, 0]])
    r = confident_learning(Y, P, labels=["superdiagnostic:A", "B"])
    # score = [issue] + 1 - (lowest self-confidence): row 5 1 + 0.95, row 1 1 + 0.8, row 4 1 + 0.7,
    # row 2 0.3 (P(B) = 0.7 given), rows 0 and 3 0.1 (ties keep the input order)
    np.testing.assert_allclose(r.scores, [0.1, 1.8, 0.3, 0.1, 1.7, 1.95])
    assert r.order().tolist() == [5, 1, 4, 2, 0, 3]
    assert r.reasons[1] == "given A but out-of-fold P(A)=0.20 <= 0.37 (mean P(A) of records not given A)"
    assert r.reasons[4] == "not given A but out-of-fold P(A)=0.70 >= 0.63 (mean P(A) of records given A)"
    assert r.reasons[5] == "given B but out-of-fold P(B)=0.05 <= 0.20 (mean P(B) of records not given B)"
    assert r.reasons[2] == "no label issue; least supported label: B given, out-of-fold P(B)=0.70"
    np.testing.assert_array_equal(r.suggested, guess)
    # the normalised margin of a binary label ranks as the self-confidence does
    assert confident_learning(Y, P, rank_by="normalized_margin").order().tolist() == r.order().tolist()


def test_confident_learning_both_confident_goes_to_the_more_probable_class() -> None:
    # present = 0.2 (the one positive), absent = mean(0.6, 0.4) = 0.5: a class the model gets wrong
    y, p = np.array([[1.0], [0.0], [0.0]]), np.array([[0.2], [0.6], [0.4]])
    # row 0: P >= 0.2 and P <= 0.5: both, 1 - P = 0.8 wins -> absent, given present -> issue
    # row 1: P >= 0.2 only -> present, given absent -> issue
    # row 2: both, 1 - P = 0.6 wins -> absent = given -> no issue
    issues, _ = label_issues(y, p)
    assert issues[:, 0].tolist() == [True, True, False]


def _cleanlab_off_diagonal(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """cleanlab 2.x ``count.compute_confident_joint`` (vectorised part), transcribed: True where
    the confident label differs from the given one (``filter_by="confident_learning"``)."""
    k = pred_probs.shape[1]
    thresholds = np.array([pred_probs[labels == j, j].mean() for j in range(k)])
    pred_probs_bool = pred_probs >= thresholds - 1e-6
    num_confident_bins = pred_probs_bool.sum(axis=1)
    at_least_one_confident = num_confident_bins > 0
    more_than_one_confident = num_confident_bins > 1
    pred_probs_argmax = pred_probs.argmax(axis=1)
    confident_argmax = pred_probs_bool.argmax(axis=1)
    true_label_guess = np.where(more_than_one_confident, pred_probs_argmax, confident_argmax)
    return at_least_one_confident & (true_label_guess != labels)


def test_confident_learning_matches_cleanlabs_confident_joint() -> None:
    rng = np.random.default_rng(3)
    # multi-class: softmax rows
    logits = rng.normal(size=(300, 4)) * 2
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = rng.integers(0, 4, 300)
    issues, _ = label_issues(labels, p, task="multiclass")
    np.testing.assert_array_equal(issues.any(axis=1), _cleanlab_off_diagonal(labels, p))
    # multi-label: every class as the binary problem [1 - P, P] (cleanlab's multi-label approach)
    y = (rng.random((300, 3)) < 0.3).astype(float)
    q = np.clip(0.6 * y + 0.4 * rng.random((300, 3)), 0, 1)
    issues, _ = label_issues(y, q)
    for c in range(3):
        binary = np.stack([1 - q[:, c], q[:, c]], axis=1)
        np.testing.assert_array_equal(issues[:, c], _cleanlab_off_diagonal(y[:, c].astype(int), binary))


def test_confident_learning_multiclass_by_hand() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1],
                  [0.5, 0.4, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    # thresholds: (0.8 + 0.2) / 2 = 0.5, (0.8 + 0.4) / 2 = 0.6, (0.8 + 0.4) / 2 = 0.6
    present, _ = confident_thresholds(y, p, task="multiclass")
    np.testing.assert_allclose(present, [0.5, 0.6, 0.6])
    # row 1: only P(1) = 0.7 >= 0.6 -> class 1, given 0; row 3: only P(0) = 0.5 >= 0.5 -> 0, given 1;
    # row 5: no class reaches its threshold -> not counted
    r = confident_learning(y, p, labels=["NORM", "MI", "STTC"], task="multiclass")
    assert r.issues.any(axis=1).tolist() == [False, True, False, True, False, False]
    np.testing.assert_allclose(r.scores, [0.2, 1.8, 0.2, 1.6, 0.2, 0.6])
    assert r.order().tolist() == [1, 3, 5, 0, 2, 4]
    assert r.reasons[1] == "given NORM (P=0.20) but out-of-fold P(MI)=0.70 >= 0.60 (mean P(MI) of records given MI)"
    assert r.suggested[3].tolist() == [1, 0, 0]
    # normalised margin: q = (1 + P(given) - max P(other)) / 2
    m = confident_learning(y, p, task="multiclass", rank_by="normalized_margin")
    np.testing.assert_allclose(m.scores, [1 - 0.85, 1 + 0.75, 1 - 0.85, 1 + 0.55, 1 - 0.85, 0.45])
    # the queue of a multi-class task (class indices in, ids out)
    from ecgfm.active.review import review_queue

    q = review_queue(list("abcdef"), y, p, ["NORM", "MI", "STTC"], task="multiclass", top=2)
    assert q[["record_id", "given_labels", "suggested_labels"]].values.tolist() == [["b", "NORM", "MI"], ["d", "MI", "NORM"]]


def test_uncertainty_and_loss_by_hand() -> None:

    p = np.array([[0.5, 0.9], [0.1, 0.2]])
    h = lambda x: -(x * np.log2(x) + (1 - x) * np.log2(1 - x))  # noqa: E731
    e = uncertainty(p, labels=["A", "B"])
    np.testing.assert_allclose(e.scores, [1.0, h(0.2)])
    assert e.reasons[0] == "most uncertain label A: out-of-fold P(A)=0.50 (entropy 1.00 bits)"
    np.testing.assert_allclose(uncertainty(p, kind="entropy", reduce="mean").scores, [(1 + h(0.9)) / 2, (h(0.1) + h(0.2)) / 2])
    np.testing.assert_allclose(uncertainty(p, kind="margin").scores, [1.0, 0.4])
    # two models that disagree on row 0 and agree on row 1 (both mean 0.5): entropy ties, BALD does not
    two = np.array([[[0.1], [0.5]], [[0.9], [0.5]]])
    np.testing.assert_allclose(uncertainty(two).scores, [1.0, 1.0])
    b = uncertainty(two, kind="bald", labels=["AFIB"])
    np.testing.assert_allclose(b.scores, [1 - h(0.1), 0.0], atol=1e-9)
    assert b.reasons[0].startswith("models disagree most on AFIB: P(AFIB) from 0.10 to 0.90")
    with pytest.raises(ValidationError, match="bald.*two or more"):
        uncertainty(p, kind="bald")
    # per-sample loss: the mean BCE of torch, and cross-entropy for one-hot rows
    loss = sample_loss(Y, P, labels=["A", "B"])
    ref = torch.nn.functional.binary_cross_entropy(torch.tensor(P), torch.tensor(Y), reduction="none").mean(1)
    np.testing.assert_allclose(loss.scores, ref.numpy(), rtol=1e-9)
    assert loss.order()[0] == 5 and loss.reasons[5].startswith("largest loss on B (given, out-of-fold P(B)=0.05, BCE 3.00)")
    mc = sample_loss([0, 1], np.array([[0.8, 0.2], [0.6, 0.4]]), task="multiclass")
    np.testing.assert_allclose(mc.scores, [-np.log(0.8), -np.log(0.4)])


def test_random_precision_and_dispatch() -> None:
    a, b = random_ranking(50, seed=1), random_ranking(50, seed=1)
    assert np.array_equal(a.scores, b.scores) and not np.array_equal(a.scores, random_ranking(50, seed=2).scores)
    assert sorted(a.order().tolist()) == list(range(50))
    order, relevant = [2, 0, 1, 3], [True, False, True, False]
    assert [precision_at_k(order, relevant, k) for k in (1, 2, 3, 4)] == [1.0, 1.0, 2 / 3, 0.5]
    assert recall_at_k(order, relevant, 3) == 1.0
    # precision of a ranking: the top 3 of the confident ranking above are the 3 issues
    r = confident_learning(Y, P)
    assert precision_at_k(r, r.issues.any(axis=1), 3) == 1.0
    assert rank("random", Y, P, seed=1).scores.tolist() == random_ranking(6, seed=1).scores.tolist()
    assert rank("uncertainty", Y, P, kind="margin").method == "uncertainty"
    with pytest.raises(ValidationError, match="k must be in 1..4"):
        precision_at_k(order, relevant, 5)
    with pytest.raises(ValidationError, match="expected one of confident, uncertainty, loss, random"):
        rank("margin", Y, P)
    with pytest.raises(ValidationError, match=r"shape \(6, 2\) but the probabilities \(6, 3\)"):
        confident_learning(Y, np.full((6, 3), 0.5))
    with pytest.raises(ValidationError, match=r"lie in \[0, 1\]"):
        sample_loss(Y, P * 2)
    with pytest.raises(ValidationError, match="0 or 1"):
        confident_learning(Y * 0.5, P)
    with pytest.raises(ValidationError, match="exactly one label; record 2 has 2"):
        confident_learning(Y, P, task="multiclass")


def test_patient_folds_keep_patients_together() -> None:
    from ecgfm.active.oof import patient_folds

    patients = [f"p{i // 3}" if i < 30 else f"q{i}" for i in range(100)]  # 10 patients with 3 records, 70 with 1
    folds = patient_folds(patients, 4, seed=0)
    assert np.array_equal(folds, patient_folds(patients, 4, seed=0))
    for p in set(patients):
        assert len({folds[i] for i, q in enumerate(patients) if q == p}) == 1
    assert sorted(np.bincount(folds).tolist()) == [25, 25, 25, 25]
    with pytest.raises(ValidationError, match="at least 4 patients"):
        patient_folds(["a", "a", "b"], 4)


# ---------------------------------------------------------------------------------------------
# a store, with_overrides and the fold-back
# ---------------------------------------------------------------------------------------------
pytest.importorskip("lightning")
import torch  # noqa: E402

TINY = ["model.encoder=resnet1d18",
        "model.encoder_args={widths: [8, 8, 16, 16], stem_width: 8, layers: [1, 1, 1, 1], head_dropout: 0.5}"]
LABELS3 = ["SR", "LVH", "LAH"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store(ludb100: Path) -> Path:
    """The shared LUDB store at 100 Hz (conftest: built once per session, read-only)."""
    return ludb100


def _manifest(store: Path):
    from ecgfm.store.format import Corpus

    return Corpus.open(store).manifest


def test_with_overrides_sets_splits_and_labels_and_rejects_bad_files(store: Path, tmp_path: Path) -> None:
    from ecgfm.store.format import Corpus
    from ecgfm.train.run import with_overrides

    m = _manifest(store)
    a, b, c = m["record_id"].iloc[0], m["record_id"].iloc[1], m["record_id"].iloc[2]
    path = tmp_path / "ov.csv"
    path.write_text(f"record_id,split,labels\n{a},test,SR;LAH\n{b},,\n{c},none,SR\n")
    corpus = with_overrides(Corpus.open(store), path)
    got = corpus.manifest.set_index("record_id")
    import pandas as pd

    # "" and "none" leave every split (None, which pandas shows as NaN)
    assert got.loc[a, "split"] == "test" and pd.isna(got.loc[b, "split"]) and pd.isna(got.loc[c, "split"])
    assert list(got.loc[a, "labels"]) == ["SR", "LAH"] and list(got.loc[b, "labels"]) == []
    others = got.drop(index=[a, b, c])
    assert (others["split"] == m.set_index("record_id").drop(index=[a, b, c])["split"]).all()
    assert list(_manifest(store)["labels"].iloc[0]) == list(m["labels"].iloc[0])  # the store is untouched
    assert with_overrides(Corpus.open(store), None).manifest.equals(Corpus.open(store).manifest)
    # a new column is added, missing for the records not listed
    path.write_text(f"record_id,reviewer\n{a},anna\n")
    assert with_overrides(Corpus.open(store), path).manifest.set_index("record_id")["reviewer"].notna().sum() == 1
    # errors name the file
    path.write_text(f"record_id,split\n{a},test\nnot-a-record,test\n")
    with pytest.raises(ReadError, match=r"ov.csv: 1 record\(s\) are not in the store .*not-a-record"):
        with_overrides(Corpus.open(store), path)
    path.write_text(f"record_id,split\n{a},test\n{a},val\n")
    with pytest.raises(ReadError, match=rf"ov.csv: record\(s\) listed twice: \['{a}'\]"):
        with_overrides(Corpus.open(store), path)
    path.write_text("id,split\nx,test\n")
    with pytest.raises(ReadError, match="ov.csv: manifest overrides need a record_id column"):
        with_overrides(Corpus.open(store), path)
    with pytest.raises(ReadError, match="absent.csv: cannot read"):
        with_overrides(Corpus.open(store), tmp_path / "absent.csv")


def test_queue_and_fold_back_round_trip(store: Path, tmp_path: Path) -> None:
    import pandas as pd

    from ecgfm.active.review import fold_back, given_labels, review_queue, write_queue
    from ecgfm.store.format import Corpus
    from ecgfm.train.run import with_overrides

    m = _manifest(store)
    train = m[m["split"] == "train"]
    ids, given = given_labels(store, LABELS3, record_ids=train["record_id"].tolist())
    rng = np.random.default_rng(0)
    probs = np.clip(0.7 * given + 0.3 * rng.random(given.shape), 0, 1)
    probs[0] = 1 - given[0]  # record 0 contradicts every given label
    queue = review_queue(ids, given, probs, LABELS3, method="confident", top=6)
    assert list(queue.columns) == ["record_id", "rank", "score", "method", "reason", "given_labels",
                                   "suggested_labels", "corrected_labels"]
    assert queue["record_id"].iloc[0] == ids[0] and queue["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    assert queue["given_labels"].iloc[0] == ";".join(x for x, v in zip(LABELS3, given[0]) if v)
    assert queue["suggested_labels"].iloc[0] == ";".join(x for x, v in zip(LABELS3, given[0]) if not v)
    assert "out-of-fold P(" in queue["reason"].iloc[0] and (queue["corrected_labels"] == "").all()
    # exclusion and the other methods
    assert ids[0] not in set(review_queue(ids, given, probs, LABELS3, top=6, exclude=[ids[0]])["record_id"])
    assert review_queue(ids, given, probs, LABELS3, method="loss", top=3)["method"].eq("loss").all()

    # an earlier round's overrides (base): one record moved to val, one record's labels changed
    base = tmp_path / "round1.csv"
    r_base, r_moved = queue["record_id"].iloc[5], train["record_id"].iloc[-1]
    pd.DataFrame({"record_id": [r_base, r_moved], "labels": ["SR;NAXIS", ";".join(train["labels"].iloc[-1])],
                  "split": ["train", "val"]}).to_csv(base, index=False)
    ids, given = given_labels(store, LABELS3, record_ids=ids, overrides=base)
    queue = review_queue(ids, given, probs, LABELS3, top=6)
    rows = {r: i for i, r in enumerate(queue["record_id"])}
    r0, r1, r2, r3, r4 = queue["record_id"].iloc[:5]
    before = with_overrides(Corpus.open(store), base).manifest.set_index("record_id")["labels"]
    queue.loc[rows[r0], "corrected_labels"] = "none"  # no task label applies
    queue.loc[rows[r1], "corrected_labels"] = queue["given_labels"].iloc[rows[r1]]  # confirmed
    queue.loc[rows[r2], "corrected_labels"] = "SR;LAH"
    queue.loc[rows[r3], "corrected_labels"] = ""  # not reviewed
    queue.loc[rows[r4], "corrected_labels"] = "LVH"
    write_queue(queue, tmp_path / "queue.csv")
    out = tmp_path / "round2.csv"
    summary = fold_back(tmp_path / "queue.csv", out, store=store, overrides=base)
    assert (summary["reviewed"], summary["skipped"]) == (4, 2)
    assert summary["unchanged"] + summary["changed"] == 4
    after = with_overrides(Corpus.open(store), out).manifest.set_index("record_id")
    task = set(LABELS3)
    assert set(after.loc[r0, "labels"]) == set(before[r0]) - task  # other labels (e.g. NAXIS) are kept
    assert list(after.loc[r1, "labels"]) == list(before[r1])
    assert set(after.loc[r2, "labels"]) == (set(before[r2]) - task) | {"SR", "LAH"}
    assert list(after.loc[r3, "labels"]) == list(before[r3])
    assert set(after.loc[r4, "labels"]) == (set(before[r4]) - task) | {"LVH"}
    assert after.loc[r_moved, "split"] == "val"  # the base overrides are carried
    if r_base not in (r0, r2, r4):
        assert list(after.loc[r_base, "labels"]) == ["SR", "NAXIS"]

    # errors name the file, the row and the problem
    queue.loc[rows[r2], "corrected_labels"] = "SR;LAHH"
    write_queue(queue, tmp_path / "bad.csv")
    with pytest.raises(ReadError, match=r"bad.csv: row \d+: corrected label 'LAHH' is not a label of the queue"):
        fold_back(tmp_path / "bad.csv", tmp_path / "x.csv", store=store, overrides=base)
    lacking = train[[("LAH" not in v) for v in train["labels"]]]["record_id"].iloc[0]
    pd.DataFrame({"record_id": [lacking], "given_labels": ["LAH"], "corrected_labels": ["SR"]}).to_csv(
        tmp_path / "stale.csv", index=False)
    with pytest.raises(ReadError, match=rf"stale.csv: row 2: record {lacking} is given LAH in the queue but not in the store"):
        fold_back(tmp_path / "stale.csv", tmp_path / "x.csv", store=store)
    pd.DataFrame({"record_id": ["nope"], "given_labels": [""], "corrected_labels": ["SR"]}).to_csv(
        tmp_path / "unknown.csv", index=False)
    with pytest.raises(ReadError, match=r"unknown.csv: 1 record\(s\) are not in the store"):
        fold_back(tmp_path / "unknown.csv", tmp_path / "x.csv", store=store)
    pd.DataFrame({"record_id": ["x"], "labels": ["SR"]}).to_csv(tmp_path / "noqueue.csv", index=False)
    with pytest.raises(ReadError, match=r"noqueue.csv: a review queue needs the column\(s\) \['given_labels'"):
        fold_back(tmp_path / "noqueue.csv", tmp_path / "x.csv", store=store)


def test_short_ids_resolve_to_prefixed_label_columns(store: Path, tmp_path: Path) -> None:
    """Ids of another manifest column (``diagnoses:X``) are written back to that column; the
    annotator may drop the prefix where it is unambiguous."""
    from ecgfm.active.review import fold_back, given_labels, review_queue
    from ecgfm.store.format import Corpus
    from ecgfm.train.run import _ids, with_overrides

    m = _manifest(store)
    counts = m["labels"].explode().value_counts()
    names = [f"labels_copy:{x}" for x in counts.index[:2]]
    # a copy of the labels column as a ";" string column, the form superdiagnostic has in PTB-XL
    base = tmp_path / "copy.csv"
    m.assign(labels_copy=[";".join(v) for v in m["labels"]])[["record_id", "labels_copy"]].to_csv(base, index=False)
    ids, given = given_labels(store, names, overrides=base)
    queue = review_queue(ids, given, np.clip(given * 0.8 + 0.1, 0, 1), names, top=2)
    first = queue["record_id"].iloc[0]
    queue.loc[0, "corrected_labels"] = counts.index[0]  # the short form of names[0]
    fold_back(queue, tmp_path / "out.csv", store=store, overrides=base)
    after = with_overrides(Corpus.open(store), tmp_path / "out.csv").manifest.set_index("record_id")
    assert counts.index[0] in _ids(after.loc[first, "labels_copy"])
    assert counts.index[1] not in _ids(after.loc[first, "labels_copy"])
    assert list(after.loc[first, "labels"]) == list(m.set_index("record_id").loc[first, "labels"])


# ---------------------------------------------------------------------------------------------
# out-of-fold predictions and the CLI
# ---------------------------------------------------------------------------------------------
def _base(store: Path, out: Path, *extra: str) -> list[str]:
    return [f"data.store={store}", f"out_dir={out}", "data.window=5", "data.batch_size=32",
            "data.num_workers=0", "trainer.progress=none", "trainer.loggers=[csv]",
            "trainer.num_sanity_val_steps=0", "trainer.deterministic=true", "trainer.max_steps=2",
            f"data.labels={json.dumps(LABELS3)}", "optim.lr=0.003", *TINY, *extra]


class Capture:
    """The training module's own test outputs (the held-out fold), per fold."""

    def __init__(self) -> None:
        self.outputs: list[np.ndarray] = []

    def callback(self):
        import lightning as L

        outer = self

        class _C(L.Callback):
            def on_validation_end(self, trainer, pl_module):
                if pl_module.eval_prefix == "test":
                    outer.outputs.append(pl_module.last_eval[0].copy())

        return _C()


@pytest.fixture(scope="module")
def oof_run(store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from ecgfm.active.oof import out_of_fold
    from ecgfm.train.config import load_config

    tmp = tmp_path_factory.mktemp("oof")
    m = _manifest(store)
    changed = m.loc[m["split"] == "train", "record_id"].iloc[3]
    base = tmp / "relabelled.csv"
    base.write_text(f"record_id,labels\n{changed},LAH\n")  # an earlier correction: only LAH
    cfg = load_config(None, _base(store, tmp / "run", f"data.overrides={base}"))
    capture = Capture()
    lines: list[str] = []
    oof = out_of_fold(cfg, 2, tmp / "oof", mc_passes=2, callbacks=[capture.callback()], log=lines.append)
    return {"cfg": cfg, "oof": oof, "capture": capture, "dir": tmp / "oof", "changed": changed, "lines": lines,
            "tmp": tmp}


def test_out_of_fold_predictions_are_the_modules_test_outputs(oof_run: dict, store: Path) -> None:
    from sklearn.metrics import roc_auc_score

    from ecgfm.active.oof import out_of_fold, read_predictions

    oof, m = oof_run["oof"], _manifest(store)
    train_ids = m.loc[m["split"] == "train", "record_id"].astype(str).tolist()
    assert list(oof.record_ids) == train_ids and oof.labels == tuple(LABELS3)
    assert oof.probabilities.shape == (158, 3) and np.isfinite(oof.probabilities).all()
    assert sorted(np.bincount(oof.folds).tolist()) == [79, 79]
    # the given labels are those after data.overrides
    assert oof.given[train_ids.index(oof_run["changed"])].tolist() == [0, 0, 1]
    for k in range(2):
        held = oof.folds == k
        # the probabilities are the training module's test-split outputs for the held-out fold ...
        np.testing.assert_allclose(oof.probabilities[held], oof_run["capture"].outputs[k], rtol=1e-5, atol=1e-6)
        # ... and their macro AUROC is the one the run logged
        y, p = oof.given[held], oof.probabilities[held]
        ok = [j for j in range(3) if 0 < y[:, j].sum() < len(y)]
        expected = np.mean([roc_auc_score(y[:, j], p[:, j]) for j in ok])
        assert oof.runs[k]["trained"] and oof.runs[k]["test"]["auroc"] == pytest.approx(expected, abs=1e-6)
    # dropout passes differ from the deterministic pass
    assert oof.mc.shape == (2, 158, 3) and not np.allclose(oof.mc[0], oof.probabilities)
    ids, labels, stacked = read_predictions(oof_run["dir"] / "oof_mc.csv")
    assert ids == train_ids and stacked.shape == (2, 158, 3)
    np.testing.assert_allclose(stacked, oof.mc, rtol=1e-6)
    # the fold's overrides carry the run's own overrides and move the held-out records
    import pandas as pd

    fold0 = pd.read_csv(oof_run["dir"] / "fold0" / "overrides.csv", dtype=str, keep_default_na=False)
    assert set(fold0["split"]) == {"train", "oof-holdout"} and "LAH" in set(fold0["labels"])
    # a rerun resumes: no fold is trained again, the predictions are the same
    again = out_of_fold(oof_run["cfg"], 2, oof_run["dir"], mc_passes=2)
    assert [r["trained"] for r in again.runs] == [False, False]
    np.testing.assert_allclose(again.probabilities, oof.probabilities, rtol=1e-6)
    # folds trained on other labels or with another configuration are not reused
    with pytest.raises(ValidationError, match="oof: holds folds trained with another .*differs in the labels or folds"):
        out_of_fold(oof_run["cfg"], 3, oof_run["dir"])
    relabelled = oof_run["tmp"] / "round2.csv"
    relabelled.write_text(f"record_id,labels\n{oof_run['changed']},LVH\n")
    with pytest.raises(ValidationError, match=r"differs in data.overrides, optim.lr\)"):
        out_of_fold(oof_run["cfg"].replace(**{"data.overrides": str(relabelled), "optim.lr": 0.01}), 2, oof_run["dir"])
    with pytest.raises(ValidationError, match="regression head has no labels"):
        out_of_fold(oof_run["cfg"].replace(**{"model.head": "regression", "data.labels": ["age"],
                                              "trainer.monitor": "val/mae", "trainer.monitor_mode": "min"}), 2)


def test_cli_review_queue_and_apply(oof_run: dict, store: Path, tmp_path: Path) -> None:
    import pandas as pd
    from typer.testing import CliRunner

    from ecgfm.active.cli import app
    from ecgfm.train.config import save_config
    from ecgfm.train.run import with_overrides

    runner = CliRunner()
    base = oof_run["cfg"].data.overrides
    queue_path = tmp_path / "queue.csv"
    res = runner.invoke(app, ["review-queue", "--store", str(store), "--predictions", str(oof_run["dir"] / "oof.csv"),
                              "--overrides", base, "--top", "5", "--out", str(queue_path)])
    assert res.exit_code == 0, res.output
    assert "wrote 5 of 158 records" in res.output
    queue = pd.read_csv(queue_path, dtype=str, keep_default_na=False)
    assert len(queue) == 5 and queue["method"].eq("confident").all()
    # the same queue from the config: the folds exist, so nothing is trained again
    config = tmp_path / "run.yaml"
    save_config(oof_run["cfg"], config)
    q2 = tmp_path / "queue2.csv"
    res = runner.invoke(app, ["review-queue", "--config", str(config), "--folds", "2", "--oof-dir", str(oof_run["dir"]),
                              "--top", "5", "--out", str(q2)])
    assert res.exit_code == 0, res.output
    assert "not retrained" in res.output
    again = pd.read_csv(q2, dtype=str, keep_default_na=False)
    for column in ("record_id", "given_labels", "suggested_labels", "method"):
        assert again[column].tolist() == queue[column].tolist()
    np.testing.assert_allclose(again["score"].astype(float), queue["score"].astype(float), atol=2e-6)
    # other methods
    res = runner.invoke(app, ["review-queue", "--store", str(store), "-p", str(oof_run["dir"] / "oof_mc.csv"),
                              "--method", "uncertainty", "--uncertainty", "bald", "--top", "3", "--out",
                              str(tmp_path / "q3.csv")])
    assert res.exit_code == 0, res.output
    assert pd.read_csv(tmp_path / "q3.csv")["reason"].str.startswith("models disagree").all()
    # the annotator confirms all but the first record, which has none of the labels; apply; retrain-ready
    queue["corrected_labels"] = queue["given_labels"]
    queue.loc[0, "corrected_labels"] = "none"
    queue.to_csv(queue_path, index=False)
    res = runner.invoke(app, ["review-apply", str(queue_path), "--store", str(store), "--overrides", base,
                              "--out", str(tmp_path / "overrides.csv")])
    assert res.exit_code == 0, res.output
    assert "5 records reviewed: 1 changed, 4 confirmed" in res.output
    from ecgfm.store.format import Corpus

    labels = with_overrides(Corpus.open(store), tmp_path / "overrides.csv").manifest.set_index("record_id")["labels"]
    assert not set(labels[queue["record_id"].iloc[0]]) & set(LABELS3)
    assert list(labels[oof_run["changed"]]) == ["LAH"]  # the earlier correction is carried
    # bad inputs: the message names the file
    bad = tmp_path / "bad.csv"
    pd.read_csv(oof_run["dir"] / "oof.csv").assign(SR=1.5).to_csv(bad, index=False)
    res = runner.invoke(app, ["review-queue", "--store", str(store), "-p", str(bad), "--out", str(tmp_path / "x.csv")])
    assert res.exit_code == 1 and "bad.csv: record" in res.output and "not a probability" in res.output
    res = runner.invoke(app, ["review-queue", "--store", str(store), "-p", str(tmp_path / "absent.csv"),
                              "--out", str(tmp_path / "x.csv")])
    assert res.exit_code == 1 and "absent.csv: cannot read the predictions" in res.output
    res = runner.invoke(app, ["review-queue", "--store", str(store), "-p", str(oof_run["dir"] / "oof.csv"),
                              "--labels", "SR,AFIB", "--out", str(tmp_path / "x.csv")])
    assert res.exit_code == 1 and "oof.csv: predictions lack the label column(s) ['AFIB']" in res.output
    res = runner.invoke(app, ["review-queue", "--predictions", str(oof_run["dir"] / "oof.csv"), "--out",
                              str(tmp_path / "x.csv")])
    assert res.exit_code == 1 and "give --store" in res.output


# ---------------------------------------------------------------------------------------------
# cross-fitted linear probes on a frozen encoder
# ---------------------------------------------------------------------------------------------
def _separable(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features that encode two labels linearly (plus noise dimensions), and 4 folds."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 2)) < 0.4).astype(float)
    x = np.concatenate([3 * (y - 0.5) + 0.3 * rng.standard_normal((n, 2)), rng.standard_normal((n, 6))], axis=1)
    return x, y, np.arange(n) % 4


def test_cross_fit_probes_are_out_of_fold_and_find_a_flipped_label() -> None:
    from ecgfm.active.probe import cross_fit_probes

    x, clean, folds = _separable()
    noisy = clean.copy()
    noisy[7, 1] = 1 - noisy[7, 1]
    p, info = cross_fit_probes(x, noisy, folds, cs=(0.1,))
    assert p.shape == (120, 2) and p.dtype == np.float32 and info["C"] == 0.1 and set(info["auroc"]) == {"0.1"}
    # record 7 is scored by a probe that never saw its (wrong) label: the probe follows its features
    assert abs(p[7, 1] - clean[7, 1]) < 0.2
    assert confident_learning(noisy, p).top(1).tolist() == [7]
    # out of fold: changing a record's label does not change its own probability ...
    again, _ = cross_fit_probes(x, clean, folds, cs=(0.1,))
    np.testing.assert_allclose(again[7], p[7], atol=1e-6)
    # ... while the other folds' probes move
    assert not np.allclose(again[folds != folds[7]], p[folds != folds[7]], atol=1e-6)
    # the strength kept is the one with the best cross-validated AUROC
    _, info = cross_fit_probes(x, noisy, folds, cs=(1e-5, 1.0))
    assert info["C"] == float(max(info["auroc"], key=lambda c: info["auroc"][c]))
    # a multi-class task: one-hot rows, softmax probabilities
    cls = np.eye(3)[np.argmax(x[:, :2] @ np.array([[1, 0, -1], [0, 1, -1]]), axis=1)]
    pm, _ = cross_fit_probes(x, cls, folds, task="multiclass", cs=(1.0,))
    np.testing.assert_allclose(pm.sum(axis=1), 1, atol=1e-5)
    assert (pm.argmax(axis=1) == cls.argmax(axis=1)).mean() > 0.9
    with pytest.raises(ValidationError, match="NaN or infinite"):
        cross_fit_probes(np.where(np.arange(8) == 0, np.nan, x), noisy, folds)
    with pytest.raises(ValidationError, match="at least two folds"):
        cross_fit_probes(x, noisy, np.zeros(120, int))
    with pytest.raises(ValidationError, match=r"must be \[N, D\], \[N, C\] and \[N\]"):
        cross_fit_probes(x[:10], noisy, folds)


def test_probe_out_of_fold_on_a_stored_corpus_and_the_cli(oof_run: dict, store: Path, tmp_path: Path) -> None:
    import pandas as pd
    from typer.testing import CliRunner

    from ecgfm.active.cli import app
    from ecgfm.active.probe import cross_fit_probes, probe_out_of_fold
    from ecgfm.models.portable import load_model
    from ecgfm.models.probe import extract_embeddings
    from ecgfm.store.format import Corpus

    encoder = oof_run["dir"] / "fold0" / "run" / "model"  # any portable model at the store's rate
    base = oof_run["cfg"].data.overrides
    lines: list[str] = []
    oof = probe_out_of_fold(encoder, store, LABELS3, folds=2, out_dir=tmp_path / "probe", overrides=base,
                            cs=(0.1, 1.0), log=lines.append)
    m = _manifest(store)
    train_ids = m.loc[m["split"] == "train", "record_id"].astype(str).tolist()
    assert list(oof.record_ids) == train_ids and oof.labels == tuple(LABELS3)
    assert oof.given[train_ids.index(oof_run["changed"])].tolist() == [0, 0, 1]  # after the overrides
    assert sorted(np.bincount(oof.folds).tolist()) == [79, 79]
    # the probabilities are those of probes cross-fitted on the encoder's embeddings
    z = extract_embeddings(load_model(encoder), Corpus.open(store), split="train")
    expected, info = cross_fit_probes(z, oof.given, oof.folds, cs=(0.1, 1.0))
    np.testing.assert_allclose(oof.probabilities, expected, atol=1e-5)
    assert oof.runs[0]["C"] == info["C"] and any(line.startswith("embedding 158 records") for line in lines)
    saved = pd.read_csv(tmp_path / "probe" / "oof.csv")
    assert saved["record_id"].astype(str).tolist() == train_ids
    np.testing.assert_allclose(saved[LABELS3].to_numpy(), oof.probabilities, atol=1e-6)
    # a rerun reads the embeddings back instead of embedding again
    lines.clear()
    again = probe_out_of_fold(encoder, store, LABELS3, folds=2, out_dir=tmp_path / "probe", overrides=base,
                              cs=(0.1, 1.0), log=lines.append)
    assert not any(line.startswith("embedding") for line in lines)
    np.testing.assert_allclose(again.probabilities, oof.probabilities, atol=1e-6)
    with pytest.raises(ValidationError, match="no record of the split 'train' is given"):
        probe_out_of_fold(encoder, store, ["SR", "NOPE"], folds=2)

    # the CLI: probes alone, then beside the network's out-of-fold predictions (their mean)
    runner = CliRunner()
    res = runner.invoke(app, ["review-queue", "--store", str(store), "--encoder", str(encoder), "--labels",
                              ",".join(LABELS3), "--overrides", base, "--folds", "2", "--top", "5",
                              "--out", str(tmp_path / "q_probe.csv")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "q_probe.csv.probe" / "oof.csv").is_file() and "wrote 5 of 158 records" in res.output
    res = runner.invoke(app, ["review-queue", "--store", str(store), "-p", str(oof_run["dir"] / "oof.csv"),
                              "--encoder", str(encoder), "--probe-dir", str(tmp_path / "probe"), "--overrides", base,
                              "--folds", "2", "--top", "158", "--out", str(tmp_path / "q_both.csv")])
    assert res.exit_code == 0, res.output
    both = pd.read_csv(tmp_path / "q_both.csv", dtype={"record_id": str})
    network = oof_run["oof"].probabilities
    probe_p = probe_out_of_fold(encoder, store, LABELS3, folds=2, overrides=base).probabilities
    ranking = confident_learning(oof_run["oof"].given, (network + probe_p) / 2)
    assert both["record_id"].tolist() == [train_ids[i] for i in ranking.order()]
    res = runner.invoke(app, ["review-queue", "--store", str(store), "--encoder", str(encoder),
                              "--out", str(tmp_path / "x.csv")])
    assert res.exit_code == 1 and "give --labels" in res.output
    res = runner.invoke(app, ["review-queue", "--store", str(store), "-p", str(oof_run["dir"] / "oof_mc.csv"),
                              "--encoder", str(encoder), "--method", "uncertainty", "--uncertainty", "bald",
                              "--out", str(tmp_path / "x.csv")])
    assert res.exit_code == 1 and "use it without --encoder" in res.output
