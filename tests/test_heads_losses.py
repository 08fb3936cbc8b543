"""Heads (HeadSpec, predict_from_logits) and the supervised losses.

References: the asymmetric loss is checked against the formula of Ridnik et al., "Asymmetric
Loss For Multi-Label Classification", ICCV 2021 (eq. 3-5) written out directly below, and
against the loop of the authors' reference implementation (github.com/Alibaba-MIIL/ASL,
``AsymmetricLoss.forward``); BCE, CE, MSE and Huber against torch.nn.functional on the observed
entries only.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ecgfm.errors import ValidationError
from ecgfm.models.heads import (
    HeadSpec,
    multilabel_head,
    normal_abnormal_head,
    predict_from_logits,
)
from ecgfm.objectives import create_loss
from ecgfm.objectives.supervised import (
    AsymmetricLoss,
    BinaryBCE,
    MultiClassCE,
    MultiLabelBCE,
    RegressionLoss,
    pos_weight_from_labels,
)


def _data(seed: int = 0, b: int = 16, c: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, generator=g) * 3
    targets = (torch.rand(b, c, generator=g) < 0.3).float()
    return logits, targets


# -- heads ----------------------------------------------------------------------------------------


def test_head_spec_validates_and_round_trips() -> None:
    head = HeadSpec("multilabel", 3, label_ids=("NORM", "MI", "STTC"))
    assert HeadSpec.from_dict(head.to_dict()) == head
    assert head.activation == "sigmoid" and head.default_loss == "bce"
    assert head.columns == ("NORM", "MI", "STTC")
    assert HeadSpec("regression", 2).names == ("out0", "out1")
    with pytest.raises(ValidationError, match="type 'multi' is not one of"):
        HeadSpec("multi", 3)
    with pytest.raises(ValidationError, match="binary head has exactly 1 output"):
        HeadSpec("binary", 2)
    with pytest.raises(ValidationError, match="2 label_ids for 3 outputs"):
        HeadSpec("multilabel", 3, label_ids=("A", "B"))
    with pytest.raises(ValidationError, match="repeat A"):
        HeadSpec("multilabel", 2, label_ids=("A", "A"))
    with pytest.raises(ValidationError, match="unknown field"):
        HeadSpec.from_dict({"type": "binary", "num_outputs": 1, "colour": "red"})


def test_normal_abnormal_head_is_binary_over_norm() -> None:
    head = normal_abnormal_head()
    assert head.type == "binary" and head.num_outputs == 1 and head.label_ids == ("NORM",)
    assert multilabel_head(["AFIB", "NORM"]).num_outputs == 2


def test_predict_from_logits_numpy_and_torch_agree() -> None:
    logits = np.array([[0.0, 2.0, -1.0], [3.0, -3.0, 0.5]])
    sig = predict_from_logits(logits, "multilabel")
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-logits)))
    soft = predict_from_logits(logits, HeadSpec("multiclass", 3))
    np.testing.assert_allclose(soft.sum(axis=1), 1.0)
    np.testing.assert_allclose(soft, np.exp(logits) / np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_array_equal(predict_from_logits(logits, "regression"), logits)
    t = torch.tensor(logits)
    np.testing.assert_allclose(predict_from_logits(t, "multiclass").numpy(), soft)
    np.testing.assert_allclose(predict_from_logits(t, "binary").numpy(), sig)


# -- BCE ------------------------------------------------------------------------------------------


def test_bce_matches_torch_and_ignores_missing_labels() -> None:
    logits, targets = _data()
    out = MultiLabelBCE()(logits, targets)
    torch.testing.assert_close(out["loss"], F.binary_cross_entropy_with_logits(logits, targets))
    # NaN targets and a mask: the loss equals BCE over the observed entries only.
    missing = torch.zeros_like(targets, dtype=torch.bool)
    missing[::3, 1] = True
    missing[5, :] = True
    with_nan = targets.clone()
    with_nan[missing] = float("nan")
    masked = torch.ones_like(missing)
    masked[0, 4] = False
    observed = ~missing & masked
    out = MultiLabelBCE()(logits, with_nan, mask=masked)
    ref = F.binary_cross_entropy_with_logits(logits[observed], targets[observed])
    torch.testing.assert_close(out["loss"], ref)
    assert int(out["observed"]) == int(observed.sum())
    # gradients only flow to observed entries
    x = logits.clone().requires_grad_(True)
    MultiLabelBCE()(x, with_nan, mask=masked)["loss"].backward()
    assert torch.all(x.grad[~observed] == 0) and torch.all(x.grad[observed] != 0)


def test_bce_pos_weight_and_label_smoothing() -> None:
    logits, targets = _data(1)
    pw = torch.tensor([1.0, 2.0, 3.0, 0.5, 4.0])
    out = MultiLabelBCE(pos_weight=pw.tolist(), label_smoothing=0.1)(logits, targets)
    smoothed = targets * 0.9 + 0.05
    ref = F.binary_cross_entropy_with_logits(logits, smoothed, pos_weight=pw)
    torch.testing.assert_close(out["loss"], ref)
    with pytest.raises(ValidationError, match="pos_weight has 5 entries for 3 labels"):
        MultiLabelBCE(pos_weight=pw)(logits[:, :3], targets[:, :3])


def test_bce_all_missing_is_zero_with_a_graph() -> None:
    logits = torch.randn(4, 3, requires_grad=True)
    out = MultiLabelBCE()(logits, torch.full((4, 3), float("nan")))
    assert out["loss"].detach().item() == 0.0
    out["loss"].backward()
    assert torch.all(logits.grad == 0)


def test_pos_weight_from_labels() -> None:
    y = np.array([[1, 0], [0, 0], [0, np.nan], [1, 1]], dtype=float)
    np.testing.assert_allclose(pos_weight_from_labels(y).numpy(), [2 / 2, 2 / 1])


def test_binary_bce_accepts_flat_and_column_shapes() -> None:
    logits, targets = _data(2, c=1)
    ref = F.binary_cross_entropy_with_logits(logits, targets)
    torch.testing.assert_close(BinaryBCE()(logits[:, 0], targets[:, 0])["loss"], ref)
    torch.testing.assert_close(BinaryBCE()(logits, targets)["loss"], ref)
    pw = BinaryBCE(pos_weight=3.0)(logits, targets)["loss"]
    torch.testing.assert_close(pw, F.binary_cross_entropy_with_logits(logits, targets, pos_weight=torch.tensor([3.0])))
    with pytest.raises(ValidationError, match="one logit per record"):
        BinaryBCE()(torch.zeros(4, 2), torch.zeros(4, 2))


# -- asymmetric loss -------------------------------------------------------------------------------


def _asl_paper(x: torch.Tensor, y: torch.Tensor, gamma_neg: float, gamma_pos: float, m: float) -> torch.Tensor:
    """Ridnik et al. 2021, eq. (3)-(5), element by element in float64 with math:
    L+ = (1-p)^g+ log(p);  L- = p_m^g- log(1-p_m), p_m = max(p-m, 0);  loss = -sum(y L+ + (1-y) L-)."""
    total = 0.0
    for xi, yi in zip(x.flatten().tolist(), y.flatten().tolist()):
        p = 1 / (1 + math.exp(-xi))
        if yi == 1:
            total += (1 - p) ** gamma_pos * math.log(max(p, 1e-8))
        else:
            pm = max(p - m, 0.0)
            total += pm ** gamma_neg * math.log(max(1 - pm, 1e-8))
    return torch.tensor(-total, dtype=torch.float64)


def _asl_reference(x: torch.Tensor, y: torch.Tensor, gamma_neg: float, gamma_pos: float, clip: float,
                   eps: float = 1e-8) -> torch.Tensor:
    """The authors' AsymmetricLoss.forward (disable_torch_grad_focal_loss=True), rewritten."""
    xs_pos = torch.sigmoid(x)
    xs_neg = (1 - xs_pos + clip).clamp(max=1) if clip > 0 else 1 - xs_pos
    loss = y * torch.log(xs_pos.clamp(min=eps)) + (1 - y) * torch.log(xs_neg.clamp(min=eps))
    with torch.no_grad():
        pt = xs_pos * y + xs_neg * (1 - y)
        w = torch.pow(1 - pt, gamma_pos * y + gamma_neg * (1 - y))
    return -(loss * w).sum()


