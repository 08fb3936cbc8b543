"""Self-supervised objectives (ecgfm.objectives: contrastive, cpc, wav2vec2, masked, ssl).

Known answers for InfoNCE (identical positives and orthogonal negatives give
``log(1 + (M - 1) e^{-1/tau})``, in both directions and with several positives), the cross-rank
gather on a real two-process gloo group (loss and gradients equal to one process on the
concatenated batch, with two accumulated micro-batches), masking that never puts a visible sample
into the loss, and each objective's loss falling within a few steps on real PTB-XL records.
"""

from __future__ import annotations

import math
import socket
from pathlib import Path

import numpy as np
import pytest

from conftest import data_path
from ecgfm.errors import ValidationError

torch = pytest.importorskip("torch")

from ecgfm.objectives.contrastive import InfoNCE, gather_with_grad, info_nce  # noqa: E402
from ecgfm.objectives.ssl import (  # noqa: E402
    Combined,
    SSLInput,
    View,
    create_ssl_objective,
    encoder_dims,
    run_views,
)

TINY = {"widths": [8, 8, 16, 16], "stem_width": 8, "layers": [1, 1, 1, 1]}


pytestmark = pytest.mark.usefixtures("one_thread")


def _encoder(seed: int = 0):
    from ecgfm.models.registry import create_encoder

    torch.manual_seed(seed)
    return create_encoder("resnet1d18", **TINY)


# ---------------------------------------------------------------------------------------------
# InfoNCE known answers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_info_nce_identical_positives_orthogonal_negatives(tau: float) -> None:
    """q_i = k_i = e_i (orthonormal): s_pos = 1/tau, s_neg = 0, so
    loss = -log(e^{1/tau} / (e^{1/tau} + M - 1)) = log(1 + (M - 1) e^{-1/tau})."""
    m = 6
    q = torch.eye(m, 16, dtype=torch.float64)[torch.randperm(m)] * 3.0  # cosine: scale does not matter
    expected = math.log1p((m - 1) * math.exp(-1.0 / tau))
    out = info_nce(q, q, torch.arange(m), temperature=tau)
    assert float(out["loss"]) == pytest.approx(expected, rel=1e-6)
    assert float(out["accuracy"]) == 1.0
    # dot product on unit vectors is the same score
    unit = torch.nn.functional.normalize(q, dim=1)
    assert float(info_nce(unit, unit, torch.arange(m), temperature=tau, similarity="dot")["loss"]) == pytest.approx(expected, rel=1e-6)
    # symmetric pair loss: both directions have the same value
    sym = InfoNCE(tau, symmetric=True, gather=False)(q, q.clone())
    assert float(sym["loss"]) == pytest.approx(expected, rel=1e-6)
    # a bool positive mask with one positive per row is the same loss
    assert float(info_nce(q, q, torch.eye(m, dtype=torch.bool), temperature=tau)["loss"]) == pytest.approx(expected, rel=1e-6)
    # the collapsed case: every key identical to the query: loss = log M whatever tau
    same = torch.ones(m, 4, dtype=torch.float64)
    assert float(info_nce(same, same, torch.arange(m), temperature=tau)["loss"]) == pytest.approx(math.log(m), rel=1e-6)


def test_info_nce_several_positives_and_exclusion_against_a_loop() -> None:
    """Two positives (identical keys, s = 1/tau), M - 2 orthogonal negatives: each positive has
    log-probability log(e^{1/tau} / (2 e^{1/tau} + M - 2)), and the loss is minus its mean. Random
    data are checked against a direct loop over the formula."""
    tau, m = 0.2, 5
    keys = torch.eye(m, 8, dtype=torch.float64)
    keys[1] = keys[0]
    q = keys[:1]
    positive = torch.tensor([[True, True, False, False, False]])
    expected = -math.log(math.exp(1 / tau) / (2 * math.exp(1 / tau) + m - 2))
    assert float(info_nce(q, keys, positive, temperature=tau)["loss"]) == pytest.approx(expected, rel=1e-6)

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(7, 5, generator=g), torch.randn(9, 5, generator=g)
    pos = torch.rand(7, 9, generator=g) < 0.3
    pos[0] = False  # a query without a positive is left out
    excl = (torch.rand(7, 9, generator=g) < 0.2) & ~pos
    out = info_nce(q, k, pos, temperature=0.3, exclude=excl)
    s = (torch.nn.functional.normalize(q, dim=1) @ torch.nn.functional.normalize(k, dim=1).T / 0.3).double()
    per = []
    for i in range(7):
        if not pos[i].any():
            continue
        denom = torch.logsumexp(s[i][~excl[i]], 0)
        per.append(-torch.stack([s[i, j] - denom for j in range(9) if pos[i, j]]).mean())
    assert float(out["loss"]) == pytest.approx(float(torch.stack(per).mean()), rel=1e-5)
    assert float(out["queries"]) == len(per)
    with pytest.raises(ValidationError, match="temperature must be > 0"):
        info_nce(q, k, pos, temperature=0)


