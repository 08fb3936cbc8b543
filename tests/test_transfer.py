"""Any-lead transfer: the alignment and distillation losses on known answers, lead masks and
sliced students over the whole encoder registry, random lead-subset training in the engine, and a
tiny teacher -> lead-I student run on real LUDB records (loss falls, exact resume, the exported
student reads a one-lead file at 300 Hz).

Every run uses a tiny ResNet1D on 5 s windows at 100 Hz (as tests/test_train.py), so a run of a
few optimizer steps takes about a second on two cores.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import data_path
from ecgfm.errors import ValidationError

pytest.importorskip("lightning")
import torch  # noqa: E402

from ecgfm.models import list_encoders  # noqa: E402
from ecgfm.objectives.alignment import CORAL, MMD, Distillation, create_alignment  # noqa: E402
from test_models import tiny  # noqa: E402
from test_train import Interrupted, Record, StopAt, _base  # noqa: E402

LABELS3 = ["SR", "LVH", "LAH"]
STANDARD_12 = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
# the benchmark's subsets, as rows of the standard 12
SUBSET_ROWS = [[0], [1], [0, 1], [0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11]]


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# alignment and distillation: known answers
# ---------------------------------------------------------------------------------------------
def _gauss(n: int, d: int, shift: float, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


def test_identical_samples_give_zero() -> None:
    x = _gauss(40, 6, 0.0, 0)
    assert float(MMD()(x, x)["loss"]) == pytest.approx(0.0, abs=1e-12)
    assert float(MMD(sigmas=[0.5, 2.0])(x, x)["loss"]) == pytest.approx(0.0, abs=1e-12)
    assert float(CORAL()(x, x)["loss"]) == pytest.approx(0.0, abs=1e-15)
    z = _gauss(8, 5, 0.0, 1)
    for kind in ("bce", "kl"):
        out = Distillation(kind, temperature=3.0)(z, z.clone())
        assert float(out["loss"]) == pytest.approx(0.0, abs=1e-12) and set(out) == {"loss", "distill"}
    # the same distribution, two draws: MMD near 0 (biased estimate ~ 2/n), far below a 0.5 shift
    same = float(MMD()(_gauss(400, 4, 0.0, 2), _gauss(400, 4, 0.0, 3))["loss"])
    shifted = float(MMD()(_gauss(400, 4, 0.0, 2), _gauss(400, 4, 0.5, 3))["loss"])
    assert 0 <= same < 0.01 < shifted
    unbiased = float(MMD(unbiased=True)(_gauss(400, 4, 0.0, 2), _gauss(400, 4, 0.0, 3))["loss"])
    assert abs(unbiased) < 0.005


def test_mmd_matches_the_formula_and_grows_with_the_shift() -> None:
    # reference: MMD^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y), k = exp(-|a - b|^2 / (2 s^2))
    # averaged over the bandwidths s, written out with numpy loops
    x = np.array([[0.0, 1.0], [1.0, 0.5], [2.0, -1.0]])
    y = np.array([[3.0, 0.0], [2.5, 2.0]])
    sigmas = [0.5, 1.0, 3.0]

    def mean_k(a, b, sigmas):
        def k(u, v):
            return np.mean([math.exp(-np.sum((u - v) ** 2) / (2 * s * s)) for s in sigmas])

        return np.mean([[k(u, v) for v in b] for u in a])

    def mmd2(sigmas):
        return mean_k(x, x, sigmas) + mean_k(y, y, sigmas) - 2 * mean_k(x, y, sigmas)

    expected = mmd2(sigmas)
    got = MMD(sigmas=sigmas)(torch.tensor(x), torch.tensor(y))["loss"]
    assert float(got) == pytest.approx(expected, rel=1e-10)
    # adaptive widths: multiples of the mean squared distance between distinct pooled points
    z = np.concatenate([x, y])
    h = np.mean([np.sum((a - b) ** 2) for i, a in enumerate(z) for j, b in enumerate(z) if i != j])
    sigmas = [math.sqrt(m * h / 2) for m in (0.5, 2.0)]
    got = MMD(multipliers=(0.5, 2.0))(torch.tensor(x), torch.tensor(y))["loss"]
    assert float(got) == pytest.approx(mmd2(sigmas), rel=1e-10)
    # shifted Gaussians: positive, and larger the further apart (fixed and adaptive widths)
    base = _gauss(300, 4, 0.0, 5)
    for loss in (MMD(), MMD(sigmas=[1.0, 2.0])):
        values = [float(loss(base, _gauss(300, 4, s, 6))["loss"]) for s in (0.25, 0.5, 1.0, 2.0, 4.0)]
        assert values[0] > 0 and all(b > a for a, b in zip(values, values[1:])), values


def test_coral_matches_the_closed_form() -> None:
    # Deep CORAL (Sun & Saenko 2016): |C_s - C_t|_F^2 / (4 d^2), C = numpy.cov(x, rowvar=False)
    rng = np.random.default_rng(0)
    xs, xt = rng.normal(size=(7, 3)), rng.normal(size=(5, 3)) * [1.0, 2.0, 0.5]
    expected = np.sum((np.cov(xs, rowvar=False) - np.cov(xt, rowvar=False)) ** 2) / (4 * 3 * 3)
    assert float(CORAL()(torch.tensor(xs), torch.tensor(xt))["loss"]) == pytest.approx(expected, rel=1e-12)
    # a shift alone does not change covariances: CORAL matches second-order statistics only
    assert float(CORAL()(torch.tensor(xs), torch.tensor(xs + 5.0))["loss"]) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValidationError, match="at least 2 rows"):
        CORAL()(torch.zeros(1, 3), torch.zeros(4, 3))
    with pytest.raises(ValidationError, match="feature width"):
        MMD()(torch.zeros(4, 3), torch.zeros(4, 2))


def test_distillation_matches_the_closed_forms() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    temp = 2.0
    p, q = torch.sigmoid(t / temp).numpy(), torch.sigmoid(s / temp).numpy()
    bern_kl = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    assert float(Distillation("bce", temp)(s, t)["loss"]) == pytest.approx(bern_kl.mean() * temp**2, rel=1e-10)
    # softmax KL, against torch's kl_div (input: student log-probs, target: teacher probs)
    ref = torch.nn.functional.kl_div(torch.log_softmax(s / temp, -1), torch.softmax(t / temp, -1),
                                     reduction="batchmean") * temp**2
    assert float(Distillation("kl", temp)(s, t)["loss"]) == pytest.approx(float(ref), rel=1e-10)
    # the gradient is the BCE's: d/ds = (sigmoid(s/T) - sigmoid(t/T)) * T / (B C), and none reaches t
    s1, t1 = s.clone().requires_grad_(True), t.clone().requires_grad_(True)
    Distillation("bce", temp)(s1, t1)["loss"].backward()
    np.testing.assert_allclose(s1.grad.numpy(), (q - p) * temp / s.numel(), rtol=1e-10)
    assert t1.grad is None
    with pytest.raises(ValidationError, match="temperature"):
        Distillation("bce", 0.0)
    with pytest.raises(ValidationError, match="unknown alignment"):
        create_alignment("wasserstein")


def test_alignment_gradients_flow() -> None:
    for loss in (MMD(), MMD(unbiased=True), CORAL()):
        x = _gauss(16, 5, 0.0, 0).requires_grad_(True)
        y = _gauss(16, 5, 1.0, 1).requires_grad_(True)
        loss(x, y)["loss"].backward()
        for v in (x, y):
            assert v.grad is not None and torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0
    # a gradient step on the source lowers the discrepancy
    x = _gauss(64, 3, 0.0, 2).requires_grad_(True)
    y = _gauss(64, 3, 1.5, 3)
    before = MMD()(x, y)["loss"]
    before.backward()
    with torch.no_grad():
        after = MMD()(x - 5.0 * x.grad, y)["loss"]
    assert float(after) < float(before.detach())


# ---------------------------------------------------------------------------------------------
# lead masks and sliced students over the whole registry
# ---------------------------------------------------------------------------------------------
def _random_masks(b: int, seed: int) -> torch.Tensor:
    """One lead subset per sample: the benchmark's five, then random non-empty subsets."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(b, 12, dtype=torch.bool)
    for i in range(b):
        if i < len(SUBSET_ROWS):
            mask[i, SUBSET_ROWS[i]] = True
        else:
            mask[i] = torch.rand(12, generator=g) < 0.4
            mask[i, int(torch.randint(12, (1,), generator=g))] = True
    return mask


