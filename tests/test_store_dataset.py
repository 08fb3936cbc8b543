"""CorpusDataset, CorpusStream, samplers and CorpusDataModule over a tiny synthetic store.

The reference for every window is ``Corpus.signal`` (the store reader); the reference for
labels is the manifest's ``labels`` column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ecgfm.errors import ValidationError
from ecgfm.store import format as F
from ecgfm.store.augment import Compose, GaussianNoise, LeadDropout
from ecgfm.store.dataset import (
    CorpusDataModule,
    CorpusDataset,
    CorpusStream,
    ShardedSampler,
    collate,
    corpus_loader,
    to_float,
)

FS = 100.0
LEADS = ("I", "II", "V1", "V2")
SPLITS = ("train", "train", "train", "val", "test")


def _build(root: Path, *, n_parts: int = 4, per_part: int = 6, lengths=None, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    k = 0
    for part in range(n_parts):
        writer = F.ShardWriter(root, f"part-{part:03d}", LEADS)
        for _ in range(per_part):
            n = int(lengths[k]) if lengths is not None else int(rng.integers(800, 1300))
            mask = np.array([True, k % 5 != 1, True, k % 7 != 2])
            labels = [c for c, on in zip(("NORM", "AF", "LBBB"), (k % 2 == 0, k % 3 == 0, k % 4 == 1)) if on]
            writer.add({"record_id": f"rec{k:03d}", "patient_id": f"p{k // 2}", "labels": labels,
                        "split": SPLITS[k % len(SPLITS)]},
                       rng.normal(0, 1 + 0.1 * k, (len(LEADS), n)).astype(np.float32), lead_mask=mask)
            k += 1
        writer.commit(keys=[f"part{part}"])
    F.write_json_atomic(root / "store.json", F.store_info(LEADS, FS, None))
    F.write_manifest(root, F.read_parts(root))
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("corpus") / "store")


@pytest.fixture(scope="module")
def corpus(store) -> F.Corpus:
    return F.Corpus.open(store)


def test_crops_match_the_reader(corpus):
    t = 500
    for crop in ("random", "start", "center"):
        ds = CorpusDataset(corpus, window=5.0, crop=crop, seed=3)
        batch = ds.__getitems__(list(range(len(ds))))
        assert batch["signal"].shape == (len(corpus), 4, t) and batch["signal"].dtype == torch.float32
        for b in range(len(ds)):
            row, start = int(batch["record"][b]), int(batch["start"][b])
            n = int(corpus.lengths[row])
            assert 0 <= start <= n - t
            if crop == "start":
                assert start == 0
            if crop == "center":
                assert start == (n - t) // 2
            np.testing.assert_array_equal(batch["signal"][b].numpy(), corpus.signal(row, start, t))
            np.testing.assert_array_equal(batch["mask"][b].numpy(), corpus.lead_mask[row])
        if crop == "random":
            assert len(set(batch["start"].tolist())) > len(ds) // 2
    # A single item is the batch's row.
    ds = CorpusDataset(corpus, window=5.0, crop="random", seed=3)
    item = ds[4]
    assert item["signal"].shape == (4, t) and int(item["index"]) == 4
    np.testing.assert_array_equal(item["signal"].numpy(), ds.__getitems__([0, 4])["signal"][1].numpy())


def test_fixed_windows_enumerate_every_window(corpus):
    t = 300
    ds = CorpusDataset(corpus, window=3.0, crop="windows")
    expected = {(r, w * t) for r in range(len(corpus)) for w in range(int(corpus.lengths[r]) // t)}
    assert len(ds) == len(expected)
    batch = ds.__getitems__(list(range(len(ds))))
    got = set(zip(batch["record"].tolist(), batch["start"].tolist()))
    assert got == expected
    for b in range(0, len(ds), 7):
        row, start = int(batch["record"][b]), int(batch["start"][b])
        np.testing.assert_array_equal(batch["signal"][b].numpy(), corpus.signal(row, start, t))


def test_short_records_are_zero_padded(tmp_path):
    root = _build(tmp_path / "short", n_parts=1, per_part=3, lengths=[300, 500, 700])
    corpus = F.Corpus.open(root)
    ds = CorpusDataset(corpus, window=5.0, crop="random")
    batch = ds.__getitems__([0, 1, 2])
    assert batch["length"].tolist() == [300, 500, 500]
    np.testing.assert_array_equal(batch["signal"][0, :, :300].numpy(), corpus.signal(0))
    assert torch.all(batch["signal"][0, :, 300:] == 0)
    assert len(CorpusDataset(corpus, window=5.0, crop="windows")) == 3  # one padded window each
    with pytest.raises(ValidationError, match="different lengths"):
        CorpusDataset(corpus).__getitems__([0, 1])
    whole = CorpusDataset(corpus).__getitems__([2])
    np.testing.assert_array_equal(whole["signal"][0].numpy(), corpus.signal(2))


def test_lead_subsets_and_masks(corpus):
    ds = CorpusDataset(corpus, window=5.0, crop="start", leads=["V2", "I", "V6"])
    batch = ds.__getitems__(list(range(len(ds))))
    assert ds.leads == ("V2", "I", "V6")
    assert batch["signal"].shape[1] == 3
    for b in range(len(ds)):
        full = corpus.signal(b, 0, 500)
        np.testing.assert_array_equal(batch["signal"][b, 0].numpy(), full[3])
        np.testing.assert_array_equal(batch["signal"][b, 1].numpy(), full[0])
        assert torch.all(batch["signal"][b, 2] == 0)             # the store has no V6
        assert batch["mask"][b].tolist() == [bool(corpus.lead_mask[b, 3]), bool(corpus.lead_mask[b, 0]), False]
    assert not batch["mask"][:, 0].all()                         # some records lack V2


def test_int16_path_converts_to_the_float_path(corpus):
    f32 = CorpusDataset(corpus, window=4.0, crop="random", seed=1, leads=["II", "V1", "V5"])
    i16 = CorpusDataset(corpus, window=4.0, crop="random", seed=1, leads=["II", "V1", "V5"], dtype="int16")
    idx = [5, 0, 17, 9]
    a, b = f32.__getitems__(idx), i16.__getitems__(idx)
    assert b["signal"].dtype == torch.int16 and b["scale"].shape == (4, 3)
    converted = to_float(b)
    assert "scale" not in converted
    torch.testing.assert_close(converted["signal"], a["signal"], rtol=0, atol=0)
    assert torch.equal(a["start"], b["start"])
    with pytest.raises(ValidationError, match="float32"):
        CorpusDataset(corpus, window=4.0, dtype="int16", augment=GaussianNoise())


def test_labels_multi_hot_against_the_manifest(corpus):
    ds = CorpusDataset(corpus, window=2.0, crop="start")
    assert ds.label_ids == ("AF", "LBBB", "NORM")
    batch = ds.__getitems__(list(range(len(ds))))
    for b, row in enumerate(batch["record"].tolist()):
        expected = {str(x) for x in corpus.manifest["labels"].iloc[row]}
        got = {ds.label_ids[j] for j in np.flatnonzero(batch["labels"][b].numpy())}
        assert got == expected
    chosen = CorpusDataset(corpus, window=2.0, crop="start", label_ids=["NORM", "STACH"])
    lab = chosen.__getitems__(list(range(len(chosen))))["labels"]
    assert lab.shape == (len(corpus), 2) and lab.dtype == torch.float32
    assert lab[:, 0].tolist() == [float(k % 2 == 0) for k in range(len(corpus))]
    assert lab[:, 1].sum() == 0


def test_split_selection(corpus):
    val = CorpusDataset(corpus, split="val", window=2.0)
    rows = val.__getitems__(list(range(len(val))))["record"].tolist()
    assert rows == [r for r in range(len(corpus)) if corpus.manifest["split"].iloc[r] == "val"]
    assert val.label_ids == CorpusDataset(corpus, split="train", window=2.0).label_ids
    with pytest.raises(ValidationError, match="splits present"):
        CorpusDataset(corpus, split="holdout", window=2.0)
    sub = CorpusDataset(corpus, split="train", indices=[0, 3, 5, 1], window=2.0)
    assert sub.rows.tolist() == [0, 5, 1]          # the split's rows among indices, in order


def _epoch(loader, epoch: int) -> list[dict]:
    loader.batch_sampler.set_epoch(epoch)
    return list(loader)


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        set(x) == set(y) and all(torch.equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


def test_determinism_across_workers_and_epochs(corpus):
    aug = Compose([GaussianNoise(std=0.1), LeadDropout(0.3)])
    ds = CorpusDataset(corpus, window=5.0, crop="random", augment=aug, seed=11)
    single = corpus_loader(ds, 5, shuffle=True, num_workers=0)
    multi = corpus_loader(ds, 5, shuffle=True, num_workers=2, persistent_workers=True)
    e0, e1 = _epoch(single, 0), _epoch(single, 1)
    assert _same(e0, _epoch(multi, 0))
    assert _same(e1, _epoch(multi, 1))              # the epoch reaches persistent workers
    assert not _same(e0, e1)
    # Item content depends on (seed, epoch, record) only, not on the order or the batch.
    by_record = {int(r): s for b in e0 for r, s in zip(b["record"], b["signal"])}
    plain = CorpusDataset(corpus, window=5.0, crop="random", augment=aug, seed=11)
    for i in (0, 7, 23):
        torch.testing.assert_close(plain[i]["signal"], by_record[i], rtol=0, atol=0)
    # Epoch 1 through the persistent workers is epoch 1 of the dataset, and differs from epoch 0.
    by_record1 = {int(r): s for b in e1 for r, s in zip(b["record"], b["signal"])}
    plain.set_epoch(1)
    for i in (0, 7, 23):
        torch.testing.assert_close(plain[i]["signal"], by_record1[i], rtol=0, atol=0)
        assert not torch.equal(by_record[i], by_record1[i])
    other = CorpusDataset(corpus, window=5.0, crop="random", augment=aug, seed=12)
    assert not torch.equal(other[0]["signal"], plain[0]["signal"])
    # A plain DataLoader with batch_size uses __getitems__ too (with the collate that passes it through).
    dl = torch.utils.data.DataLoader(plain, batch_size=8, num_workers=2, collate_fn=collate)
    got = torch.cat([b["record"] for b in dl])
    assert got.tolist() == list(range(len(corpus)))


def test_rank_sharding_covers_every_index_once(corpus):
    n = len(corpus)
    for world in (1, 3, 5):
        seen = []
        for rank in range(world):
            sampler = ShardedSampler(range(n), rank=rank, world_size=world, shuffle=True, seed=2, pad=False)
            sampler.set_epoch(4)
            seen += list(sampler)
        assert sorted(seen) == list(range(n))
        padded = [list(ShardedSampler(range(n), rank=r, world_size=world, pad=True)) for r in range(world)]
        assert len({len(p) for p in padded}) == 1 and set().union(*padded) == set(range(n))
    ds = CorpusDataset(corpus, window=2.0, crop="start")
    records = []
    for rank in range(3):
        loader = corpus_loader(ds, 4, shuffle=False, num_workers=2 if rank == 0 else 0, rank=rank, world_size=3)
        records += [r for b in loader for r in b["record"].tolist()]
    assert sorted(records) == list(range(n))
    with pytest.raises(ValidationError, match="rank"):
        corpus_loader(ds, 4, rank=3, world_size=3)


def _items_by_record(batches) -> dict[int, dict]:
    return {int(r): {k: v[j] for k, v in b.items()} for b in batches for j, r in enumerate(b["record"])}


@pytest.mark.parametrize("where", ["local", "memory"])
def test_stream_equals_map_style(store, corpus, where):
    if where == "memory":
        import fsspec

        fs = fsspec.filesystem("memory")
        fs.put(str(store), "/ecgfm-test-store", recursive=True)
        url = "memory://ecgfm-test-store"
    else:
        url = str(store)
    try:
        kwargs = dict(window=5.0, crop="random", seed=5, augment=GaussianNoise(std=0.2))
        stream = CorpusStream(url, batch_size=4, **kwargs)
        stream.set_epoch(2)
        got = _items_by_record(stream)
        ds = CorpusDataset(corpus, **kwargs)
        ds.set_epoch(2)
        want = _items_by_record([ds.__getitems__(list(range(len(ds))))])
        assert sorted(got) == sorted(want) == list(range(len(corpus)))
        for r in want:
            for k in ("signal", "mask", "labels", "start", "length"):
                assert torch.equal(got[r][k], want[r][k]), (r, k)
        # Every record once per epoch across 2 ranks x 2 DataLoader workers.
        seen = []
        for rank in range(2):
            s = CorpusStream(url, split="train", window=3.0, crop="windows", buffer_size=5,
                             rank=rank, world_size=2, seed=1)
            loader = torch.utils.data.DataLoader(s, batch_size=3, num_workers=2, collate_fn=collate)
            seen += [(int(r), int(t)) for b in loader for r, t in zip(b["record"], b["start"])]
        train = CorpusDataset(corpus, split="train", window=3.0, crop="windows")
        assert len(seen) == len(train) == s.n_items
        assert sorted(seen) == sorted(zip(train.rows.tolist(), (train.windows * 300).tolist()))
    finally:
        if where == "memory":
            fs.rm("/ecgfm-test-store", recursive=True)


def test_stream_shard_order_changes_per_epoch(store):
    stream = CorpusStream(str(store), window=2.0, seed=0)
    orders = [stream.shards_for(0, 1, epoch) for epoch in range(4)]
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders)
    assert len({tuple(o) for o in orders}) > 1
    assert stream.shards_for(0, 2, 0) + stream.shards_for(1, 2, 0) != []
    assert sorted(stream.shards_for(0, 2, 0) + stream.shards_for(1, 2, 0)) == [0, 1, 2, 3]


def test_data_module(store, corpus):
    dm = CorpusDataModule(store, window=4.0, batch_size=4, num_workers=0, augment=GaussianNoise())
    dm.setup("fit")
    train = list(dm.train_dataloader())
    assert all(b["signal"].shape == (4, 4, 400) for b in train)     # drop_last in training
    val = list(dm.val_dataloader())
    val_rows = sorted(r for b in val for r in b["record"].tolist())
    assert val_rows == [r for r in range(len(corpus)) if corpus.manifest["split"].iloc[r] == "val"]
    assert dm.datasets["val"].label_ids == dm.datasets["train"].label_ids == ("AF", "LBBB", "NORM")
    dm.set_epoch(1)
    assert not _same(train, list(dm.train_dataloader()))
    ranks = [CorpusDataModule(store, window=4.0, batch_size=2, num_workers=0, rank=r, world_size=2) for r in (0, 1)]
    test_rows = sorted(r for dm_ in ranks for b in dm_.test_dataloader() for r in b["record"].tolist())
    assert test_rows == [r for r in range(len(corpus)) if corpus.manifest["split"].iloc[r] == "test"]
    streamed = CorpusDataModule(store, window=4.0, batch_size=4, num_workers=0, stream=True)
    rows = sorted(r for b in streamed.val_dataloader() for r in b["record"].tolist())
    assert rows == val_rows


def test_errors_name_the_problem(store, corpus):
    with pytest.raises(ValidationError, match="crop"):
        CorpusDataset(corpus, window=2.0, crop="middle")
    with pytest.raises(ValidationError, match="window"):
        CorpusDataset(corpus, crop="windows")
    with pytest.raises(ValidationError, match="twice"):
        CorpusDataset(corpus, window=2.0, leads=["I", "I"])
    with pytest.raises(F.CorpusError, match="no store.json"):
        CorpusStream(str(store / "shards"))
    with pytest.raises(IndexError):
        CorpusDataset(corpus, window=2.0)[len(corpus)]


def test_buffer_ring_gives_the_same_batches(corpus):
    ds = CorpusDataset(corpus, indices=np.tile(np.arange(len(corpus)), 2), window=3.0, crop="random")
    fresh = corpus_loader(ds, 3, num_workers=2, reuse_buffers=False)
    ring = corpus_loader(ds, 3, num_workers=2, reuse_buffers=True, prefetch_factor=1)
    want = [{k: v.clone() for k, v in b.items()} for b in fresh]
    got, pointers = [], set()
    for b in ring:                        # consumed one at a time, as the ring requires
        pointers.add(b["signal"].data_ptr())
        got.append({k: v.clone() for k, v in b.items()})
    assert _same(got, want) and len(got) == 16
    assert len(pointers) <= 2 * 3          # 2 workers x (prefetch_factor + 2) slots, each mapped once
    assert ring.dataset is not ds and ds.buffers.slots == 0   # the caller's dataset is untouched


def test_batches_pickle_with_small_tensors_by_value(corpus):
    import pickle
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # noqa: F401  (registers the tensor reducers)

    batch = CorpusDataset(corpus, window=2.0, dtype="int16").__getitems__([1, 2])
    back = pickle.loads(ForkingPickler.dumps(batch))
    assert set(back) == set(batch) and all(torch.equal(back[k], batch[k]) for k in batch)
    _, (signal, small, _slot) = batch.__reduce__()
    assert signal is batch["signal"]                # the one tensor sent through shared memory
    assert all(isinstance(v, np.ndarray) for v in small.values()) and "scale" in small
