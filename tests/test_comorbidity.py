"""Comorbidity discovery: 2x2 statistics against hand computation and scipy, FDR by hand, the
phenome scan against scikit-learn, clustering of planted blocks, and the CLI end to end."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency, fisher_exact
from typer.testing import CliRunner

from ecgfm.comorbidity import (
    BatchLogisticRegression,
    auroc_delong,
    cluster_conditions,
    cooccurrence_counts,
    describe_conditions,
    fdr_qvalues,
    fisher_exact_2x2,
    pairwise_cooccurrence,
    phenome_scan,
    relation_matrix,
    standardised_mean_difference,
    table_statistics,
)
from ecgfm.comorbidity.cli import app
from ecgfm.comorbidity.inputs import read_predictions
from ecgfm.comorbidity.run import OUTPUT_FILES
from ecgfm.errors import ReadError, ValidationError

Z975 = 1.959963984540054  # the 97.5 % standard-normal quantile


def _fisher_by_enumeration(a: int, b: int, c: int, d: int) -> float:
    """Two-sided Fisher p in exact rational arithmetic: the probability of every table with the
    observed margins that is no more likely than the observed one (R's 1e-7 tolerance)."""
    row, col, n = a + b, a + c, a + b + c + d
    total = math.comb(n, col)
    probs = {k: Fraction(math.comb(row, k) * math.comb(n - row, col - k), total)
             for k in range(max(0, row + col - n), min(row, col) + 1)}
    cut = probs[a] * Fraction(10**7 + 1, 10**7)
    return float(sum(p for p in probs.values() if p <= cut))


# ---------------------------------------------------------------------------------------------
# one 2x2 table by hand


def test_hand_computed_2x2_table() -> None:
    """a = LVH present / absent, b = LAO/LAE present / absent, N = 1000 records:

                 b+    b-
        a+       10    20     n_a = 30
        a-       30   940
                 n_b = 40

    expected n11 = 30 * 40 / 1000 = 1.2, obs/exp = 10 / 1.2 = 8.3333
    OR = 10 * 940 / (20 * 30) = 15.6667
    Woolf SE(log OR) = sqrt(1/10 + 1/20 + 1/30 + 1/940) = sqrt(0.1843972) = 0.4294149
    95 % CI = exp(ln 15.6667 -+ 1.959964 * 0.4294149) = [6.7524, 36.3492]
    phi = (10 * 940 - 20 * 30) / sqrt(30 * 970 * 40 * 960) = 8800 / 33428.13 = 0.2632513
    Pearson chi2 = N phi^2 = 69.3013; Yates: (|10 - 1.2| - 0.5)^2 * 1000^3 / (30*970*40*960)
    = 8.3^2 * 1e9 / 1.11744e9 = 61.6498
    """
    s = table_statistics(10, 20, 30, 940)
    assert float(s["n_a"]) == 30 and float(s["n_b"]) == 40
    assert float(s["expected"]) == pytest.approx(1.2)
    assert float(s["obs_exp"]) == pytest.approx(8.333333, rel=1e-6)
    assert float(s["odds_ratio"]) == pytest.approx(15.666667, rel=1e-6)
    assert float(s["se_log_or"]) == pytest.approx(0.4294149, rel=1e-6)
    assert float(s["or_low"]) == pytest.approx(6.752397, rel=1e-6)
    assert float(s["or_high"]) == pytest.approx(36.349232, rel=1e-6)
    assert not bool(s["haldane"])
    assert float(s["phi"]) == pytest.approx(0.2632513, rel=1e-6)
    assert float(s["jaccard"]) == pytest.approx(10 / (30 + 40 - 10))
    assert float(s["chi2"]) == pytest.approx(61.649842, rel=1e-6)
    # the same against scipy
    table = [[10, 20], [30, 940]]
    yates = chi2_contingency(table, correction=True)
    assert float(s["chi2"]) == pytest.approx(yates.statistic, rel=1e-12)
    assert float(s["p_chi2"]) == pytest.approx(yates.pvalue, rel=1e-9)
    assert 1000 * float(s["phi"]) ** 2 == pytest.approx(chi2_contingency(table, correction=False).statistic, rel=1e-12)
    assert float(s["expected"]) == pytest.approx(yates.expected_freq[0, 0])
    # small table: Fisher (min expected cell 1.2 < 1000), exact p = 5.5096e-08
    assert bool(s["exact"])
    exact = _fisher_by_enumeration(10, 20, 30, 940)
    assert exact == pytest.approx(5.509633528e-08, rel=1e-8)
    assert float(s["p"]) == pytest.approx(exact, rel=1e-9)
    assert float(s["p"]) == pytest.approx(fisher_exact(table).pvalue, rel=1e-9)
    assert float(s["log10_p"]) == pytest.approx(math.log10(exact), rel=1e-9)
    assert fisher_exact(table).statistic == pytest.approx(float(s["odds_ratio"]))


def test_haldane_correction_when_a_cell_is_empty() -> None:
    """n11 = 0: OR = (0.5 * 960.5) / (15.5 * 25.5) = 1.2150538,
    SE = sqrt(1/0.5 + 1/15.5 + 1/25.5 + 1/960.5) = 1.4507836."""
    s = table_statistics(0, 15, 25, 960)
    assert bool(s["haldane"])
    assert float(s["odds_ratio"]) == pytest.approx(1.2150538, rel=1e-7)
    assert float(s["se_log_or"]) == pytest.approx(1.4507836, rel=1e-7)
    lo = math.exp(math.log(1.2150538) - Z975 * 1.4507836)
    assert float(s["or_low"]) == pytest.approx(lo, rel=1e-6)
    # the statistics other than the OR use the raw cells
    assert float(s["expected"]) == pytest.approx(15 * 25 / 1000)
    assert float(s["p"]) == pytest.approx(fisher_exact([[0, 15], [25, 960]]).pvalue, rel=1e-9)
    # a full table is not corrected
    assert not bool(table_statistics(1, 15, 25, 960)["haldane"])


def test_fisher_matches_scipy_over_many_tables() -> None:
    rng = np.random.default_rng(7)
    tables = []
    for n in (12, 60, 500, 20_000, 1_000_000):
        for _ in range(40):
            tables.append(rng.multinomial(n, rng.dirichlet(np.full(4, rng.choice([0.3, 1.0, 5.0])))))
    tables += [[5, 5, 5, 5], [3, 7, 7, 3], [0, 5, 5, 0], [10, 0, 0, 10], [0, 0, 4, 6], [2, 3, 3, 2]]
    t = np.array(tables)
    p, log10_p = fisher_exact_2x2(*t.T)
    ref = np.array([fisher_exact(x.reshape(2, 2)).pvalue for x in t])
    big = ref > 1e-290
    np.testing.assert_allclose(p[big], ref[big], rtol=1e-6)
    np.testing.assert_allclose(log10_p[big], np.log10(ref[big]), rtol=1e-7, atol=1e-9)
    # where the double underflows, log10 p still comes from the log-space sum
    tiny = fisher_exact_2x2(5000, 10, 10, 5000)
    assert tiny[0] == 0 and -3000 < float(tiny[1]) < -2900
    with pytest.raises(ValidationError):
        fisher_exact_2x2(1.5, 2, 3, 4)


def test_chi2_path_for_large_tables_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    t = np.array([rng.multinomial(200_000, rng.dirichlet(np.ones(4) * 3)) for _ in range(50)])
    s = table_statistics(*t.T, method="auto", exact_below=1000)
    assert not s["exact"].any()  # every expected cell is in the thousands
    for k, x in enumerate(t):
        ref = chi2_contingency(x.reshape(2, 2), correction=True)
        assert s["chi2"][k] == pytest.approx(ref.statistic, rel=1e-9)
        assert s["p"][k] == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-300)
        # chi-square and Fisher agree closely at these sizes
        if fisher_exact(x.reshape(2, 2)).pvalue > 1e-12:
            assert s["p"][k] == pytest.approx(fisher_exact(x.reshape(2, 2)).pvalue, rel=0.05)