@pytest.mark.parametrize("name", list_encoders())
def test_masked_leads_do_not_leak(name: str) -> None:
    """Whatever a masked lead holds, the output is the same: in eval mode, and in train mode
    (batch statistics, dropout drawn from the same seed)."""
    model = tiny(name, num_outputs=3)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 12, 500, generator=g)
    mask = _random_masks(8, 2)
    garbage = x.clone()
    garbage[~mask] = 100 * torch.randn(int((~mask).sum()), 500, generator=g)
    for mode in (False, True):
        model.train(mode)
        outs = []
        for signal in (x, garbage):
            torch.manual_seed(0)
            with torch.no_grad():
                outs.append(model(signal, mask))
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)
    model.eval()
    with torch.no_grad():  # the mask matters (the check above is not vacuous)
        assert not torch.allclose(model(x, mask), model(x), atol=1e-4)


@pytest.mark.parametrize("name", list_encoders())
def test_sliced_student_reproduces_the_masked_teacher(name: str) -> None:
    from ecgfm.train.transfer import student_from_teacher

    teacher = tiny(name, num_outputs=3).eval()
    x = torch.randn(2, 12, 500, generator=torch.Generator().manual_seed(3))
    for rows in [*SUBSET_ROWS, [11, 2]]:
        student = student_from_teacher(teacher, rows, check=False).eval()
        assert student.in_leads == len(rows) and student.num_outputs == 3
        mask = torch.zeros(2, 12, dtype=torch.bool)
        mask[:, rows] = True
        with torch.no_grad():
            torch.testing.assert_close(student(x[:, rows]), teacher(x, mask), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValidationError, match="nothing to reduce"):
        student_from_teacher(teacher, list(range(12)))


