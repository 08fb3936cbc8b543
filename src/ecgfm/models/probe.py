"""Linear probes: embeddings from a frozen encoder, and logistic regression on them.

:func:`extract_embeddings` runs an encoder (or a loaded portable :class:`~ecgfm.models.portable.Model`)
over records, files, a prepared tensor or a corpus store and returns the pooled pre-logits
features ``[N, D]``. :class:`LogisticProbe` fits L2-regularised logistic regression on them
(scikit-learn's estimator pattern and objective, without scikit-learn): binary, multinomial
multi-class, or one-vs-rest multi-label with missing labels.

>>> from ecgfm import load_model                                              # doctest: +SKIP
>>> model = load_model("models/default")                                      # doctest: +SKIP
>>> X = extract_embeddings(model, train_files)                                # doctest: +SKIP
>>> probe = LogisticProbe(C=0.1).fit(X, Y)          # Y [N, C] multi-hot, NaN = unknown  # doctest: +SKIP
>>> probe.predict_proba(extract_embeddings(model, test_files))               # doctest: +SKIP
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ecgfm.errors import ValidationError
from ecgfm.record import ECG

__all__ = ["LogisticProbe", "extract_embeddings"]


# ---------------------------------------------------------------------------------------------
# embeddings
# ---------------------------------------------------------------------------------------------
def extract_embeddings(
    model_or_encoder: Any,
    data: Any,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    pipeline: Any = None,
    window: float | None = None,
    split: str | None = None,
) -> np.ndarray:
    """Pooled pre-logits features ``[N, D]`` float32 of a frozen encoder, in input order.

    Args:
        model_or_encoder: a loaded :class:`~ecgfm.models.portable.Model` (its contract and
            pipeline are applied to records and files) or a registry encoder (``forward_features``
            + ``forward_head(..., pre_logits=True)``).
        data: one of
            - a list of paths and/or :class:`~ecgfm.ECG` records (with an encoder, each is passed
              through ``pipeline`` when given, else used as it is: same leads and length);
            - a tensor or array ``[N, L, T]`` already in the model's input form;
            - a corpus store (its folder, a :class:`~ecgfm.store.format.Corpus`, or a
              :class:`~ecgfm.store.dataset.CorpusDataset`): one window of ``window`` seconds
              (default: the model's contract, else whole records) per record of ``split``, cut
              where the model's pipeline crops (start or centre), with the store's lead mask.
              The store's rate must be the model's; a store whose pipeline is not the one the
              model was trained on gives a warning;
            - any torch ``Dataset`` whose items are dicts with ``signal`` ``[L, T]`` and
              optionally ``mask`` ``[L]``.
        batch_size: records per forward pass.
        device: where to run (default: where the encoder's parameters are).
        pipeline: preprocessing for records with a bare encoder (an ecgfm ``Pipeline``).
        window: window length in seconds for corpus stores.
        split: manifest split of a corpus store (``"train"``, ``"val"``, ``"test"``), or all.

    Returns:
        float32 ``[N, D]`` with ``D = encoder.num_features``.
    """
    from ecgfm.models.portable import Model

    model = model_or_encoder if isinstance(model_or_encoder, Model) else None
    encoder = model.encoder if model is not None else model_or_encoder
    if not (hasattr(encoder, "forward_features") and hasattr(encoder, "forward_head")):
        raise ValidationError(
            f"extract_embeddings: expected a loaded Model or an encoder with forward_features/"
            f"forward_head, got {type(model_or_encoder).__name__}"
        )
    if batch_size < 1:
        raise ValidationError(f"batch_size must be >= 1, got {batch_size}")
    if device is None:
        param = next(iter(encoder.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    batches = _batches(data, model, encoder, batch_size, pipeline, window, split)
    width = int(encoder.num_features)
    out: list[np.ndarray] = []
    was_training = encoder.training
    encoder.eval()
    uses_mask = bool(getattr(encoder, "supports_lead_mask", False))
    try:
        with torch.inference_mode():
            for signal, mask in batches:
                signal = signal.to(device, torch.float32)
                m = None if mask is None or not uses_mask else mask.to(device).bool()
                features = encoder.forward_features(signal, m)
                out.append(encoder.forward_head(features, pre_logits=True).float().cpu().numpy())
    finally:
        encoder.train(was_training)
    if not out:
        return np.zeros((0, width), np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def _batches(data: Any, model: Any, encoder: Any, batch_size: int, pipeline: Any,
             window: float | None, split: str | None) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    from torch.utils.data import DataLoader, Dataset

    if isinstance(data, (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(data, dtype=torch.float32)
        if x.ndim != 3:
            raise ValidationError(f"extract_embeddings: an array must be [N, L, T], got {tuple(x.shape)}")
        return ((x[i:i + batch_size], None) for i in range(0, len(x), batch_size))
    dataset = _as_corpus_dataset(data, model, window, split)
    if dataset is not None:
        from ecgfm.store.dataset import corpus_loader, to_float

        loader = corpus_loader(dataset, batch_size, shuffle=False, pad=False)
        return ((to_float(b)["signal"], b.get("mask")) for b in loader)
    if isinstance(data, Dataset):
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)
        return ((b["signal"], b.get("mask")) for b in loader)
    if isinstance(data, (str, os.PathLike, ECG)):
        data = [data]
    if isinstance(data, Iterable):
        return _record_batches(list(data), model, encoder, batch_size, pipeline)
    raise ValidationError(f"extract_embeddings: cannot read data of type {type(data).__name__}")


def _as_corpus_dataset(data: Any, model: Any, window: float | None, split: str | None) -> Any:
    """A CorpusDataset when ``data`` is a store (folder, Corpus or dataset), else None."""
    is_store_dir = isinstance(data, (str, os.PathLike)) and os.path.isdir(data) \
        and os.path.isfile(os.path.join(data, "store.json"))
    if not is_store_dir and type(data).__name__ not in ("Corpus", "CorpusDataset"):
        return None
    from ecgfm.preprocess.steps import CropOrPad
    from ecgfm.store.dataset import CorpusDataset
    from ecgfm.store.format import Corpus

    if isinstance(data, CorpusDataset):
        return data
    corpus = data if isinstance(data, Corpus) else Corpus.open(data)
    leads = None
    crop = "start"
    if model is not None:
        contract = model.input
        leads = contract.leads
        if window is None:
            window = contract.seconds
        if corpus.fs is not None and abs(corpus.fs - contract.fs) > 1e-6:
            raise ValidationError(
                f"{corpus.root}: store is at {corpus.fs:g} Hz but the model expects {contract.fs:g} Hz"
            )
        crops = [s for s in model.pipeline.steps if isinstance(s, CropOrPad)]
        if crops and crops[-1].mode in ("start", "center"):
            crop = crops[-1].mode  # cut windows where the model's own pipeline would
        stored = corpus.pipeline
        if stored is not None and not _same_preprocessing(stored, model):
            warnings.warn(
                f"{corpus.root}: the store was built with pipeline {stored.to_spec()!r}, which is "
                f"not how the model's inputs were made ({model.pipeline.to_spec()!r}); "
                "embeddings may not match the model's training",
                stacklevel=3,
            )
    return CorpusDataset(corpus, split=split, window=window, crop=crop, leads=leads)


def _same_preprocessing(stored: Any, model: Any) -> bool:
    """True when a store's pipeline is the one the model was trained on: recorded as
    ``training["store_pipeline_hash"]`` by ``ecgfm train``, or else a prefix of the model's
    pipeline (which adds the lead selection and window crop of training to the store's)."""
    trained_on = (model.training or {}).get("store_pipeline_hash")
    if trained_on:
        return stored.hash == trained_on
    steps = model.pipeline.steps
    return tuple(steps[: len(stored.steps)]) == tuple(stored.steps)


def _record_batches(items: Sequence[Any], model: Any, encoder: Any, batch_size: int,
                    pipeline: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    for start in range(0, len(items), batch_size):
        signals, masks = [], []
        for item in items[start:start + batch_size]:
            if model is not None:
                x, m = model.prepare(item)
            else:
                ecg = item if isinstance(item, ECG) else _read(item)
                if pipeline is not None:
                    ecg = pipeline(ecg)
                x = torch.from_numpy(ecg.signal)
                m = torch.from_numpy(np.ones(ecg.n_leads, bool) if ecg.mask is None else ecg.mask.any(axis=1))
            signals.append(x)
            masks.append(m)
        shapes = {tuple(x.shape) for x in signals}
        if len(shapes) > 1:
            raise ValidationError(
                f"extract_embeddings: records of different shapes {sorted(shapes)} in one batch; "
                "pass a pipeline that selects leads and crops to one window"
            )
        yield torch.stack(signals), torch.stack(masks)


def _read(path: Any) -> ECG:
    import ecgfm

    return ecgfm.read(path)


# ---------------------------------------------------------------------------------------------
# logistic regression
# ---------------------------------------------------------------------------------------------
class LogisticProbe:
    """L2-regularised logistic regression for linear probing (no scikit-learn needed).

    Minimises, like scikit-learn's ``LogisticRegression(penalty="l2", C=C)`` with the lbfgs
    solver (intercept not penalised)::

        0.5 * ||W||^2 + C * sum_i weight_i * loss_i

    with ``loss_i`` the logistic loss of a binary target, the softmax cross-entropy of a
    multi-class target, or, for a multi-label target ``[N, K]``, the sum over the K labels of
    independent logistic losses (one-vs-rest; NaN entries are unknown and left out of their
    label's sum). Solved with L-BFGS (``scipy.optimize``) in float64, all labels at once.

    Args:
        C: inverse regularisation strength (larger = weaker penalty).
        fit_intercept: learn a bias per output.
        max_iter: L-BFGS iteration limit.
        tol: stop when the largest gradient component falls below this (per-sample scale).
        class_weight: None, or ``"balanced"``: weight each record by ``n / (2 n_class)`` per
            label (binary, multi-label) or ``n / (K n_class)`` (multi-class), as scikit-learn.

    Learned attributes: ``coef_`` ``[K, D]`` (K = 1 for binary), ``intercept_`` ``[K]``,
    ``classes_`` (binary/multi-class targets), ``kind_`` (``"binary"``, ``"multiclass"`` or
    ``"multilabel"``), ``n_features_in_``, ``n_iter_``, ``converged_``.
    """

    def __init__(self, C: float = 1.0, *, fit_intercept: bool = True, max_iter: int = 1000,
                 tol: float = 1e-6, class_weight: str | None = None) -> None:
        if not C > 0:
            raise ValidationError(f"LogisticProbe: C must be > 0, got {C!r}")
        if class_weight not in (None, "balanced"):
            raise ValidationError(f"LogisticProbe: class_weight must be None or 'balanced', got {class_weight!r}")
        self.C = float(C)
        self.fit_intercept = bool(fit_intercept)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.class_weight = class_weight

    def __repr__(self) -> str:
        return f"LogisticProbe(C={self.C:g}, fit_intercept={self.fit_intercept}, class_weight={self.class_weight!r})"

    # -- fitting --------------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> LogisticProbe:
        """Fit on features ``X`` ``[N, D]`` and targets ``y``: ``[N]`` class labels (two
        classes: binary; more: multinomial) or ``[N, K]`` multi-hot 0/1 with NaN = unknown
        (multi-label). Returns self."""
        X = self._check_X(X, fitting=True)
        n = X.shape[0]
        y = np.asarray(y)
        if y.shape[0] != n:
            raise ValidationError(f"LogisticProbe: {y.shape[0]} targets for {n} rows of X")
        w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64).reshape(n)
        if (w < 0).any() or not np.isfinite(w).all():
            raise ValidationError("LogisticProbe: sample_weight must be finite and >= 0")
        if y.ndim == 2:
            self.kind_ = "multilabel"
            Y = y.astype(np.float64)
            observed = np.isfinite(Y)
            Y = np.where(observed, Y, 0.0)
            if ((Y != 0) & (Y != 1)).any():
                raise ValidationError("LogisticProbe: multi-label targets must be 0, 1 or NaN")
            W = observed * w[:, None]
            if self.class_weight == "balanced":
                W = W * _balanced_binary(Y, observed)
            self.classes_ = None
            coef, intercept = self._fit_binary(X, Y, W)
        elif y.ndim == 1:
            classes, index = np.unique(y, return_inverse=True)
            if len(classes) < 2:
                raise ValidationError(f"LogisticProbe: y has only one class ({classes[0]!r})")
            self.classes_ = classes
            if len(classes) == 2:
                self.kind_ = "binary"
                Y = index.astype(np.float64)[:, None]
                W = w[:, None] * (_balanced_binary(Y, np.ones_like(Y, bool)) if self.class_weight else 1.0)
                coef, intercept = self._fit_binary(X, Y, W)
            else:
                self.kind_ = "multiclass"
                if self.class_weight == "balanced":
                    counts = np.bincount(index, minlength=len(classes))
                    w = w * (n / (len(classes) * counts))[index]
                coef, intercept = self._fit_multinomial(X, index, w, len(classes))
        else:
            raise ValidationError(f"LogisticProbe: y must be [N] or [N, K], got shape {y.shape}")
        self.coef_ = coef
        self.intercept_ = intercept
        return self

    def _fit_binary(self, X: np.ndarray, Y: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """K independent logistic regressions (columns of Y, weights W, both [N, K]) at once."""
        d, k = X.shape[1], Y.shape[1]
        # Each label's objective is divided by its total weight (as scikit-learn scales by the
        # sample-weight sum), so one tolerance means the same for every label.
        scale = 1.0 / np.maximum(W.sum(axis=0), 1e-12)  # [K]
        Ws = W * scale
        penalty = scale / self.C  # [K]
        bias = self.fit_intercept

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            coef = theta[: d * k].reshape(d, k)
            z = X @ coef
            if bias:
                z = z + theta[d * k:]
            # log(1 + e^z) - y z, stably
            loss = np.logaddexp(0.0, z) - Y * z
            f = float((Ws * loss).sum() + 0.5 * (penalty * (coef ** 2)).sum())
            r = Ws * (_expit(z) - Y)  # [N, K]
            grad = X.T @ r + penalty * coef
            g = grad.ravel()
            if bias:
                g = np.concatenate([g, r.sum(axis=0)])
            return f, g

        theta = self._minimize(objective, np.zeros(d * k + (k if bias else 0)))
        coef = theta[: d * k].reshape(d, k).T.copy()
        intercept = theta[d * k:].copy() if bias else np.zeros(k)
        return coef, intercept

    def _fit_multinomial(self, X: np.ndarray, index: np.ndarray, w: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        from scipy.special import logsumexp, softmax

        n, d = X.shape
        Y = np.zeros((n, k))
        Y[np.arange(n), index] = 1.0
        ws = w / max(w.sum(), 1e-12)
        penalty = 1.0 / (self.C * max(w.sum(), 1e-12))
        bias = self.fit_intercept

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            coef = theta[: d * k].reshape(d, k)
            z = X @ coef
            if bias:
                z = z + theta[d * k:]
            lse = logsumexp(z, axis=1)
            f = float((ws * (lse - (Y * z).sum(axis=1))).sum() + 0.5 * penalty * (coef ** 2).sum())
            r = ws[:, None] * (softmax(z, axis=1) - Y)
            g = (X.T @ r + penalty * coef).ravel()
            if bias:
                g = np.concatenate([g, r.sum(axis=0)])
            return f, g

        theta = self._minimize(objective, np.zeros(d * k + (k if bias else 0)))
        coef = theta[: d * k].reshape(d, k).T.copy()
        intercept = theta[d * k:].copy() if bias else np.zeros(k)
        return coef, intercept

    def _minimize(self, objective: Any, x0: np.ndarray) -> np.ndarray:
        from scipy.optimize import minimize

        result = minimize(
            objective, x0, jac=True, method="L-BFGS-B",
            options={"maxiter": self.max_iter, "maxls": 50, "gtol": self.tol,
                     "ftol": 64 * np.finfo(float).eps},
        )
        self.n_iter_ = int(result.nit)
        self.converged_ = bool(result.success)
        if not result.success:
            warnings.warn(
                f"LogisticProbe: L-BFGS stopped before converging ({result.message}); raise "
                "max_iter, lower C, or standardise the features",
                stacklevel=3,
            )
        return result.x

    # -- prediction -----------------------------------------------------------------------------
    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Logits: ``[N]`` for binary targets, ``[N, K]`` otherwise."""
        self._check_fitted()
        z = self._check_X(X) @ self.coef_.T + self.intercept_
        return z[:, 0] if self.kind_ == "binary" else z

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities: ``[N, 2]`` (binary, columns follow ``classes_``), ``[N, K]`` softmax
        rows (multi-class), or ``[N, K]`` independent P(label) (multi-label)."""
        z = self.decision_function(X)
        if self.kind_ == "binary":
            p = _expit(z)
            return np.stack([1.0 - p, p], axis=1)
        if self.kind_ == "multiclass":
            from scipy.special import softmax

            return softmax(z, axis=1)
        return _expit(z)

    def predict(self, X: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        """Class labels ``[N]`` (binary, multi-class), or 0/1 ``[N, K]`` at ``threshold``
        (multi-label)."""
        proba = self.predict_proba(X)
        if self.kind_ == "multilabel":
            return (proba >= threshold).astype(np.int64)
        assert self.classes_ is not None
        return self.classes_[np.argmax(proba, axis=1)]

    # -- helpers --------------------------------------------------------------------------------
    def _check_X(self, X: Any, fitting: bool = False) -> np.ndarray:
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValidationError(f"LogisticProbe: X must be [N, D], got shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValidationError("LogisticProbe: X holds non-finite values")
        if fitting:
            if X.shape[0] < 2:
                raise ValidationError("LogisticProbe: need at least 2 rows to fit")
            self.n_features_in_ = X.shape[1]
        elif X.shape[1] != self.n_features_in_:
            raise ValidationError(
                f"LogisticProbe: X has {X.shape[1]} features, the probe was fitted on {self.n_features_in_}"
            )
        return X

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise ValidationError("LogisticProbe: call fit() first")


def _expit(z: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(z)


def _balanced_binary(Y: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """scikit-learn's "balanced" weights per binary column: ``n / (2 n_class)``."""
    n = observed.sum(axis=0)
    pos = (Y * observed).sum(axis=0)
    neg = n - pos
    w_pos = n / (2 * np.maximum(pos, 1))
    w_neg = n / (2 * np.maximum(neg, 1))
    return np.where(Y == 1, w_pos, w_neg)