def test_pairwise_table_matches_direct_counts() -> None:
    rng = np.random.default_rng(0)
    n = 600
    base = rng.random(n) < 0.3
    y = np.column_stack([base & (rng.random(n) < 0.8), base | (rng.random(n) < 0.05), rng.random(n) < 0.2,
                         ~base & (rng.random(n) < 0.5), rng.random(n) < 0.01])
    ids = ["LVH", "LAO/LAE", "AFIB", "NORM", "WPW"]
    res = pairwise_cooccurrence(y, ids, min_count=10)
    assert res.kept_ids == ["LVH", "LAO/LAE", "AFIB", "NORM"]  # WPW has < 10 records
    assert "fewer than 10" in res.conditions.set_index("id").loc["WPW", "reason"]
    assert len(res.pairs) == 6
    for row in res.pairs.itertuples(index=False):
        a, b = y[:, ids.index(row.a)], y[:, ids.index(row.b)]
        assert (row.n11, row.n10, row.n01, row.n00) == (int((a & b).sum()), int((a & ~b).sum()),
                                                         int((~a & b).sum()), int((~a & ~b).sum()))
        assert row.p == pytest.approx(fisher_exact([[row.n11, row.n10], [row.n01, row.n00]]).pvalue, rel=1e-6)
    q = fdr_qvalues(res.pairs["p"].to_numpy())
    np.testing.assert_allclose(res.pairs["q"], q)
    top = res.pairs.iloc[0]
    assert {top["a"], top["b"]} in ({"LVH", "LAO/LAE"}, {"LVH", "NORM"}, {"LAO/LAE", "NORM"})
    neg = res.pairs.set_index(["a", "b"]).loc[("LVH", "NORM")]
    assert neg["n11"] == 0 and neg["haldane"] and neg["odds_ratio"] < 0.05 and neg["significant"]
    # counts from float32 chunks are exact, whatever the chunk size
    c1, c2 = cooccurrence_counts(y), cooccurrence_counts(y, chunk_rows=7)
    np.testing.assert_array_equal(c1.joint, c2.joint)
    np.testing.assert_array_equal(c1.joint, y.T.astype(int) @ y.astype(int))