def test_info_nce_groups_make_same_patient_keys_positive() -> None:
    """With groups, a key of the same group is a positive: two records of one patient with
    identical embeddings then lose nothing for being close to each other."""
    z = torch.eye(4, 8, dtype=torch.float64)
    z[1] = z[0]  # records 0 and 1: one patient, identical
    groups = torch.tensor([7, 7, 3, 5])
    loss_fn = InfoNCE(0.1, symmetric=False, gather=False)
    with_groups = float(loss_fn(z, z.clone(), groups)["loss"])
    without = float(loss_fn(z, z.clone())["loss"])
    e = math.exp(10.0)
    # rows 0, 1: two positives of s = 10 among 2 e^10 + 2: -log(e^10 / (2 e^10 + 2)); rows 2, 3: log(1 + 3 e^-10)
    expected = (2 * -math.log(e / (2 * e + 2)) + 2 * math.log1p(3 / e)) / 4
    assert with_groups == pytest.approx(expected, rel=1e-6)
    assert without > with_groups  # without groups the twin is a hard negative


# ---------------------------------------------------------------------------------------------
# the cross-rank gather on a two-process gloo group
# ---------------------------------------------------------------------------------------------
def _gloo_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        q_all, k_all = _gloo_data()
        n = q_all.shape[1] // world
        q = q_all[:, rank * n:(rank + 1) * n].clone().requires_grad_(True)  # [micro, n, D]
        k = k_all[:, rank * n:(rank + 1) * n].clone().requires_grad_(True)
        loss_fn = InfoNCE(0.2, symmetric=True, gather=True)
        losses = []
        for j in range(q.shape[0]):  # two micro-batches accumulated, as Lightning does (loss / K)
            loss = loss_fn(q[j], k[j])["loss"]
            (loss / q.shape[0]).backward()
            losses.append(float(loss))
        gathered, offset = gather_with_grad(torch.full((3, 2), float(rank)))
        torch.save({"losses": losses, "q_grad": q.grad, "k_grad": k.grad, "gathered": gathered, "offset": offset},
                   Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _gloo_data():
    g = torch.Generator().manual_seed(3)
    return torch.randn(2, 8, 6, generator=g), torch.randn(2, 8, 6, generator=g)  # [micro, batch, D]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_gather_across_two_gloo_ranks_equals_one_process_on_the_concatenated_batch(tmp_path: Path) -> None:
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    world = 2
    mp.start_processes(_gloo_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True,
                       start_method="fork")
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(world)]
    # the reference: one process, each micro-batch's whole (both ranks') batch, mean over micro-batches
    q_all, k_all = _gloo_data()
    q = q_all.clone().requires_grad_(True)
    k = k_all.clone().requires_grad_(True)
    loss_fn = InfoNCE(0.2, symmetric=True, gather=True)  # no process group here: the identity
    ref_losses = [loss_fn(q[j], k[j])["loss"] for j in range(2)]
    (sum(ref_losses) / 2).backward()
    n = q_all.shape[1] // world
    for j in range(2):
        # a micro-batch's negatives are those of that micro-batch on every rank: each rank's loss
        # (its queries against every rank's keys) averages to the one-process loss
        rank_mean = np.mean([res["losses"][j] for res in results])
        assert rank_mean == pytest.approx(float(ref_losses[j].detach()), rel=1e-5)
    for r, res in enumerate(results):
        # DDP averages parameter gradients over ranks: the features' gradient / world is the
        # one-process gradient of those rows
        rows = slice(r * n, (r + 1) * n)
        torch.testing.assert_close(res["q_grad"] / world, q.grad[:, rows], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(res["k_grad"] / world, k.grad[:, rows], rtol=1e-4, atol=1e-6)
        assert res["offset"] == 3 * r
        torch.testing.assert_close(res["gathered"], torch.tensor([0.0] * 3 + [1.0] * 3)[:, None].expand(6, 2))


# ---------------------------------------------------------------------------------------------
# masking
# ---------------------------------------------------------------------------------------------
def test_masked_modelling_never_scores_visible_samples() -> None:
    enc = _encoder()
    dims = encoder_dims(enc, 100.0, 400)
    obj = create_ssl_objective("masked", dims, lead_prob=0.4, span_prob=0.3, span_seconds=0.2)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 12, 400, generator=g)
    mask = torch.ones(6, 12, dtype=torch.bool)
    mask[0, 1:] = False  # a single-lead record
    mask[1, 6:] = False  # limb leads only
    x = x * mask[:, :, None]
    length = torch.tensor([400, 400, 300, 400, 400, 400])
    views, state = obj.views(SSLInput(x, mask, length, generator=g))
    view = views["z"]
    hidden_leads = mask & ~view.lead_mask
    # the encoder sees hidden leads as missing, and at least one lead of every record
    assert bool(view.lead_mask.any(dim=1).all()) and not bool((view.lead_mask & ~mask).any())
    assert bool(hidden_leads.any()) and float(view.signal[hidden_leads].abs().max()) == 0.0
    visible_samples = view.signal != 0
    scored = state["lead_part"] | state["span_part"]
    assert not bool((scored & visible_samples).any())  # nothing the encoder saw is scored
    assert not bool(scored[~mask].any())  # leads the record never had are not scored
    assert not bool(scored[2, :, 300:].any())  # nor the padding past a record's length
    assert bool(state["span_part"].any()) and bool(state["lead_part"].any())
    # the loss does not change when the target changes at visible samples, and does at hidden ones
    outputs = run_views(enc, views)
    base = float(obj(outputs, state)["loss"].detach())
    moved = dict(state, target=torch.where(scored, state["target"], state["target"] + 5.0))
    assert float(obj(outputs, moved)["loss"].detach()) == pytest.approx(base, rel=1e-6)
    moved = dict(state, target=torch.where(scored, state["target"] + 1.0, state["target"]))
    assert float(obj(outputs, moved)["loss"].detach()) != pytest.approx(base, rel=1e-3)
    # and the gradient of the loss with respect to the reconstruction is zero on visible samples
    pred = obj.decoder(outputs["z"].detach(), 400).detach().requires_grad_(True)
    w = (state["lead_part"] | state["span_part"]).float()
    loss = (((pred - state["target"]) ** 2) * w).sum() / w.sum()
    loss.backward()
    assert float(pred.grad[~scored].abs().max()) == 0.0


