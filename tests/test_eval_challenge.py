"""The PhysioNet/CinC 2020/2021 challenge metric against hand computations and the official scorer.

Reference: ``evaluate_model.py`` of physionetchallenges/evaluation-2021 (final version, weights
with ``|``-joined equivalent classes). ``_official_*`` below restate its loops one record and one
class at a time, as the official code does, so the vectorised implementation is checked against
the published definition rather than against itself:

    for each record i:
        normalization = max(1, |{k: labels[i, k] or outputs[i, k]}|)
        for each labelled class j, for each output class k:  A[j, k] += 1 / normalization
    score(outputs) = nansum(weights * A)
    normalised = (score(outputs) - score(sinus rhythm only)) / (score(labels) - score(sinus rhythm only))

Weights quoted in the hand computations come from ``challenge2021/weights.csv`` (row = label,
column = output; the matrix is symmetric).
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from conftest import data_path
from ecgfm.errors import ReadError, ValidationError
from ecgfm.evaluate.challenge import (
    EQUIVALENT_2020,
    NORMAL_CLASS,
    ChallengeWeights,
    challenge_accuracy,
    challenge_beta_measures,
    challenge_f_measure,
    challenge_score,
    challenge_score_details,
    challenge_summary,
    modified_confusion_matrix,
    read_dx,
)
from ecgfm.labels import map_cinc_dx

AF, AFL, NSR, SB, IRBBB = "164889003", "164890007", "426783006", "426177001", "713426002"
RBBB, CRBBB = "59118001", "713427006"  # scored as one class


@pytest.fixture(scope="module")
def weights() -> ChallengeWeights:
    folder = data_path("challenge2021")
    return ChallengeWeights.from_csv(
        folder / "weights.csv", abbreviations=folder / "weights_abbreviations.csv"
    )


# -- the official definition, restated as loops ------------------------------------------------


def _official_confusion(labels: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    n, k = labels.shape
    a = np.zeros((k, k))
    for i in range(n):
        norm = float(max(np.sum(np.any((labels[i], outputs[i]), axis=0)), 1))
        for j in range(k):
            if labels[i, j]:
                for m in range(k):
                    if outputs[i, m]:
                        a[j, m] += 1.0 / norm
    return a


def _official_score(w: np.ndarray, labels: np.ndarray, outputs: np.ndarray, normal: int) -> float:
    inactive = np.zeros_like(labels)
    inactive[:, normal] = True
    obs = np.nansum(w * _official_confusion(labels, outputs))
    cor = np.nansum(w * _official_confusion(labels, labels))
    ina = np.nansum(w * _official_confusion(labels, inactive))
    return float(obs - ina) / float(cor - ina) if cor != ina else 0.0


def _official_labels(dx_per_record: list[list[str]], header_keys: list[str]) -> np.ndarray:
    # load_labels of the 2021 scorer: class j positive when the record's codes intersect it
    classes = [set(k.split("|")) for k in header_keys]
    out = np.zeros((len(dx_per_record), len(classes)), dtype=bool)
    for i, dx in enumerate(dx_per_record):
        for j, c in enumerate(classes):
            if c & set(dx):
                out[i, j] = True
    return out


# -- the table ---------------------------------------------------------------------------------


def test_weights_table(weights: ChallengeWeights) -> None:
    assert weights.n_classes == 26
    assert weights.weights.shape == (26, 26)
    np.testing.assert_array_equal(np.diag(weights.weights), 1.0)
    np.testing.assert_array_equal(weights.weights, weights.weights.T)
    # the four equivalence classes of the 2021 table, and which codes are NOT equivalent
    assert "713427006|59118001" in weights.classes
    assert "733534002|164909002" in weights.classes
    assert weights.index(RBBB) == weights.index(CRBBB) == weights.index("713427006|59118001")
    assert weights.index("164909002") == weights.index("733534002")  # LBBB ~ complete LBBB
    assert weights.index("63593006") == weights.index("284470004")  # SVPB ~ PAC
    assert weights.index("17338001") == weights.index("427172004")  # VPB ~ PVC
    assert weights.index(RBBB) != weights.index(IRBBB)  # incomplete RBBB is its own class
    assert weights.index("59118001") != weights.index("164909002")  # RBBB is not LBBB
    assert weights.codes[weights.index(RBBB)] == frozenset({RBBB, CRBBB})
    assert weights.names[weights.index(RBBB)] == "CRBBB|RBBB"
    assert weights.names[weights.index(NSR)] == "NSR"
    assert not weights.is_scored("164873001")  # left ventricular hypertrophy: unscored in 2021
    with pytest.raises(KeyError, match="not a scored class"):
        weights.index("164873001")
    # entries quoted by the hand computations below
    w = weights.weights
    assert w[weights.index(AF), weights.index(AFL)] == 0.5
    assert w[weights.index(AF), weights.index(NSR)] == 0.25
    assert w[weights.index(RBBB), weights.index(IRBBB)] == 0.4
    assert w[weights.index(RBBB), weights.index(SB)] == 0.4
    assert w[weights.index(SB), weights.index(IRBBB)] == 0.5
    assert w[weights.index(RBBB), weights.index(NSR)] == 0.35
    assert w[weights.index(SB), weights.index(NSR)] == 0.45


def test_map_codes_equivalence_and_unscored(weights: ChallengeWeights) -> None:
    y = weights.map_codes([[RBBB], [CRBBB], [RBBB, CRBBB], "164873001", f"{AF}, 164873001", [int(NSR)]])
    col = weights.index(RBBB)
    assert y.shape == (6, 26) and y.dtype == bool
    for i in range(3):  # either code, or both, set the same single column
        assert y[i].sum() == 1 and y[i, col]
    assert not y[3].any()  # only an unscored code
    assert y[4].sum() == 1 and y[4, weights.index(AF)]
    assert y[5, weights.index(NSR)]  # integer codes are accepted


# -- hand-computed scores ----------------------------------------------------------------------


def test_perfect_and_inactive(weights: ChallengeWeights) -> None:
    y = weights.map_codes([[AF], [NSR], [RBBB, SB], [IRBBB]])
    assert challenge_score(y, y, weights) == pytest.approx(1.0)
    sinus_only = weights.map_codes([[NSR]] * 4)
    assert challenge_score(y, sinus_only, weights) == pytest.approx(0.0, abs=1e-12)
    # predicting nothing scores below always-sinus-rhythm
    assert challenge_score(y, np.zeros_like(y), weights) < 0


def test_hand_computed_confusion(weights: ChallengeWeights) -> None:
    labels = weights.map_codes([[AF], [NSR], [RBBB, SB]])
    outputs = weights.map_codes([[AFL], [NSR], [IRBBB, SB]])
    # observed: record 0: AF vs AFL, |{AF, AFL}| = 2 -> w(AF,AFL)/2 = 0.5/2 = 0.25
    #           record 1: NSR vs NSR, 1 class -> 1
    #           record 2: {RBBB, SB} vs {IRBBB, SB}: |union| = 3 ->
    #                     (w(RBBB,IRBBB) + w(RBBB,SB) + w(SB,IRBBB) + w(SB,SB)) / 3 = (0.4 + 0.4 + 0.5 + 1) / 3
    observed = 0.25 + 1 + (0.4 + 0.4 + 0.5 + 1) / 3
    # correct:  1 + 1 + (w(RBBB,RBBB) + w(RBBB,SB) + w(SB,RBBB) + w(SB,SB)) / 2 = 2 + 2.8 / 2
    correct = 2 + (1 + 0.4 + 0.4 + 1) / 2
    # inactive: w(AF,NSR)/2 + 1 + (w(RBBB,NSR) + w(SB,NSR)) / 3 = 0.125 + 1 + 0.8 / 3
    inactive = 0.25 / 2 + 1 + (0.35 + 0.45) / 3
    d = challenge_score_details(labels, outputs, weights)
    assert d["observed"] == pytest.approx(observed)
    assert d["correct"] == pytest.approx(correct)
    assert d["inactive"] == pytest.approx(inactive)
    # (2.016667 - 1.391667) / (3.4 - 1.391667) = 0.625 / 2.008333 = 0.311203...
    assert d["score"] == pytest.approx((observed - inactive) / (correct - inactive))
    assert d["score"] == pytest.approx(0.3112033195, abs=1e-9)


def test_normalisation_by_labels_union_outputs(weights: ChallengeWeights) -> None:
    # one record labelled AF; outputs AF + AFL + NSR: |union| = 3, each pair gets 1/3
    labels = weights.map_codes([[AF]])
    outputs = weights.map_codes([[AF, AFL, NSR]])
    a = modified_confusion_matrix(labels, outputs)
    i = weights.index(AF)
    for code in (AF, AFL, NSR):
        assert a[i, weights.index(code)] == pytest.approx(1 / 3)
    assert a.sum() == pytest.approx(1.0)
    d = challenge_score_details(labels, outputs, weights)
    assert d["observed"] == pytest.approx((1 + 0.5 + 0.25) / 3)  # over-calling is penalised
    # a record with neither labels nor outputs contributes nothing (normalisation max(1, 0))
    empty = np.zeros((1, weights.n_classes), dtype=bool)
    assert modified_confusion_matrix(empty, empty).sum() == 0


def test_matches_official_loops_on_random_outputs(weights: ChallengeWeights) -> None:
    rng = np.random.default_rng(7)
    labels = rng.random((300, 26)) < 0.08
    labels[:40] = False  # records with no scored label
    outputs = rng.random((300, 26)) < 0.1
    normal = weights.index(NORMAL_CLASS)
    np.testing.assert_allclose(
        modified_confusion_matrix(labels, outputs), _official_confusion(labels, outputs), rtol=1e-12
    )
    expected = _official_score(weights.weights, labels, outputs, normal)
    assert challenge_score(labels, outputs, weights) == pytest.approx(expected, rel=1e-12)
    # a bare matrix with a column index gives the same number
    assert challenge_score(labels, outputs, weights.weights, normal) == pytest.approx(expected, rel=1e-12)


def test_cinc2021_headers(weights: ChallengeWeights) -> None:
    headers = sorted(data_path("cinc2021").glob("*.hea"))
    assert len(headers) >= 20
    dx = [read_dx(h) for h in headers]
    assert all(dx)
    y = weights.map_codes(dx)
    np.testing.assert_array_equal(y, _official_labels(dx, list(weights.classes)))
    # spot checks against the header text
    by_text = {",".join(d): row for d, row in zip(dx, y)}
    row = by_text["59118001,426177001"]  # RBBB + sinus bradycardia
    assert row.sum() == 2 and row[weights.index(CRBBB)] and row[weights.index(SB)]
    assert not by_text["164873001"].any()  # LVH only: unscored
    # the catalogue route (catalogue ids from map_cinc_dx) lands on the same classes
    ids = [map_cinc_dx(d).ids for d in dx]
    np.testing.assert_array_equal(weights.map_catalogue(ids), y)
    # scores on real labels: perfect = 1, inactive = 0, a degraded model against the loops
    assert challenge_score(y, y, weights) == pytest.approx(1.0)
    assert challenge_score(y, weights.map_codes([[NSR]] * len(y)), weights) == pytest.approx(0.0, abs=1e-12)
    degraded = y.copy()
    degraded[::3] = False
    degraded[::3, weights.index(STACH := "427084000")] = True
    expected = _official_score(weights.weights, y, degraded, weights.index(NSR))
    assert challenge_score(y, degraded, weights) == pytest.approx(expected, rel=1e-12)
    assert 0 < expected < 1 and weights.is_scored(STACH)


def test_catalogue_projection(weights: ChallengeWeights) -> None:
    ids = ["AFIB", "CRBBB", "SBRAD", "MI", "SR"]
    m = weights.catalogue_matrix(ids)
    assert m.shape == (5, 26)
    assert m.sum(axis=1).tolist() == [1, 1, 1, 0, 1]  # MI has no scored SNOMED code
    assert m[1, weights.index(RBBB)]
    probs = np.array([[0.9, 0.2, 0.1, 0.7, 0.3]])
    out = weights.project_catalogue_scores(probs, ids)
    assert out[0, weights.index(AF)] == 0.9 and out[0, weights.index(NSR)] == 0.3
    assert out.sum() == pytest.approx(0.9 + 0.2 + 0.1 + 0.3)
    with pytest.raises(ValidationError, match="not a catalogue id"):
        weights.catalogue_matrix(["NOT_AN_ID"])


# -- the 2020 layout ---------------------------------------------------------------------------


def _write_2020_style(src, dst) -> None:
    """The 2021 table with '713427006|59118001' split into two identical rows (2020 layout)."""
    rows = list(csv.reader(open(src, newline="")))
    key = "713427006|59118001"
    j = rows[0].index(key)
    out = []
    for r in rows:
        r = r[:j] + [r[j], r[j]] + r[j + 1:]
        out.append(r)
    out[0][j], out[0][j + 1] = "713427006", "59118001"
    i = next(n for n, r in enumerate(out) if r[0] == key)
    first, second = list(out[i]), list(out[i])
    first[0], second[0] = "713427006", "59118001"
    out[i:i + 1] = [first, second]
    with open(dst, "w", newline="") as f:
        csv.writer(f).writerows(out)


def test_2020_equivalent_rows_merge(weights: ChallengeWeights, tmp_path) -> None:
    path = tmp_path / "weights2020.csv"
    _write_2020_style(weights.source, path)
    unmerged = ChallengeWeights.from_csv(path)
    assert unmerged.n_classes == 27 and unmerged.index(RBBB) != unmerged.index(CRBBB)
    merged = ChallengeWeights.from_csv(path, equivalent=EQUIVALENT_2020)
    assert merged.n_classes == 26
    assert merged.classes[merged.index(RBBB)] == "713427006|59118001"
    np.testing.assert_array_equal(merged.weights, weights.weights)
    rng = np.random.default_rng(1)
    codes = [list(rng.choice([AF, AFL, NSR, SB, RBBB, CRBBB, IRBBB], size=2, replace=False)) for _ in range(50)]
    guesses = [list(rng.choice([AF, NSR, SB, RBBB, CRBBB], size=1)) for _ in range(50)]
    a = challenge_score(merged.map_codes(codes), merged.map_codes(guesses), merged)
    b = challenge_score(weights.map_codes(codes), weights.map_codes(guesses), weights)
    assert a == pytest.approx(b)


def test_bad_tables(tmp_path) -> None:
    bad = tmp_path / "w.csv"
    bad.write_text(",1,2\n1,1.0,0.5\n2,0.5\n")
    with pytest.raises(ReadError, match="not square"):
        ChallengeWeights.from_csv(bad)
    bad.write_text(",1,2\n1,1.0,x\n2,0.5,1.0\n")
    with pytest.raises(ReadError, match="not a number"):
        ChallengeWeights.from_csv(bad)
    bad.write_text(",1,2\n1,1.0,0.5\n2,0.4,1.0\n")
    with pytest.raises(ReadError, match="different weights"):
        ChallengeWeights.from_csv(bad, equivalent=[("1", "2")])
    with pytest.raises(ReadError, match="cannot read"):
        ChallengeWeights.from_csv(tmp_path / "missing.csv")


def test_rejects_scores_as_outputs(weights: ChallengeWeights) -> None:
    y = weights.map_codes([[AF]])
    with pytest.raises(ValidationError, match="binary"):
        challenge_score(y, np.full(y.shape, 0.7), weights)
    with pytest.raises(ValidationError, match="column index"):
        challenge_score(y, y, weights.weights)  # bare matrix needs an index for the normal class


# -- accuracy, F-measure, F-beta/G-beta ----------------------------------------------------------


def test_other_official_measures() -> None:
    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=bool)
    outputs = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 1], [0, 0, 0]], dtype=bool)
    assert challenge_accuracy(labels, outputs) == 0.5  # records 0 and 3 exactly right
    macro, per = challenge_f_measure(labels, outputs)
    # class 0: TP 2 -> 1; class 1: TP 0, FP 1, FN 1 -> 0; class 2: TP 1 -> 1
    np.testing.assert_allclose(per, [1.0, 0.0, 1.0])
    assert macro == pytest.approx(2 / 3)
    # F-beta/G-beta (beta 2), counts weighted 1/max(1, #labels): record 1 has 2 labels -> 1/2
    # class 0: TP = 1 + 1/2 = 1.5 -> F = G = 1
    # class 1: FN = 1/2 (record 1), FP = 1 (record 2) -> F = 0, G = 0
    # class 2: TP = 1 -> 1
    beta = challenge_beta_measures(labels, outputs, beta=2)
    np.testing.assert_allclose(beta["f_beta_per_class"], [1, 0, 1])
    np.testing.assert_allclose(beta["g_beta_per_class"], [1, 0, 1])
    # a partial case: class 0 with TP 1, FN 1/2: F2 = 5*1 / (5*1 + 0 + 4*0.5) = 5/7; G2 = 1 / (1 + 2*0.5) = 1/2
    y2 = np.array([[1, 1], [1, 0]], dtype=bool)
    o2 = np.array([[0, 1], [1, 0]], dtype=bool)
    b2 = challenge_beta_measures(y2, o2)
    assert b2["f_beta_per_class"][0] == pytest.approx(5 / 7)
    assert b2["g_beta_per_class"][0] == pytest.approx(1 / 2)
    # a class in neither labels nor outputs is NaN and left out of the macro mean
    _, per_nan = challenge_f_measure(np.array([[1, 0]], bool), np.array([[1, 0]], bool))
    assert per_nan[0] == 1 and math.isnan(per_nan[1])


def test_summary_keys(weights: ChallengeWeights) -> None:
    y = weights.map_codes([[AF], [NSR]])
    s = challenge_summary(y, y, weights)
    assert set(s) == {"challenge_score", "accuracy", "f_measure", "f_beta", "g_beta"}
    assert s["challenge_score"] == pytest.approx(1.0) and s["accuracy"] == 1.0
