"""Survival metrics and losses against scikit-survival and lifelines (test-only dependencies).

References: ``sksurv.metrics`` (concordance_index_censored, concordance_index_ipcw,
cumulative_dynamic_auc, brier_score, integrated_brier_score), ``sksurv.linear_model.
CoxPHSurvivalAnalysis(ties="breslow")``, ``lifelines.KaplanMeierFitter``,
``lifelines.CoxPHFitter`` (Efron ties) and ``lifelines.utils.concordance_index``, on the
Worcester Heart Attack Study (WHAS500, bundled with scikit-survival) and synthetic data with ties.
"""

from __future__ import annotations

import numpy as np
import pytest

from ecgfm.errors import ValidationError
from ecgfm.evaluate import survival as S

sksurv_metrics = pytest.importorskip("sksurv.metrics")
# lifelines pins pandas < 3, so it is not in the test extra: its comparisons run where it is
# installed (pip install lifelines) and skip elsewhere; scikit-survival covers the same ground.
torch = pytest.importorskip("torch")

COVARIATES = ["age", "hr", "bmi", "sysbp"]


@pytest.fixture(scope="module")
def whas():
    from sksurv.datasets import load_whas500

    x, y = load_whas500()
    cov = x[COVARIATES].to_numpy(dtype=np.float64)
    cov = (cov - cov.mean(0)) / cov.std(0)
    time = y["lenfol"].astype(np.float64)
    event = y["fstat"].astype(bool)
    risk = cov @ np.array([0.7, 0.3, -0.3, -0.2])  # a fixed linear risk score
    return cov, time, event, risk, np.array(list(zip(event, time)), dtype=[("e", bool), ("t", float)])


def _synthetic(seed: int = 0, n: int = 300):
    """Integer times and risks: many ties in both; the last time is an event (G > 0 there)."""
    rng = np.random.default_rng(seed)
    time = rng.integers(1, 15, n).astype(np.float64)
    event = (rng.random(n) < 0.55) | (time == time.max())
    risk = rng.integers(0, 6, n).astype(np.float64) + 0.1 * event
    y = np.array(list(zip(event, time)), dtype=[("e", bool), ("t", float)])
    return time, event, risk, y


def _both():
    return ["whas", "synthetic"]


@pytest.fixture(params=_both())
def data(request, whas):
    if request.param == "whas":
        _, time, event, risk, y = whas
        return time, event, risk, y, np.array([365.0, 730.0, 1095.0, 1500.0])
    time, event, risk, y = _synthetic()
    return time, event, risk, y, np.array([2.0, 5.0, 9.0, 12.0])


# ---------------------------------------------------------------------------------------------
# metrics vs scikit-survival


def test_harrell_matches_sksurv(data):
    time, event, risk, _, _ = data
    ours = S.concordance_index(time, event, risk).astuple()
    ref = sksurv_metrics.concordance_index_censored(event, time, risk)
    assert ours[0] == pytest.approx(float(ref[0]), abs=1e-12)
    assert ours[1:] == tuple(int(v) for v in ref[1:])


def test_harrell_tied_tol_matches_sksurv():
    time, event, risk, _ = _synthetic(3)
    risk = risk + np.random.default_rng(1).normal(scale=0.05, size=risk.size)
    for tol in (1e-8, 0.03, 0.5):
        ours = S.concordance_index(time, event, risk, tied_tol=tol).astuple()
        ref = sksurv_metrics.concordance_index_censored(event, time, risk, tied_tol=tol)
        assert ours[0] == pytest.approx(float(ref[0]), abs=1e-12)
        assert ours[1:] == tuple(int(v) for v in ref[1:])


def test_harrell_matches_lifelines(whas):
    pytest.importorskip("lifelines")
    from lifelines.utils import concordance_index as ll_cindex

    _, time, event, risk, _ = whas
    # lifelines scores predicted *survival* (higher = later event): pass -risk
    assert S.concordance_index(time, event, risk).c_index == pytest.approx(
        ll_cindex(time, -risk, event), abs=1e-12)


@pytest.mark.parametrize("tau", [None, 1000.0])
def test_uno_matches_sksurv(data, tau):
    time, event, risk, y, _ = data
    if tau is not None and time.max() < 100:
        tau = 10.0
    ours = S.uno_concordance(time, event, time, event, risk, tau=tau).astuple()
    ref = sksurv_metrics.concordance_index_ipcw(y, y, risk, tau=tau)
    assert ours[0] == pytest.approx(float(ref[0]), abs=1e-9)
    assert ours[1:] == tuple(int(v) for v in ref[1:])