def test_span_mask_and_wav2vec2_masks_are_spans() -> None:
    from ecgfm.objectives.wav2vec2 import expected_masked, span_mask

    g = torch.Generator().manual_seed(0)
    m = span_mask(2000, 10, 0.5, 2, g)
    assert bool(m.any(dim=1).all())
    assert float(m.float().mean()) == pytest.approx(expected_masked(10, 0.5, 2), abs=0.01)
    # every masked run is made of whole spans: runs have length >= 2
    row = m[0].tolist()
    runs = [len(s) for s in "".join("1" if v else "0" for v in row).split("0") if s]
    assert min(runs) >= 2
    torch.testing.assert_close(span_mask(4, 10, 0.5, 2, torch.Generator().manual_seed(5)),
                               span_mask(4, 10, 0.5, 2, torch.Generator().manual_seed(5)))


# ---------------------------------------------------------------------------------------------
# views, combinations, registry
# ---------------------------------------------------------------------------------------------
def test_run_views_shares_passes_and_patches_are_encoded_alone() -> None:
    enc = _encoder().eval()
    x = torch.randn(3, 12, 200)
    m = torch.ones(3, 12, dtype=torch.bool)
    calls = []
    hook = enc.register_forward_pre_hook(lambda mod, args: calls.append(args[0].shape))
    try:
        out = run_views(enc, {"a": View(x, m, "sequence"), "b": View(x, m, "pooled"), "p": View(x, m, "patches", 50)})
    finally:
        hook.remove()
    assert len(calls) == 0  # forward() is never called: forward_features / forward_head are
    assert out["b"].shape == (3, enc.num_features)
    torch.testing.assert_close(out["b"], out["a"].mean(dim=-1))
    assert out["p"].shape == (3, enc.num_features, 4)
    # patch 2 of record 1 is the pooled encoding of exactly that patch, on its own
    alone = enc.forward_head(enc.forward_features(x[1:2, :, 100:150], m[1:2]), pre_logits=True)
    torch.testing.assert_close(out["p"][1, :, 2], alone[0], rtol=1e-5, atol=1e-6)