def test_soft_counts_use_the_chi_square_test() -> None:
    rng = np.random.default_rng(1)
    p = rng.random((300, 3))
    res = pairwise_cooccurrence(p, ["A1", "B1", "C1"], soft=True)
    assert set(res.pairs["p_method"]) == {"chi2"}
    counts = cooccurrence_counts(p, soft=True)
    np.testing.assert_allclose(counts.joint, p.T @ p, rtol=1e-5)
    with pytest.raises(ValidationError, match="0/1"):
        pairwise_cooccurrence(p, ["A1", "B1", "C1"])


# ---------------------------------------------------------------------------------------------
# FDR by hand


def test_benjamini_hochberg_and_yekutieli_by_hand() -> None:
    """p = [0.01, 0.04, 0.03, 0.005, 0.5], m = 5; sorted 0.005, 0.01, 0.03, 0.04, 0.5 times m/rank:
    0.025, 0.025, 0.05, 0.05, 0.5 (already monotone) -> in input order
    [0.025, 0.05, 0.05, 0.025, 0.5]. BY multiplies by c(5) = 1 + 1/2 + 1/3 + 1/4 + 1/5 = 2.283333."""
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    np.testing.assert_allclose(fdr_qvalues(p), [0.025, 0.05, 0.05, 0.025, 0.5])
    c5 = 1 + 1 / 2 + 1 / 3 + 1 / 4 + 1 / 5
    np.testing.assert_allclose(fdr_qvalues(p, "by"), np.minimum(1, np.array([0.025, 0.05, 0.05, 0.025, 0.5]) * c5))
    # the step-up minimum: p = [0.02, 0.021] -> raw 0.04, 0.021 -> q = 0.021 for both
    np.testing.assert_allclose(fdr_qvalues([0.02, 0.021]), [0.021, 0.021])
    out = fdr_qvalues([0.01, np.nan, 0.02])
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)
    with pytest.raises(ValidationError):
        fdr_qvalues([0.1, 1.2])


# ---------------------------------------------------------------------------------------------
# phenome scan


