"""Portable weights: save_model / load_model, the input contract and Model.predict.

The model is a tiny, untrained ResNet1D-18 (registry encoder ``resnet1d18`` with small widths):
the weights' values do not matter for the plumbing, only that they survive the round trip and
that real files of several formats come out as probabilities.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

import ecgfm
from conftest import EXAMPLES, data_path
from ecgfm.errors import ReadError, ValidationError
from ecgfm.io.write import write
from ecgfm.models.heads import HeadSpec
from ecgfm.models.portable import (
    ContractError,
    InputContract,
    Model,
    ModelCard,
    _tensors_for_safetensors,
    load_model,
    save_model,
)
from ecgfm.models.registry import create_encoder
from ecgfm.preprocess import Pipeline
from ecgfm.record import ECG, Metadata

WFDB = EXAMPLES / "ptbxl" / "00351_hr.hea"
LABELS = ("NORM", "MI", "AFIB")
TINY = {"layers": (1, 1), "widths": (8, 16), "stem_width": 8}
PIPELINE = Pipeline.standard(fs=100, seconds=5, notch=None)


def _encoder(num_outputs: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    encoder = create_encoder("resnet1d18", num_outputs=num_outputs, **TINY)
    # Non-trivial BatchNorm statistics, so a lost buffer would change the outputs.
    for m in encoder.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return encoder.eval()


def _save(directory: Path, encoder: torch.nn.Module | None = None, **kwargs) -> Path:
    options = dict(
        head=HeadSpec("multilabel", 3, label_ids=LABELS), pipeline=PIPELINE,
        input={"max_missing_leads": 6},
        card=ModelCard(name="tiny test model", training_data="none (random weights)",
                       intended_use="tests", limitations="untrained"),
        metrics={"test": {"macro_auroc": 0.5}, "per_label": {"NORM": {"auroc": 0.5}}},
        thresholds={"NORM": 0.4, "MI": 0.5, "AFIB": 0.6},
    )
    options.update(kwargs)
    return save_model(directory, encoder if encoder is not None else _encoder(), **options)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    encoder = _encoder()
    return _save(tmp_path_factory.mktemp("model") / "tiny", encoder), encoder


@pytest.fixture(scope="module")
def model(saved) -> Model:
    return load_model(saved[0])


# -- the directory ----------------------------------------------------------------------------------


def test_directory_holds_safetensors_json_and_card_only(saved) -> None:
    path, _ = saved
    assert sorted(p.name for p in path.iterdir()) == ["card.md", "config.json", "model.safetensors"]
    assert not list(path.rglob("*.pt")) and not list(path.rglob("*.pkl"))


def test_round_trip_gives_identical_outputs(saved, model) -> None:
    _, encoder = saved
    x = torch.randn(3, 12, 500)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[1, 7:] = False
    with torch.inference_mode():
        assert torch.equal(encoder(x), model.encoder(x))
        assert torch.equal(encoder(x, mask), model.encoder(x, mask))
    ref = encoder.state_dict()
    got = model.encoder.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    assert not model.encoder.training


def test_config_holds_pipeline_hash_contract_and_labels(saved, model) -> None:
    config = json.loads((saved[0] / "config.json").read_text())
    assert config["format"] == "ecgfm-model" and config["version"] == 1
    assert config["encoder"] == "resnet1d18" and config["encoder_config"]["widths"] == [8, 16]
    assert config["pipeline"] == PIPELINE.to_dict()
    assert config["pipeline_hash"] == PIPELINE.hash == model.pipeline.hash
    assert model.pipeline == PIPELINE
    assert config["labels"] == list(LABELS) == list(model.labels)
    assert config["label_names"] == ["normal ECG", "myocardial infarction", "atrial fibrillation"]
    assert config["head"] == {"type": "multilabel", "num_outputs": 3}
    assert config["input"] == {
        "fs": 100.0, "leads": list(ecgfm.STANDARD_12), "samples": 500, "units": "z-score",
        "min_seconds": 5.0, "lead_mask": True, "max_missing_leads": 6, "required_leads": [],
        "max_gap_fraction": 0.0, "window_samples": None, "window_stride": None, "aggregate": "max",
        "seconds": 5.0,
    }
    assert model.input == InputContract.from_dict(config["input"])
    assert model.thresholds == {"NORM": 0.4, "MI": 0.5, "AFIB": 0.6}
    assert model.card.training_data == "none (random weights)"
    assert model.head == HeadSpec("multilabel", 3, LABELS, ("normal ECG", "myocardial infarction", "atrial fibrillation"))


def test_card_renders_labels_contract_and_pipeline(saved) -> None:
    card = (saved[0] / "card.md").read_text()
    assert card.startswith("# tiny test model")
    for text in ("## Intended use", "## Limitations", "## Training data", "## Metrics",
                 "| test.macro_auroc | 0.5 |", "## Input contract", "| sampling rate | 100 Hz |",
                 "I, II, III, aVR, aVL, aVF, V1, V2, V3, V4, V5, V6", "## Preprocessing",
                 PIPELINE.hash, PIPELINE.to_spec(), "| 0 | `NORM` | normal ECG | normal ECG (morphology) |",
                 "atrial fibrillation (rhythm)", "164889003", "masked, up to 6 of 12"):
        assert text in card, text


def test_loading_never_unpickles(saved, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    model = load_model(saved[0])
    assert model.predict(WFDB).shape == (1, 3)


def test_ecgfm_load_model_is_exported_lazily() -> None:
    assert ecgfm.load_model is load_model
    assert "load_model" in ecgfm.__all__


# -- strictness -------------------------------------------------------------------------------------


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _drop_checksum(path: Path) -> None:
    config = json.loads((path / "config.json").read_text())
    config["weights"]["sha256"] = None
    (path / "config.json").write_text(json.dumps(config))


def test_strict_keys_name_missing_and_unexpected(saved, tmp_path) -> None:
    path = _copy(saved[0], tmp_path / "m")
    state = load_file(str(path / "model.safetensors"))
    state.pop("head.weight")
    state["extra.bias"] = torch.zeros(3)
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(ValidationError, match="checksum differs"):
        load_model(path)
    _drop_checksum(path)
    with pytest.raises(ValidationError, match=r"missing keys: head\.weight.*unexpected keys: extra\.bias"):
        load_model(path)


def test_shape_mismatch_is_named(saved, tmp_path) -> None:
    path = _copy(saved[0], tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    config["encoder_config"]["widths"] = [8, 32]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValidationError, match=r"shape mismatch .*\(16, 8, 3\) != \(32, 8, 3\)"):
        load_model(path)


def test_edited_pipeline_and_bad_format_are_refused(saved, tmp_path) -> None:
    path = _copy(saved[0], tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    config["pipeline"]["steps"][1]["params"]["fs"] = 250.0
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValidationError, match="differs from pipeline_hash"):
        load_model(path)
    config["format"] = "pickle"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValidationError, match="field 'format'"):
        load_model(path)
    with pytest.raises(ValidationError, match="not a model directory"):
        load_model(tmp_path)


def test_save_checks_head_contract_and_overwrite(saved, tmp_path) -> None:
    with pytest.raises(ValidationError, match="head has 2 outputs but the encoder's head has 3"):
        _save(tmp_path / "a", head=HeadSpec("multilabel", 2))
    with pytest.raises(ValidationError, match="takes 12 leads but the contract lists 2"):
        _save(tmp_path / "b", pipeline=Pipeline.standard(fs=100, seconds=5, notch=None, leads=("I", "II")),
              input={})
    with pytest.raises(ValidationError, match="already holds a model"):
        _save(saved[0])
    _save(tmp_path / "c", thresholds=None)
    _save(tmp_path / "c", thresholds=None, overwrite=True)


def test_shared_tensors_are_stored_once() -> None:
    w = torch.randn(4, 4)
    tensors, aliases = _tensors_for_safetensors({"a.weight": w, "b.weight": w, "c": w[:2]})
    assert aliases == {"b.weight": "a.weight"} and set(tensors) == {"a.weight", "c"}
    assert tensors["c"].is_contiguous() and tensors["c"].untyped_storage().data_ptr() != w.untyped_storage().data_ptr()


# -- real files -------------------------------------------------------------------------------------


def test_wfdb_and_dicom_files_give_probabilities(model) -> None:
    dicom = data_path("formats", "dicom_waveform", "waveform_ecg.dcm")
    for path in (WFDB, dicom):
        probs = model.predict(path)
        assert probs.shape == (1, 3) and probs.dtype == np.float32
        assert np.all((probs >= 0) & (probs <= 1))
    frame = model.predict_frame([WFDB, dicom])
    assert list(frame.columns) == ["record_id", "source", *LABELS]
    assert frame["record_id"].tolist() == ["00351_hr", "waveform_ecg"]
    np.testing.assert_array_equal(frame[list(LABELS)].to_numpy(), model.predict([WFDB, dicom]))


def test_batch_predict_equals_one_by_one(model) -> None:
    files = sorted((EXAMPLES / "ptbxl").glob("*.hea"))
    ecg = ecgfm.read(WFDB)
    inputs = [*files, ecg.replace(signal=ecg.signal[::-1].copy())]
    batched = model.predict(inputs, batch_size=3)
    single = np.concatenate([model.predict(x) for x in inputs])
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)
    embedded = model.embed(inputs, batch_size=2)
    assert embedded.shape == (len(inputs), model.num_features)
    x, m = model.prepare(files[0])
    with torch.inference_mode():
        direct = model.encoder.forward_head(model.encoder.forward_features(x[None], m[None]), pre_logits=True)
    np.testing.assert_allclose(embedded[0], direct[0].numpy(), rtol=1e-5, atol=1e-6)


def test_prepare_applies_the_pipeline(model) -> None:
    x, m = model.prepare(WFDB)
    ref = PIPELINE(ecgfm.read(WFDB))
    assert x.shape == (12, 500) and x.dtype == torch.float32 and bool(m.all())
    np.testing.assert_array_equal(x.numpy(), ref.signal)


# -- refusals ---------------------------------------------------------------------------------------


def test_too_short_record_is_refused_naming_file_and_length(model, tmp_path) -> None:
    ecg = ecgfm.read(WFDB)
    short = write(ecg.replace(signal=ecg.signal[:, :1500].copy()), tmp_path, "wfdb")
    with pytest.raises(ContractError, match=rf"{short.stem}.*3 s long .*needs at least 5 s \(2500 samples\)"):
        model.predict(short)
    probs, failures = model.predict([WFDB, short], errors="skip")
    assert np.isfinite(probs[0]).all() and np.isnan(probs[1]).all()
    assert [f.index for f in failures] == [1] and "at least 5 s" in failures[0].error
    frame = model.predict_frame([short, WFDB], errors="skip")
    assert frame["error"].iloc[0].startswith(str(short)) and pd.isna(frame["error"].iloc[1])


def test_unreadable_file_raises_or_is_skipped(model, tmp_path) -> None:
    bad = tmp_path / "junk.xml"
    bad.write_text("not an ecg")
    with pytest.raises(ReadError, match="junk.xml"):
        model.predict([WFDB, bad])
    _, failures = model.predict([WFDB, bad], errors="skip")
    assert failures[0].source == str(bad)


def test_missing_leads_are_masked_within_the_contract(model) -> None:
    ecg = ecgfm.read(WFDB)
    eight = ecg.select(("I", "II", "V1", "V2", "V3", "V4", "V5", "V6"))
    x8, m8 = model.prepare(eight)  # III, aVR, aVL, aVF are derived from I and II
    x12, _ = model.prepare(ecg)
    assert bool(m8.all())
    # the recorded III/aVR/aVL/aVF differ from the derived ones by the digitisation rounding only
    np.testing.assert_array_equal(x8.numpy()[[0, 1, *range(6, 12)]], x12.numpy()[[0, 1, *range(6, 12)]])
    np.testing.assert_allclose(x8.numpy()[2:6], x12.numpy()[2:6], atol=0.02)
    fewer = ecg.select(("I", "II", "V1", "V2", "V3", "V4"))
    x, m = model.prepare(fewer)
    assert m.tolist() == [True] * 10 + [False] * 2 and torch.all(x[10:] == 0)
    probs = model.predict(fewer)
    with torch.inference_mode():
        direct = torch.sigmoid(model.encoder(x[None], m[None])).numpy()
    np.testing.assert_allclose(probs, direct, rtol=1e-5, atol=1e-6)
    no_ii = ecg.select(("I", "V1", "V2", "V3", "V4", "V5"))  # without II nothing can be derived
    model.predict(no_ii)  # II, III, aVR, aVL, aVF, V6 absent: 6, the contract's maximum
    with pytest.raises(ContractError, match=r"00351_hr.hea: lacks 7 of the model's 12 leads \(II, III, aVR, aVL, aVF, V5, V6; has I, V1, V2, V3, V4\); this model accepts at most 6"):
        model.predict(no_ii.select(("I", "V1", "V2", "V3", "V4")))


def test_missing_leads_are_refused_without_mask_support(tmp_path) -> None:
    path = _save(tmp_path / "nomask", input={"lead_mask": False})
    strict = load_model(path)
    assert strict.input.lead_mask is False and strict.input.max_missing_leads == 0
    ecg = ecgfm.read(WFDB).select(("I", "II", "V1", "V2", "V3", "V4", "V5"))
    with pytest.raises(ContractError, match=r"00351_hr.*lacks lead\(s\) V6 .*cannot mask absent leads"):
        strict.prepare(ecg)
    assert strict.predict(ecgfm.read(WFDB).select(("I", "II", "V1", "V2", "V3", "V4", "V5", "V6"))).shape == (1, 3)


def test_nan_gaps_are_refused_and_all_nan_leads_are_absent(model, tmp_path) -> None:
    ecg = ecgfm.read(WFDB)
    signal = ecg.signal.copy()
    signal[3, 1000:1200] = np.nan
    gappy = ECG.with_gaps(signal, ecg.fs, ecg.leads, Metadata(record_id="gappy", source_path=str(tmp_path / "gappy.npz")))
    path = write(gappy, tmp_path, "npz")
    with pytest.raises(ContractError, match=r"gappy\.npz: lead aVR has 4\.0% of its samples unobserved"):
        model.predict(path)
    signal = ecg.signal.copy()
    signal[7] = np.nan
    dead = ECG.with_gaps(signal, ecg.fs, ecg.leads, Metadata(record_id="dead"))
    x, m = model.prepare(dead)
    assert m.tolist() == [True] * 7 + [False] + [True] * 4 and torch.all(x[7] == 0)
    with pytest.raises(ValidationError, match="non-finite"):
        ECG(signal, ecg.fs, ecg.leads)  # NaN without a mask never becomes a record


def test_required_leads_are_enforced(tmp_path) -> None:
    strict = load_model(_save(tmp_path / "req", input={"max_missing_leads": 6, "required_leads": ["V1"]}))
    ecg = ecgfm.read(WFDB).select(("I", "II", "V2", "V3", "V4", "V5", "V6"))
    with pytest.raises(ContractError, match=r"lacks required lead\(s\) V1"):
        strict.prepare(ecg)


def test_pipeline_that_selects_a_subset_after_the_standard_steps(tmp_path) -> None:
    # What `ecgfm train` exports: the store's 12-lead pipeline, then the run's leads and window.
    from ecgfm.preprocess import CropOrPad, SelectLeads

    pipeline = Pipeline((*Pipeline.standard(fs=100, seconds=10, notch=None).steps,
                         SelectLeads(leads=("I", "II", "V1"), derive=False, missing="mask"),
                         CropOrPad(seconds=5, mode="center")))
    torch.manual_seed(0)
    encoder = create_encoder("resnet1d18", num_outputs=3, in_leads=3, **TINY)
    path = save_model(tmp_path / "sub", encoder, head=HeadSpec("multilabel", 3, label_ids=LABELS),
                      pipeline=pipeline, input={"max_missing_leads": 1, "min_seconds": 5})
    sub = load_model(path)
    assert sub.input.leads == ("I", "II", "V1") and sub.input.samples == 500
    ecg = ecgfm.read(WFDB)
    x, m = sub.prepare(ecg)
    np.testing.assert_array_equal(x.numpy(), pipeline(ecg).signal)
    assert bool(m.all())
    x, m = sub.prepare(ecg.select(("I", "II", "V2", "V3")))  # lacks V1 (masked) and V4-V6 (unused)
    assert m.tolist() == [True, True, False] and torch.all(x[2] == 0)
    with pytest.raises(ContractError, match=r"lacks 2 of the model's 3 leads \(II, V1;"):
        sub.prepare(ecg.select(("I", "V2")))
    assert sub.predict(ecg.select(("I", "II", "V1"))).shape == (1, 3)


# -- ONNX ---------------------------------------------------------------------------------------------


def test_onnx_export_matches_pytorch_with_dynamic_batch(model, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from ecgfm.models.export import export_onnx

    path = export_onnx(model, tmp_path / "tiny.onnx")  # checks itself against PyTorch (batch 3)
    assert not model.encoder.training
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["ecgfm_config"])["pipeline_hash"] == meta["ecgfm_pipeline_hash"] == PIPELINE.hash
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, m = model.prepare(WFDB)
    x5 = torch.stack([x] * 5)
    m5 = torch.stack([m] * 5)
    m5[2, 9:] = False
    predictions, embeddings = session.run(None, {"signal": x5.numpy(), "lead_mask": m5.numpy()})
    with torch.inference_mode():
        ref = torch.sigmoid(model.encoder(x5, m5)).numpy()
    np.testing.assert_allclose(predictions, ref, atol=1e-5)
    np.testing.assert_allclose(predictions[0], model.predict(WFDB)[0], atol=1e-5)
    assert embeddings.shape == (5, model.num_features)


# ---------------------------------------------------------------------------------------------
# sliding windows, operating points, per-label metrics, the default model's path
# ---------------------------------------------------------------------------------------------
def test_windowed_contract_runs_windows_and_exports_to_onnx(tmp_path) -> None:
    """A 5 s input scored as 2 s windows every 1 s (starts 0, 100, 200, 300 samples): the
    logits are the max over windows, the features the mean, and ONNX gives the same."""
    from ecgfm.models.export import export_onnx
    from ecgfm.models.portable import window_starts

    assert window_starts(500, 200, 100) == [0, 100, 200, 300]
    assert window_starts(450, 200, 100) == [0, 100, 200, 250]  # the last window ends at the end
    assert window_starts(150, 200, 100) == [0]
    directory = _save(tmp_path / "win", input={"window_samples": 200, "window_stride": 100, "aggregate": "max"})
    m = load_model(directory)
    assert (m.input.window_samples, m.input.window_stride, m.input.aggregate) == (200, 100, "max")
    x, mask = m.prepare(WFDB)
    xb, mb = x[None], mask[None]
    with torch.inference_mode():
        per_window = torch.stack([m.encoder(xb[..., s:s + 200], mb) for s in (0, 100, 200, 300)])
        feats = torch.stack([m.encoder.forward_head(m.encoder.forward_features(xb[..., s:s + 200], mb),
                                                    pre_logits=True) for s in (0, 100, 200, 300)])
    np.testing.assert_allclose(m.forward(xb, mb).numpy(), per_window.amax(0).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.embed(WFDB), feats.mean(0).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.predict(WFDB), torch.sigmoid(per_window.amax(0)).numpy(), rtol=1e-5, atol=1e-6)
    export_onnx(m, tmp_path / "win.onnx")  # checked against PyTorch inside
    with pytest.raises(ValidationError, match="window_samples"):
        InputContract(fs=100, leads=("I",), samples=100, window_samples=200)
    with pytest.raises(ValidationError, match="aggregate"):
        InputContract(fs=100, leads=("I",), samples=100, window_samples=50, aggregate="median")


def test_operating_points_and_label_metrics(tmp_path) -> None:
    points = {"NORM": {"borderline": 0.2, "positive": 0.6}, "AFIB": {"borderline": 0.1, "positive": 0.3}}
    metrics = {"per_label": {"NORM": {"val_auroc": 0.91, "test_auroc": 0.9}}}
    m = load_model(_save(tmp_path / "ops", operating_points=points, metrics=metrics, thresholds={"MI": 0.4}))
    assert m.operating_points() == {"NORM": (0.2, 0.6), "MI": (0.2, 0.4), "AFIB": (0.1, 0.3)}
    assert m.label_metrics() == {"NORM": {"val_auroc": 0.91, "test_auroc": 0.9}, "MI": {}, "AFIB": {}}
    plain = load_model(_save(tmp_path / "plain"))
    assert plain.operating_points()["NORM"] == ((0.2, 0.4) if plain.thresholds else (0.25, 0.5))
    with pytest.raises(ValidationError, match="borderline"):
        _save(tmp_path / "bad", operating_points={"NORM": {"borderline": 0.7, "positive": 0.5}})
    with pytest.raises(ValidationError, match="unknown label"):
        _save(tmp_path / "bad2", operating_points={"XYZ": {"borderline": 0.1, "positive": 0.5}})


def test_default_model_path_is_inside_the_package() -> None:
    from ecgfm.models import default_model_path

    path = default_model_path()
    assert path.name == "default" and path.parent == Path(ecgfm.__file__).resolve().parent / "models"
