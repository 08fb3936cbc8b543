"""Survival heads wired through heads, losses, training, export and the CLI, and the linear
survival estimators on features.

References: ``sksurv.linear_model.CoxPHSurvivalAnalysis(ties=..., alpha=...)`` (coefficients and
``predict_survival_function`` with its Breslow baseline) on the Worcester Heart Attack Study
(WHAS500, bundled with scikit-survival), ``lifelines.CoxPHFitter`` (Efron; where installed),
``sksurv.nonparametric.kaplan_meier_estimator`` and scikit-learn's
``LogisticRegression(C=inf)`` (no penalty) on the person-period expansion of the data. The end-to-end
runs use real LUDB records with synthetic outcomes joined through a ``data.overrides`` CSV (the
properties checked do not depend on the outcomes being real).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import data_path
from ecgfm.errors import ValidationError
from ecgfm.models.heads import HeadSpec, cox_head, discrete_hazard_head, predict_from_logits
from ecgfm.models.survival import (
    CoxProbe,
    DiscreteHazardProbe,
    breslow_baseline,
    default_cuts,
    survival_from_logits,
    survival_metrics,
)

torch = pytest.importorskip("torch")

TINY = ["model.encoder=resnet1d18",
        "model.encoder_args={widths: [8, 8, 16, 16], stem_width: 8, layers: [1, 1, 1, 1], head_dropout: 0.0}"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def whas():
    sksurv = pytest.importorskip("sksurv")  # noqa: F841
    from sksurv.column import encode_categorical
    from sksurv.datasets import load_whas500

    x, y = load_whas500()
    X = encode_categorical(x).to_numpy(np.float64)
    return X, y["lenfol"].astype(np.float64), y["fstat"].astype(bool), y


# ---------------------------------------------------------------------------------------------
# the linear estimators against scikit-survival, lifelines, Kaplan-Meier and scikit-learn
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_cox_probe_matches_sksurv_on_whas500(whas, ties: str) -> None:
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    X, time, event, y = whas
    ours = CoxProbe(ties).fit(X, time, event)
    ref = CoxPHSurvivalAnalysis(ties=ties).fit(X, y)
    assert ours.converged_
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-6, rtol=0)
    times = np.array([1.0, 30.0, 365.0, 1000.0, 2000.0])
    s_ref = np.array([[f(t) for t in times] for f in ref.predict_survival_function(X[:40])])
    np.testing.assert_allclose(ours.predict_survival(X[:40], times), s_ref, atol=1e-7)
    np.testing.assert_allclose(ours.predict_risk(X), ref.predict(X), atol=1e-5)
    # the L2 penalty is scikit-survival's alpha
    pen = CoxProbe(ties, alpha=5.0).fit(X, time, event)
    np.testing.assert_allclose(pen.coef_, CoxPHSurvivalAnalysis(alpha=5.0, ties=ties).fit(X, y).coef_, atol=1e-6)
    with pytest.raises(ValidationError, match="beyond the largest training time"):
        ours.predict_survival(X[:1], [time.max() + 1])


def test_cox_probe_matches_lifelines_efron(whas) -> None:
    lifelines = pytest.importorskip("lifelines")
    import pandas as pd

    X, time, event, _ = whas
    cols = [f"x{i}" for i in range(X.shape[1])]
    frame = pd.DataFrame(X, columns=cols).assign(T=time, E=event.astype(int))
    ref = lifelines.CoxPHFitter().fit(frame, "T", "E", fit_options={"precision": 1e-12, "max_steps": 200})
    ours = CoxProbe("efron").fit(X, time, event)
    np.testing.assert_allclose(ours.coef_, ref.params_[cols].to_numpy(), atol=1e-5)


def test_discrete_hazard_probe_is_kaplan_meier_and_person_period_logistic(whas) -> None:
    from sklearn.linear_model import LogisticRegression
    from sksurv.nonparametric import kaplan_meier_estimator

    from ecgfm.objectives.survival import DiscreteTimeHazard

    X, time, event, _ = whas
    # without features and with a cut at every event time, S at the cuts is Kaplan-Meier
    cuts = np.unique(np.r_[0.0, time[event]])
    km = DiscreteHazardProbe(cuts).fit(np.zeros((time.size, 0)), time, event)
    t_ref, s_ref = kaplan_meier_estimator(event, time)
    s = km.predict_survival(np.zeros((1, 0)), cuts[1:])[0]
    np.testing.assert_allclose(s, s_ref[np.searchsorted(t_ref, cuts[1:])], atol=1e-8)
    # with features: the MLE of a logistic regression on the person-period rows
    X = X[:, [1, 4, 10, 13]]  # age, chf, los, sysbp: quick to fit
    cuts = np.r_[0.0, np.quantile(time[event], [0.2, 0.4, 0.6, 0.8]), 1500.0]
    ours = DiscreteHazardProbe(cuts).fit(X, time, event)
    y, at_risk = DiscreteTimeHazard(cuts).targets_matrix(torch.from_numpy(time), torch.from_numpy(event * 1.0))
    rows, k = np.nonzero(at_risk.numpy())
    Z = np.concatenate([np.eye(cuts.size - 1)[k], X[rows]], axis=1)
    ref = LogisticRegression(C=np.inf, fit_intercept=False, solver="newton-cholesky", tol=1e-12,
                             max_iter=1000).fit(Z, y.numpy()[rows, k])
    np.testing.assert_allclose(ours.intercept_, ref.coef_[0, :cuts.size - 1], atol=1e-6)
    np.testing.assert_allclose(ours.coef_, ref.coef_[0, cuts.size - 1:], atol=1e-6)
    # predicted survival: exact at the cuts, monotone between them
    grid = np.linspace(0, 1500, 31)
    surv = ours.predict_survival(X[:5], grid)
    assert (np.diff(surv, axis=1) <= 1e-15).all() and surv[:, 0].tolist() == [1.0] * 5
    np.testing.assert_allclose(ours.predict_survival(X[:5], cuts[1:]),
                               np.cumprod(1 - ours.predict_hazard(X[:5]), axis=1), atol=1e-12)


# ---------------------------------------------------------------------------------------------
# heads, losses, survival from logits
# ---------------------------------------------------------------------------------------------
def test_survival_heads_and_losses_are_registered() -> None:
    from ecgfm.objectives import create_loss
    from ecgfm.objectives.survival import CoxPartialLikelihood, DiscreteTimeHazard, risk_at

    cox = cox_head("death", time_unit="years", horizons=[1.0, 5.0])
    assert cox.type == "cox" and cox.num_outputs == 1 and cox.activation == "identity" and cox.is_survival
    dh = discrete_hazard_head([0, 1, 2, 5], "death", time_unit="years")
    assert dh.num_outputs == 3 and dh.activation == "sigmoid" and dh.extra["cuts"] == [0.0, 1.0, 2.0, 5.0]
    assert dh.label_names[1] == "P(death in (1, 2] years | event-free at 1)"
    back = HeadSpec.from_dict({**dh.to_dict()})
    assert back == dh and back.extra == dh.extra
    with pytest.raises(ValidationError, match="cox head has exactly 1 output"):
        HeadSpec("cox", 2)
    with pytest.raises(ValidationError, match="needs extra=.*cuts"):
        HeadSpec("discrete_hazard", 3)
    with pytest.raises(ValidationError, match="3 outputs needs 4 cuts"):
        HeadSpec("discrete_hazard", 3, extra={"cuts": [0, 1, 2]})
    with pytest.raises(ValidationError, match="strictly increasing"):
        discrete_hazard_head([0, 2, 1])
    assert isinstance(create_loss("cox"), CoxPartialLikelihood) and create_loss("cox").ties == "efron"
    assert create_loss("cox", "breslow").ties == "breslow" and create_loss("cox", "cox_efron").ties == "efron"
    assert create_loss("discrete_hazard", bin_edges=[0, 1, 2]).num_intervals == 2
    assert isinstance(create_loss("discrete_hazard", "hazard", bin_edges=[0, 1]), DiscreteTimeHazard)
    with pytest.raises(ValidationError, match="not a loss for cox heads"):
        create_loss("cox", "bce")
    logits = np.array([[0.3, -1.0, 2.0], [-2.0, 0.0, 0.5]])
    np.testing.assert_array_equal(predict_from_logits(logits[:, :1], cox), logits[:, :1])
    np.testing.assert_allclose(predict_from_logits(logits, dh), 1 / (1 + np.exp(-logits)))
    # survival between cuts matches the torch loss module's risk_at
    times = [0.0, 0.5, 1.0, 3.3, 5.0]
    ours = survival_from_logits(logits, dh, times)
    ref = 1 - risk_at(torch.tensor(logits), [0, 1, 2, 5], times).numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    with pytest.raises(ValidationError, match="beyond the last interval edge 5"):
        survival_from_logits(logits, dh, [6.0])
    # cox: S = exp(-H0(t) e^r) with the Breslow baseline
    time = np.array([1.0, 2.0, 2.0, 3.0, 4.0])
    event = np.array([1, 1, 0, 1, 0], bool)
    r = np.array([0.5, -0.2, 0.1, 0.0, 0.3])
    bt, bh = breslow_baseline(r, time, event)
    w = np.exp(r)
    np.testing.assert_allclose(bh, np.cumsum([1 / w.sum(), 1 / w[1:].sum(), 1 / w[3:].sum()]))
    head = cox_head("e", baseline_times=bt.tolist(), baseline_cumulative_hazard=bh.tolist(), max_time=4.0)
    s = survival_from_logits(r[:, None], head, [0.5, 2.0, 4.0])
    np.testing.assert_allclose(s, np.exp(-np.outer(w, [0.0, bh[1], bh[2]])))
    with pytest.raises(ValidationError, match="beyond the largest training follow-up"):
        survival_from_logits(r[:, None], head, [4.5])
    with pytest.raises(ValidationError, match="no baseline hazard"):
        survival_from_logits(r[:, None], cox, [1.0])


def test_censoring_edge_cases() -> None:
    from ecgfm.objectives.survival import CoxPartialLikelihood, DiscreteTimeHazard

    # a batch where everything is censored: loss 0, gradient 0 (not NaN)
    for loss, out in ((CoxPartialLikelihood("efron"), torch.randn(6, 1)),
                      (CoxPartialLikelihood("breslow"), torch.randn(6, 1))):
        z = out.requires_grad_(True)
        value = loss(z, torch.tensor([[t, 0.0] for t in range(1, 7)]))
        value["loss"].backward()
        assert float(value["loss"].detach()) == 0.0 and torch.isfinite(z.grad).all() and (z.grad == 0).all()
    z = torch.zeros(3, 2, requires_grad=True)
    dh = DiscreteTimeHazard([0, 1, 2])
    value = dh(z, torch.tensor([[0.5, 0.0], [1.5, 0.0], [3.0, 0.0]]))
    value["loss"].backward()
    assert torch.isfinite(z.grad).all() and float(value["events"]) == 0
    # every record at the same time, all events (only ties): no comparable pair -> NaN, not a crash
    head = cox_head("e", horizons=[1.0])
    m = survival_metrics(np.arange(5.0), np.full(5, 2.0), np.ones(5, bool), head)
    assert np.isnan(m["c_index"]) and m["events"] == 5
    m = survival_metrics(np.arange(5.0), np.arange(1.0, 6.0), np.zeros(5, bool), head)
    assert np.isnan(m["c_index"]) and np.isnan(m["ibs"]) and m["events"] == 0
    # zero-time events: the first interval [0, c1] holds them; Cox takes them like any other
    time = np.array([0.0, 0.0, 1.0, 2.0, 3.0, 3.0, 4.0, 5.0])
    event = np.array([1, 0, 1, 1, 1, 0, 0, 1], bool)
    X = np.array([[1.0], [0.2], [0.5], [-0.3], [0.1], [0.0], [-1.0], [-0.5]])
    y_true, at_risk = dh.targets_matrix(torch.tensor([0.0]), torch.tensor([1.0]))
    assert y_true.tolist() == [[1.0, 0.0]] and at_risk.tolist() == [[True, False]]
    sksurv_lm = pytest.importorskip("sksurv.linear_model")
    from sksurv.util import Surv

    for ties in ("breslow", "efron"):  # ties at 0 and 3
        ours = CoxProbe(ties).fit(X, time, event)
        ref = sksurv_lm.CoxPHSurvivalAnalysis(ties=ties).fit(X, Surv.from_arrays(event, time))
        np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-6)
    s = DiscreteHazardProbe([0.0, 1.0, 3.0, 5.0]).fit(np.zeros((8, 0)), time, event).predict_survival(
        np.zeros((1, 0)), [0.0, 1.0])
    assert s[0, 0] == 1.0 and s[0, 1] == pytest.approx(1 - 2 / 7)  # [0, 1]: 2 events of 7 at risk
    # bad inputs name the argument and the record
    with pytest.raises(ValidationError, match=r"CoxProbe: time: values must be finite and >= 0; found -1.0 at record 1"):
        CoxProbe().fit(X[:3], [1.0, -1.0, 2.0], [1, 0, 1])
    with pytest.raises(ValidationError, match=r"CoxProbe: event: values must be 0 \(censored\) or 1 \(event\); found 2"):
        CoxProbe().fit(X[:3], [1.0, 1.0, 2.0], [1, 2, 1])
    with pytest.raises(ValidationError, match="no event among the records"):
        CoxProbe().fit(X[:3], [1.0, 1.0, 2.0], [0, 0, 0])
    with pytest.raises(ValidationError, match="X has 2 rows for 3 outcomes"):
        DiscreteHazardProbe().fit(X[:2], [1.0, 1.0, 2.0], [0, 1, 0])
    # default cuts: 0, the 1/3 and 2/3 quantiles of the event times (1, 3), and the horizon
    np.testing.assert_allclose(default_cuts([1.0, 2.0, 3.0, 4.0], [1, 0, 1, 0], 2, horizons=[1.5]),
                               [0.0, 1.5, 5 / 3, 7 / 3])


def test_a_cox_training_batch_without_events_is_zero_counted_and_warned() -> None:
    from ecgfm.models.registry import create_encoder
    from ecgfm.objectives import create_loss
    from ecgfm.train.module import SupervisedModule

    encoder = create_encoder("resnet1d18", in_leads=2, num_outputs=1, widths=[8, 8, 16, 16], stem_width=8,
                             layers=[1, 1, 1, 1])
    module = SupervisedModule(encoder, cox_head("e", horizons=[1.0]), create_loss("cox"))
    module.set_record_targets(np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 1.0]]))
    batch = {"signal": torch.randn(3, 2, 500), "mask": torch.ones(3, 2, dtype=torch.bool),
             "labels": torch.zeros(3, 0), "record": torch.tensor([0, 1, 2])}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = module.training_step(batch, 0)
    out["loss"].backward()
    assert float(out["loss"].detach()) == 0.0 and module.eventless_batches == 1
    assert any("has no event" in str(w.message) for w in caught)
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() and (g == 0).all() for g in grads)


# ---------------------------------------------------------------------------------------------
# training, export and the CLI on real records with outcomes joined by an overrides CSV
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(ludb100: Path) -> Path:
    """The shared LUDB store at 100 Hz (conftest: built once per session, read-only)."""
    return ludb100


@pytest.fixture(scope="module")
def outcomes(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic follow-up in years (hazard rising with age), administrative censoring, and three
    records without a time (they must be left out and counted, not read as 0)."""
    import pandas as pd

    from ecgfm.store.format import Corpus

    m = Corpus.open(store).manifest
    rng = np.random.default_rng(0)
    age = np.nan_to_num(m["age"].to_numpy(float), nan=60.0)
    t = rng.exponential(8 * np.exp(-(age - 60) / 15))
    c = rng.uniform(1, 12, len(t))
    frame = pd.DataFrame({"record_id": m["record_id"], "followup_years": np.minimum(t, c).round(3).astype(str),
                          "death": (t <= c).astype(int).astype(str)})
    frame.loc[frame.index[:3], "followup_years"] = ""
    path = tmp_path_factory.mktemp("outcomes") / "outcomes.csv"
    frame.to_csv(path, index=False)
    return path