def _cohort(n: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    score = rng.normal(60, 12, n)
    age = rng.normal(55, 15, n)
    sex = (rng.random(n) < 0.5).astype(float)
    z = (score - score.mean()) / score.std(ddof=1)
    za = (age - age.mean()) / age.std(ddof=1)
    logits = np.column_stack([-1.5 + 0.7 * z + 0.4 * za, -1.0 - 0.9 * z + 0.5 * sex, -2.0 + 0.0 * z, -0.5 + 0.2 * z - 0.3 * sex])
    y = rng.random((n, 4)) < 1 / (1 + np.exp(-logits))
    return score, age, sex, y


def _unpenalised_logistic():  # noqa: ANN202 - sklearn type
    from sklearn.linear_model import LogisticRegression

    # C = inf is no penalty (what penalty=None meant before scikit-learn 1.8 deprecated it)
    return LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000)


def test_logistic_scan_matches_sklearn_and_inverse_hessian() -> None:
    pytest.importorskip("sklearn")
    from sklearn.metrics import roc_auc_score

    score, age, sex, y = _cohort()
    scan = phenome_scan(score, y, ["AFIB", "NORM", "LVH", "IMI"], covariates=np.c_[age, sex],
                        covariate_names=["age", "sex"]).set_index("condition")
    assert (scan["status"] == "ok").all()
    std = lambda v: (v - v.mean()) / v.std(ddof=1)  # noqa: E731
    x = np.c_[std(score), std(age), std(sex)]
    design = np.c_[np.ones(len(score)), x]
    for j, cid in enumerate(["AFIB", "NORM", "LVH", "IMI"]):
        model = _unpenalised_logistic().fit(x, y[:, j])
        row = scan.loc[cid]
        assert row["beta"] == pytest.approx(model.coef_[0, 0], rel=1e-5, abs=1e-6)
        # Wald SE: sqrt of the (score, score) entry of (X' W X)^-1, W = p (1 - p) from sklearn's fit
        prob = model.predict_proba(x)[:, 1]
        info = design.T @ (design * (prob * (1 - prob))[:, None])
        se = math.sqrt(np.linalg.inv(info)[1, 1])
        assert row["se"] == pytest.approx(se, rel=1e-4)
        assert row["or_low"] == pytest.approx(math.exp(model.coef_[0, 0] - Z975 * se), rel=1e-4)
        assert row["p"] == pytest.approx(math.erfc(abs(model.coef_[0, 0] / se) / math.sqrt(2)), rel=1e-3, abs=1e-300)
        assert row["auroc"] == pytest.approx(roc_auc_score(y[:, j], score), abs=1e-12)
    assert scan.loc["AFIB", "or_per_sd"] > 1.5 and scan.loc["NORM", "or_per_sd"] < 0.6
    assert not scan.loc["LVH", "significant"]


def test_logistic_fit_hessian_by_finite_differences() -> None:
    """The covariance is the inverse of the log-likelihood's curvature: check the curvature by
    central differences of the log-likelihood itself."""
    rng = np.random.default_rng(5)
    x = np.c_[np.ones(400), rng.normal(size=(400, 2))]
    y = (rng.random(400) < 1 / (1 + np.exp(-(x @ [0.3, 1.0, -0.5])))).astype(float)
    fit = BatchLogisticRegression().fit(x, y[:, None])
    beta = fit.coef_[0]

    def loglik(b: np.ndarray) -> float:
        eta = x @ b
        return float(np.sum(y * eta - np.logaddexp(0, eta)))

    h = 1e-4
    hess = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            ei, ej = np.eye(3)[i] * h, np.eye(3)[j] * h
            hess[i, j] = (loglik(beta + ei + ej) - loglik(beta + ei - ej) - loglik(beta - ei + ej)
                          + loglik(beta - ei - ej)) / (4 * h * h)
    np.testing.assert_allclose(fit.cov_[0], np.linalg.inv(-hess), rtol=1e-4)
    assert fit.converged_[0] and fit.n_iter_[0] < 10


