"""PyTorch datasets over the corpus store: map-style, streaming, and a Lightning-style data module.

``ecgfm.store`` does not import this module (it imports torch); import it as
``from ecgfm.store.dataset import CorpusDataset``.

Items and batches are dicts of tensors (``B`` items, ``L`` output leads, ``T`` samples per
window, ``C`` label ids):

==========  =================================  =========================================
key         batch shape, dtype                  meaning
==========  =================================  =========================================
signal      ``[B, L, T]`` float32 (or int16)    the window, in the store's units (mV, or
                                                z-scores after the standard pipeline)
scale       ``[B, L]`` float32                  int16 mode only: units per LSB
mask        ``[B, L]`` bool                     True where the lead is present
labels      ``[B, C]`` float32                  multi-hot over ``dataset.label_ids``
length      ``[B]`` int64                       valid samples; ``signal[..., length:]`` is
                                                zero padding (records shorter than the window)
index       ``[B]`` int64                       the item's position in the dataset
record      ``[B]`` int64                       the record's row in ``corpus.manifest``
start       ``[B]`` int64                       the window's first sample in the record
==========  =================================  =========================================

Throughput comes from :meth:`CorpusDataset.__getitems__`: the DataLoader hands it a whole
batch of indices and it copies each window straight from the memory-mapped shard into one
preallocated batch tensor (in shared memory inside a worker, so nothing is copied again on the
way to the main process). Use :func:`corpus_loader` (or pass ``collate_fn=collate``) so the
DataLoader does not try to collate the finished batch again.

Randomness is a function of ``(seed, epoch, record, window)`` (``record``: the manifest row;
``window``: the window number for ``crop="windows"``, else 0) and nothing else: a random crop's
start is ``floor(u * (n - T + 1))`` with ``u`` a counter-based hash of those four numbers
(SplitMix64; vectorised over the batch), and the augmentation of the item gets
``np.random.default_rng([seed, epoch, record, window])``. An item's content therefore does not
depend on the batch it lands in, the number of workers or the DDP layout, and
:class:`CorpusStream` yields exactly the items :class:`CorpusDataset` does.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, IterableDataset, get_worker_info
from torch.utils.data.distributed import DistributedSampler

from ecgfm.errors import ValidationError
from ecgfm.leads import canonical_leads
from ecgfm.store.augment import Augmentation
from ecgfm.store.format import (
    ARRAY_COLUMNS,
    STORE_FORMAT,
    STORE_VERSION,
    Corpus,
    CorpusError,
)

__all__ = [
    "CorpusDataModule", "CorpusDataset", "CorpusStream", "EpochBatchSampler", "IndexBatch",
    "ShardedSampler", "collate", "corpus_loader", "distributed_context", "to_float",
]

CROPS = ("random", "start", "center", "windows")
DTYPES = ("float32", "int16")


# ---------------------------------------------------------------------------------------------
# helpers shared by the map-style and the streaming dataset
# ---------------------------------------------------------------------------------------------
def _empty(shape: tuple[int, ...], dtype: torch.dtype, *, shared: bool) -> torch.Tensor:
    """An uninitialised tensor; in shared memory when ``shared`` (no copy when sent from a worker)."""
    if shared:
        try:
            nbytes = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
            storage = torch.UntypedStorage._new_shared(nbytes)
            return torch.empty(0, dtype=dtype).set_(storage, 0, shape)
        except (AttributeError, RuntimeError):  # pragma: no cover - private API moved
            pass
    return torch.empty(shape, dtype=dtype)


class CorpusBatch(dict):
    """A batch: a dict of tensors that crosses process boundaries cheaply.

    Pickled (from a DataLoader worker to the main process), only ``signal`` goes through
    shared memory; the small tensors travel by value inside the pickle, which saves a
    shared-memory handle (a file-descriptor exchange) per tensor per batch.
    """

    _slot: tuple[Any, ...] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        if "signal" not in self or any(not isinstance(v, torch.Tensor) or v.device.type != "cpu" for v in self.values()):
            return (CorpusBatch, (dict(self),))
        small = {k: v.numpy() for k, v in self.items() if k != "signal"}
        return (_rebuild_batch, (self["signal"], small, self._slot))

    def __copy__(self) -> CorpusBatch:
        return CorpusBatch(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> CorpusBatch:
        return CorpusBatch({k: copy.deepcopy(v, memo) for k, v in self.items()})


# Main-process references to the signal tensors received from worker buffer rings, by
# (worker pid, ring, slot): while one is alive, torch maps that slot's shared memory once and
# reuses the mapping for every later batch from the slot (no new mmap, no page faults).
_RING_MAPPINGS: dict[tuple[Any, ...], torch.Tensor] = {}


def _rebuild_batch(signal: torch.Tensor, small: Mapping[str, np.ndarray], slot: tuple[Any, ...] | None) -> CorpusBatch:
    batch = CorpusBatch(signal=signal, **{k: torch.from_numpy(v if v.flags.writeable else v.copy())
                                          for k, v in small.items()})
    if slot is not None:
        if slot not in _RING_MAPPINGS and len(_RING_MAPPINGS) >= 8:
            # A new slot: forget those of workers that have exited (their loaders are gone).
            for key in [k for k in _RING_MAPPINGS if not _alive(k[0])]:
                del _RING_MAPPINGS[key]
            while len(_RING_MAPPINGS) >= 256:
                del _RING_MAPPINGS[next(iter(_RING_MAPPINGS))]
        _RING_MAPPINGS[slot] = signal
    return batch


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's process
        return True
    return True


class _Buffers:
    """Where batch signal tensors come from.

    Outside a worker: a fresh tensor. In a worker: a fresh shared-memory tensor, or with
    ``slots > 0`` the next tensor of a ring of ``slots`` shared-memory tensors per batch shape,
    allocated once: the kernel's cost of handing out fresh shared pages (page faults, zeroing)
    is then paid once per slot instead of once per batch. See :func:`corpus_loader`
    (``reuse_buffers``) for when a slot may be overwritten.
    """

    def __init__(self, slots: int = 0) -> None:
        self.slots = int(slots)
        self._pid: int | None = None
        self._rings: dict[tuple[Any, ...], list[Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"slots": self.slots, "_pid": None, "_rings": {}}

    def get(self, shape: tuple[int, ...], dtype: torch.dtype, *, shared: bool) -> tuple[torch.Tensor, tuple[Any, ...] | None]:
        if not shared or self.slots <= 0:
            return _empty(shape, dtype, shared=shared), None
        pid = os.getpid()
        if self._pid != pid:  # a forked copy must not share its parent's ring
            self._pid, self._rings = pid, {}
        key = (tuple(shape), str(dtype))
        ring = self._rings.setdefault(key, [[], 0])
        tensors, k = ring
        if len(tensors) < self.slots:
            tensors.append(_empty(shape, dtype, shared=True))
            k = len(tensors) - 1
        ring[1] = (k + 1) % self.slots
        return tensors[k], (pid, *key, k)


def _label_table(manifest: Any, label_ids: Sequence[str] | None) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Label ids and a CSR table over manifest rows: ``(ids, indptr [N + 1], classes [nnz])``."""
    n = len(manifest)
    if "labels" not in manifest.columns:
        if label_ids:
            raise ValidationError(f"label_ids given, but the store's manifest has no 'labels' column (columns: {list(manifest.columns)})")
        return (), np.zeros(n + 1, np.int64), np.zeros(0, np.int64)
    rows: list[list[str]] = []
    for value in manifest["labels"]:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            rows.append([])
        elif isinstance(value, str):
            rows.append([value])
        else:
            rows.append([str(v) for v in value])
    ids = tuple(sorted({i for r in rows for i in r})) if label_ids is None else tuple(str(i) for i in label_ids)
    if len(set(ids)) != len(ids):
        raise ValidationError(f"label_ids hold duplicates: {sorted(i for i in set(ids) if ids.count(i) > 1)}")
    position = {k: j for j, k in enumerate(ids)}
    classes = [[position[i] for i in r if i in position] for r in rows]
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum([len(c) for c in classes], out=indptr[1:])
    flat = np.fromiter((c for cs in classes for c in cs), np.int64, count=int(indptr[-1]))
    return ids, indptr, flat


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (array arithmetic wraps modulo 2**64)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _uniform(seed: int, epoch: int, rows: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) float64 per item, a hash of ``(seed, epoch, row, window)``.

    Counter-based (no generator state), so a crop depends on nothing but these four numbers,
    and vectorised: a batch costs microseconds where a generator per item costs ~10 us each.
    """
    rows = np.asarray(rows, np.int64)
    h = np.full(rows.shape, (int(seed) * 0x9E3779B1 + int(epoch)) & 0xFFFFFFFFFFFFFFFF, np.uint64)
    for value in (np.full(rows.shape, int(epoch), np.int64), rows, np.asarray(windows, np.int64)):
        h = _mix64((h + _GOLDEN) ^ value.astype(np.uint64))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


class _Spec:
    """How items are cut from records; shared by :class:`CorpusDataset` and :class:`CorpusStream`.

    Holds the per-record arrays of the whole store (scales, lead masks, lengths, labels) and
    turns a list of record blocks (int16 ``[store leads, n]``) into a batch dict.
    """

    def __init__(
        self, corpus: Corpus, *, window: float | None, crop: str, leads: Sequence[str] | None,
        label_ids: Sequence[str] | None, augment: Augmentation | None, seed: int, dtype: str,
    ) -> None:
        if crop not in CROPS:
            raise ValidationError(f"crop must be one of {CROPS}, got {crop!r}")
        if dtype not in DTYPES:
            raise ValidationError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if augment is not None and dtype != "float32":
            raise ValidationError("augmentations work on float32 signals; use dtype='float32' with augment=")
        if augment is not None and not callable(augment):
            raise ValidationError(f"augment must be callable (an ecgfm.store.augment augmentation), got {augment!r}")
        self.fs = corpus.fs
        if self.fs is None and "fs" in corpus.manifest.columns and len(corpus):
            # A store without one rate (no resample step) whose records all share one is fine.
            rates = corpus.manifest["fs"].dropna().unique()
            self.fs = float(rates[0]) if len(rates) == 1 else None
        if window is not None:
            if self.fs is None:
                raise ValidationError(f"{corpus.root}: the store's records have different sampling rates, so window= (seconds) cannot be converted to samples; build it with a resample step")
            if window <= 0:
                raise ValidationError(f"window must be a positive number of seconds, got {window}")
        elif crop == "windows":
            raise ValidationError("crop='windows' needs window= (seconds)")
        if augment is not None and self.fs is None:
            raise ValidationError(f"{corpus.root}: augmentations need one sampling rate, and the store's records have several")
        self.window = window
        self.n_window = None if window is None else int(round(window * self.fs))
        self.crop = crop
        self.seed = int(seed)
        self.dtype = dtype
        self.augment = augment
        self.store_leads = corpus.leads
        self.leads = corpus.leads if leads is None else canonical_leads(leads)
        if len(set(self.leads)) != len(self.leads):
            raise ValidationError(f"leads hold duplicates: {list(self.leads)}")
        # Row of each output lead in the store (-1: the store has no such lead: zeros, masked).
        self.src = np.array([self.store_leads.index(x) if x in self.store_leads else -1 for x in self.leads], np.int64)
        self.have = np.flatnonzero(self.src >= 0)
        self.identity = self.leads == self.store_leads
        self.lengths = corpus.lengths
        self.scales = corpus.scales
        self.lead_mask = corpus.lead_mask
        self.label_ids, self._indptr, self._classes = _label_table(corpus.manifest, label_ids)

    def n_windows(self, rows: np.ndarray) -> np.ndarray:
        """Windows per record for ``crop="windows"``: ``n // T``, at least 1 (zero-padded)."""
        return np.maximum(self.lengths[rows] // self.n_window, 1)

    def assemble(
        self, blocks: Sequence[np.ndarray], rows: np.ndarray, windows: np.ndarray, index: np.ndarray,
        epoch: int, *, shared: bool, buffers: _Buffers | None = None,
    ) -> CorpusBatch:
        """A batch from records ``rows`` (int16 blocks ``[store leads, n]``), window numbers ``windows``."""
        b_size, n_out = len(rows), len(self.leads)
        lengths = self.lengths[rows]
        if self.n_window is not None:
            t = self.n_window
        else:
            t = int(lengths[0]) if b_size else 0
            if b_size and (lengths != t).any():
                raise ValidationError(
                    f"records of different lengths ({sorted(set(lengths.tolist()))[:5]} samples) cannot be "
                    "batched whole; give window= (seconds) to crop them to one length"
                )
        slack = np.maximum(lengths - t, 0)
        if self.crop == "windows":
            starts = windows * t
        elif self.crop == "start":
            starts = np.zeros(b_size, np.int64)
        elif self.crop == "center":
            starts = slack // 2
        else:
            u = _uniform(self.seed, epoch, rows, windows)
            starts = np.minimum((u * (slack + 1)).astype(np.int64), slack)
        valid = np.minimum(lengths - starts, t)

        int_mode = self.dtype == "int16"
        signal, slot = (buffers or _NO_BUFFERS).get((b_size, n_out, t), torch.int16 if int_mode else torch.float32, shared=shared)
        sig = signal.numpy()
        scale = self.scales[rows][:, self.src]                                   # [B, L]
        scale[:, self.src < 0] = 1.0
        mask = self.lead_mask[rows][:, self.src] & (self.src >= 0)               # [B, L]
        if not self.identity:
            sig[:, self.src < 0] = 0
        for b in range(b_size):
            s, v = int(starts[b]), int(valid[b])
            block = blocks[b]
            if self.identity:
                window = block[:, s:s + v]
                target = sig[b, :, :v]
                # Cast, then scale in place: twice as fast as one mixed-type multiply, which
                # numpy runs through its small casting buffers.
                np.copyto(target, window, casting="unsafe")
                if not int_mode:
                    np.multiply(target, scale[b, :, None], out=target)
            else:
                window = block[self.src[self.have], s:s + v]
                sig[b, self.have, :v] = window if int_mode else window * scale[b, self.have, None]
            if v < t:
                sig[b, :, v:] = 0
        if self.augment is not None:
            for b in range(b_size):
                v = int(valid[b])
                rng = np.random.default_rng([self.seed, epoch, int(rows[b]), int(windows[b])])
                sig[b, :, :v], mask[b] = self.augment(sig[b, :, :v], self.fs, rng, mask[b])

        labels = np.zeros((b_size, len(self.label_ids)), np.float32)
        first, count = self._indptr[rows], self._indptr[rows + 1] - self._indptr[rows]
        if count.sum():
            which = np.repeat(np.arange(b_size), count)
            pos = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count) + np.repeat(first, count)
            labels[which, self._classes[pos]] = 1.0
        out = CorpusBatch({
            "signal": signal,
            "mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(labels),
            "length": torch.from_numpy(valid.astype(np.int64)),
            "index": torch.as_tensor(np.asarray(index, np.int64)),
            "record": torch.from_numpy(np.asarray(rows, np.int64)),
            "start": torch.from_numpy(starts.astype(np.int64)),
        })
        out._slot = slot
        if int_mode:
            out["scale"] = torch.from_numpy(np.ascontiguousarray(scale, np.float32))
        return out