def test_combined_is_the_weighted_sum_and_names_parts() -> None:
    enc = _encoder()
    dims = encoder_dims(enc, 100.0, 500)
    combo = create_ssl_objective([{"name": "cpc", "weight": 2.0}, {"name": "masked", "weight": 0.5},
                                  {"name": "cmsc", "weight": 1.0, "views": "augment"}], dims)
    assert isinstance(combo, Combined) and not combo.needs_pair
    g = torch.Generator().manual_seed(0)
    inp = SSLInput(torch.randn(4, 12, 500, generator=g), torch.ones(4, 12, dtype=torch.bool),
                   generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    out = combo.step(enc, inp)
    total = 2.0 * out["cpc/loss"] + 0.5 * out["masked/loss"] + 1.0 * out["cmsc/loss"]
    assert float(out["loss"].detach()) == pytest.approx(float(total), rel=1e-5)
    assert {"cpc/accuracy", "masked/leads", "cmsc/accuracy"} <= set(out)
    with pytest.raises(ValidationError, match="unknown objective.*known: cpc, wav2vec2, masked, cmsc"):
        create_ssl_objective("byol", dims)
    with pytest.raises(ValidationError, match=r"objective 'cpc'.*options: latents, patch_seconds"):
        create_ssl_objective("cpc", dims, horizon=3)
    with pytest.raises(ValidationError, match="a second 'cpc'"):
        create_ssl_objective([{"name": "cpc"}, {"name": "cpc"}], dims)
    with pytest.raises(ValidationError, match="predicting 12 steps ahead needs at least 13"):
        create_ssl_objective("cpc", dims, steps=12)


# ---------------------------------------------------------------------------------------------
# each objective learns on real records
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ptbxl_batch():
    """Eight real PTB-XL records at 100 Hz through the standard pipeline: the first 5 s of each
    and the next 5 s (the time-adjacent segment)."""
    import ecgfm
    from ecgfm.preprocess import Pipeline

    folder = data_path("ptb-xl", "records100", "00000")
    pipeline = Pipeline.standard(fs=100)
    signals = [pipeline(ecgfm.read(folder / f"{i:05d}_lr.hea")).signal for i in range(1, 9)]
    x = torch.from_numpy(np.stack(signals)).float()  # [8, 12, 1000]
    return x[..., :500].contiguous(), x[..., 500:].contiguous()


@pytest.mark.parametrize("name,options,factor", [
    ("cpc", {"steps": 3}, 0.5),  # 6.8 -> 1.3 in 12 steps
    ("wav2vec2", {"context_depth": 1, "context_dim": 64}, 0.7),  # 3.6 -> 1.6
    ("masked", {}, 0.95),  # MSE of z-scores, 1.04 -> 0.93: a reconstruction is learnt slower than a contrast
    ("cmsc", {"patients": False}, 0.5),  # 2.0 -> 0.14
])
def test_each_objective_loss_falls_on_real_records(ptbxl_batch, name: str, options: dict, factor: float) -> None:
    a, b = ptbxl_batch
    enc = _encoder(seed=1)
    dims = encoder_dims(enc, 100.0, 500)
    torch.manual_seed(0)
    objective = create_ssl_objective(name, dims, **options)
    params = list(enc.parameters()) + list(objective.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    mask = torch.ones(8, 12, dtype=torch.bool)
    losses = []
    for _ in range(12):
        torch.manual_seed(0)  # the same Gumbel noise and masks every step: a fixed objective
        inp = SSLInput(a, mask, pair=b, generator=torch.Generator().manual_seed(2))
        loss = objective.step(enc, inp)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-3:]) < factor * losses[0], losses
    assert losses[-1] < losses[len(losses) // 2] < losses[0], losses


# ---------------------------------------------------------------------------------------------
# every family of the registry
# ---------------------------------------------------------------------------------------------
REGISTRY_CASES = {
    "resnet1d18": TINY,
    "xresnet1d50": {},
    "inception1d": {},
    "net1d_small": {},
    "vit1d": {"width": 32, "depth": 1, "heads": 2},
    "conv_transformer_small": {"depth": 1},
}


@pytest.mark.parametrize("family", sorted(REGISTRY_CASES))
def test_every_objective_runs_on_every_encoder_family(family: str) -> None:
    """Forward and backward of each objective with each family, a single-lead record included.
    net1d's downsampling needs 256 samples per input, more than a 0.5 s patch: it takes the
    feature map as latents (two steps in 5 s: CPC predicts one ahead), and a clear error names
    the limit otherwise."""
    from ecgfm.models.registry import create_encoder

    torch.manual_seed(0)
    enc = create_encoder(family, **REGISTRY_CASES[family])
    dims = encoder_dims(enc, 100.0, 500)
    x = torch.randn(4, 12, 500)
    mask = torch.ones(4, 12, dtype=torch.bool)
    mask[0, 1:] = False
    inp = SSLInput(x * mask[:, :, None], mask, pair=torch.randn(4, 12, 500), groups=torch.tensor([0, 0, 1, 2]))
    latents = {"latents": "features"} if family.startswith("net1d") else {}
    if latents:
        with pytest.raises(ValidationError, match="patches of 0.5 s are 50 samples; the encoder needs at least 256"):
            create_ssl_objective("cpc", dims)
    cpc = {**latents, "steps": 1} if latents else {}
    for name, options in (("cpc", cpc), ("wav2vec2", latents), ("masked", {}), ("cmsc", {})):
        objective = create_ssl_objective(name, dims, **options)
        enc.zero_grad()
        loss = objective.step(enc, inp)["loss"]
        loss.backward()
        assert math.isfinite(float(loss.detach())), (family, name)
        grads = [p.grad for p in enc.parameters() if p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads), (family, name)
