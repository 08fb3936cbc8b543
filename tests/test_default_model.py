"""The default model shipped in the package (``ecgfm.load_model()``): present, small, documented,
and giving probabilities for real files of any supported format through its own contract.

The bundled examples are PTB-XL training records (folds 3-5), so the calls checked here are a
sanity check of the shipped weights and operating points, not a measure of accuracy; that is
``benchmarks/bench_default_model.py`` on fold 10.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("safetensors")

import ecgfm  # noqa: E402
from conftest import EXAMPLES, data_path  # noqa: E402
from ecgfm.models import default_model_path  # noqa: E402
from ecgfm.models.portable import ContractError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return ecgfm.load_model()


def test_shipped_files_are_small_and_carry_their_card() -> None:
    root = default_model_path()
    files = sorted(p.name for p in root.iterdir())
    assert files == ["card.md", "config.json", "model.safetensors"]
    total = sum(p.stat().st_size for p in root.iterdir())
    assert total < 30 * 2**20
    config = json.loads((root / "config.json").read_text())
    card = (root / "card.md").read_text()
    assert "PTB-XL" in config["card"]["training_data"] and "PTB-XL" in card
    for section in ("Intended use", "Limitations", "Preprocessing", "Input contract"):
        assert section.lower() in card.lower()
    assert config["training"]["records"]["train"] > 1000


def test_labels_cover_statements_and_diagnostic_classes(model) -> None:
    labels = set(model.labels)
    assert {"NORM", "AFIB", "IMI"} <= labels
    supers = {x for x in labels if x.startswith("superdiagnostic:")}
    assert supers == {f"superdiagnostic:{c}" for c in ("NORM", "MI", "STTC", "CD", "HYP")}
    assert any(x.startswith("subdiagnostic:") for x in labels)
    assert model.input.fs == 100 and model.input.leads == ecgfm.STANDARD_12
    # every output has validation figures and an operating point chosen on fold 9
    metrics, points = model.label_metrics(), model.operating_points()
    assert all("val_auroc" in metrics[x] and "test_auroc" in metrics[x] for x in ("NORM", "AFIB"))
    assert all(0 <= low <= high <= 1 for low, high in points.values())


def test_wfdb_files_give_probabilities_and_sensible_calls(model) -> None:
    files = [EXAMPLES / "ptbxl" / f"{r}_hr.hea" for r in ("00003", "00257", "00351")]
    frame = model.predict_frame(files)
    probs = frame[list(model.labels)].to_numpy()
    assert probs.shape == (3, len(model.labels)) and np.all((probs >= 0) & (probs <= 1))
    points = model.operating_points()
    row = dict(zip(model.labels, probs[2]))  # 00351: atrial fibrillation
    assert row["AFIB"] >= points["AFIB"][0] and row["AFIB"] > dict(zip(model.labels, probs[0]))["AFIB"]
    norm = dict(zip(model.labels, probs[0]))  # 00003: normal ECG
    assert norm["NORM"] >= points["NORM"][0] and norm["NORM"] > row["NORM"]


def test_dicom_file_gives_probabilities(model) -> None:
    path = data_path("formats", "dicom_waveform", "waveform_ecg.dcm")  # 12 leads at 1000 Hz
    probs = model.predict(path)
    assert probs.shape == (1, len(model.labels)) and np.isfinite(probs).all()
    # the same signal handed over as a record gives the same answer
    np.testing.assert_allclose(model.predict(ecgfm.read(path)), probs, atol=1e-6)


def test_records_the_contract_cannot_take_are_refused(model) -> None:
    ecg = ecgfm.read(EXAMPLES / "ptbxl" / "00003_hr.hea")
    short = dataclasses.replace(ecg, signal=ecg.signal[:, :500].copy())  # 1 s
    with pytest.raises(ContractError, match="needs at least"):
        model.prepare(short)
    with pytest.raises(ContractError, match="V1"):
        model.prepare(ecg.select(["I", "II"]))  # the chest leads are absent
