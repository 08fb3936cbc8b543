"""Interface tests over the whole encoder registry (timm's ``test_models.py`` style).

Every registered encoder, made tiny through config overrides where the family is known (the
full-size variants are only instantiated on the meta device to check their parameter counts),
must: run forward and backward with and without a lead mask; ignore the content of masked leads;
give the shapes of the interface; swap heads; accept several input lengths; refuse unknown
overrides; rebuild from its config; be deterministic under a seed; and take three optimiser
steps on real PTB-XL records (12 x 1000 at 100 Hz) with a finite, falling loss.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import data_path  # noqa: E402
from ecgfm.errors import ReadError, ValidationError  # noqa: E402
from ecgfm.models import (  # noqa: E402
    Encoder,
    create_encoder,
    encoder_config,
    list_encoders,
    registry,  # noqa: E402
)

NAMES = list_encoders()
B, L, T = 2, 12, 500

# Small widths/depths per family (keyed by config class) so each test runs in milliseconds.
# Families not listed here (third-party registrations) are tested at their default size.
TINY: dict[str, dict[str, object]] = {
    "ResNet1dConfig": {"widths": (8, 8, 16, 16), "stem_width": 8, "layers": (1, 1, 1, 1)},
    "Net1dConfig": {"stem_width": 16, "widths": (16, 16, 32, 32), "depths": (1, 1, 1, 1),
                    "kernel_size": 8},
    "XResNet1dConfig": {"widths": (8, 8, 8, 8), "stem_widths": (8, 8, 16),
                        "layers": (1, 1, 1, 1), "head_hidden": 16, "head_dropout": 0.0},
    "Inception1dConfig": {"filters": 8, "bottleneck": 8, "depth": 3, "head_hidden": 16,
                          "head_dropout": 0.0},
    "ConvTransformerConfig": {"conv_layers": ((32, 2, 2),) * 4, "width": 32, "depth": 2,
                              "heads": 2, "pos_conv_kernel": 8, "pos_conv_groups": 4},
    "ViT1dConfig": {"width": 32, "depth": 2, "heads": 2, "patch_size": 50},
}

# Parameter counts of the named full-size variants (trunk + pooling, no linear head), in
# millions: the value built here, with the published figure it reproduces where one exists.
FULL_SIZE_MPARAMS = {
    "resnet1d18": (3.7, 4.0),  # 3.85M: torchvision ResNet-18 (11.7M in 2-D) with k=3 1-D convs
    "resnet1d34": (7.0, 7.5),  # 7.22M
    "resnet1d50": (15.5, 16.5),  # 15.96M
    "net1d": (29.5, 31.5),  # 30.60M: ECGFounder's Net1D configuration
    "net1d_small": (1.0, 1.5),  # 1.22M
    "xresnet1d101": (1.8, 1.95),  # 1.87M: the PTB-XL benchmark's xresnet1d101 (~1.8M)
    "xresnet1d50": (0.9, 1.0),  # 0.95M
    "inception1d": (0.45, 0.55),  # 0.51M: the benchmark's inception1d (~0.5M)
    "conv_transformer": (89.0, 92.0),  # 90.37M: ECG-FM's encoder configuration (~90M)
    "conv_transformer_small": (5.0, 6.0),  # 5.34M
    "vit1d": (3.4, 3.8),  # 3.62M
    "vit1d_base": (84.0, 87.0),  # 85.32M: ST-MEM ViT-B/75 (~86M)
}


def tiny(name: str, **overrides: object) -> Encoder:
    family = type(encoder_config(name)).__name__
    return create_encoder(name, **{**TINY.get(family, {}), **overrides})


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(B, L, T, generator=torch.Generator().manual_seed(0))


def partial_mask() -> torch.Tensor:
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, [3, 7]] = False  # two leads absent
    mask[1, 1:] = False  # only lead I present
    return mask


# -- the registry ------------------------------------------------------------------------------


def test_registry_lists_the_issue_encoders() -> None:
    required = {"resnet1d18", "resnet1d34", "resnet1d50", "net1d", "xresnet1d50", "xresnet1d101",
                "inception1d", "conv_transformer", "vit1d"}
    assert required <= set(NAMES)
    assert NAMES == sorted(NAMES)
    assert list_encoders("resnet*") == ["resnet1d18", "resnet1d34", "resnet1d50"]


def test_import_is_light() -> None:
    code = ("import sys, ecgfm, ecgfm.models; from ecgfm.models import registry; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_name_lists_registered() -> None:
    with pytest.raises(ValidationError, match="unknown encoder 'resnet1d19'.*resnet1d18"):
        create_encoder("resnet1d19")


def test_register_encoder_refuses_a_taken_name_and_registers_new_ones() -> None:
    config_cls = type(encoder_config("vit1d"))
    with pytest.raises(ValidationError, match="already registered"):
        registry.register_encoder("vit1d", config_cls)(type("Other", (Encoder,), {}))
    with pytest.raises(ValidationError, match="lower-case"):
        registry.register_encoder("My-Net", config_cls)
    try:
        cls = registry._entry("vit1d").cls
        registry.register_encoder("vit1d_test_tiny", config_cls, {"width": 16, "heads": 2,
                                                                   "depth": 1})(cls)
        model = create_encoder("vit1d_test_tiny")
        assert model.num_features == 16 and model.encoder_name == "vit1d_test_tiny"
    finally:
        registry._REGISTRY.pop("vit1d_test_tiny", None)


def test_json_variant_errors_name_the_file(tmp_path) -> None:
    config_cls = type(encoder_config("vit1d"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"config": {"widht": 8}}))
    with pytest.raises(ReadError, match=r"bad\.json.*unknown option\(s\) widht.*valid: in_leads"):
        registry.load_config_file(config_cls, bad)
    bad.write_text(json.dumps({"config": {}, "code": "import os"}))
    with pytest.raises(ReadError, match="unknown key"):
        registry.load_config_file(config_cls, bad)
    bad.write_text("{")
    with pytest.raises(ReadError, match="not valid JSON"):
        registry.load_config_file(config_cls, bad)


def test_config_values_are_type_checked() -> None:
    with pytest.raises(ValidationError, match=r"ResNet1dConfig.in_leads: expected an integer"):
        create_encoder("resnet1d18", in_leads="12")
    with pytest.raises(ValidationError, match=r"block: expected one of 'basic', 'bottleneck'"):
        create_encoder("resnet1d18", block="wide")
    with pytest.raises(ValidationError, match=r"heads: must be at least 1 and divide width"):
        encoder_config("vit1d", heads=5)
    with pytest.raises(ValidationError, match=r"conv_layers\[0\]: expected 3 values"):
        encoder_config("conv_transformer", conv_layers=[[256, 2]])
    # JSON-style lists become tuples, so configs stay hashable and compare equal.
    assert encoder_config("resnet1d18", layers=[2, 2, 2, 2]) == encoder_config("resnet1d18")


def test_full_size_parameter_counts() -> None:
    assert set(FULL_SIZE_MPARAMS) <= set(NAMES)
    for name, (low, high) in FULL_SIZE_MPARAMS.items():
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            model = create_encoder(name)
        millions = n_params(model) / 1e6
        assert low <= millions <= high, f"{name}: {millions:.3f}M not in [{low}, {high}]"


# -- the interface, for every registered encoder -----------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_with_and_without_mask(name: str, x: torch.Tensor) -> None:
    model = tiny(name, num_outputs=3).train()
    for mask in (None, partial_mask()):
        xg = x.clone().requires_grad_(True)
        out = model(xg, mask)
        assert out.shape == (B, 3)
        out.square().mean().backward()
        assert torch.isfinite(xg.grad).all()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        if mask is not None:  # no gradient flows into a masked lead
            assert (xg.grad[~mask] == 0).all()
            assert (xg.grad[mask].abs().sum(dim=-1) > 0).all()
        model.zero_grad()


@pytest.mark.parametrize("name", NAMES)
def test_lead_mask_semantics(name: str, x: torch.Tensor) -> None:
    model = tiny(name).eval()
    mask = partial_mask()
    with torch.no_grad():
        plain = model(x)
        # An all-present mask is the same as no mask.
        full = model(x, torch.ones(B, L, dtype=torch.bool))
        torch.testing.assert_close(full, plain, rtol=1e-5, atol=1e-5)
        masked = model(x, mask)
        # What a masked lead holds does not matter...
        noisy = x.clone()
        noisy[~mask] = 5 * torch.randn(int((~mask).sum()), T)
        torch.testing.assert_close(model(noisy, mask), masked, rtol=1e-5, atol=1e-6)
        # ...but the mask does: it changes the output.
        assert not torch.allclose(masked, plain, atol=1e-4)
    assert model.supports_lead_mask


@pytest.mark.parametrize("name", NAMES)
def test_head_interface(name: str, x: torch.Tensor) -> None:
    model = tiny(name).eval()
    assert model.num_outputs == 0 and model.in_leads == L
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.ndim == 3 and features.shape[0] == B
        pooled = model.forward_head(features, pre_logits=True)
        assert pooled.shape == (B, model.num_features)
        torch.testing.assert_close(model(x), pooled)  # no head: forward gives pooled features
        torch.testing.assert_close(model.pool(features), pooled)

        model.reset_head(7)
        assert model.num_outputs == 7 and model.config.num_outputs == 7
        assert model(x).shape == (B, 7)
        assert model.forward_head(features, pre_logits=True).shape == (B, model.num_features)

        model.reset_head(0)
        assert model.num_outputs == 0 and model.config.num_outputs == 0
        assert model(x).shape == (B, model.num_features)
    with pytest.raises(ValidationError, match="num_outputs"):
        model.reset_head(-1)


@pytest.mark.parametrize("name", NAMES)
def test_variable_length_and_input_checks(name: str) -> None:
    model = tiny(name, num_outputs=2).eval()
    lengths = [max(model.min_samples, 300), 700]
    with torch.no_grad():
        for length in lengths:
            assert model(torch.randn(B, L, length)).shape == (B, 2)
        if model.min_samples > 1:
            with pytest.raises(ValidationError, match="needs at least"):
                model(torch.randn(B, L, model.min_samples - 1))
        with pytest.raises(ValidationError, match="expected 12 leads"):
            model(torch.randn(B, 8, T))
        with pytest.raises(ValidationError, match=r"\[batch, leads, samples\]"):
            model(torch.randn(L, T))
        with pytest.raises(ValidationError, match="lead_mask must be"):
            model(torch.randn(B, L, T), torch.ones(B, 8, dtype=torch.bool))
        with pytest.raises(ValidationError, match="at least one present lead"):
            model(torch.randn(B, L, T), torch.zeros(B, L, dtype=torch.bool))


@pytest.mark.parametrize("name", NAMES)
def test_unknown_override_lists_valid_keys(name: str) -> None:
    with pytest.raises(ValidationError, match=r"unknown option\(s\) no_such_field.*valid: in_leads"):
        create_encoder(name, no_such_field=1)


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name: str) -> None:
    model = tiny(name, num_outputs=4, in_leads=8)
    config = dataclasses.asdict(model.config)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    for values in (config, json.loads(json.dumps(config))):  # in memory, and through JSON
        again = create_encoder(name, **values)
        assert again.config == model.config
        assert {k: v.shape for k, v in again.state_dict().items()} == shapes


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_a_seed(name: str, x: torch.Tensor) -> None:
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = tiny(name, num_outputs=2).eval()
        with torch.no_grad():
            outs.append(model(x))
    assert torch.equal(outs[0], outs[1])


# -- a tiny training run on real records -------------------------------------------------------


@pytest.fixture(scope="module")
def ptbxl_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """8 PTB-XL records at 100 Hz through the standard pipeline, 4 NORM and 4 not."""
    import ecgfm

    root = data_path("ptb-xl")
    picked: dict[bool, list[str]] = {True: [], False: []}
    with (root / "ptbxl_database.csv").open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if not row["filename_lr"]:
                continue
            normal = "NORM" in ast.literal_eval(row["scp_codes"])
            if len(picked[normal]) < 4:
                picked[normal].append(row["filename_lr"])
            if all(len(v) == 4 for v in picked.values()):
                break
    pipeline = ecgfm.Pipeline.standard(fs=100)
    signals, labels = [], []
    for normal, files in picked.items():
        for file in files:
            ecg = pipeline(ecgfm.read(root / f"{file}.hea"))
            assert ecg.signal.shape == (12, 1000)
            signals.append(ecg.signal)
            labels.append(float(normal))
    return torch.from_numpy(np.stack(signals)), torch.tensor(labels)[:, None]


@pytest.mark.parametrize("name", NAMES)
def test_three_training_steps_on_ptbxl(name: str, ptbxl_batch) -> None:
    signals, labels = ptbxl_batch
    torch.manual_seed(0)
    model = tiny(name, num_outputs=1).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(4):  # three steps, then the loss after them
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(signals), labels)
        losses.append(loss.item())
        if len(losses) == 4:
            break
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert np.isfinite(losses).all(), losses
    assert losses[-1] < losses[0], f"{name}: loss did not fall: {losses}"
