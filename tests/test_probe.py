"""Embedding extraction and the logistic-regression probe.

Reference: scikit-learn's ``LogisticRegression(penalty="l2", solver="lbfgs")`` (test-only
dependency) fitted on the same embeddings with the same ``C``; the probe must give the same
probabilities. The embeddings are a tiny random ResNet1D's pooled features of real PTB-XL
records (100 Hz, the first 80 ids in shared data) with their real SCP labels.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression

import ecgfm
from conftest import EXAMPLES, data_path
from ecgfm.errors import ValidationError
from ecgfm.models.heads import HeadSpec
from ecgfm.models.portable import load_model, save_model
from ecgfm.models.probe import LogisticProbe, extract_embeddings
from ecgfm.models.registry import create_encoder
from ecgfm.preprocess import Pipeline
from ecgfm.store import format as F

PIPELINE = Pipeline.standard(fs=100, seconds=5, notch=None)
TINY = {"layers": (1, 1), "widths": (8, 24), "stem_width": 8}
N_RECORDS = 80


def _encoder(in_leads: int = 12) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_encoder("resnet1d18", in_leads=in_leads, **TINY).eval()


@pytest.fixture(scope="module")
def ptbxl() -> tuple[list[ecgfm.ECG], pd.DataFrame]:
    root = data_path("ptb-xl")
    table = pd.read_csv(root / "ptbxl_database.csv", index_col="ecg_id")
    table = table[table["filename_lr"].notna()].head(N_RECORDS)
    records = [ecgfm.read(root / f"{name}.hea") for name in table["filename_lr"]]
    return records, table


@pytest.fixture(scope="module")
def embeddings(ptbxl) -> tuple[np.ndarray, pd.DataFrame]:
    records, table = ptbxl
    X = extract_embeddings(_encoder(), records, pipeline=PIPELINE, batch_size=32)
    return X.astype(np.float64), table


def _codes(table: pd.DataFrame) -> list[set[str]]:
    return [set(ast.literal_eval(s)) for s in table["scp_codes"]]


# -- extraction -------------------------------------------------------------------------------------


def test_extract_embeddings_from_records_matches_the_encoder(ptbxl, embeddings) -> None:
    records, _ = ptbxl
    X, _ = embeddings
    encoder = _encoder()
    assert X.shape == (N_RECORDS, encoder.num_features) and np.isfinite(X).all()
    x = torch.stack([torch.from_numpy(PIPELINE(r).signal) for r in records[:5]])
    with torch.inference_mode():
        ref = encoder.forward_head(encoder.forward_features(x), pre_logits=True).numpy()
    np.testing.assert_allclose(X[:5], ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(extract_embeddings(encoder, x, batch_size=2), ref, rtol=1e-5, atol=1e-6)
    assert X.std(axis=0).max() > 0  # not a constant vector


def test_extract_embeddings_from_a_portable_model_and_files(tmp_path) -> None:
    encoder = create_encoder("resnet1d18", num_outputs=2, **TINY)
    save_model(tmp_path / "m", encoder, head=HeadSpec("multilabel", 2, ("NORM", "AFIB")), pipeline=PIPELINE)
    model = load_model(tmp_path / "m")
    files = sorted((EXAMPLES / "ptbxl").glob("*.hea"))
    X = extract_embeddings(model, files, batch_size=2)
    np.testing.assert_allclose(X, model.embed(files), rtol=1e-5, atol=1e-6)
    assert X.shape == (len(files), model.num_features)
    assert model.encoder.training is False


def test_extract_embeddings_from_a_corpus_store(ptbxl, tmp_path) -> None:
    records, _ = ptbxl
    leads = ("I", "II", "V1", "V2")
    root = tmp_path / "store"
    writer = F.ShardWriter(root, "part-000", leads)
    prepared = []
    for i, ecg in enumerate(records[:10]):
        x = PIPELINE(ecg).select(leads)
        lead_mask = np.array([True, True, i % 3 != 0, True])
        writer.add({"record_id": f"r{i}", "labels": [], "split": "train"}, x.signal, lead_mask=lead_mask)
        prepared.append((np.where(lead_mask[:, None], x.signal, 0.0), lead_mask))
    writer.commit(keys=["all"])
    F.write_json_atomic(root / "store.json", F.store_info(leads, 100.0, None))
    F.write_manifest(root, F.read_parts(root))
    encoder = _encoder(in_leads=4)
    X = extract_embeddings(encoder, root, window=5.0, batch_size=4)
    corpus = F.Corpus.open(root)
    # the reference: the stored (int16-quantised) windows and lead masks, straight into the encoder
    signal = torch.from_numpy(np.stack([corpus.signal(i, 0, 500) for i in range(10)])).float()
    mask = torch.from_numpy(np.stack([m for _, m in prepared]))
    with torch.inference_mode():
        ref = encoder.forward_head(encoder.forward_features(signal, mask), pre_logits=True).numpy()
    np.testing.assert_allclose(X, ref, rtol=1e-4, atol=1e-5)
    assert not np.allclose(X[0], extract_embeddings(encoder, signal[:1])[0])  # the mask was used


def test_extract_embeddings_rejects_what_it_cannot_read() -> None:
    with pytest.raises(ValidationError, match="expected a loaded Model or an encoder"):
        extract_embeddings(torch.nn.Linear(2, 2), np.zeros((1, 12, 100)))
    with pytest.raises(ValidationError, match=r"must be \[N, L, T\]"):
        extract_embeddings(_encoder(), np.zeros((12, 100)))


# -- the probe against scikit-learn -----------------------------------------------------------------


@pytest.mark.parametrize("C", [0.05, 1.0, 20.0])
def test_binary_probe_matches_sklearn(embeddings, C) -> None:
    X, table = embeddings
    y = np.array(["NORM" in c for c in _codes(table)], dtype=int)
    assert 10 < y.sum() < len(y) - 10
    probe = LogisticProbe(C=C, tol=1e-10, max_iter=5000).fit(X, y)
    ref = LogisticRegression(C=C, tol=1e-10, max_iter=10000).fit(X, y)
    np.testing.assert_allclose(probe.predict_proba(X), ref.predict_proba(X), atol=2e-5)
    np.testing.assert_allclose(probe.coef_, ref.coef_, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(probe.intercept_, ref.intercept_, rtol=1e-3, atol=1e-3)
    assert probe.coef_.shape == (1, X.shape[1]) and list(probe.classes_) == [0, 1]
    np.testing.assert_array_equal(probe.predict(X), ref.predict(X))


def test_balanced_and_string_classes_match_sklearn(embeddings) -> None:
    X, table = embeddings
    y = np.where(["NORM" in c for c in _codes(table)], "normal", "abnormal")
    probe = LogisticProbe(C=0.5, tol=1e-10, class_weight="balanced").fit(X, y)
    ref = LogisticRegression(C=0.5, tol=1e-10, max_iter=10000, class_weight="balanced").fit(X, y)
    np.testing.assert_allclose(probe.predict_proba(X), ref.predict_proba(X), atol=2e-5)
    assert list(probe.classes_) == ["abnormal", "normal"]


def test_multiclass_probe_matches_sklearn_multinomial(embeddings) -> None:
    X, table = embeddings
    codes = _codes(table)
    y = np.array([0 if "NORM" in c else 1 if "SR" in c else 2 for c in codes])
    assert np.bincount(y).min() >= 5
    probe = LogisticProbe(C=2.0, tol=1e-10, max_iter=5000).fit(X, y)
    ref = LogisticRegression(C=2.0, tol=1e-10, max_iter=10000).fit(X, y)
    np.testing.assert_allclose(probe.predict_proba(X), ref.predict_proba(X), atol=5e-5)
    assert probe.kind_ == "multiclass" and probe.coef_.shape == (3, X.shape[1])


def test_multilabel_probe_is_one_vs_rest_with_missing_labels(embeddings) -> None:
    X, table = embeddings
    codes = _codes(table)
    counts = pd.Series([c for cs in codes for c in cs]).value_counts()
    labels = [c for c in counts.index if 8 <= counts[c] <= len(codes) - 8][:4]
    assert len(labels) >= 3
    Y = np.array([[float(label in c) for label in labels] for c in codes])
    Y[::7, 1] = np.nan  # records whose label 1 is unknown
    probe = LogisticProbe(C=1.0, tol=1e-10, max_iter=5000).fit(X, Y)
    proba = probe.predict_proba(X)
    assert proba.shape == (len(X), len(labels)) and probe.kind_ == "multilabel"
    for k in range(len(labels)):
        seen = np.isfinite(Y[:, k])
        ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=10000).fit(X[seen], Y[seen, k].astype(int))
        np.testing.assert_allclose(proba[:, k], ref.predict_proba(X)[:, 1], atol=2e-5)
    assert set(np.unique(probe.predict(X))) <= {0, 1}


def test_probe_validates_inputs(embeddings) -> None:
    X, _ = embeddings
    with pytest.raises(ValidationError, match="call fit"):
        LogisticProbe().predict_proba(X)
    with pytest.raises(ValidationError, match="only one class"):
        LogisticProbe().fit(X, np.zeros(len(X)))
    with pytest.raises(ValidationError, match="0, 1 or NaN"):
        LogisticProbe().fit(X, np.full((len(X), 2), 2.0))
    probe = LogisticProbe().fit(X, np.arange(len(X)) % 2)
    with pytest.raises(ValidationError, match="fitted on"):
        probe.predict_proba(X[:, :3])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LogisticProbe(C=1e6, max_iter=2).fit(X, np.arange(len(X)) % 2)
    assert any("before converging" in str(w.message) for w in caught)


def test_probe_on_unused_path_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ecgfm.ReadError):
        extract_embeddings(_encoder(), [tmp_path / "missing.hea"])
