"""Calibration: ECE by hand, reliability curves against scikit-learn, temperature scaling.

References: ``sklearn.calibration.calibration_curve`` (scikit-learn 1.x: bins ``(lo, hi]`` via
``np.searchsorted(bins[1:-1], y_prob)``, empty bins dropped) for the curves; the ECE definition
``sum_b n_b / n * |mean(p_b) - mean(y_b)|`` (Naeini et al. 2015; Guo et al. 2017) computed bin by
bin in the test; temperature scaling (Guo et al. 2017) checked by recovering a known temperature.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit
from sklearn.calibration import calibration_curve
from sklearn.metrics import log_loss

from ecgfm.errors import ValidationError
from ecgfm.evaluate.calibration import (
    TemperatureScaling,
    binary_log_loss,
    expected_calibration_error,
    plot_reliability,
    pooled_calibration_error,
    reliability_curve,
)


def _ece_by_hand(y: np.ndarray, p: np.ndarray, edges: np.ndarray) -> float:
    total = 0.0
    for b in range(len(edges) - 1):
        lo, hi = edges[b], edges[b + 1]
        inside = (p <= hi) & ((p > lo) if b > 0 else (p >= lo))  # (lo, hi], first bin closed
        if inside.any():
            total += inside.sum() / len(p) * abs(p[inside].mean() - y[inside].mean())
    return total


def test_ece_small_hand_example() -> None:
    # 5 uniform bins (0, .2], (.2, .4], ..., 0.2 sits on an edge and falls in the first bin:
    # bin 0: p = {0.1, 0.2}, y = {0, 1}: |0.15 - 0.5| = 0.35, weight 2/6
    # bin 1: p = {0.3},      y = {0}:    |0.3 - 0|    = 0.3,  weight 1/6
    # bin 3: p = {0.7},      y = {1}:    |0.7 - 1|    = 0.3,  weight 1/6
    # bin 4: p = {0.9, .95}, y = {1, 1}: |0.925 - 1|  = 0.075, weight 2/6
    # ECE = (2*0.35 + 0.3 + 0.3 + 2*0.075) / 6 = 1.45 / 6
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.9, 0.95])
    y = np.array([0, 1, 0, 1, 1, 1])
    assert expected_calibration_error(y, p, n_bins=5) == pytest.approx(1.45 / 6)
    curve = reliability_curve(y, p, n_bins=5)
    np.testing.assert_allclose(curve.mean_predicted, [0.15, 0.3, 0.7, 0.925])
    np.testing.assert_allclose(curve.observed, [0.5, 0.0, 1.0, 1.0])
    assert curve.counts.tolist() == [2, 1, 1, 2]
    assert len(curve.edges) == 6
    # a perfectly calibrated constant predictor has ECE 0
    assert expected_calibration_error(np.array([0, 1, 0, 1]), np.full(4, 0.5)) == 0.0


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_ece_matches_bin_by_bin_computation(strategy: str) -> None:
    rng = np.random.default_rng(3)
    p = rng.beta(0.7, 1.5, size=(2000, 3))
    y = (rng.random(p.shape) < p**1.3).astype(float)
    y[rng.random(p.shape) < 0.1] = np.nan  # missing labels are excluded per condition
    ece = expected_calibration_error(y, p, n_bins=12, strategy=strategy)
    assert ece.shape == (3,)
    for c in range(3):
        keep = ~np.isnan(y[:, c])
        yc, pc = y[keep, c], p[keep, c]
        edges = np.linspace(0, 1, 13) if strategy == "uniform" else np.percentile(pc, np.linspace(0, 1, 13) * 100)
        assert ece[c] == pytest.approx(_ece_by_hand(yc, pc, edges), rel=1e-10)
        assert expected_calibration_error(yc, pc, n_bins=12, strategy=strategy) == pytest.approx(ece[c])
    # pooled: one set of bins over every labelled pair
    keep = ~np.isnan(y)
    edges = np.linspace(0, 1, 13) if strategy == "uniform" else np.percentile(p[keep], np.linspace(0, 1, 13) * 100)
    assert pooled_calibration_error(y, p, n_bins=12, strategy=strategy) == pytest.approx(
        _ece_by_hand(y[keep], p[keep], edges), rel=1e-10
    )


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_reliability_curve_matches_sklearn(strategy: str, n_bins: int) -> None:
    rng = np.random.default_rng(n_bins)
    p = np.concatenate([rng.random(700), np.linspace(0, 1, 11)])  # include values on uniform edges
    y = (rng.random(len(p)) < p).astype(float)
    curve = reliability_curve(y, p, n_bins=n_bins, strategy=strategy)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy=strategy)
    np.testing.assert_allclose(curve.observed, prob_true, rtol=1e-12)
    np.testing.assert_allclose(curve.mean_predicted, prob_pred, rtol=1e-12)
    assert curve.counts.sum() == len(p)
    # NaN labels are dropped before binning
    y_nan = y.copy()
    y_nan[:50] = np.nan
    c2 = reliability_curve(y_nan, p, n_bins=n_bins, strategy=strategy)
    t2, p2 = calibration_curve(y[50:], p[50:], n_bins=n_bins, strategy=strategy)
    np.testing.assert_allclose(c2.observed, t2, rtol=1e-12)
    np.testing.assert_allclose(c2.mean_predicted, p2, rtol=1e-12)


def test_input_validation() -> None:
    with pytest.raises(ValidationError, match="outside"):
        expected_calibration_error(np.array([0, 1]), np.array([0.2, 1.3]))
    with pytest.raises(ValidationError, match="0, 1 or NaN"):
        expected_calibration_error(np.array([0, 2]), np.array([0.2, 0.3]))
    with pytest.raises(ValidationError, match="strategy"):
        expected_calibration_error(np.array([0, 1]), np.array([0.2, 0.3]), strategy="width")
    y = np.array([[0, np.nan], [1, np.nan]])
    out = expected_calibration_error(y, np.array([[0.1, 0.5], [0.8, 0.5]]))
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.15)


def test_binary_log_loss_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    p = rng.random((300, 2))
    y = (rng.random(p.shape) < p).astype(float)
    out = binary_log_loss(y, p)
    for c in range(2):
        assert out[c] == pytest.approx(log_loss(y[:, c], p[:, c]))


# -- temperature scaling -------------------------------------------------------------------------


def _synthetic(n: int, temps: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits z and labels drawn from sigmoid(z / T_true): the calibrated temperature is T_true."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 3.0, size=(n, len(temps)))
    y = (rng.random(z.shape) < expit(z / temps)).astype(float)
    return z, y


def test_temperature_recovers_known_values() -> None:
    t_true = np.array([0.5, 1.0, 2.0, 3.0])
    z, y = _synthetic(20000, t_true, seed=1)
    ts = TemperatureScaling().fit(z, y)
    np.testing.assert_allclose(ts.temperature_, t_true, rtol=0.08)
    assert ts.n_conditions_ == 4
    assert np.all(ts.log_loss_ <= ts.log_loss_before_ + 1e-12)
    # the fit is the minimum of the NLL: nudging T either way does not lower it
    for c in range(4):
        best = binary_log_loss(y[:, c], expit(z[:, c] / ts.temperature_[c]))
        for f in (0.97, 1.03):
            assert best <= binary_log_loss(y[:, c], expit(z[:, c] / (f * ts.temperature_[c])))
    # shared temperature on data with a single true T
    z2, y2 = _synthetic(20000, np.array([2.0, 2.0, 2.0]), seed=2)
    shared = TemperatureScaling(per_condition=False).fit(z2, y2)
    assert shared.temperature_.shape == (1,)
    assert shared.temperature_[0] == pytest.approx(2.0, rel=0.05)
    assert shared.transform(z2).shape == z2.shape
    # probabilities in give the same temperatures as logits in
    probs = TemperatureScaling(inputs="probabilities").fit(expit(z), y)
    np.testing.assert_allclose(probs.temperature_, ts.temperature_, rtol=1e-3)


def test_temperature_improves_held_out_calibration() -> None:
    # an over-confident model: true risk sigmoid(s), the model reports logits 3 * s + noise
    rng = np.random.default_rng(5)
    s = rng.normal(-1.0, 1.5, size=(8000, 3))
    y = (rng.random(s.shape) < expit(s)).astype(float)
    logits = 3.0 * s + rng.normal(0, 0.5, size=s.shape)
    y[rng.random(y.shape) < 0.05] = np.nan
    val, test = slice(0, 4000), slice(4000, None)
    ts = TemperatureScaling().fit(logits[val], y[val])
    assert np.all(ts.temperature_ > 2)  # it undoes the over-confidence
    before, after = expit(logits[test]), ts.transform(logits[test])
    assert np.all(binary_log_loss(y[test], after) < binary_log_loss(y[test], before))
    assert np.all(expected_calibration_error(y[test], after) < 0.5 * expected_calibration_error(y[test], before))
    # ranking is untouched
    np.testing.assert_array_equal(np.argsort(after[:, 0]), np.argsort(before[:, 0]))


def test_temperature_edge_cases() -> None:
    with pytest.raises(ValidationError, match="not fitted"):
        TemperatureScaling().transform(np.zeros((2, 2)))
    z, y = _synthetic(500, np.array([1.5, 1.5]), seed=3)
    y[:, 1] = np.nan  # no labels for condition 1
    ts = TemperatureScaling().fit(z, y)
    assert ts.temperature_[1] == 1.0 and np.isnan(ts.log_loss_[1])
    with pytest.raises(ValidationError, match="conditions"):
        ts.transform(np.zeros((3, 5)))
    one = TemperatureScaling().fit(z[:, 0], y[:, 0])  # a single condition as [N]
    assert one.transform(z[:, 0]).shape == (500,)
    with pytest.raises(ValidationError, match="outside"):
        TemperatureScaling(inputs="probabilities").fit(z, y)


def test_plot_reliability() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(500)
    y = (rng.random(500) < p**2).astype(float)
    ax = plot_reliability(None, y, p, n_bins=10, label="model")  # a new pyplot-free figure
    plot_reliability(ax, y, np.sqrt(p) ** 2, n_bins=10, label="again", show_counts=False)
    curve = reliability_curve(y, p, n_bins=10)
    lines = ax.get_lines()
    assert len(lines) == 3  # one diagonal, two curves
    np.testing.assert_allclose(lines[1].get_xdata(), curve.mean_predicted)
    np.testing.assert_allclose(lines[1].get_ydata(), curve.observed)
    ece = expected_calibration_error(y, p, n_bins=10)
    assert f"model (ECE {ece:.3f})" in [t.get_text() for t in ax.get_legend().get_texts()]
    ax.figure.canvas.draw()  # renders without a display
