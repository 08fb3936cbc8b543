"""Training runs: :func:`train`, :func:`finetune` and :func:`embed`.

:func:`train` turns a :class:`~ecgfm.train.config.TrainConfig` into a Lightning run over a corpus
store and leaves this in ``out_dir``::

    out_dir/config.yaml                     the resolved configuration (label ids spelled out)
    out_dir/checkpoints/last.ckpt           the latest state (every N steps, each validation, the end)
    out_dir/checkpoints/best-*.ckpt         the best by trainer.monitor
    out_dir/logs/csv/version_K/metrics.csv  per-step training and per-validation metrics
    out_dir/logs/tensorboard/version_K/     the same for TensorBoard (when it is installed)
    out_dir/model/                          the best weights as a portable model (ecgfm.load_model)

**Exact resume.** ``resume="auto"`` (or a ``.ckpt`` path) continues a run from its checkpoint
so that the rest of the run is the run that was interrupted: Lightning restores the weights,
optimizer, schedule, loop counters and callbacks; :class:`ResumableLoader` restores the data
order (the sampler's epoch and how many batches of the epoch were consumed: the epoch's
remaining batches are the ones the uninterrupted run would have drawn, because every crop and
augmentation is a function of ``(seed, epoch, record, window)``); and
:class:`~ecgfm.train.module.SupervisedModule` restores the global random states (dropout).
The DataLoaders draw their worker seeds from generators of their own, so nothing between two
training steps consumes the global random streams.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from ecgfm.errors import ValidationError
from ecgfm.models.heads import SURVIVAL_HEADS, HeadSpec
from ecgfm.store.dataset import CorpusDataset, EpochBatchSampler, ShardedSampler, collate
from ecgfm.store.format import Corpus
from ecgfm.train.config import TrainConfig, load_config, parse_label_set, save_config
from ecgfm.train.module import SupervisedModule, export_model

__all__ = [
    "LastCheckpoint", "ResumableBatchSampler", "ResumableLoader", "RunData", "RunParts", "build", "embed",
    "export_pipeline", "finetune", "resolve_labels", "train",
]

CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"


# ---------------------------------------------------------------------------------------------
# a train loader whose position can be saved and restored
# ---------------------------------------------------------------------------------------------
class ResumableBatchSampler(Sampler):
    """An :class:`~ecgfm.store.dataset.EpochBatchSampler` that can skip the first ``skip``
    batches of its next pass (indices only: the skipped batches are never read).

    ``sampler`` is the inner index sampler, so Lightning's per-epoch ``set_epoch`` reaches it.
    """

    def __init__(self, inner: EpochBatchSampler) -> None:
        self.inner = inner
        self.sampler = inner.sampler
        self.batch_size = inner.batch_size
        self.drop_last = inner.drop_last
        self.skip = 0

    @property
    def epoch(self) -> int:
        """The epoch of the next pass (that of the inner sampler)."""
        return int(getattr(self.sampler, "epoch", self.inner.epoch))

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[Any]:
        skip, self.skip = self.skip, 0
        batches = iter(self.inner)
        for _ in range(skip):
            if next(batches, None) is None:
                return
        yield from batches


class ResumableLoader(DataLoader):
    """The training DataLoader: counts the batches it hands out and saves its place.

    Lightning calls :meth:`state_dict` when it writes a checkpoint and :meth:`load_state_dict`
    before it iterates again after a resume; the state is ``{"epoch", "batches"}`` (batches of
    that epoch already consumed). After loading, the next pass starts in that epoch with those
    batches skipped (a finished epoch resumes at the start of the next one).
    """

    batch_sampler: ResumableBatchSampler

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delivered = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        self.delivered = self.batch_sampler.skip
        for batch in super().__iter__():
            self.delivered += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.batch_sampler.epoch, "batches": int(self.delivered)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches >= len(self):
            epoch, batches = epoch + 1, 0
        self.batch_sampler.set_epoch(epoch)
        self.batch_sampler.skip = batches
        self.delivered = batches


def _loader(dataset: CorpusDataset, batch_size: int, *, train: bool, num_workers: int, seed: int,
            pin_memory: bool) -> DataLoader:
    """Like :func:`ecgfm.store.dataset.corpus_loader`, with its own generator for worker seeds.

    Training: shuffled, padded across ranks, incomplete last batch dropped, resumable.
    Evaluation: in order, every item once across ranks.
    """
    sampler = ShardedSampler(dataset, shuffle=train, seed=seed, pad=train)
    sampler.set_epoch(0)
    batches: Any = EpochBatchSampler(sampler, batch_size, drop_last=train)
    generator = torch.Generator().manual_seed(int(seed))  # not the global stream: see the module doc
    common = dict(num_workers=num_workers, collate_fn=collate, pin_memory=pin_memory,
                  persistent_workers=num_workers > 0, generator=generator)
    if train:
        return ResumableLoader(dataset, batch_sampler=ResumableBatchSampler(batches), **common)
    return DataLoader(dataset, batch_sampler=batches, **common)


# ---------------------------------------------------------------------------------------------
# labels
# ---------------------------------------------------------------------------------------------
def _ids(value: Any) -> list[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(";") if v.strip()]
    return [str(v) for v in value]


def _label_sets(corpus: Corpus, columns: Sequence[str]) -> list[list[str]]:
    """Label ids per manifest row, from ``columns`` (ids from a column other than ``labels`` are
    prefixed ``"<column>:"``)."""
    m = corpus.manifest
    missing = [c for c in columns if c not in m.columns]
    if missing:
        raise ValidationError(f"{corpus.root}: data.label_columns names column(s) {missing} the manifest lacks "
                              f"(columns: {list(m.columns)})")
    rows: list[list[str]] = [[] for _ in range(len(m))]
    for c in columns:
        prefix = "" if c == "labels" else f"{c}:"
        for i, value in enumerate(m[c].tolist()):
            rows[i].extend(prefix + v for v in _ids(value))
    return [list(dict.fromkeys(r)) for r in rows]


def with_label_columns(corpus: Corpus, columns: Sequence[str]) -> Corpus:
    """``corpus`` whose manifest ``labels`` column holds the ids of all ``columns`` (prefixed
    ``"<column>:"`` for columns other than ``labels``), as a run with ``data.label_columns``
    sees it; the same object when ``columns`` is just ``labels``."""
    if tuple(columns) == ("labels",):
        return corpus
    manifest = corpus.manifest.copy()
    manifest["labels"] = _label_sets(corpus, columns)
    return Corpus(corpus.root, corpus.info, manifest)


def with_overrides(corpus: Corpus, path: str | os.PathLike[str] | None) -> Corpus:
    """``corpus`` whose manifest takes, for the records listed in ``path``, the values of that
    file's other columns (the store itself is not touched).

    ``path`` is a CSV or Parquet table with a ``record_id`` column: e.g. ``split`` to refit on
    other folds (records given an empty split or ``"none"`` leave every split), or ``labels`` (and
    any label column) holding the labels after re-annotation, ";"-separated in a CSV. Columns the
    manifest lacks are added (missing for the records not listed).

    Raises:
        ReadError: the file is missing or unreadable, has no ``record_id`` column, repeats a
            record, or lists records the store does not have.
    """
    if path is None:
        return corpus
    import pandas as pd

    from ecgfm.errors import ReadError

    p = Path(path)
    table = read_overrides(p)
    ids = table["record_id"].astype(str)
    if ids.duplicated().any():
        raise ReadError(p, f"record(s) listed twice: {sorted(set(ids[ids.duplicated()]))[:5]}")
    manifest = corpus.manifest.copy()
    where = pd.Index(manifest["record_id"].astype(str)).get_indexer(ids)
    if (where < 0).any():
        raise ReadError(p, f"{int((where < 0).sum())} record(s) are not in the store {corpus.root}, "
                           f"e.g. {list(ids[where < 0][:5])}")
    for column in table.columns.drop("record_id"):
        values = table[column].tolist()
        if column == "split":
            values = [None if v is None or str(v).strip().lower() in ("", "none", "nan") else str(v)
                      for v in values]
        elif column == "labels":
            values = [_ids(v) for v in values]
        if column not in manifest.columns:
            manifest[column] = None
        column_values = manifest[column].astype(object).tolist()
        for row, value in zip(where, values):
            column_values[row] = value
        manifest[column] = column_values
    return Corpus(corpus.root, corpus.info, manifest)


def read_overrides(path: str | os.PathLike[str]) -> Any:
    """The table of a ``data.overrides`` file (a pandas DataFrame; a CSV is read as strings).

    Raises:
        ReadError: the file is missing or unreadable, or has no ``record_id`` column.
    """
    import pandas as pd

    from ecgfm.errors import ReadError

    p = Path(path)
    try:
        table = pd.read_parquet(p) if p.suffix.lower() in (".parquet", ".pq") else pd.read_csv(
            p, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise ReadError(p, f"cannot read the manifest overrides: {error}") from None
    if "record_id" not in table.columns:
        raise ReadError(p, f"manifest overrides need a record_id column (columns: {list(table.columns)})")
    return table


# ---------------------------------------------------------------------------------------------
# survival outcomes
# ---------------------------------------------------------------------------------------------
_MISSING = {"", "na", "nan", "none", "null", "<na>", "nat"}
_BOOL = {"true": 1.0, "false": 0.0, "yes": 1.0, "no": 0.0}


def _outcome(corpus: Corpus, column: str, key: str, overrides: Any, overrides_path: str | None) -> np.ndarray:
    """A manifest column of follow-up times (``key="time_column"``) or event indicators
    (``"event_column"``) as float64 ``[N]``, NaN where missing (empty, NA, None).

    Raises:
        ValidationError: the column is absent, or a value is not a number, a time is negative or
            infinite, an event is not 0/1; naming the file the value came from (``data.overrides``
            or the store's manifest), the column and the record.
    """
    m = corpus.manifest
    manifest_file = f"{corpus.root}/manifest.parquet"
    from_file = overrides is not None and column in overrides.columns
    if column not in m.columns:
        extra = (f" nor of data.overrides {overrides_path} (columns: {list(overrides.columns)})"
                 if overrides is not None else " (join outcomes with data.overrides: a CSV of record_id, "
                                                 f"{column}, ...)")
        raise ValidationError(f"{manifest_file}: data.{key} {column!r} is not a column of the store manifest"
                              f"{extra}; manifest columns: {list(m.columns)}")
    listed = set(overrides["record_id"].astype(str)) if from_file else set()
    ids = m["record_id"].astype(str).tolist()

    def where(i: int) -> str:
        return str(overrides_path) if ids[i] in listed else manifest_file

    out = np.full(len(m), np.nan)
    for i, v in enumerate(m[column].tolist()):
        if v is None:
            continue
        if isinstance(v, (bool, np.bool_)):
            out[i] = float(v)
            continue
        if isinstance(v, (int, float, np.integer, np.floating)):
            out[i] = float(v)  # NaN stays missing
            continue
        text = str(v).strip().lower()
        if text in _MISSING:
            continue
        if key == "event_column" and text in _BOOL:
            out[i] = _BOOL[text]
            continue
        try:
            out[i] = float(text)
        except ValueError:
            raise ValidationError(f"{where(i)}: column {column!r} (data.{key}), record {ids[i]}: {v!r} is not a "
                                  "number") from None
    known = ~np.isnan(out)
    if key == "time_column":
        bad = known & (~np.isfinite(out) | (out < 0))
        what = "follow-up times must be finite and >= 0"
    else:
        bad = known & (out != 0) & (out != 1)
        what = "event indicators must be 0 (censored) or 1 (event)"
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValidationError(f"{where(i)}: column {column!r} (data.{key}), record {ids[i]}: {what}, got "
                              f"{m[column].iloc[i]!r} ({int(bad.sum())} such record(s))")
    return out


def survival_targets(corpus: Corpus, d: Any) -> tuple[Corpus, np.ndarray, dict[str, Any]]:
    """The outcomes of a survival run, and the corpus without the records that lack them.

    Args:
        corpus: the store (after ``data.overrides``).
        d: the run's :class:`~ecgfm.train.config.DataConfig` (``time_column``, ``event_column``,
            ``overrides``).

    Returns:
        ``(corpus, targets, info)``: the corpus whose records with a missing time or event are in
        no split (so no dataset sees them), ``targets`` float64 ``[N_records, 2]`` = (time, event)
        per manifest row (NaN where missing), and ``info`` = ``{"excluded": {split: n}, "known":
        {split: n}, "events": {split: n}}``. The exclusion is warned about with its counts.
    """
    overrides = read_overrides(d.overrides) if d.overrides else None
    time = _outcome(corpus, d.time_column, "time_column", overrides, d.overrides)
    event = _outcome(corpus, d.event_column, "event_column", overrides, d.overrides)
    missing = np.isnan(time) | np.isnan(event)
    m = corpus.manifest
    splits = m["split"].astype(object).where(m["split"].notna(), None).tolist() if "split" in m.columns \
        else [None] * len(m)
    info: dict[str, Any] = {"excluded": {}, "known": {}, "events": {}}
    for s, miss, ev in zip(splits, missing, event):
        if s is None:
            continue
        s = str(s)
        if miss:
            info["excluded"][s] = info["excluded"].get(s, 0) + 1
        else:
            info["known"][s] = info["known"].get(s, 0) + 1
            info["events"][s] = info["events"].get(s, 0) + int(ev)
    if missing.any():
        counts = ", ".join(f"{s} {n}" for s, n in sorted(info["excluded"].items())) or "none in a split"
        warnings.warn(f"{d.store}: {int(missing.sum())} record(s) have no {d.time_column!r}/{d.event_column!r} "
                      f"value and are left out of every split ({counts})", stacklevel=3)
        manifest = m.copy()
        manifest["split"] = [None if miss else s for s, miss in zip(splits, missing)]
        corpus = Corpus(corpus.root, corpus.info, manifest)
    targets = np.stack([time, event], axis=1)
    return corpus, targets, info


def _survival_head(cfg: TrainConfig, corpus: Corpus, targets: np.ndarray) -> tuple[HeadSpec, tuple[float, ...]]:
    """The head of a survival run and its cuts (discrete_hazard), with horizons resolved on the
    training split."""
    from ecgfm.models.heads import cox_head, discrete_hazard_head
    from ecgfm.models.survival import default_cuts, default_horizons

    d = cfg.data
    m = corpus.manifest
    rows = np.flatnonzero(m["split"].to_numpy() == d.train_split) if "split" in m.columns else np.zeros(0, int)
    t, e = targets[rows, 0].astype(np.float64), targets[rows, 1] == 1
    if not e.any():
        raise ValidationError(f"{d.store}: no event ({d.event_column} = 1) among the {rows.size} records of split "
                              f"{d.train_split!r}; a survival head cannot learn from it")
    horizons = tuple(float(h) for h in d.horizons) or default_horizons(t, e)
    if max(horizons) > t.max():
        warnings.warn(f"data.horizons: {max(horizons):g} is beyond the largest training follow-up time "
                      f"{t.max():g}; figures there are unknown (NaN) or extrapolated", stacklevel=3)
    common = dict(time_unit=d.time_unit, horizons=list(horizons), time_column=d.time_column,
                  event_column=d.event_column)
    if cfg.model.head == "cox":
        return cox_head(d.event_column, **common), ()
    if d.survival_cuts:
        cuts = np.asarray(d.survival_cuts, np.float64)
        if (t[e] < cuts[0]).any():
            raise ValidationError(f"data.survival_cuts: training events at time {t[e].min():g} come before the "
                                  f"first edge {cuts[0]:g} (start the cuts at 0)")
    else:
        try:
            cuts = default_cuts(t, e, d.survival_bins, [h for h in horizons if h <= t.max()])
        except ValidationError as error:
            raise ValidationError(f"{d.store}: data.survival_cuts: {error}") from None
    head = discrete_hazard_head(cuts, d.event_column, **common)
    return head, tuple(float(c) for c in cuts)


def resolve_labels(corpus: Corpus, labels: tuple[str, ...] | str, columns: Sequence[str] = ("labels",),
                   train_split: str = "train") -> tuple[str, ...]:
    """The label ids of a run: the explicit ids, ``"all"`` (every id in the store, sorted) or
    ``"min_positives:N"`` (ids with at least N records in ``train_split``, sorted)."""
    spec = parse_label_set(labels)
    sets = _label_sets(corpus, columns)
    if spec and spec[0] in ("all", "min_positives") and len(spec) == 2 and isinstance(spec[1], int):
        kind, n = spec
        if kind == "all":
            return tuple(sorted({i for r in sets for i in r}))
        splits = corpus.manifest["split"].tolist() if "split" in corpus.manifest.columns else [None] * len(sets)
        counts: dict[str, int] = {}
        for r, s in zip(sets, splits):
            if s == train_split:
                for i in r:
                    counts[i] = counts.get(i, 0) + 1
        ids = tuple(sorted(i for i, c in counts.items() if c >= n))
        if not ids:
            raise ValidationError(f"{corpus.root}: no label has {n} or more records in split {train_split!r}")
        return ids
    ids = tuple(str(i) for i in spec)
    known = {i for r in sets for i in r}
    absent = [i for i in ids if i not in known]
    if absent:
        warnings.warn(f"{corpus.root}: label(s) {absent[:10]} occur in no record of the store", stacklevel=2)
    return ids


def _label_matrix(sets: Sequence[Sequence[str]], rows: np.ndarray, ids: Sequence[str]) -> np.ndarray:
    pos = {k: j for j, k in enumerate(ids)}
    y = np.zeros((len(rows), len(ids)), np.float32)
    for n, r in enumerate(rows):
        for i in sets[int(r)]:
            if i in pos:
                y[n, pos[i]] = 1.0
    return y


# ---------------------------------------------------------------------------------------------
# building a run
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RunParts:
    """Everything :func:`build` makes from a config (what :func:`train` then fits)."""

    config: TrainConfig  # resolved: explicit label ids, the init checkpoint's encoder name
    corpus: Corpus
    train_set: CorpusDataset
    val_set: CorpusDataset
    test_set: CorpusDataset | None
    data: RunData  # the loaders, made when Lightning asks (after DDP has set up its ranks)
    module: SupervisedModule
    label_ids: tuple[str, ...]
    leads: tuple[str, ...]
    survival: dict[str, Any] | None = None  # survival heads: records left out / known / events per split, horizons, cuts


def _augmentation(specs: Sequence[Mapping[str, Any]], leads: Sequence[str]) -> Any:
    if not specs:
        return None
    from ecgfm.store import augment as aug

    names = [n for n in aug.__all__ if n not in ("Augmentation", "Compose")]
    out = []
    for i, spec in enumerate(specs):
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.items() if k != "name"}
        name = spec["name"]
        if name not in names:
            raise ValidationError(f"data.augment[{i}]: unknown augmentation {name!r} (known: {', '.join(names)})")
        if name == "RandomLeadSubset":
            kw.setdefault("leads", tuple(leads))
            if "subsets" in kw:
                kw["subsets"] = tuple(tuple(s) for s in kw["subsets"])
            else:
                kw["subsets"] = aug.RandomLeadSubset.CINC2021
        try:
            out.append(getattr(aug, name)(**kw))
        except TypeError as exc:
            raise ValidationError(f"data.augment[{i}] ({name}): {exc}") from None
    return out[0] if len(out) == 1 else aug.Compose(out)


def _load_init(path: str) -> tuple[Any, HeadSpec | None, dict[str, Any]]:
    """(encoder, head, info) from a portable model folder or a Lightning checkpoint of this module."""
    p = Path(path)
    if p.is_dir() or p.name == "config.json":
        from ecgfm.models.portable import load_model

        model = load_model(p)
        info = {"source": str(p), "kind": "portable", "encoder": model.config.get("encoder"),
                "pipeline_hash": model.pipeline.hash}
        return model.encoder, model.head, info
    if not p.is_file():
        raise ValidationError(f"{p}: model.init is neither a portable model folder nor a checkpoint file")
    ckpt = torch.load(p, map_location="cpu", weights_only=True)
    meta = ckpt.get("ecgfm") if isinstance(ckpt, dict) else None
    if not meta or "encoder" not in meta:
        raise ValidationError(f"{p}: not a checkpoint written by ecgfm train (no 'ecgfm' section)")
    from ecgfm.models.registry import create_encoder

    encoder = create_encoder(meta["encoder"], **meta["encoder_config"])
    state = {k[len("encoder."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("encoder.")}
    encoder.load_state_dict(state, strict=True)
    head = HeadSpec.from_dict(meta["head"]) if meta.get("head") else None
    info = {"source": str(p), "kind": "checkpoint", "encoder": meta["encoder"],
            "pipeline_hash": meta.get("pipeline_hash")}
    return encoder, head, info


class RunData(L.LightningDataModule):
    """The run's loaders, built on request: Lightning asks for them inside ``fit`` once the DDP
    process group exists, so each rank's sampler takes its own share (rank and world size are
    read when a loader is made)."""

    def __init__(self, train_set: CorpusDataset, val_set: CorpusDataset, test_set: CorpusDataset | None,
                 batch_size: int, eval_batch_size: int, num_workers: int, seed: int, pin_memory: bool, *,
                 train_eval_set: CorpusDataset | None = None) -> None:
        super().__init__()
        self.train_set, self.val_set, self.test_set = train_set, val_set, test_set
        self.train_eval_set = train_eval_set  # the training split cropped as validation is (Cox baseline)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.kw = dict(num_workers=num_workers, seed=seed, pin_memory=pin_memory)

    def train_dataloader(self) -> DataLoader:
        return _loader(self.train_set, self.batch_size, train=True, **self.kw)

    def val_dataloader(self) -> DataLoader:
        return _loader(self.val_set, self.eval_batch_size, train=False, **self.kw)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise ValidationError("no test split configured (data.test_split)")
        return _loader(self.test_set, self.eval_batch_size, train=False, **self.kw)

    def train_eval_dataloader(self) -> DataLoader:
        """The training records in order, cropped as validation crops them (no augmentation)."""
        if self.train_eval_set is None:
            raise ValidationError("no training-evaluation set (only Cox runs make one)")
        return _loader(self.train_eval_set, self.eval_batch_size, train=False, **self.kw)

    def batches_per_epoch(self, world_size: int) -> int:
        """Training batches per epoch and rank (ranks are padded to equal size; the last
        incomplete batch is dropped)."""
        return math.ceil(len(self.train_set) / max(world_size, 1)) // self.batch_size


def total_steps(cfg: TrainConfig, batches_per_epoch: int) -> int:
    """Optimizer steps of the whole run (as Lightning counts them: a partial accumulation window
    at the end of an epoch still steps)."""
    t = cfg.trainer
    per_epoch = math.ceil(batches_per_epoch / t.accumulate_grad_batches)
    by_epochs = per_epoch * t.max_epochs if t.max_epochs >= 0 else None
    if t.max_steps >= 0:
        return max(1, t.max_steps if by_epochs is None else min(t.max_steps, by_epochs))
    return max(1, int(by_epochs or 1))


def eval_windows(d: Any, fs: float) -> tuple[int, int, str] | None:
    """``(window, stride, aggregate)`` in samples when validation scores sliding windows
    (``data.eval_window`` longer than ``data.window``), else None (also with
    ``eval_aggregate="none"``: the encoder sees the whole evaluation window at once)."""
    if d.eval_window is None or d.window is None or d.eval_window <= d.window or d.eval_aggregate == "none":
        return None
    if fs is None:
        raise ValidationError(f"{d.store}: data.eval_window needs a store of one sampling rate")
    window = round(d.window * fs)
    stride = round((d.eval_stride or d.window / 2) * fs)
    return window, max(stride, 1), d.eval_aggregate


def build(config: TrainConfig) -> RunParts:
    """Datasets, loaders and the module of a run (no Trainer); seeds everything first."""
    cfg, d, m = config, config.data, config.model
    if not d.store:
        raise ValidationError("data.store: give the corpus store folder (data.store=PATH)")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    corpus = with_overrides(Corpus.open(d.store), d.overrides)
    record_targets = None
    survival: dict[str, Any] | None = None
    head: HeadSpec | None = None
    if m.head in SURVIVAL_HEADS:
        # Survival targets are (time, event) manifest columns; records lacking either leave every split.
        corpus, record_targets, survival = survival_targets(corpus, d)
        head, cuts = _survival_head(cfg, corpus, record_targets)
        label_ids = head.label_ids
        sets = [[] for _ in range(len(corpus))]
        dataset_labels = None
        survival["horizons"] = list(head.extra["horizons"])
        if cuts:
            survival["cuts"] = list(cuts)
        d = dataclasses.replace(d, horizons=tuple(head.extra["horizons"]), survival_cuts=cuts)
        cfg = dataclasses.replace(cfg, data=d)
    elif m.head == "regression":
        # Regression targets are numeric manifest columns (e.g. age), named in data.labels.
        if isinstance(d.labels, str):
            raise ValidationError("data.labels: a regression head needs the manifest's numeric target "
                                  "columns as a list, e.g. data.labels=[age]")
        label_ids = tuple(d.labels)
        absent = [c for c in label_ids if c not in corpus.manifest.columns]
        if absent:
            raise ValidationError(f"{d.store}: regression target column(s) {absent} are not in the manifest "
                                  f"(columns: {list(corpus.manifest.columns)})")
        import pandas as pd

        record_targets = np.stack([pd.to_numeric(corpus.manifest[c], errors="coerce").to_numpy(np.float64)
                                   for c in label_ids], axis=1).astype(np.float32)
        sets = [[] for _ in range(len(corpus))]
        dataset_labels: tuple[str, ...] | None = None
    else:
        sets = _label_sets(corpus, d.label_columns)
        label_ids = resolve_labels(corpus, d.labels, d.label_columns, d.train_split)
        dataset_labels = label_ids
    if record_targets is None:
        # The dataset reads labels from the manifest's "labels" column: give it the merged sets.
        corpus = with_label_columns(corpus, d.label_columns)
    if head is None:
        head = HeadSpec(m.head, len(label_ids), label_ids=label_ids)
    leads = tuple(d.leads) if d.leads is not None else corpus.leads
    common = dict(leads=leads, label_ids=dataset_labels, seed=cfg.seed)
    train_set = CorpusDataset(corpus, split=d.train_split, crop=d.train_crop, window=d.window,
                              augment=_augmentation(d.augment, leads), **common)
    eval_window = d.eval_window or d.window
    val_set = CorpusDataset(corpus, split=d.val_split, crop=d.eval_crop, window=eval_window, **common)
    test_set = (CorpusDataset(corpus, split=d.test_split, crop=d.eval_crop, window=eval_window, **common)
                if d.test_split else None)
    if len(train_set) < d.batch_size:
        raise ValidationError(f"{d.store}: split {d.train_split!r} has {len(train_set)} windows, fewer than "
                              f"one batch ({d.batch_size}); lower data.batch_size")
    # the training records as validation sees them (the Cox baseline hazard is estimated on them)
    train_eval = (CorpusDataset(corpus, split=d.train_split, crop=d.eval_crop, window=eval_window, **common)
                  if m.head == "cox" else None)
    data = RunData(train_set, val_set, test_set, d.batch_size, d.eval_batch_size or d.batch_size,
                   d.num_workers, cfg.seed, d.pin_memory, train_eval_set=train_eval)

    init_info: dict[str, Any] | None = None
    if m.init:
        encoder, old_head, init_info = _load_init(m.init)
        if int(encoder.in_leads) != len(leads):
            raise ValidationError(f"{m.init}: the model takes {encoder.in_leads} leads, the data gives "
                                  f"{len(leads)} ({', '.join(leads)})")
        same = old_head is not None and old_head.type == head.type and tuple(old_head.label_ids) == label_ids \
            and old_head.extra.get("cuts") == head.extra.get("cuts")
        if not same:
            encoder.reset_head(head.num_outputs)
        init_info["head_reset"] = not same
        if m.encoder != init_info["encoder"]:
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(m, encoder=str(init_info["encoder"])))
    else:
        from ecgfm.models.registry import create_encoder

        encoder = create_encoder(m.encoder, **{"in_leads": len(leads), "num_outputs": head.num_outputs,
                                               **m.encoder_args})
        if int(encoder.num_outputs) != head.num_outputs or int(encoder.in_leads) != len(leads):
            raise ValidationError(f"model.encoder_args: in_leads/num_outputs are set from the data "
                                  f"({len(leads)} leads, {head.num_outputs} labels); leave them out")
    loss_args = dict(m.loss_args)
    if str(loss_args.get("pos_weight", "")) == "auto":
        from ecgfm.objectives.supervised import pos_weight_from_labels

        y = _label_matrix(sets, train_set.rows, label_ids)
        loss_args["pos_weight"] = pos_weight_from_labels(y, float(loss_args.pop("max_pos_weight", 100.0)))
    from ecgfm.objectives.supervised import create_loss

    if m.head == "discrete_hazard":
        loss_args.setdefault("bin_edges", head.extra["cuts"])
    loss = create_loss(m.head, m.loss, **loss_args)
    if m.head not in SURVIVAL_HEADS:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(d, labels=label_ids))
    pipeline = corpus.pipeline
    meta = {
        "config": cfg.to_dict(), "encoder": getattr(encoder, "encoder_name", None) or m.encoder,
        "encoder_config": json.loads(json.dumps(dataclasses.asdict(encoder.config), default=list)),
        "label_ids": list(label_ids), "leads": list(leads), "store": str(d.store),
        "pipeline_hash": None if pipeline is None else pipeline.hash, "init": init_info,
    }
    module = SupervisedModule(encoder, head, loss, cfg.optim, freeze=m.freeze, meta=meta)
    module.eval_windows = eval_windows(d, corpus.fs)
    if record_targets is not None:
        module.set_record_targets(record_targets)
    # The schedule's length: Lightning's estimated_stepping_batches would set up the train loader
    # before a resume restores its position (which then never reaches it), so count here.
    module.schedule_steps = lambda world_size: total_steps(cfg, data.batches_per_epoch(world_size))
    return RunParts(cfg, corpus, train_set, val_set, test_set, data, module, label_ids, leads, survival)


# ---------------------------------------------------------------------------------------------
# callbacks
# ---------------------------------------------------------------------------------------------
class LastCheckpoint(L.Callback):
    """Writes ``last.ckpt`` every ``every_n_steps`` optimizer steps, after every validation and at
    the end of training (atomically: a crash mid-write leaves the previous one)."""

    def __init__(self, path: str | Path, every_n_steps: int | None = None) -> None:
        self.path = Path(path)
        self.every_n_steps = every_n_steps
        self._saved_step = -1

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking or trainer.global_step == self._saved_step:
            return
        self._saved_step = trainer.global_step
        tmp = self.path.with_name(self.path.name + ".tmp")
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero and tmp.exists():
            os.replace(tmp, self.path)
        trainer.strategy.barrier("last_checkpoint")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        n = self.every_n_steps
        if n and trainer.global_step > 0 and trainer.global_step % n == 0:
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"saved_step": self._saved_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._saved_step = int(state.get("saved_step", -1))


def _progress_bar(kind: str) -> Any:
    if kind == "none":
        return None
    if kind in ("rich", "auto"):
        try:
            import rich  # noqa: F401
            from lightning.pytorch.callbacks import RichProgressBar

            return RichProgressBar()
        except ImportError:
            if kind == "rich":
                raise ValidationError("trainer.progress=rich needs the 'rich' package") from None
    from lightning.pytorch.callbacks import TQDMProgressBar

    return TQDMProgressBar()


def _loggers(cfg: TrainConfig, out: Path) -> list[Any]:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers: list[Any] = []
    for name in cfg.trainer.loggers:
        if name == "csv":
            loggers.append(CSVLogger(save_dir=str(out / "logs"), name="csv"))
        elif name == "tensorboard":
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                try:
                    import tensorboardX  # noqa: F401
                except ImportError:
                    warnings.warn("trainer.loggers: tensorboard is not installed; TensorBoard logs skipped", stacklevel=3)
                    continue
            loggers.append(TensorBoardLogger(save_dir=str(out / "logs"), name="tensorboard"))
    return loggers


def _trainer(cfg: TrainConfig, out: Path, callbacks: Sequence[Any]) -> tuple[L.Trainer, Any]:
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

    t = cfg.trainer
    ckpt_dir = out / CHECKPOINTS
    best = ModelCheckpoint(dirpath=str(ckpt_dir), filename="best-epoch{epoch:03d}-step{step:06d}",
                           auto_insert_metric_name=False, monitor=t.monitor, mode=t.monitor_mode,
                           save_top_k=t.save_top_k, save_last=False)
    cbs: list[Any] = [best, LastCheckpoint(ckpt_dir / LAST, t.checkpoint_every_n_steps)]
    loggers = _loggers(cfg, out)
    if loggers:
        cbs.append(LearningRateMonitor(logging_interval="step"))
    if t.early_stopping_patience is not None:
        # check_finite=False: a validation set where no label has both classes gives NaN, not a stop
        cbs.append(EarlyStopping(monitor=t.monitor, mode=t.monitor_mode, patience=t.early_stopping_patience,
                                 check_finite=False, strict=False))
    bar = _progress_bar(t.progress)
    if bar is not None:
        cbs.append(bar)
    cbs.extend(callbacks)
    trainer = L.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
        precision=t.precision, max_epochs=t.max_epochs, max_steps=t.max_steps,
        accumulate_grad_batches=t.accumulate_grad_batches, gradient_clip_val=t.gradient_clip_val,
        deterministic=t.deterministic, val_check_interval=t.val_check_interval,
        log_every_n_steps=t.log_every_n_steps, num_sanity_val_steps=t.num_sanity_val_steps,
        callbacks=cbs, logger=loggers or False, enable_progress_bar=bar is not None,
        enable_model_summary=t.progress != "none", use_distributed_sampler=False,
        default_root_dir=str(out),
    )
    return trainer, best


# ---------------------------------------------------------------------------------------------
# train / finetune
# ---------------------------------------------------------------------------------------------
def export_pipeline(store_pipeline: Any, *, window: float | None, leads: Sequence[str], store_leads: Sequence[str],
                    eval_crop: str = "center") -> Any:
    """The preprocessing of a raw record into what the model saw at evaluation: the store's
    pipeline, then the lead selection of the run (when it differs from the store's leads), then
    a crop to the window (``center``, as validation crops, unless ``eval_crop="start"``) when the
    store's records are longer than it."""
    from ecgfm.preprocess import Pipeline
    from ecgfm.preprocess.steps import CropOrPad, SelectLeads

    if store_pipeline is None:
        raise ValidationError("the store records no preprocessing pipeline; a portable model needs one")
    steps = list(store_pipeline.steps)
    if tuple(leads) != tuple(store_leads):
        steps.append(SelectLeads(leads=tuple(leads), derive=False, missing="mask"))
    stored_seconds = None
    for step in steps:
        if isinstance(step, CropOrPad):
            stored_seconds = step.seconds
    if window is not None and (stored_seconds is None or abs(stored_seconds - window) > 1e-9):
        steps.append(CropOrPad(seconds=float(window), mode="start" if eval_crop == "start" else "center"))
    return Pipeline(tuple(steps))


def _resume_path(cfg: TrainConfig, out: Path) -> str | None:
    last = out / CHECKPOINTS / LAST
    if cfg.resume is None:
        if last.exists():
            raise ValidationError(f"{out}: already holds a run ({last}); pass resume=auto to continue it, "
                                  "or choose another out_dir")
        return None
    if cfg.resume == "auto":
        return str(last) if last.exists() else None
    if not Path(cfg.resume).is_file():
        raise ValidationError(f"resume: checkpoint {cfg.resume} not found")
    return cfg.resume


def _changed_keys(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, Mapping) and isinstance(vb, Mapping) and not prefix:
            keys += _changed_keys(va, vb, f"{k}.")
        elif va != vb:
            keys.append(prefix + k)
    return keys


def _scalars(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, dict))}