def test_uno_train_test_split_matches_sksurv(whas):
    _, time, event, risk, y = whas
    train, test = np.arange(500) % 2 == 0, np.arange(500) % 2 == 1
    tau = 1500.0
    ours = S.uno_concordance(time[train], event[train], time[test], event[test], risk[test], tau)
    ref = sksurv_metrics.concordance_index_ipcw(y[train], y[test], risk[test], tau=tau)
    assert ours.c_index == pytest.approx(float(ref[0]), abs=1e-9)


def test_time_dependent_auc_matches_sksurv(data):
    time, event, risk, y, horizons = data
    auc, mean = S.time_dependent_auc(time, event, time, event, risk, horizons)
    ref_auc, ref_mean = sksurv_metrics.cumulative_dynamic_auc(y, y, risk, horizons)
    np.testing.assert_allclose(auc, ref_auc, atol=1e-9, rtol=0)
    assert mean == pytest.approx(float(ref_mean), abs=1e-9)
    # one column per horizon (time-dependent risk)
    risk2 = risk[:, None] * np.linspace(1, 2, horizons.size)[None, :] + np.sin(np.arange(risk.size))[:, None]
    auc, mean = S.time_dependent_auc(time, event, time, event, risk2, horizons)
    ref_auc, ref_mean = sksurv_metrics.cumulative_dynamic_auc(y, y, risk2, horizons)
    np.testing.assert_allclose(auc, ref_auc, atol=1e-9, rtol=0)
    assert mean == pytest.approx(float(ref_mean), abs=1e-9)