def _app():
    import typer

    from ecgfm.train.cli import finetune_command, train_command

    app = typer.Typer()
    app.command("train")(train_command)
    app.command("finetune")(finetune_command)
    return app


def _base(store: Path, outcomes: Path, out: Path) -> list[str]:
    return [f"data.store={store}", f"out_dir={out}", f"data.overrides={outcomes}", "data.window=5",
            "data.batch_size=32", "data.num_workers=0", "trainer.progress=none", "trainer.loggers=[csv]",
            "trainer.num_sanity_val_steps=0", "trainer.max_steps=3", "data.test_split=test", "optim.lr=0.01", *TINY]


def test_train_then_finetune_survival_from_the_cli(store: Path, outcomes: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ecgfm.evaluate.survival import concordance_index
    from ecgfm.models.portable import load_model

    runner = CliRunner()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = runner.invoke(_app(), ["train", "--task", "survival", "--time", "followup_years", "--event", "death",
                                        "--horizons", "1,3", "--time-unit", "years", "--json",
                                        *_base(store, outcomes, tmp_path / "cox")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout[result.stdout.index("{"):])
    assert out["survival"]["excluded"] == {"train": 3} and out["survival"]["horizons"] == [1.0, 3.0]
    assert any("3 record(s) have no 'followup_years'/'death' value" in str(w.message) for w in caught)
    for key in ("c_index", "uno_c", "auc_1", "auc_3", "auc_mean", "ibs", "loss"):
        assert key in out["val"] and key in out["test"]
    model = load_model(out["model_dir"])
    assert model.head.type == "cox" and model.head.extra["time_unit"] == "years"
    assert model.head.extra["baseline_records"] == out["n_train"]  # Breslow on the training records
    files = sorted(data_path("ludb").rglob("*.hea"))[:4]
    times = [0.0, 0.5, 1.0, 3.0, 6.0, model.head.extra["max_time"]]
    surv = model.survival(files, times)
    assert surv.shape == (4, 6) and ((surv >= 0) & (surv <= 1)).all() and (np.diff(surv, axis=1) <= 0).all()
    np.testing.assert_allclose(model.risk(files, [1.0, 3.0]), 1 - surv[:, 2:4])
    log_risk = model.predict(files)
    np.testing.assert_allclose(-np.log(surv[:, 3]) / np.exp(log_risk[:, 0]),
                               -np.log(surv[0, 3]) / np.exp(log_risk[0, 0]), rtol=1e-4)  # proportional hazards
    with pytest.raises(ValidationError, match="beyond the largest training follow-up"):
        model.survival(files[:1], [100.0])
    # the logged C-index is Harrell's C of the exported model on the validation windows
    from ecgfm.store.dataset import CorpusDataset
    from ecgfm.store.format import Corpus
    from ecgfm.train.run import with_overrides

    corpus = with_overrides(Corpus.open(store), outcomes)
    ds = CorpusDataset(corpus, split="val", window=5.0, crop="center")
    batch = ds.__getitems__(list(range(len(ds))))
    with torch.no_grad():
        r = model.encoder(batch["signal"], batch["mask"])[:, 0].numpy()
    rows = corpus.manifest.iloc[batch["record"].numpy()]
    c = concordance_index(rows["followup_years"].astype(float), rows["death"].astype(int), r).c_index
    assert out["val"]["c_index"] == pytest.approx(c, abs=1e-6)

    # fine-tune the Cox model into a discrete-time hazard head (linear probe)
    result = runner.invoke(_app(), ["finetune", "--from", out["model_dir"], "--task", "survival", "--time",
                                    "followup_years", "--event", "death", "--survival-model", "hazard", "--horizons",
                                    "1,3", *_base(store, outcomes, tmp_path / "dh"), "model.freeze=encoder",
                                    "data.survival_bins=4"])
    assert result.exit_code == 0, result.output
    assert "Harrell's C" in result.output and "left out 3 record(s)" in result.output
    dh = load_model(tmp_path / "dh" / "model")
    cuts = dh.head.extra["cuts"]
    assert dh.head.type == "discrete_hazard" and dh.head.num_outputs == len(cuts) - 1 and {1.0, 3.0} <= set(cuts)
    surv = dh.survival(files, np.linspace(0, cuts[-1], 9))
    assert ((surv >= 0) & (surv <= 1)).all() and (np.diff(surv, axis=1) <= 1e-12).all() and (surv[:, 0] == 1).all()
    np.testing.assert_allclose(dh.survival(files, cuts[1:]), np.cumprod(1 - dh.predict(files), axis=1), rtol=1e-5)
    np.testing.assert_allclose(dh.risk(files, [3.0]), 1 - dh.survival(files, [3.0]))


def test_bad_outcome_columns_name_the_file_and_column(store: Path, outcomes: Path, tmp_path: Path) -> None:
    import pandas as pd

    from ecgfm.train.config import load_config
    from ecgfm.train.run import build

    def run(csv: Path, *extra: str) -> None:
        build(load_config(None, [*_base(store, csv, tmp_path / "x"), "model.head=cox", "trainer.monitor=val/c_index",
                                 "data.time_column=followup_years", "data.event_column=death", *extra]))

    frame = pd.read_csv(outcomes, dtype=str, keep_default_na=False)
    with pytest.raises(ValidationError, match=r"data.event_column 'dead' is not a column of the store manifest nor of "
                                              r"data.overrides .*outcomes.csv"):
        run(outcomes, "data.event_column=dead")
    bad = tmp_path / "negative.csv"
    frame.assign(followup_years=frame["followup_years"].where(frame.index != 5, "-2")).to_csv(bad, index=False)
    with pytest.raises(ValidationError, match=r"negative.csv: column 'followup_years' \(data.time_column\), record "
                                              r"\S+: follow-up times must be finite and >= 0, got '-2'"):
        run(bad)
    bad = tmp_path / "event.csv"
    frame.assign(death=frame["death"].where(frame.index != 7, "2")).to_csv(bad, index=False)
    with pytest.raises(ValidationError, match=r"event.csv: column 'death' \(data.event_column\), record \S+: event "
                                              r"indicators must be 0 \(censored\) or 1 \(event\), got '2'"):
        run(bad)
    bad = tmp_path / "text.csv"
    frame.assign(death=frame["death"].where(frame.index != 7, "dead")).to_csv(bad, index=False)
    with pytest.raises(ValidationError, match=r"text.csv: column 'death' .* 'dead' is not a number"):
        run(bad)
    with pytest.raises(ValidationError, match="trainer.monitor: a survival head logs val/c_index"):
        load_config(None, ["data.store=x", "model.head=cox", "data.time_column=t", "data.event_column=e"])
    with pytest.raises(ValidationError, match="model.head=discrete_hazard needs data.time_column and data.event_column"):
        load_config(None, ["data.store=x", "model.head=discrete_hazard", "trainer.monitor=val/c_index"])