@pytest.mark.parametrize("gamma_neg,gamma_pos,clip", [(4, 1, 0.05), (4, 0, 0.05), (2, 1, 0.0), (0, 0, 0.2)])
def test_asymmetric_loss_matches_the_paper_formula(gamma_neg, gamma_pos, clip) -> None:
    logits, targets = _data(3, b=12, c=7)
    loss = AsymmetricLoss(gamma_neg, gamma_pos, clip, reduction="sum")
    out = loss(logits.double(), targets.double())["loss"]
    torch.testing.assert_close(out, _asl_paper(logits, targets, gamma_neg, gamma_pos, clip), rtol=1e-9, atol=1e-9)
    mean = AsymmetricLoss(gamma_neg, gamma_pos, clip)(logits.double(), targets.double())["loss"]
    torch.testing.assert_close(mean, out / targets.numel())


def test_asymmetric_loss_gradient_matches_reference_implementation() -> None:
    logits, targets = _data(4, b=10, c=6)
    a = logits.double().clone().requires_grad_(True)
    b = logits.double().clone().requires_grad_(True)
    AsymmetricLoss(4, 1, 0.05, reduction="sum")(a, targets.double())["loss"].backward()
    _asl_reference(b, targets.double(), 4, 1, 0.05).backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_asymmetric_loss_without_focusing_is_bce_and_ignores_missing() -> None:
    logits, targets = _data(5)
    plain = AsymmetricLoss(0, 0, 0, eps=0)(logits.double(), targets.double())["loss"]
    torch.testing.assert_close(plain, F.binary_cross_entropy_with_logits(logits.double(), targets.double()))
    with_nan = targets.clone()
    with_nan[:4, 2] = float("nan")
    keep = torch.isfinite(with_nan)
    asl = AsymmetricLoss(4, 1, 0.05)
    out = asl(logits, with_nan)
    ref = _asl_reference(logits[keep], targets[keep], 4, 1, 0.05) / keep.sum()
    torch.testing.assert_close(out["loss"], ref)