def test_brier_and_ibs_match_sksurv(data):
    time, event, risk, y, horizons = data
    scale = np.median(time)
    surv = np.exp(-np.outer(np.exp(risk - risk.mean()), horizons) / (2 * scale))
    h, bs = S.brier_score(time, event, time, event, surv, horizons)
    ref_h, ref_bs = sksurv_metrics.brier_score(y, y, surv, horizons)
    np.testing.assert_array_equal(h, ref_h)
    np.testing.assert_allclose(bs, ref_bs, atol=1e-12, rtol=0)
    grid = np.linspace(horizons[0], horizons[-1], 40)
    surv_grid = np.exp(-np.outer(np.exp(risk - risk.mean()), grid) / (2 * scale))
    assert S.integrated_brier_score(time, event, time, event, surv_grid, grid) == pytest.approx(
        sksurv_metrics.integrated_brier_score(y, y, surv_grid, grid), abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Kaplan-Meier vs lifelines and scikit-survival


def test_kaplan_meier_matches_sksurv(data):
    from sksurv.nonparametric import kaplan_meier_estimator

    time, event, *_ = data
    km = S.kaplan_meier(time, event)
    t_ref, s_ref, (low_ref, high_ref) = kaplan_meier_estimator(event, time, conf_type="log-log")
    np.testing.assert_array_equal(km.times, t_ref)
    np.testing.assert_allclose(km.survival, s_ref, atol=1e-12)
    low, high = km.confidence_interval(0.95)
    ok = np.isfinite(low_ref) & np.isfinite(high_ref)
    np.testing.assert_allclose(low[ok], low_ref[ok], atol=1e-6)
    np.testing.assert_allclose(high[ok], high_ref[ok], atol=1e-6)


def test_kaplan_meier_matches_lifelines_and_sksurv(data):
    pytest.importorskip("lifelines")
    from lifelines import KaplanMeierFitter
    from sksurv.nonparametric import kaplan_meier_estimator

    time, event, *_ = data
    km = S.kaplan_meier(time, event)
    fit = KaplanMeierFitter().fit(time, event)
    np.testing.assert_allclose(km.survival, fit.survival_function_.loc[km.times].to_numpy()[:, 0],
                               atol=1e-12)
    table = fit.event_table.loc[km.times]
    np.testing.assert_array_equal(km.at_risk, table["at_risk"].to_numpy())
    np.testing.assert_array_equal(km.events, table["observed"].to_numpy())
    low, high = km.confidence_interval(0.95)
    ci = fit.confidence_interval_survival_function_.loc[km.times].to_numpy()
    np.testing.assert_allclose(low, ci[:, 0], atol=1e-9)
    np.testing.assert_allclose(high, ci[:, 1], atol=1e-9)
    t_ref, s_ref = kaplan_meier_estimator(event, time)
    np.testing.assert_array_equal(km.times, t_ref)
    np.testing.assert_allclose(km.survival, s_ref, atol=1e-12)
    # step function evaluation and Greenwood variance (S^2 * sum d / (n (n - d)))
    assert km.at(km.times[0] - 1) == 1.0
    assert km.at(km.times[3] + 1e-9) == km.survival[3]
    n, d = km.at_risk[:5].astype(float), km.events[:5].astype(float)
    assert km.variance()[4] == pytest.approx(km.survival[4] ** 2 * np.sum(d / (n * (n - d))))


def test_risk_groups_and_calibration(whas):
    _, time, event, risk, _ = whas
    groups = S.risk_groups(time, event, risk, n_groups=3)
    assert [g.n for g in groups] == [167, 167, 166]
    # survival at 2 years falls from the low- to the high-risk group
    s2 = [g.km.at(730.0) for g in groups]
    assert s2[0] > s2[1] > s2[2]
    assert groups[0].high <= groups[1].low
    p = 1 / (1 + np.exp(-(risk - 1)))
    cal = S.fixed_horizon_calibration(time, event, p, horizon=730.0, n_bins=5)
    assert cal.n.sum() == 500 and cal.n.size == 5
    assert np.all(np.diff(cal.predicted) > 0)
    # observed risk of a bin is 1 - KM(730) of its records
    bins = np.argsort(np.argsort(p)) * 5 // 500
    m = bins == 4
    assert cal.observed[4] == pytest.approx(1 - S.kaplan_meier(time[m], event[m]).at(730.0))
    assert np.all((cal.observed_low <= cal.observed) & (cal.observed <= cal.observed_high))


# ---------------------------------------------------------------------------------------------
# censoring edge cases


def test_all_censored_and_no_comparable_pairs():
    t = np.array([1.0, 2.0, 3.0])
    c = S.concordance_index(t, np.zeros(3, bool), np.array([1.0, 2.0, 3.0]))
    assert np.isnan(c.c_index) and "censored" in c.reason
    # only the last time is an event: nothing is known to outlive it
    c = S.concordance_index(t, np.array([0, 0, 1], bool), np.array([1.0, 2.0, 3.0]))
    assert np.isnan(c.c_index) and "no comparable pair" in c.reason
    # two events at the same time are not comparable; a censoring at that time is
    c = S.concordance_index(np.array([2.0, 2.0, 2.0]), np.array([1, 1, 0], bool), np.array([3.0, 2.0, 1.0]))
    assert (c.concordant, c.discordant, c.tied_time, c.c_index) == (2, 0, 2, 1.0)
    # ties in risk count 1/2
    c = S.concordance_index(np.array([1.0, 2.0]), np.array([1, 1], bool), np.array([1.0, 1.0]))
    assert (c.tied_risk, c.c_index) == (1, 0.5)
    km = S.kaplan_meier(t, np.zeros(3, bool))
    np.testing.assert_array_equal(km.survival, [1.0, 1.0, 1.0])


def test_horizon_beyond_follow_up_is_an_error(whas):
    _, time, event, risk, _ = whas
    with pytest.raises(ValidationError, match=r"horizon 5000 .* maximum follow-up 2358"):
        S.time_dependent_auc(time, event, time, event, risk, [365.0, 5000.0])
    with pytest.raises(ValidationError, match="horizon"):
        S.brier_score(time, event, time, event, np.ones((500, 1)), [2400.0])
    with pytest.raises(ValidationError, match="horizon: 9000 .* 2358"):
        S.fixed_horizon_calibration(time, event, np.full(500, 0.2), 9000.0)
    # test events beyond the training follow-up: the censoring distribution is unknown there
    short = time < 500
    last_event = time[short & event].max()
    short_e = short & ((time < last_event) | (event & (time == last_event)))  # ends on an event
    with pytest.raises(ValidationError, match="beyond the largest training follow-up"):
        S.uno_concordance(time[short_e], event[short_e], time, event, risk)
    with pytest.raises(ValidationError, match="censoring survival G is 0 at event time"):
        S.uno_concordance(time[short], event[short], time, event, risk)


def test_nan_inputs_name_the_argument():
    t = np.array([1.0, 2.0, np.nan])
    e = np.array([1, 0, 1], bool)
    with pytest.raises(ValidationError, match="^time: .*nan at record 2"):
        S.concordance_index(t, e, np.zeros(3))
    with pytest.raises(ValidationError, match="^risk: "):
        S.concordance_index(np.arange(3.0), e, np.array([0.0, np.nan, 1.0]))
    with pytest.raises(ValidationError, match="^event: "):
        S.kaplan_meier(np.arange(3.0), np.array([1.0, np.nan, 0.0]))
    with pytest.raises(ValidationError, match="^train time: "):
        S.uno_concordance(t, e, np.arange(3.0), e, np.zeros(3))


def test_auc_horizon_without_cases_is_nan():
    time = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    event = np.array([0, 1, 1, 0, 1], bool)
    with pytest.warns(RuntimeWarning, match="horizon 1 has no case"):
        auc, _ = S.time_dependent_auc(time, event, time, event, np.arange(5.0), [1.0, 3.0])
    assert np.isnan(auc[0]) and np.isfinite(auc[1])


def test_concordance_100k_records_runs():
    rng = np.random.default_rng(0)
    n = 100_000
    time = rng.exponential(size=n).round(3)
    event = rng.random(n) < 0.3
    risk = -time + rng.normal(scale=1.0, size=n)
    c = S.concordance_index(time, event, risk)
    assert 0.6 < c.c_index < 1.0
    # pairs: every event with every later time, plus censorings at its time
    assert c.comparable > 0 and c.concordant > c.discordant


# ---------------------------------------------------------------------------------------------
# losses: Cox vs lifelines / scikit-survival, discrete-time hazard known answer


def _fit_cox(x: np.ndarray, time: np.ndarray, event: np.ndarray, ties: str) -> np.ndarray:
    from ecgfm.objectives.survival import CoxPartialLikelihood

    X = torch.tensor(x, dtype=torch.float64)
    targets = torch.tensor(np.c_[time, event], dtype=torch.float64)
    beta = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    loss_fn = CoxPartialLikelihood(ties)
    opt = torch.optim.LBFGS([beta], lr=1, max_iter=200, tolerance_grad=1e-12,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_fn(X @ beta, targets)["loss"]
        loss.backward()
        return loss

    opt.step(closure)
    return beta.detach().numpy()


def test_cox_efron_matches_sksurv(whas):
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    cov, time, event, _, y = whas
    beta = _fit_cox(cov, time, event, "efron")
    ref = CoxPHSurvivalAnalysis(ties="efron").fit(cov, y).coef_
    np.testing.assert_allclose(beta, ref, atol=1e-4)


def test_cox_efron_matches_lifelines(whas):
    pytest.importorskip("lifelines")
    import pandas as pd
    from lifelines import CoxPHFitter

    cov, time, event, _, _ = whas
    beta = _fit_cox(cov, time, event, "efron")
    df = pd.DataFrame(cov, columns=COVARIATES).assign(T=time, E=event.astype(int))
    ref = CoxPHFitter().fit(df, "T", "E").params_[COVARIATES].to_numpy()
    np.testing.assert_allclose(beta, ref, atol=1e-4)


def test_cox_breslow_matches_sksurv(whas):
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    cov, time, event, _, y = whas
    beta = _fit_cox(cov, time, event, "breslow")
    ref = CoxPHSurvivalAnalysis(ties="breslow").fit(cov, y).coef_
    np.testing.assert_allclose(beta, ref, atol=1e-4)


def test_cox_known_answer_with_ties_and_mask():
    from ecgfm.objectives.survival import CoxPartialLikelihood

    r = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=torch.float64)
    targets = torch.tensor([[1.0, 1], [1.0, 1], [2.0, 0], [3.0, 1]], dtype=torch.float64)
    e = torch.exp(r)
    # time 1: two tied events, risk set all four; time 3: one event, risk set {3}
    breslow = -(r[0] + r[1] - 2 * torch.log(e.sum())) - (r[3] - torch.log(e[3]))
    efron = -(r[0] + r[1] - torch.log(e.sum()) - torch.log(e.sum() - 0.5 * (e[0] + e[1]))) - 0.0
    assert float(CoxPartialLikelihood("breslow")(r, targets)["loss"]) == pytest.approx(float(breslow) / 3)
    assert float(CoxPartialLikelihood("efron")(r, targets)["loss"]) == pytest.approx(float(efron) / 3)
    # a masked record is left out; NaN targets likewise; no event: 0 with a graph
    masked = CoxPartialLikelihood("breslow")(r, targets, mask=torch.tensor([True, True, True, False]))
    assert float(masked["loss"]) == pytest.approx(float(-(r[0] + r[1] - 2 * torch.log(e[:3].sum()))) / 2)
    rr = r.clone().requires_grad_(True)
    out = CoxPartialLikelihood()(rr, torch.tensor([[1.0, 0], [2.0, 0], [3, 0], [4, 0]]))
    out["loss"].backward()
    assert float(out["loss"].detach()) == 0.0 and rr.grad is not None


def test_discrete_hazard_known_answer():
    from ecgfm.objectives.survival import DiscreteTimeHazard, hazards_to_survival, risk_at

    edges = [0.0, 1.0, 2.0]
    logits = torch.tensor([[0.2, -0.4], [-1.0, 0.3], [0.5, 0.5]], dtype=torch.float64)
    # record 0: event at 1.5 (interval 1); record 1: censored at 1.5 (completed interval 0 only);
    # record 2: censored at 2.0 (completed both intervals)
    targets = torch.tensor([[1.5, 1], [1.5, 0], [2.0, 0]], dtype=torch.float64)
    h = torch.sigmoid(logits)
    ll = (torch.log(1 - h[0, 0]) + torch.log(h[0, 1])
          + torch.log(1 - h[1, 0])
          + torch.log(1 - h[2, 0]) + torch.log(1 - h[2, 1]))
    out = DiscreteTimeHazard(edges)(logits, targets)
    assert float(out["loss"]) == pytest.approx(float(-ll / 3), abs=1e-12)
    # midpoint convention: record 1 (censored at 1.5 >= midpoint 1.5) also survived interval 1
    out = DiscreteTimeHazard(edges, censoring="midpoint")(logits, targets)
    assert float(out["loss"]) == pytest.approx(float(-(ll + torch.log(1 - h[1, 1])) / 3), abs=1e-12)
    surv = hazards_to_survival(logits)
    torch.testing.assert_close(surv, torch.cumprod(1 - h, dim=1))
    risk = risk_at(logits, edges, [1.0, 2.0, 0.5])
    torch.testing.assert_close(risk[:, :2], 1 - surv)
    torch.testing.assert_close(risk[:, 2], 1 - torch.sqrt(1 - h[:, 0]))
    with pytest.raises(ValidationError, match="within the bin edges"):
        risk_at(logits, edges, [3.0])


def test_discrete_hazard_recovers_km_and_feeds_the_metrics(whas):
    """A record-independent hazard fitted by the loss is the Kaplan-Meier estimate at the edges."""
    from ecgfm.objectives.survival import DiscreteTimeHazard, hazards_to_survival

    _, time, event, _, _ = whas
    edges = [0.0, 365.0, 730.0, 1095.0]
    loss_fn = DiscreteTimeHazard(edges)
    targets = torch.tensor(np.c_[time, event], dtype=torch.float64)
    logit = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([logit], max_iter=100, line_search_fn="strong_wolfe", tolerance_grad=1e-12)

    def closure():
        opt.zero_grad()
        loss = loss_fn(logit.expand(500, 3), targets)["loss"]
        loss.backward()
        return loss

    opt.step(closure)
    surv = hazards_to_survival(logit.detach())
    # a censoring inside an interval leaves that interval's risk set (the "completed" convention)
    # where Kaplan-Meier keeps it until its time, so the two agree closely, not exactly
    km = S.kaplan_meier(time, event).at(np.array(edges[1:]))
    np.testing.assert_allclose(surv.numpy(), km, atol=0.02)


def test_losses_reject_bad_shapes():
    from ecgfm.objectives.survival import CoxPartialLikelihood, DiscreteTimeHazard

    with pytest.raises(ValidationError, match="ties"):
        CoxPartialLikelihood("exact")
    with pytest.raises(ValidationError, match=r"logits \[B, 2\]"):
        DiscreteTimeHazard([0, 1, 2])(torch.zeros(3, 3), torch.zeros(3, 2))
    with pytest.raises(ValidationError, match="increasing"):
        DiscreteTimeHazard([0, 2, 1])