def test_delong_and_smd_against_direct_computation() -> None:
    rng = np.random.default_rng(2)
    s = np.round(rng.normal(size=300), 1)  # ties on purpose
    y = np.column_stack([rng.random(300) < 1 / (1 + np.exp(-s)), rng.random(300) < 0.3])
    auc, se = auroc_delong(s, y)
    for j in range(2):
        pos, neg = s[y[:, j]], s[~y[:, j]]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
        a = psi.mean()
        var = v10.var(ddof=1) / len(pos) + v01.var(ddof=1) / len(neg)
        assert auc[j] == pytest.approx(a, abs=1e-12)
        assert se[j] == pytest.approx(math.sqrt(var), rel=1e-9)
        d = standardised_mean_difference(s, y[:, [j]])
        pooled = math.sqrt(((len(pos) - 1) * pos.var(ddof=1) + (len(neg) - 1) * neg.var(ddof=1)) / (len(s) - 2))
        assert d["smd"][0] == pytest.approx((pos.mean() - neg.mean()) / pooled, rel=1e-9)
        assert d["mean_cases"][0] == pytest.approx(pos.mean())


def test_scan_skips_few_cases_and_flags_separation() -> None:
    rng = np.random.default_rng(4)
    n = 400
    score = rng.normal(size=n)
    sex = (rng.random(n) < 0.5).astype(float)
    y = np.column_stack([
        rng.random(n) < 0.3,  # ordinary
        np.arange(n) < 3,  # 3 cases
        score > 1.0,  # the score separates cases completely
        (sex == 1) & (rng.random(n) < 0.3),  # only in one sex: separation by the covariate
    ])
    scan = phenome_scan(score, y, ["AFIB", "WPW", "LVH", "IMI"], covariates=sex[:, None],
                        covariate_names=["sex"]).set_index("condition")
    assert scan.loc["AFIB", "status"] == "ok"
    assert scan.loc["WPW", "status"] == "skipped" and "fewer than 10 cases" in scan.loc["WPW", "reason"]
    assert scan.loc["LVH", "status"] == "separation" and "completely" in scan.loc["LVH", "reason"]
    assert scan.loc["IMI", "status"] == "separation"
    assert np.isnan(scan.loc["IMI", "or_per_sd"]) and np.isnan(scan.loc["IMI", "q"])
    with pytest.raises(ValidationError, match="constant"):
        phenome_scan(np.ones(n), y)


# ---------------------------------------------------------------------------------------------
# clusters, names, relations


def test_clustering_recovers_planted_blocks() -> None:
    rng = np.random.default_rng(11)
    n = 5000
    causes = rng.random((n, 3)) < np.array([0.15, 0.1, 0.2])
    blocks = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    y = causes[:, blocks] & (rng.random((n, len(blocks))) < 0.85)
    noise = rng.random((n, 2)) < 0.1  # two conditions unrelated to anything
    y = np.c_[y, noise]
    clusters = cluster_conditions(y)
    labels = clusters.labels
    planted = blocks + [3, 4]
    # the same partition, whatever the numbering
    pairs_same = lambda lab: {(i, j) for i in range(len(lab)) for j in range(len(lab)) if lab[i] == lab[j]}  # noqa: E731
    assert pairs_same(list(labels)) == pairs_same(planted)
    assert clusters.table.groupby("cluster").size().max() == 4
    by_k = cluster_conditions(y, n_clusters=3)
    assert len(set(by_k.labels)) == 3
    assert cluster_conditions(y, metric="phi").labels[:4].tolist() == [labels[0]] * 4


def test_names_and_relations_by_definition() -> None:
    info = describe_conditions(["AFIB", "superdiagnostic:MI", "subdiagnostic:IMI", "NOTACODE"])
    assert info.loc["superdiagnostic:MI", "name"] == "myocardial infarction (PTB-XL superclass)"
    assert info.loc["superdiagnostic:MI", "category"] == "ischaemia"
    assert info.loc["NOTACODE", "category"] == "other"
    ids = ["IMI", "ILMI", "superdiagnostic:MI", "subdiagnostic:IMI", "AFIB", "NORM", "superdiagnostic:NORM"]
    rel = pd.DataFrame(relation_matrix(ids), index=ids, columns=ids)
    assert rel.loc["IMI", "ILMI"] == "hierarchy"
    assert rel.loc["IMI", "superdiagnostic:MI"] == "grouping"
    assert rel.loc["ILMI", "subdiagnostic:IMI"] == "grouping"
    assert rel.loc["NORM", "superdiagnostic:NORM"] == "grouping"
    assert rel.loc["AFIB", "superdiagnostic:MI"] == "" and rel.loc["AFIB", "NORM"] == ""