# -- multi-class, regression, factory ------------------------------------------------------------


def test_multiclass_ce_matches_torch_and_skips_unknown_rows() -> None:
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(10, 4, generator=g)
    y = torch.tensor([0, 1, 2, 3, -1, 0, 1, -1, 2, 3])
    out = MultiClassCE(label_smoothing=0.1)(logits, y)
    keep = y >= 0
    torch.testing.assert_close(out["loss"], F.cross_entropy(logits[keep], y[keep], label_smoothing=0.1))
    acc = (logits[keep].argmax(1) == y[keep]).float().mean()
    torch.testing.assert_close(out["accuracy"], acc)
    soft = F.one_hot(y.clamp(min=0), 4).float()
    soft[~keep] = float("nan")
    torch.testing.assert_close(MultiClassCE()(logits, soft)["loss"], F.cross_entropy(logits[keep], y[keep]))
    with pytest.raises(ValidationError, match="class index 4 out of range"):
        MultiClassCE()(logits, torch.full((10,), 4))


def test_regression_losses_ignore_nan_targets() -> None:
    g = torch.Generator().manual_seed(7)
    pred = torch.randn(8, 3, generator=g) * 10
    y = torch.randn(8, 3, generator=g) * 10
    y_nan = y.clone()
    y_nan[1, 0] = y_nan[4, 2] = float("nan")
    keep = torch.isfinite(y_nan)
    mse = RegressionLoss("mse")(pred, y_nan)
    torch.testing.assert_close(mse["loss"], F.mse_loss(pred[keep], y[keep]))
    torch.testing.assert_close(mse["mae"], (pred[keep] - y[keep]).abs().mean())
    huber = RegressionLoss("huber", delta=2.0)(pred, y_nan)
    torch.testing.assert_close(huber["loss"], F.huber_loss(pred[keep], y[keep], delta=2.0))
    x = pred.clone().requires_grad_(True)
    RegressionLoss()(x, y_nan)["loss"].backward()
    assert torch.isfinite(x.grad).all() and x.grad[1, 0] == 0


def test_create_loss_names_and_errors() -> None:
    assert isinstance(create_loss("multilabel"), MultiLabelBCE)
    assert isinstance(create_loss("multilabel", "asymmetric"), AsymmetricLoss)
    assert isinstance(create_loss("binary"), BinaryBCE)
    assert isinstance(create_loss("multiclass"), MultiClassCE)
    assert create_loss("regression", "huber", delta=0.5).kind == "huber"
    assert create_loss(normal_abnormal_head().type, normal_abnormal_head().default_loss).__class__ is BinaryBCE
    with pytest.raises(ValidationError, match=r"valid: bce, asl"):
        create_loss("multilabel", "focal")
    with pytest.raises(ValidationError, match="head type 'ranking'"):
        create_loss("ranking")
    with pytest.raises(ValidationError, match="loss 'bce' for multilabel heads"):
        create_loss("multilabel", "bce", gamma=2)


def test_loss_parts_are_detached_and_only_loss_carries_the_graph() -> None:
    logits, targets = _data(8)
    logits.requires_grad_(True)
    for name in ("bce", "asl"):
        out = create_loss("multilabel", name)(logits, targets)
        assert out["loss"].ndim == 0 and out["loss"].requires_grad
        assert all(not v.requires_grad for k, v in out.items() if k != "loss")