_NO_BUFFERS = _Buffers()


def _select_rows(corpus: Corpus, split: str | None, indices: Sequence[int] | np.ndarray | None) -> np.ndarray:
    """Manifest rows of ``split`` (all when None), restricted to ``indices`` (kept in their order)."""
    n = len(corpus)
    if indices is not None:
        rows = np.asarray(indices, np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise ValidationError(f"{corpus.root}: indices must be manifest rows in [0, {n}), got values outside")
    else:
        rows = np.arange(n, dtype=np.int64)
    if split is not None:
        if "split" not in corpus.manifest.columns:
            raise ValidationError(f"{corpus.root}: split={split!r} asked for, but the manifest has no 'split' column (build the store with splits)")
        in_split = corpus.manifest["split"].to_numpy() == split
        if not in_split.any():
            found = sorted(set(corpus.manifest["split"].dropna().astype(str)))
            raise ValidationError(f"{corpus.root}: no record in split {split!r} (splits present: {found})")
        rows = rows[in_split[rows]]
    return rows


def _record_block(corpus: Corpus, maps: dict[int, np.ndarray], row: int, n_leads: int) -> np.ndarray:
    k = int(corpus.shard_index[row])
    shard = maps.get(k)
    if shard is None:  # a plain ndarray view: numpy's memmap subclass costs ~3 us per slice
        shard = maps[k] = corpus.shard(k).view(np.ndarray)
    start, n = int(corpus.offsets[row]), int(corpus.lengths[row])
    return shard[start:start + n_leads * n].reshape(n_leads, n)


# ---------------------------------------------------------------------------------------------
# map-style dataset
# ---------------------------------------------------------------------------------------------
class _SpecView:
    """``leads`` and ``label_ids`` of a dataset, read from its :class:`_Spec`."""

    spec: _Spec

    @property
    def leads(self) -> tuple[str, ...]:
        """The output leads, in order."""
        return self.spec.leads

    @property
    def label_ids(self) -> tuple[str, ...]:
        """The catalogue ids of the ``labels`` columns."""
        return self.spec.label_ids


class CorpusDataset(_SpecView, Dataset):
    """Map-style dataset of windows cut from a corpus store.

    Args:
        corpus: an open :class:`~ecgfm.store.format.Corpus` or the store's folder.
        split: keep the records of this manifest ``split`` (``"train"``, ``"val"``, ``"test"``);
            None keeps every record.
        indices: manifest rows to use (in this order), after the split filter.
        window: window length in seconds; None yields whole records (then every record in a
            batch must have the same length).
        crop: ``"random"`` (a random window per item and epoch), ``"start"``, ``"center"``, or
            ``"windows"``: every non-overlapping window of every record is one item
            (``n // T`` per record, at least one; a record shorter than the window is one
            zero-padded item).
        leads: output leads in order (default: the store's). A lead the store lacks is zeros
            with ``mask`` False, as is a lead the record lacked.
        label_ids: catalogue ids making up ``labels`` ``[C]``; default: every id in the store's
            manifest, sorted (the same for every split of the store).
        augment: an augmentation (:mod:`ecgfm.store.augment`) applied to each float window.
        seed: seed of the random crops and augmentations.
        dtype: ``"float32"``, or ``"int16"`` to return the stored integers plus ``scale``
            ``[B, L]`` and convert on the GPU with :func:`to_float` (half the bytes to move).

    Call :meth:`set_epoch` each epoch (the samplers of :func:`corpus_loader` carry the epoch
    to the workers themselves, including persistent ones).

    >>> ds = CorpusDataset("corpus/", split="train", window=5.0, crop="random")   # doctest: +SKIP
    >>> loader = corpus_loader(ds, batch_size=256, shuffle=True, num_workers=2)   # doctest: +SKIP
    >>> batch = next(iter(loader)); batch["signal"].shape                       # doctest: +SKIP
    torch.Size([256, 12, 2500])
    """

    def __init__(
        self,
        corpus: Corpus | str | os.PathLike[str],
        *,
        split: str | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        window: float | None = None,
        crop: str = "random",
        leads: Sequence[str] | None = None,
        label_ids: Sequence[str] | None = None,
        augment: Augmentation | None = None,
        seed: int = 0,
        dtype: str = "float32",
    ) -> None:
        self.corpus = corpus if isinstance(corpus, Corpus) else Corpus.open(corpus)
        self.spec = _Spec(self.corpus, window=window, crop=crop, leads=leads, label_ids=label_ids,
                          augment=augment, seed=seed, dtype=dtype)
        rows = _select_rows(self.corpus, split, indices)
        if crop == "windows":
            counts = self.spec.n_windows(rows)
            self.rows = np.repeat(rows, counts)
            self.windows = np.arange(counts.sum(), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        else:
            self.rows = rows
            self.windows = np.zeros(len(rows), np.int64)
        self.split = split
        self.epoch = 0
        self.buffers = _Buffers()
        self._maps: dict[int, np.ndarray] = {}

    @property
    def fs(self) -> float | None:
        """Sampling rate in Hz."""
        return self.spec.fs

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the random crops and augmentations of items fetched from now on."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    def _batch(self, indices: Sequence[int], epoch: int, *, shared: bool) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices, np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"index out of range for a dataset of {len(self)} items")
        idx = np.where(idx < 0, idx + len(self), idx)
        rows, n_leads = self.rows[idx], len(self.spec.store_leads)
        blocks = [_record_block(self.corpus, self._maps, int(r), n_leads) for r in rows]
        return self.spec.assemble(blocks, rows, self.windows[idx], idx, epoch, shared=shared, buffers=self.buffers)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        """Item ``i``: ``signal`` ``[L, T]``, ``mask`` ``[L]``, ``labels`` ``[C]`` and scalars."""
        batch = self._batch([int(i)], self.epoch, shared=False)
        return {k: v[0] for k, v in batch.items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """A whole batch (a dict of ``[B, ...]`` tensors), read into one preallocated array.

        ``indices`` may be an :class:`IndexBatch`, whose ``epoch`` then overrides the dataset's.
        """
        epoch = getattr(indices, "epoch", None)
        return self._batch(indices, self.epoch if epoch is None else epoch,
                           shared=get_worker_info() is not None)


# ---------------------------------------------------------------------------------------------
# samplers and loaders
# ---------------------------------------------------------------------------------------------
def distributed_context(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: the arguments if given, else torch.distributed's, else ``(0, 1)``."""
    if rank is None or world_size is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank = torch.distributed.get_rank() if rank is None else rank
            world_size = torch.distributed.get_world_size() if world_size is None else world_size
        else:
            rank, world_size = (0 if rank is None else rank), (1 if world_size is None else world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValidationError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    return int(rank), int(world_size)


class ShardedSampler(DistributedSampler):
    """A :class:`~torch.utils.data.distributed.DistributedSampler` that can also not pad.

    Rank ``r`` of ``world_size`` gets every ``world_size``-th index of a permutation drawn from
    ``seed + epoch`` (or of ``0..n-1`` without shuffling). With ``pad=True`` (training) the list
    is padded by wrapping around so every rank has the same number of items, as torch's sampler
    does; with ``pad=False`` (validation, test) every index is seen exactly once across ranks and
    ranks can differ by one item.
    """

    def __init__(self, dataset: Any, *, rank: int | None = None, world_size: int | None = None,
                 shuffle: bool = True, seed: int = 0, pad: bool = True) -> None:
        rank, world_size = distributed_context(rank, world_size)
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=False)
        self.pad = pad
        if not pad:
            self.num_samples = len(range(rank, len(dataset), world_size))  # type: ignore[arg-type]
            self.total_size = len(dataset)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        if self.pad:
            return super().__iter__()
        n = len(self.dataset)  # type: ignore[arg-type]
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        return iter(order[self.rank::self.num_replicas])


class IndexBatch(list):
    """A batch of dataset indices that carries the epoch it belongs to (to the DataLoader's workers)."""

    epoch: int | None = None

    def __init__(self, indices: Sequence[int] = (), epoch: int | None = None) -> None:
        super().__init__(indices)
        self.epoch = epoch

    def __reduce__(self) -> tuple[Any, ...]:
        return (IndexBatch, (list(self), self.epoch))


class EpochBatchSampler(BatchSampler):
    """Groups a sampler's indices into :class:`IndexBatch` es tagged with the sampler's epoch.

    :meth:`set_epoch` sets the epoch of the inner sampler (its shuffling) and of the batches
    (the crops and augmentations), so persistent DataLoader workers see the new epoch too.
    """

    def __init__(self, sampler: Any, batch_size: int, drop_last: bool = False) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.epoch = int(getattr(sampler, "epoch", 0))

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``."""
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[IndexBatch]:  # type: ignore[override]
        epoch = int(getattr(self.sampler, "epoch", self.epoch))
        for batch in super().__iter__():
            yield IndexBatch(batch, epoch)


def collate(batch: Mapping[str, torch.Tensor] | Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    """Collate function for corpus datasets: a finished batch passes through; items are stacked."""
    if isinstance(batch, CorpusBatch):
        return batch
    if isinstance(batch, Mapping):
        return CorpusBatch(batch)
    if not batch:
        return CorpusBatch()
    return CorpusBatch({k: torch.stack([torch.as_tensor(item[k]) for item in batch]) for k in batch[0]})


def to_float(batch: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """An int16 batch (``signal`` + ``scale``) with ``signal`` converted to ``dtype`` units.

    Works on any device: move the int16 batch to the GPU first, then convert there.

    >>> batch = to_float({k: v.to("cuda", non_blocking=True) for k, v in batch.items()})  # doctest: +SKIP
    """
    out = dict(batch)
    if "scale" not in out:
        return out
    scale = out.pop("scale")
    out["signal"] = out["signal"].to(dtype) * scale.to(dtype)[..., None]
    return out


def corpus_loader(
    dataset: CorpusDataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    drop_last: bool = False,
    num_workers: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    pad: bool | None = None,
    seed: int | None = None,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    prefetch_factor: int | None = None,
    reuse_buffers: bool | None = None,
) -> DataLoader:
    """A DataLoader over ``dataset`` that reads whole batches and shards across DDP ranks.

    Rank and world size come from ``rank``/``world_size`` or torch.distributed (see
    :func:`distributed_context`); with one process the sampler is a plain (shuffled)
    permutation. ``pad`` (default: ``shuffle``) pads ranks to equal length, see
    :class:`ShardedSampler`. Call ``loader.batch_sampler.set_epoch(epoch)`` each epoch.

    ``reuse_buffers``: each worker writes its batches' ``signal`` into a ring of
    ``prefetch_factor + 2`` shared-memory buffers allocated once, instead of fresh shared memory
    per batch. Fresh shared memory costs the kernel a page fault and a zeroed page per 4 KiB
    (tens of ms for a 60 MB batch, the largest cost of the loader on some machines). The
    catch: a batch's ``signal`` is overwritten about ``num_workers`` batches after you receive
    it, so it is safe only when each batch is consumed before the next ones are drawn and not
    kept: ``.clone()`` a signal you keep. With ``pin_memory=True`` on a machine with an
    accelerator the DataLoader copies each batch into pinned memory before you see it, so
    reuse is always safe there; the default (None) turns it on in exactly that case.
    """
    rank, world_size = distributed_context(rank, world_size)
    pinned = pin_memory and torch.accelerator.is_available()
    reuse = pinned if reuse_buffers is None else reuse_buffers
    if reuse and num_workers > 0:
        dataset = copy.copy(dataset)  # the ring belongs to this loader, not to the caller's dataset
        dataset.buffers = _Buffers((prefetch_factor or 2) + 2)
    sampler = ShardedSampler(dataset, rank=rank, world_size=world_size, shuffle=shuffle,
                             seed=dataset.spec.seed if seed is None else seed,
                             pad=shuffle if pad is None else pad)
    sampler.set_epoch(dataset.epoch)
    batches = EpochBatchSampler(sampler, batch_size, drop_last)
    return DataLoader(
        dataset, batch_sampler=batches, num_workers=num_workers, collate_fn=collate,
        pin_memory=pin_memory, persistent_workers=persistent_workers and num_workers > 0,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
    )


# ---------------------------------------------------------------------------------------------
# streaming
# ---------------------------------------------------------------------------------------------
def _read_npy_bytes(data: bytes, where: str) -> np.ndarray:
    """A 1-D int16 array over the bytes of a ``.npy`` file, without copying them."""
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(buf)
    except ValueError as exc:
        raise CorpusError(f"{where}: unreadable shard ({exc})") from None
    if dtype != np.int16 or len(shape) != 1 or fortran:
        raise CorpusError(f"{where}: expected a 1-D int16 array, got {dtype} {shape}")
    if len(data) - buf.tell() < shape[0] * 2:
        raise CorpusError(f"{where}: shard truncated ({len(data)} bytes for {shape[0]} values)")
    return np.frombuffer(data, np.int16, count=shape[0], offset=buf.tell())


def _open_remote(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str, Corpus]:
    """``(filesystem, root path, Corpus)`` for a store at ``url``; the Corpus is for its arrays only."""
    import fsspec
    import pyarrow.parquet as pq

    fs, root = fsspec.core.url_to_fs(os.fspath(url), **dict(storage_options or {}))
    root = root.rstrip("/")
    try:
        info = json.loads(fs.cat_file(f"{root}/store.json"))
    except FileNotFoundError:
        raise CorpusError(f"{url}: not a corpus store (no store.json)") from None
    if info.get("format") != STORE_FORMAT:
        raise CorpusError(f"{url}/store.json: format is {info.get('format')!r}, expected {STORE_FORMAT!r}")
    if int(info.get("version", 0)) > STORE_VERSION:
        raise CorpusError(f"{url}/store.json: store version {info['version']} is newer than this ecgfm reads ({STORE_VERSION})")
    markers = sorted(fs.glob(f"{root}/parts/*.json"))
    parts = []
    for path in markers:
        d = json.loads(fs.cat_file(path))
        if int(d["n_records"]):
            parts.append(d["part"])
    manifest = None
    if fs.exists(f"{root}/manifest.parquet"):
        table = pq.read_table(io.BytesIO(fs.cat_file(f"{root}/manifest.parquet")))
        recorded = json.loads((table.schema.metadata or {}).get(b"ecgfm_parts", b"null"))
        if recorded == sorted(parts):
            manifest = table.to_pandas()
    if manifest is None:
        import pandas as pd

        frames = [pq.read_table(io.BytesIO(fs.cat_file(f"{root}/parts/{p}.parquet"))).to_pandas() for p in parts]
        manifest = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({c: [] for c in ARRAY_COLUMNS})
    absent = [c for c in ARRAY_COLUMNS if c not in manifest.columns]
    if absent:
        raise CorpusError(f"{url}: manifest lacks column(s) {absent}")
    return fs, root, Corpus(PurePosixPath(root), info, manifest)  # type: ignore[arg-type]


class CorpusStream(_SpecView, IterableDataset):
    """Iterable dataset that streams a store shard by shard (larger than memory, or remote).

    ``url`` is a local folder or any fsspec URL (``file://``, ``memory://``, ``s3://bucket/x``,
    ``gs://...`` with the fsspec backend installed; ``storage_options`` go to the backend). Each
    epoch the shard order is shuffled (from ``seed`` and the epoch), shards are dealt round-robin
    to the ``world_size x num_workers`` consumers (DDP ranks from torch.distributed or the
    arguments, DataLoader workers from ``get_worker_info()``), and each consumer reads its
    shards whole (one request each) and yields their items through a shuffle buffer of
    ``buffer_size`` items. Every item is yielded exactly once per epoch across all ranks and
    workers; ranks can receive different numbers of items (store at least
    ``world_size x num_workers`` shards, of similar sizes, to keep them balanced).

    Items are those of :class:`CorpusDataset` with the same arguments (the same crops and
    augmentations for the same seed and epoch), with ``index`` = ``record``. With ``batch_size``
    the stream yields whole batches (use ``DataLoader(stream, batch_size=None, ...)``), which is
    much faster than collating items.

    Call :meth:`set_epoch` before each epoch; it reaches the workers only when they are started
    afresh for the epoch (``persistent_workers=False``, the default).
    """

    def __init__(
        self,
        url: str | os.PathLike[str],
        *,
        split: str | None = None,
        window: float | None = None,
        crop: str = "random",
        leads: Sequence[str] | None = None,
        label_ids: Sequence[str] | None = None,
        augment: Augmentation | None = None,
        seed: int = 0,
        dtype: str = "float32",
        shuffle: bool = True,
        buffer_size: int = 2048,
        batch_size: int | None = None,
        drop_last: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.url = os.fspath(url)
        self.storage_options = dict(storage_options or {})
        self._fs, self._root, corpus = _open_remote(self.url, self.storage_options)
        self._fs_pid = os.getpid()
        self.spec = _Spec(corpus, window=window, crop=crop, leads=leads, label_ids=label_ids,
                          augment=augment, seed=seed, dtype=dtype)
        self.rows = _select_rows(corpus, split, None)
        self.shard_index = corpus.shard_index
        self.shard_names = corpus.shard_names
        self.offsets = corpus.offsets
        # The split's rows grouped by shard (in manifest order within a shard).
        by_shard = self.rows[np.argsort(self.shard_index[self.rows], kind="stable")]
        cuts = np.searchsorted(self.shard_index[by_shard], np.arange(len(self.shard_names) + 1))
        self._shard_rows = [by_shard[cuts[k]:cuts[k + 1]] for k in range(len(self.shard_names))]
        self.split = split
        self.shuffle = shuffle
        self.buffer_size = max(int(buffer_size), 1)
        self.batch_size = batch_size
        self.drop_last = drop_last
        self._rank, self._world_size = rank, world_size
        self.epoch = 0
        self.buffers = _Buffers()  # a ring with slots > 0: see corpus_loader(reuse_buffers=)

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for shard order, shuffling, crops and augmentations from the next iteration."""
        self.epoch = int(epoch)

    @property
    def n_items(self) -> int:
        """Items per epoch over all ranks and workers together.

        (No ``__len__``: how many items one rank or worker gets depends on the shard dealing,
        and with ``batch_size`` the stream yields batches, not items.)
        """
        if self.spec.crop == "windows":
            return int(self.spec.n_windows(self.rows).sum())
        return len(self.rows)

    def shards_for(self, consumer: int, n_consumers: int, epoch: int) -> list[int]:
        """Shard indices consumer ``consumer`` of ``n_consumers`` reads in ``epoch``, in order."""
        used = np.array([k for k, r in enumerate(self._shard_rows) if r.size], np.int64)
        order = np.random.default_rng([self.spec.seed, epoch]).permutation(used) if self.shuffle else used
        return [int(k) for k in order[consumer::n_consumers]]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rank, world_size = distributed_context(self._rank, self._world_size)
        worker = get_worker_info()
        if self._fs_pid != os.getpid():  # a filesystem object of its own in each worker process
            import fsspec

            self._fs = fsspec.core.url_to_fs(self.url, **self.storage_options)[0]
            self._fs_pid = os.getpid()
        n_workers, worker_id = (1, 0) if worker is None else (worker.num_workers, worker.id)
        consumer, n_consumers = rank * n_workers + worker_id, world_size * n_workers
        epoch = self.epoch
        mine = self.shards_for(consumer, n_consumers, epoch)
        n_used = sum(1 for r in self._shard_rows if r.size)
        if n_used < n_consumers and consumer == 0:
            warnings.warn(f"{self.url}: {n_used} shard(s) for {n_consumers} consumers (ranks x workers); "
                          "some consumers get no data", stacklevel=2)
        rng = np.random.default_rng([self.spec.seed, epoch, rank, worker_id, 1])
        shared = worker is not None
        buffer: list[tuple[int, int, np.ndarray]] = []
        pending: list[tuple[int, int, np.ndarray]] = []

        def emit(item: tuple[int, int, np.ndarray]) -> Iterator[dict[str, torch.Tensor]]:
            if self.batch_size is None:
                batch = self._assemble([item], epoch, shared=False)
                yield {k: v[0] for k, v in batch.items()}
                return
            pending.append(item)
            if len(pending) == self.batch_size:
                yield self._assemble(pending, epoch, shared=shared)
                pending.clear()

        n_leads = len(self.spec.store_leads)
        for k in mine:
            name = self.shard_names[k]
            flat = _read_npy_bytes(self._fs.cat_file(f"{self._root}/shards/{name}.npy"), f"{self.url}/shards/{name}.npy")
            rows = rng.permutation(self._shard_rows[k]) if self.shuffle else self._shard_rows[k]
            n_wins = self.spec.n_windows(rows) if self.spec.crop == "windows" else np.ones(len(rows), np.int64)
            for r, n_win in zip(rows.tolist(), n_wins.tolist()):
                start, n = int(self.offsets[r]), int(self.spec.lengths[r])
                if start + n_leads * n > flat.size:
                    raise CorpusError(f"{self.url}/shards/{name}.npy: record row {r} runs past the shard's {flat.size} values")
                block = flat[start:start + n_leads * n].reshape(n_leads, n)
                for w in range(n_win):
                    item = (r, w, block)
                    if not self.shuffle:
                        yield from emit(item)
                        continue
                    if len(buffer) < self.buffer_size:
                        buffer.append(item)
                        continue
                    j = int(rng.integers(len(buffer)))
                    buffer[j], item = item, buffer[j]
                    yield from emit(item)
        if self.shuffle:
            for j in rng.permutation(len(buffer)):
                yield from emit(buffer[j])
        if pending and not self.drop_last:
            yield self._assemble(pending, epoch, shared=shared)

    def _assemble(self, items: Sequence[tuple[int, int, np.ndarray]], epoch: int, *, shared: bool) -> dict[str, torch.Tensor]:
        rows = np.array([it[0] for it in items], np.int64)
        windows = np.array([it[1] for it in items], np.int64)
        return self.spec.assemble([it[2] for it in items], rows, windows, rows, epoch, shared=shared,
                                  buffers=self.buffers)


# ---------------------------------------------------------------------------------------------
# data module
# ---------------------------------------------------------------------------------------------
try:  # Lightning is optional: subclass its DataModule when it is there, else a plain class
    from lightning import LightningDataModule as _DataModuleBase  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    _DataModuleBase = object  # type: ignore[assignment,misc]


class CorpusDataModule(_DataModuleBase):  # type: ignore[misc,valid-type]
    """Train/val/test loaders over a store's ``split`` column (Lightning-compatible).

    A :class:`lightning.LightningDataModule` when Lightning is installed, else a plain class with
    the same methods (``setup``, ``train_dataloader``, ``val_dataloader``,
    ``test_dataloader``). The loaders shard across DDP ranks themselves (rank and world size
    from the arguments or torch.distributed), so with Lightning pass
    ``Trainer(use_distributed_sampler=False)``. Training pads ranks to equal length and
    shuffles; validation and test see every item exactly once, in order.

    Args:
        store: the store's folder (or URL with ``stream=True``), or an open Corpus.
        window: window length in seconds (None: whole records).
        batch_size: items per batch (per rank).
        num_workers: DataLoader worker processes per rank.
        train_crop: crop of the training set (default ``"random"``).
        eval_crop: crop of validation and test (default ``"center"``; ``"windows"`` evaluates
            every window).
        leads, label_ids, seed, dtype: as for :class:`CorpusDataset`.
        augment: augmentation of the training set only.
        pin_memory, persistent_workers, prefetch_factor: passed to the DataLoaders
            (``persistent_workers`` defaults to ``num_workers > 0``).
        drop_last: drop the last incomplete training batch.
        rank, world_size: explicit DDP placement (default: torch.distributed's, else 0 of 1).
        stream: read every split through a :class:`CorpusStream` (a store larger than memory,
            or on object storage); training shuffles shards and a buffer, evaluation reads in
            order.
        storage_options: fsspec options for ``stream=True``.
        reuse_buffers: see :func:`corpus_loader` (default: on when batches are pinned).
    """

    def __init__(
        self,
        store: Corpus | str | os.PathLike[str],
        *,
        window: float | None = 10.0,
        batch_size: int = 256,
        num_workers: int = 2,
        train_crop: str = "random",
        eval_crop: str = "center",
        leads: Sequence[str] | None = None,
        label_ids: Sequence[str] | None = None,
        augment: Augmentation | None = None,
        seed: int = 0,
        dtype: str = "float32",
        pin_memory: bool = False,
        persistent_workers: bool | None = None,
        prefetch_factor: int | None = None,
        drop_last: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
        stream: bool = False,
        storage_options: Mapping[str, Any] | None = None,
        reuse_buffers: bool | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.window, self.batch_size, self.num_workers = window, batch_size, num_workers
        self.train_crop, self.eval_crop = train_crop, eval_crop
        self.leads, self.label_ids, self.augment = leads, label_ids, augment
        self.seed, self.dtype = seed, dtype
        self.pin_memory, self.prefetch_factor, self.drop_last = pin_memory, prefetch_factor, drop_last
        self.persistent_workers = num_workers > 0 if persistent_workers is None else persistent_workers
        self.rank, self.world_size = rank, world_size
        self.stream, self.storage_options = stream, storage_options
        self.reuse_buffers = reuse_buffers
        self.corpus: Corpus | None = None
        self.datasets: dict[str, CorpusDataset | CorpusStream] = {}
        self._loaders: dict[str, DataLoader] = {}

    def setup(self, stage: str | None = None) -> None:
        """Open the store and build the datasets of the splits it has."""
        if self.corpus is None:
            if isinstance(self.store, Corpus):
                self.corpus = self.store
            elif self.stream:
                self.corpus = _open_remote(os.fspath(self.store), self.storage_options)[2]
            else:
                self.corpus = Corpus.open(self.store)
        if self.label_ids is None:
            self.label_ids = _label_table(self.corpus.manifest, None)[0]
        splits = set(self.corpus.manifest["split"].dropna()) if "split" in self.corpus.manifest.columns else set()
        common = dict(window=self.window, leads=self.leads, label_ids=self.label_ids, seed=self.seed, dtype=self.dtype)
        for name in ("train", "val", "test"):
            if name in self.datasets or name not in splits:
                continue
            train = name == "train"
            crop, augment = (self.train_crop, self.augment) if train else (self.eval_crop, None)
            if self.stream:
                url = self.store.root if isinstance(self.store, Corpus) else self.store
                self.datasets[name] = CorpusStream(
                    os.fspath(url), split=name, crop=crop, augment=augment, shuffle=train,
                    batch_size=self.batch_size, drop_last=self.drop_last and train, rank=self.rank,
                    world_size=self.world_size, storage_options=self.storage_options, **common)
            else:
                self.datasets[name] = CorpusDataset(self.corpus, split=name, crop=crop, augment=augment, **common)

    def _loader(self, name: str) -> DataLoader:
        if not self.datasets:
            self.setup()
        if name not in self.datasets:
            raise ValidationError(f"{self.store}: the store has no {name!r} split (splits: {sorted(self.datasets)})")
        ds = self.datasets[name]
        train = name == "train"
        if isinstance(ds, CorpusStream):
            reuse = self.pin_memory and torch.accelerator.is_available()
            if (reuse if self.reuse_buffers is None else self.reuse_buffers) and self.num_workers:
                ds = copy.copy(ds)
                ds.buffers = _Buffers((self.prefetch_factor or 2) + 2)
            loader = DataLoader(ds, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                                prefetch_factor=self.prefetch_factor if self.num_workers else None)
        else:
            loader = corpus_loader(
                ds, self.batch_size, shuffle=train, drop_last=self.drop_last and train, num_workers=self.num_workers,
                rank=self.rank, world_size=self.world_size, pad=train, pin_memory=self.pin_memory,
                persistent_workers=self.persistent_workers, prefetch_factor=self.prefetch_factor,
                reuse_buffers=self.reuse_buffers)
        self._loaders[name] = loader
        return loader

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented, rank-sharded training batches."""
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        """Validation batches, every item once across ranks."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches, every item once across ranks."""
        return self._loader("test")

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` on the training loader.

        Lightning reaches the map-style sampler itself; with ``stream=True`` call this from the
        module's ``on_train_epoch_start`` (``self.trainer.datamodule.set_epoch(self.current_epoch)``).
        """
        loader = self._loaders.get("train")
        for ds in (self.datasets.get("train"), None if loader is None else loader.dataset):
            if ds is not None:
                ds.set_epoch(epoch)
        if loader is not None and isinstance(loader.batch_sampler, EpochBatchSampler):
            loader.batch_sampler.set_epoch(epoch)