def train(config: TrainConfig | str | os.PathLike[str], overrides: Sequence[str] = (), *,
          callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Fit the model a config describes; write checkpoints, logs, ``config.yaml`` and the model.

    Args:
        config: a :class:`TrainConfig` or a YAML file.
        overrides: ``section.key=value`` items applied on top.
        callbacks: extra Lightning callbacks.

    Returns:
        ``{"out_dir", "config_path", "last_checkpoint", "best_checkpoint", "model_dir",
        "global_step", "epoch", "label_ids", "val": {...}, "test": {...} or None,
        "n_train", "n_val", "seconds"}``; ``val`` holds the best checkpoint's validation metrics
        (``auroc``: macro AUROC, ``per_label_auroc``, ``loss`` ...).
    """
    t0 = time.perf_counter()
    cfg = config if isinstance(config, TrainConfig) else load_config(config)
    if overrides:
        from ecgfm.train.config import apply_overrides

        cfg = apply_overrides(cfg, overrides)
    out = Path(cfg.out_dir)
    ckpt_path = _resume_path(cfg, out)
    parts = build(cfg)
    return fit(parts, out, ckpt_path, callbacks, t0)


def fit(parts: RunParts, out: Path, ckpt_path: str | None, callbacks: Sequence[Any] = (), t0: float | None = None,
        *, extra_changes: Sequence[str] = (), on_start: Callable[[], None] | None = None,
        eval_mode_parts: bool = False) -> dict[str, Any]:
    """The rest of :func:`train` once :func:`build` made the run's parts: fit (or resume), reload
    the best weights, score validation and test, export the portable model.

    Args:
        parts: from :func:`build` (a caller may swap in a module of its own, e.g. a student
            distilled from a teacher).
        out: the run folder; ``ckpt_path``: the checkpoint to resume, or None.
        extra_changes: settings outside the config that changed since the run being resumed
            (added to the warning about a resumed run that will not match an uninterrupted one).
        on_start: called on rank 0 after ``config.yaml`` is written (to save other settings).
        eval_mode_parts: the module holds parts in eval mode on purpose (a frozen teacher).
    """
    t0 = time.perf_counter() if t0 is None else t0
    cfg = parts.config
    if ckpt_path is not None and (out / "config.yaml").is_file():
        changed = _changed_keys(load_config(out / "config.yaml").to_dict(), cfg.to_dict())
        changed = [k for k in changed if k not in ("resume", "out_dir")] + list(extra_changes)
        if changed:
            warnings.warn(f"{out}: resuming with a configuration that differs from the saved one in "
                          f"{', '.join(changed)}; the rest of the run will not match an uninterrupted one",
                          stacklevel=3)
    out.mkdir(parents=True, exist_ok=True)
    trainer, best_cb = _trainer(cfg, out, callbacks)
    if trainer.is_global_zero:
        save_config(cfg, out / "config.yaml")
        if on_start is not None:
            on_start()
    with warnings.catch_warnings():
        if cfg.model.freeze != "none" or eval_mode_parts:  # frozen modules are in eval mode on purpose
            warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
        if ckpt_path is not None:  # of course it is not empty: we are resuming from it
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")  # Lightning vs torch 2.13
        trainer.fit(parts.module, datamodule=parts.data, ckpt_path=ckpt_path, weights_only=True)
    epoch = int(trainer.current_epoch)

    best_path = best_cb.best_model_path or None
    module = parts.module
    val_metrics: dict[str, Any] = {}
    if best_path:
        ckpt = torch.load(best_path, map_location="cpu", weights_only=True)
        module.load_state_dict(ckpt["state_dict"])
        val_metrics = dict((ckpt.get("ecgfm") or {}).get("val_metrics") or {})
    if module.head_spec.type == "cox" and parts.data.train_eval_set is not None:
        # Absolute risk needs the baseline hazard: Breslow's estimate on the training records,
        # scored with the weights being exported (validation, test and the model then use it).
        module.eval_prefix = "train_eval"
        trainer.validate(module, dataloaders=parts.data.train_eval_dataloader(), verbose=False, weights_only=True)
        _, target = module.last_eval
        module.set_baseline(module.last_logits, target[:, 0], target[:, 1])
    # The exported weights' validation predictions (per-label figures and operating points)
    module.eval_prefix = "best_val"
    trainer.validate(module, dataloaders=parts.data.val_dataloader(), verbose=False, weights_only=True)
    module.eval_prefix = "val"
    val_eval = module.last_eval
    if not val_metrics or module.head_spec.is_survival:
        # no validation ran during fitting (a short run); or a survival head, whose calibration
        # figures (ibs) now use the training baseline rather than one fitted on validation
        val_metrics = dict(module.val_metrics)
    test_metrics, test_eval = None, None
    if parts.test_set is not None:
        module.eval_prefix = "test"
        trainer.validate(module, dataloaders=parts.data.test_dataloader(), verbose=False, weights_only=True)
        module.eval_prefix = "val"
        test_metrics, test_eval = dict(module.val_metrics), module.last_eval
    model_dir = None
    if cfg.trainer.export and trainer.is_global_zero:
        model_dir = _export(parts, module.cpu(), out / "model", val_metrics, test_metrics, trainer,
                            val_eval=val_eval, test_eval=test_eval, seconds=time.perf_counter() - t0)
    trainer.strategy.barrier("export")
    return {
        "out_dir": str(out), "config_path": str(out / "config.yaml"),
        "last_checkpoint": str(out / CHECKPOINTS / LAST), "best_checkpoint": best_path,
        "model_dir": None if model_dir is None else str(model_dir),
        "global_step": int(trainer.global_step), "epoch": epoch,
        "label_ids": list(parts.label_ids), "leads": list(parts.leads), "val": val_metrics, "test": test_metrics,
        "n_train": len(parts.train_set), "n_val": len(parts.val_set),
        "seconds": time.perf_counter() - t0, "global_rank": int(trainer.global_rank),
        **({"survival": parts.survival} if parts.survival is not None else {}),
    }


def label_report(labels: Sequence[str], val: tuple[np.ndarray, np.ndarray],
                 test: tuple[np.ndarray, np.ndarray] | None = None, *,
                 borderline_sensitivity: float = 0.9) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]]]:
    """Per-label figures and operating points of a multi-label model, chosen on validation data.

    For each label with positives and negatives in ``val``: the positive threshold is the one of
    the best F1 on validation, the borderline threshold the highest one that still reaches
    ``borderline_sensitivity``, kept between half the positive threshold and the positive
    threshold (so a rare label with few validation positives does not call every record
    borderline). ``test`` figures use those thresholds unchanged.

    Args:
        labels: the output ids.
        val, test: ``(probabilities [N, C], targets [N, C])``.

    Returns:
        ``(per_label, operating_points)``: ``{label: {"val_auroc", "val_ap", "val_n_positive",
        "test_auroc", "test_ap", "test_n_positive", "test_sensitivity", "test_specificity",
        "test_ppv"}}`` (keys present where defined) and ``{label: {"borderline", "positive"}}``.
    """
    from ecgfm.evaluate.metrics import (
        auroc,
        average_precision,
        confusion_at,
        fmax,
        operating_thresholds,
        rates,
    )

    def figures(pred: np.ndarray, true: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}_auroc": np.atleast_1d(auroc(true, pred)),
                f"{prefix}_ap": np.atleast_1d(average_precision(true, pred)),
                f"{prefix}_n_positive": np.nansum(true, axis=0)}

    pv, yv = val
    columns = figures(pv, yv, "val")
    _, positive = fmax(yv, pv)
    positive = np.atleast_1d(positive)
    sensitive = np.atleast_1d(operating_thresholds(yv, pv, "sensitivity", borderline_sensitivity))
    borderline = np.minimum(np.maximum(sensitive, positive / 2), positive)
    if test is not None:
        pt, yt = test
        columns.update(figures(pt, yt, "test"))
        r = rates(confusion_at(yt, pt, np.where(np.isfinite(positive), positive, np.nan)))
        columns.update({f"test_{k}": np.atleast_1d(r[k]) for k in ("sensitivity", "specificity", "ppv")})
    per_label: dict[str, dict[str, Any]] = {}
    points: dict[str, dict[str, float]] = {}
    for j, label in enumerate(labels):
        row = {k: (int(v[j]) if k.endswith("n_positive") else float(v[j])) for k, v in columns.items()
               if np.isfinite(v[j])}
        per_label[str(label)] = row
        if np.isfinite(positive[j]) and np.isfinite(borderline[j]):
            points[str(label)] = {"borderline": float(np.clip(borderline[j], 0, 1)),
                                  "positive": float(np.clip(positive[j], 0, 1))}
    return per_label, points


def _export(parts: RunParts, module: SupervisedModule, directory: Path, val: Mapping[str, Any],
            test: Mapping[str, Any] | None, trainer: L.Trainer, *,
            val_eval: tuple[np.ndarray, np.ndarray] | None = None,
            test_eval: tuple[np.ndarray, np.ndarray] | None = None, seconds: float | None = None) -> Path:
    cfg, corpus = parts.config, parts.corpus
    pipeline = export_pipeline(corpus.pipeline, window=cfg.data.eval_window or cfg.data.window, leads=parts.leads,
                               store_leads=corpus.leads, eval_crop=cfg.data.eval_crop)
    contract: dict[str, Any] = subset_contract(cfg.data.augment, parts.leads)
    if cfg.data.eval_window is not None and cfg.data.window is not None and cfg.data.eval_window > cfg.data.window:
        # trained on shorter crops: a record that fills one crop is enough (the rest is padding)
        contract["min_seconds"] = cfg.data.window
    if module.eval_windows is not None:
        window, stride, aggregate = module.eval_windows
        contract.update(window_samples=window, window_stride=stride, aggregate=aggregate)
    metrics: dict[str, Any] = {"val": _scalars(val)}
    if test is not None:
        metrics["test"] = _scalars(test)
    points = None
    if module.head_spec.type in ("multilabel", "binary") and val_eval is not None:
        metrics["per_label"], points = label_report(parts.label_ids, val_eval, test_eval)
    manifest = corpus.manifest
    sources = sorted({str(s) for s in manifest["dataset"].dropna()}) if "dataset" in manifest.columns else []
    training = {
        "config": cfg.to_dict(), "store": str(cfg.data.store), "store_pipeline_hash": corpus.pipeline.hash,
        "datasets": sources, "records": {"train": len(parts.train_set), "val": len(parts.val_set),
                                         "test": None if parts.test_set is None else len(parts.test_set)},
        "global_step": int(trainer.global_step), "epochs": int(trainer.current_epoch),
        "init": module.meta.get("init"),
        **({"survival": parts.survival} if parts.survival is not None else {}),
        "wall_seconds": None if seconds is None else round(seconds, 1),  # this process's fit + evaluation time
        "devices": f"{trainer.world_size} x {type(trainer.accelerator).__name__.removesuffix('Accelerator')}",
    }
    card = {
        "name": f"{module.meta.get('encoder')} on {', '.join(sources) or Path(cfg.data.store).name}",
        "training_data": (f"{len(parts.train_set)} training windows ({cfg.data.train_split}), "
                          f"{len(parts.val_set)} validation ({cfg.data.val_split}) from the store "
                          f"{cfg.data.store} ({', '.join(sources) or 'unknown sources'})."),
        "summary": (f"{_head_summary(module.head_spec, len(parts.label_ids))}, trained with ecgfm train "
                    f"(freeze={cfg.model.freeze}, {trainer.global_step} optimizer steps)."),
        **cfg.card,
    }
    return export_model(module, directory, pipeline=pipeline, input=contract, metrics=metrics, training=training,
                        card=card, operating_points=points)


def _head_summary(head: HeadSpec, n_labels: int) -> str:
    if not head.is_survival:
        return f"{head.type} head over {n_labels} labels"
    x = head.extra
    unit = f" ({x.get('time_unit')})" if x.get("time_unit") else ""
    what = ("Cox head: the log relative hazard of" if head.type == "cox"
            else f"discrete-time hazard head ({head.num_outputs} intervals) of")
    return (f"{what} {x.get('event_column')} over follow-up {x.get('time_column')}{unit}; "
            f"horizons {', '.join(f'{h:g}' for h in x.get('horizons') or [])}")


def subset_contract(specs: Sequence[Mapping[str, Any]], leads: Sequence[str]) -> dict[str, Any]:
    """The absent-lead rule of a model trained with lead-subset augmentations: after
    ``RandomLeadSubset`` any of its subsets may be all that is present (the leads common to all
    subsets are required); after ``LeadDropout`` any lead but one may be absent. ``{}`` without
    such an augmentation."""
    from ecgfm.leads import canonical_leads
    from ecgfm.store.augment import RandomLeadSubset

    fewest, required = len(leads), None
    for spec in specs:
        if spec["name"] == "LeadDropout":
            fewest, required = 1, set()
        elif spec["name"] == "RandomLeadSubset":
            subsets = [canonical_leads([leads[x] if isinstance(x, int) else str(x) for x in s])
                       for s in (spec.get("subsets") or RandomLeadSubset.CINC2021)]
            fewest = min(fewest, *(len(s) for s in subsets))
            common = set.intersection(*(set(s) for s in subsets))
            required = common if required is None else required & common
    if fewest >= len(leads):
        return {}
    return {"max_missing_leads": len(leads) - fewest,
            "required_leads": [lead for lead in leads if lead in (required or set())]}


def finetune(config: TrainConfig | str | os.PathLike[str], init: str | os.PathLike[str] | None = None,
             overrides: Sequence[str] = (), *, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """:func:`train` starting from ``init`` (a portable model folder or a ``.ckpt`` of ``ecgfm train``).

    The encoder's architecture and weights come from ``init``; its head is kept when the head
    type and label ids are the same and reset (``encoder.reset_head``) to the new labels
    otherwise. ``model.freeze`` chooses linear probe (``encoder``), partial (``partial:N``) or
    full (``none``) fine-tuning.
    """
    cfg = config if isinstance(config, TrainConfig) else load_config(config)
    extra = list(overrides)
    if init is not None:
        extra.append(f"model.init={json.dumps(str(init))}")
    if extra:
        from ecgfm.train.config import apply_overrides

        cfg = apply_overrides(cfg, extra)
    if not cfg.model.init:
        raise ValidationError("finetune: give the starting model (--from MODEL_DIR or model.init=PATH)")
    return train(cfg, callbacks=callbacks)


# ---------------------------------------------------------------------------------------------
# embeddings
# ---------------------------------------------------------------------------------------------
def embed(model_dir: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]],
          out: str | os.PathLike[str], *, split: str | None = None, batch_size: int = 64,
          device: str = "cpu") -> dict[str, Any]:
    """Pooled pre-logits embeddings of a portable model for a corpus store or ECG files.

    Args:
        model_dir: a portable model folder.
        inputs: one corpus store folder (its records of ``split``, or all; windows cut as the
            model's contract says, centred), or ECG files/folders (each read, checked against the
            contract and preprocessed by the model's pipeline; files that fail are skipped and
            reported).
        out: ``.parquet`` (columns ``record_id``, ``source``, ``f0`` ... ``f{D-1}``) or ``.npy``
            (float32 ``[N, D]``, with the ids in ``<out>.ids.csv`` beside it).
        split: the store split to embed (default: every record).
        batch_size: records per forward pass.
        device: ``cpu`` or ``cuda`` ...

    Returns:
        ``{"out", "n", "dim", "failures": [(source, error), ...]}``.
    """
    from ecgfm.models.portable import load_model
    from ecgfm.models.probe import extract_embeddings

    out = Path(out)
    if out.suffix not in (".parquet", ".npy"):
        raise ValidationError(f"{out}: the output must end in .parquet or .npy")
    model = load_model(model_dir, device=device)
    paths = [Path(p) for p in inputs]
    failures: list[tuple[str, str]] = []
    if len(paths) == 1 and (paths[0] / "store.json").is_file():
        corpus = Corpus.open(paths[0])
        c = model.input
        if corpus.fs is not None and abs(corpus.fs - c.fs) > 1e-6:
            raise ValidationError(f"{paths[0]}: the store is at {corpus.fs:g} Hz, the model takes {c.fs:g} Hz")
        trained_on = (model.training or {}).get("store_pipeline_hash")
        if corpus.pipeline is not None and trained_on and corpus.pipeline.hash != trained_on:
            warnings.warn(f"{paths[0]}: the store's preprocessing differs from the one the model was trained on; "
                          "embeddings may not match", stacklevel=2)
        ds = CorpusDataset(corpus, split=split, window=c.seconds, crop="center", leads=c.leads)
        x = extract_embeddings(model, ds, batch_size=batch_size)
        rows = ds.rows
        ids = corpus.manifest["record_id"].to_numpy()[rows].astype(str).tolist()
        sources = (corpus.manifest["source"].to_numpy()[rows].astype(str).tolist()
                   if "source" in corpus.manifest.columns else [""] * len(ids))
    else:
        from ecgfm.cli import expand_inputs

        files, _ = expand_inputs(paths)
        if not files:
            raise ValidationError("embed: no ECG files among the inputs")
        x, failed = model.embed(files, batch_size=batch_size, errors="skip")
        bad = {f.index for f in failed}
        failures = [(f.source, f.error) for f in failed]
        keep = [i for i in range(len(files)) if i not in bad]
        x = x[keep]
        ids = [files[i].stem for i in keep]
        sources = [str(files[i]) for i in keep]
    x = np.ascontiguousarray(x, np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    import pandas as pd

    index = pd.DataFrame({"record_id": ids, "source": sources})
    if out.suffix == ".npy":
        np.save(out, x)
        index.to_csv(out.with_name(out.name + ".ids.csv"), index=False)
    else:
        frame = pd.concat([index, pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])], axis=1)
        frame.to_parquet(out, index=False)
    return {"out": str(out), "n": int(x.shape[0]), "dim": int(x.shape[1]), "failures": failures}