# ---------------------------------------------------------------------------------------------
# files and the command line


def _write_cohort(folder: Path, n: int = 240) -> tuple[Path, Path]:
    rng = np.random.default_rng(8)
    hyp = rng.random(n) < 0.3
    rows, preds = [], []
    for i in range(n):
        labels = []
        if hyp[i]:
            labels += ["LVH"] + (["LAO/LAE"] if rng.random() < 0.7 else [])
        if rng.random() < 0.15:
            labels.append("AFIB")
        else:
            labels.append("SR")
        if not labels or labels == ["SR"]:
            labels.append("NORM")
        age = 50 + 20 * hyp[i] + rng.normal(0, 8)
        rows.append({"record_id": f"r{i:04d}", "age": round(age, 1), "sex": "M" if rng.random() < 0.5 else "F",
                     "labels": ";".join(labels)})
        preds.append({"record_id": f"r{i:04d}", "source": f"/data/r{i:04d}.hea",
                      "AFIB": float(np.clip(0.8 * ("AFIB" in labels) + rng.normal(0.1, 0.1), 0, 1)),
                      "NORM": float(np.clip(0.7 * ("NORM" in labels) + rng.normal(0.15, 0.1), 0, 1)),
                      "superdiagnostic:HYP": float(np.clip(0.6 * hyp[i] + rng.normal(0.2, 0.1), 0, 1))})
    manifest, predictions = folder / "manifest.csv", folder / "predictions.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    pd.DataFrame(preds).to_csv(predictions, index=False)
    return manifest, predictions


def test_cli_end_to_end_writes_every_output(tmp_path: Path) -> None:
    manifest, predictions = _write_cohort(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["comorbidity", "--manifest", str(manifest), "--predictions", str(predictions),
                                      "--out", str(out), "--score", "AFIB", "--score", "age",
                                      "--covariates", "sex", "--min-count", "5"])
    assert result.exit_code == 0, result.output
    for name in OUTPUT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    pairs = pd.read_csv(out / "pairs.csv", keep_default_na=False, na_values=[""])
    lvh = pairs[((pairs["a"] == "LVH") & (pairs["b"] == "LAO/LAE")) | ((pairs["a"] == "LAO/LAE") & (pairs["b"] == "LVH"))]
    assert len(lvh) == 1 and lvh["odds_ratio"].iloc[0] > 10 and bool(lvh["significant"].iloc[0])
    scan = pd.read_csv(out / "scan.csv")
    assert set(scan["score"]) == {"AFIB", "age"}
    afib = scan[(scan["score"] == "AFIB") & (scan["condition"] == "AFIB")].iloc[0]
    assert afib["auroc"] > 0.95 and afib["covariates"] in ("sex=F", "sex=M")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_records"] == 240 and summary["inputs"]["conditions_from"].startswith("labels")
    assert summary["scans"]["age"]["covariates"].startswith("sex=")
    html = (out / "report.html").read_text()
    for anchor in ("summary", "positive", "negative", "clusters", "network", "scan-0", "scan-1", "conditions"):
        assert f'id="{anchor}"' in html
    assert html.count("data:image/png;base64,") >= 3 and "http" not in html.replace("https://", "")
    clusters = pd.read_csv(out / "clusters.csv")
    assert set(clusters["id"]) >= {"LVH", "LAO/LAE", "AFIB"}

    # predictions only: conditions are the calls at the threshold
    out2 = tmp_path / "out2"
    result = CliRunner().invoke(app, ["comorbidity", "--predictions", str(predictions), "--out", str(out2),
                                      "--threshold", "0.4", "--score", "1-NORM", "--min-count", "5"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out2 / "summary.json").read_text())
    assert summary["inputs"]["conditions_from"] == "predictions (calls)"
    assert summary["inputs"]["thresholds"] == "0.4 for every condition"
    assert "1-NORM" in summary["scans"]