def test_parse_leads() -> None:
    from ecgfm.train.transfer import parse_leads

    assert parse_leads("I") == ("I",)
    assert parse_leads("I,II") == parse_leads("I+II") == parse_leads(["i", "ii"]) == ("I", "II")
    assert parse_leads("I,II,III,aVR,aVL,aVF") == parse_leads("limb") == STANDARD_12[:6]
    assert parse_leads("V1-V6") == STANDARD_12[6:]
    with pytest.raises(ValidationError, match="Z9"):
        parse_leads("Z9")
    with pytest.raises(ValidationError, match="twice"):
        parse_leads("I,I")


# ---------------------------------------------------------------------------------------------
# runs on real records
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(ludb100: Path) -> Path:
    """The shared LUDB store at 100 Hz (conftest: built once per session, read-only)."""
    return ludb100


@pytest.fixture(scope="module")
def teacher(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ecgfm.train.config import load_config
    from ecgfm.train.run import train

    out = tmp_path_factory.mktemp("teacher") / "run"
    cfg = load_config(None, _base(store, out, f"data.labels={json.dumps(LABELS3)}", "trainer.max_steps=8",
                                  "optim.lr=0.003"))
    return Path(train(cfg)["model_dir"])


def _student_args(store: Path, out: Path, *extra: str) -> list[str]:
    # the teacher's recorded configuration is the recipe; only the store, folder and length change
    return [f"data.store={store}", f"out_dir={out}", "trainer.max_steps=12", "optim.lr=0.01",
            "optim.warmup_steps=0", "trainer.log_every_n_steps=1", "data.test_split=test", *extra]


def test_transfer_to_lead_i_trains_and_exports_a_one_lead_model(teacher: Path, store: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import ecgfm
    from ecgfm.io.write import write
    from ecgfm.models.portable import load_model
    from ecgfm.train.transfer_cli import app

    res = CliRunner().invoke(app, ["transfer", "--teacher", str(teacher), "--leads", "I", "--json",
                                   *_student_args(store, tmp_path / "student")])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert result["leads"] == ["I"] and result["global_step"] == 12 and result["label_ids"] == LABELS3
    # the loss falls: mean total loss (BCE + MMD + distillation) of the last steps below the first ones
    import pandas as pd

    log = pd.read_csv(next((tmp_path / "student" / "logs" / "csv").glob("version_*/metrics.csv")))
    steps = log.dropna(subset=["train/loss"]).sort_values("step")
    assert len(steps) == 12 and steps[["train/supervised", "train/align", "train/distill"]].notna().all().all()
    assert steps["train/loss"].iloc[-4:].mean() < steps["train/loss"].iloc[:4].mean()
    assert steps["train/align"].iloc[-4:].mean() < steps["train/align"].iloc[:4].mean()
    # the exported student: a one-lead contract, the teacher's labels, a card naming the subset
    student = load_model(result["model_dir"])
    assert student.input.leads == ("I",) and student.encoder.in_leads == 1 and student.labels == tuple(LABELS3)
    assert "Validated lead subset: I only" in student.card_text
    saved = (tmp_path / "student" / "transfer.yaml").read_text()
    assert "leads:\n- I\n" in saved and "alignment: mmd" in saved
    # it reads a one-lead AliveCor file at 300 Hz (CinC 2017) without refusing it
    cinc = data_path("cinc2017", "A00001.hea")
    assert ecgfm.read(cinc).leads == ("I",) and ecgfm.read(cinc).fs == 300
    signal, mask = student.prepare(cinc)
    assert signal.shape == (1, 500) and mask.tolist() == [True]
    assert np.isfinite(student.predict(cinc)).all()
    # a 12-lead file and the same record with lead I only give the same prediction (in memory
    # exactly; written to a one-lead WFDB file, up to its 16-bit quantisation)
    full = data_path("ludb", "data", "1.hea")
    lead_i = ecgfm.read(full).select(["I"])
    np.testing.assert_allclose(student.predict(lead_i), student.predict(full), rtol=1e-6, atol=1e-7)
    only_i = write(lead_i, tmp_path / "one_lead", "wfdb")
    assert ecgfm.read(only_i).leads == ("I",)
    np.testing.assert_allclose(student.predict(only_i), student.predict(full), atol=2e-3)
    # the student's weights moved away from the sliced teacher (it trained)
    from ecgfm.train.transfer import student_from_teacher

    start = student_from_teacher(load_model(teacher).encoder, [0]).state_dict()
    assert not torch.allclose(start["stem.0.0.weight"], student.encoder.state_dict()["stem.0.0.weight"])
    # errors name the problem
    bad = CliRunner().invoke(app, ["transfer", "--teacher", str(teacher), "--leads", "V7",
                                   *_student_args(store, tmp_path / "bad")])
    assert bad.exit_code == 1 and "V7" in bad.stderr
    bad = CliRunner().invoke(app, ["transfer", "--teacher", str(teacher), "--leads", "12",
                                   *_student_args(store, tmp_path / "bad")])
    assert bad.exit_code == 1 and "fewer leads than its teacher" in bad.stderr
    bad = CliRunner().invoke(app, ["transfer", "--teacher", str(teacher), "--leads", "I",
                                   *_student_args(store, tmp_path / "bad", "transfer.alignment=emd")])
    assert bad.exit_code == 1 and "transfer.alignment" in bad.stderr


def test_transfer_resumes_exactly(teacher: Path, store: Path, tmp_path: Path) -> None:
    """Uninterrupted vs interrupted at step 3 + resumed: the same batches and per-batch total
    losses (student dropout, augmentation and the teacher's outputs included). The teacher is
    given as a checkpoint of ecgfm train this time."""
    from ecgfm.train.transfer import transfer

    teacher = teacher.parent / "checkpoints" / "last.ckpt"

    extra = ["trainer.max_steps=6", "trainer.checkpoint_every_n_steps=3", "trainer.export=false",
             "transfer.alignment=coral", "data.augment=[{name: GaussianNoise, std: [0.05, 0.2], p: 0.5}]"]
    whole = Record()
    transfer(teacher, "I,II", None, _student_args(store, tmp_path / "whole", *extra), callbacks=[whole])
    first = Record()
    with pytest.raises(Interrupted):
        transfer(teacher, "I,II", None, _student_args(store, tmp_path / "cut", *extra), callbacks=[first, StopAt(3)])
    rest = Record()
    result = transfer(teacher, "I,II", None, _student_args(store, tmp_path / "cut", *extra, "resume=auto"),
                      callbacks=[rest])
    assert result["global_step"] == 6 and result["leads"] == ["I", "II"]
    n = len(rest.rows)
    assert n > 0 and first.rows == whole.rows[:len(first.rows)]
    tail = whole.rows[-n:]
    assert [r[3] for r in rest.rows] == [r[3] for r in tail]
    np.testing.assert_allclose([r[2] for r in rest.rows], [r[2] for r in tail], rtol=0, atol=1e-6)


def test_random_lead_subset_augmentation_trains_in_the_engine(store: Path, tmp_path: Path) -> None:
    """``data.augment`` with RandomLeadSubset: every training window keeps exactly one of the
    subsets (the rest zero and masked), validation windows keep all leads, and a run trains."""
    from ecgfm.train.config import load_config
    from ecgfm.train.run import build, train

    subsets = [["I"], ["I", "II"], ["V1", "V2", "V3", "V4", "V5", "V6"]]
    extra = [f"data.labels={json.dumps(LABELS3)}", f"data.augment=[{{name: RandomLeadSubset, subsets: {json.dumps(subsets)}}}]"]
    parts = build(load_config(None, _base(store, tmp_path / "rls", *extra)))
    batch = parts.train_set.__getitems__(list(range(40)))
    allowed = [{STANDARD_12.index(lead) for lead in s} for s in subsets]
    seen = set()
    for signal, mask in zip(batch["signal"], batch["mask"]):
        kept = set(torch.nonzero(mask).flatten().tolist())
        assert kept in allowed
        seen.add(frozenset(kept))
        assert (signal[~mask] == 0).all() and (signal[mask].abs().sum(dim=-1) > 0).all()
    assert len(seen) == 3  # all three subsets are drawn
    val = parts.val_set.__getitems__(list(range(4)))
    assert val["mask"].all()
    result = train(load_config(None, _base(store, tmp_path / "rls_run", *extra, "trainer.max_steps=3")))
    assert result["global_step"] == 3 and math.isfinite(result["val"]["auroc"])


def test_the_command_module_is_light() -> None:
    """``ecgfm`` registers ``transfer_command`` at start-up: importing it must not load torch or Lightning."""
    import subprocess
    import sys

    code = ("import sys, ecgfm.train.transfer_cli, ecgfm.objectives; "
            "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