def test_list_labels_in_parquet_and_profile_folders(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    from ecgfm.comorbidity import run_comorbidity

    manifest, _ = _write_cohort(tmp_path)
    frame = pd.read_csv(manifest)
    frame["labels"] = [s.split(";") for s in frame["labels"]]
    frame.to_parquet(tmp_path / "manifest.parquet")
    a = run_comorbidity(manifest, min_count=5)
    b = run_comorbidity(tmp_path / "manifest.parquet", min_count=5)
    pd.testing.assert_frame_equal(a.pairs, b.pairs)
    # an 'ecgfm profile --out' folder: probabilities and the profiles' own thresholds
    folder = tmp_path / "profiles"
    folder.mkdir()
    with open(folder / "profiles.jsonl", "w") as f:
        for i, rid in enumerate(["a1", "a2", "a3"]):
            status = "refused" if i == 2 else "ok"
            f.write(json.dumps({"record_id": rid, "status": status, "files": {"json": f"{rid}.json"}}) + "\n")
            conditions = [] if status != "ok" else [
                {"id": "AFIB", "probability": 0.1 * (i + 1), "positive_at": 0.23},
                {"id": "NORM", "probability": 0.9 - 0.1 * i, "positive_at": 0.6}]
            (folder / f"{rid}.json").write_text(json.dumps({"record": {"record_id": rid}, "conditions": conditions}))
    pred = read_predictions(folder)
    assert pred.frame["record_id"].tolist() == ["a1", "a2"] and pred.thresholds == {"AFIB": 0.23, "NORM": 0.6}
    assert pred.probabilities == ["AFIB", "NORM"] and "1 refused" in pred.notes[0]


@pytest.mark.parametrize("case", ["no_id", "not_in_manifest", "non_numeric", "empty", "missing_prob", "bad_labels"])
def test_cli_bad_inputs_name_the_file(tmp_path: Path, case: str) -> None:
    manifest, predictions = _write_cohort(tmp_path, n=40)
    bad = tmp_path / "bad.csv"
    args = ["comorbidity", "--out", str(tmp_path / "o")]
    if case == "no_id":
        pd.read_csv(manifest).rename(columns={"record_id": "id"}).to_csv(bad, index=False)
        args += ["--manifest", str(bad)]
        expect = "no 'record_id' column"
    elif case == "not_in_manifest":
        p = pd.read_csv(predictions)
        p.loc[0, "record_id"] = "stranger"
        p.to_csv(bad, index=False)
        args += ["--manifest", str(manifest), "--predictions", str(bad)]
        expect = "1 records are not in the manifest"
    elif case == "non_numeric":
        p = pd.read_csv(predictions)
        p["AFIB"] = p["AFIB"].astype(object)
        p.loc[3, "AFIB"] = "high"
        p.to_csv(bad, index=False)
        args += ["--predictions", str(bad)]
        expect = "column 'AFIB', record r0003: non-numeric value 'high'"
    elif case == "empty":
        bad.write_text("record_id,labels\n")
        args += ["--manifest", str(bad)]
        expect = "no rows"
    elif case == "missing_prob":
        p = pd.read_csv(predictions)
        p.loc[5, "NORM"] = np.nan
        p.to_csv(bad, index=False)
        args += ["--predictions", str(bad)]
        expect = "column 'NORM', record r0005: missing value"
    else:
        m = pd.read_csv(manifest)
        m.loc[2, "labels"] = "['AFIB'"
        m.to_csv(bad, index=False)
        args += ["--manifest", str(bad)]
        expect = "column 'labels', record r0002: cannot read labels"
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert str(bad) in result.output and expect in result.output


def test_cli_needs_an_input_and_valid_options(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["comorbidity", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "--manifest, --predictions, or both" in result.output
    manifest, _ = _write_cohort(tmp_path, n=40)
    result = CliRunner().invoke(app, ["comorbidity", "--manifest", str(manifest), "--out", str(tmp_path / "o"),
                                      "--fdr", "holm"])
    assert result.exit_code == 2 and "fdr must be one of bh, by" in result.output
    with pytest.raises(ReadError, match="no labels column 'dx'"):
        from ecgfm.comorbidity import run_comorbidity

        run_comorbidity(manifest, labels_column="dx", conditions_from="labels")
