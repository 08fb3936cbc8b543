"""The corpus store on disk: int16 shards, a Parquet manifest, and a commit protocol.

Layout of a store folder::

    STORE/store.json            what the arrays mean: leads, rate, the preprocessing pipeline
    STORE/shards/<part>.npy     1-D int16; the part's records one after another, each a
                                row-major block [n_leads, n_samples]
    STORE/parts/<part>.parquet  one manifest row per record of that shard
    STORE/parts/<part>.json     the commit marker: keys done, errors, record count, shard size
    STORE/manifest.parquet      every committed part's rows plus ``split`` (written by the builder)
    STORE/errors.jsonl          files that failed, with the reason

A part becomes visible only when its ``.json`` marker exists; the shard and the Parquet rows are
written first, each to a temporary name renamed into place, so a crash mid-part leaves nothing
half-written visible and the rerun simply redoes that part.

Samples are stored as int16 with one scale per record and lead (``scale``: units per LSB, the
pipeline's output units, mV unless it normalises): ``scale = max|x| / 32767``, so nothing clips
and the quantisation error is below 1/65534 of each lead's peak. Why int16 shards memory-mapped
rather than a chunked, compressed format: see ``docs/corpus.md`` (the measured comparison).

Manifest columns written by :class:`ShardWriter` (the builder adds more): ``record_id``,
``shard``, ``offset`` (element offset into the shard), ``n_samples``, ``scale`` (list of
float32 per store lead), ``lead_mask`` (list of bool per store lead: False where the record had no
such lead and the stored samples are zeros).
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgfm.errors import ECGError
from ecgfm.leads import canonical_leads

if TYPE_CHECKING:
    import pandas as pd

    from ecgfm.preprocess import Pipeline
    from ecgfm.record import ECG

STORE_FORMAT = "ecgfm-corpus"
STORE_VERSION = 1
INT16_MAX = 32767
_PART_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
# Columns the arrays are located by; a manifest without them is not a store manifest.
ARRAY_COLUMNS = ("record_id", "shard", "offset", "n_samples", "scale", "lead_mask")


class CorpusError(ECGError):
    """A corpus store is missing, damaged, or disagrees with its manifest."""


def quantise(signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float ``[leads, samples]`` -> (int16 ``[leads, samples]``, float32 scale ``[leads]``).

    ``signal ~= q * scale[:, None]``; a flat lead gets scale 1 and zeros.
    """
    x = np.asarray(signal, dtype=np.float32)
    if x.ndim != 2:
        raise CorpusError(f"expected a [leads, samples] signal, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise CorpusError("signal holds NaN or infinite values; mask or drop them before storing")
    peak = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0], np.float32)
    scale = np.where(peak > 0, peak / INT16_MAX, 1.0).astype(np.float32)
    q = np.rint(x / scale[:, None])
    np.clip(q, -INT16_MAX, INT16_MAX, out=q)  # float rounding at the peak can reach 32767.5
    return q.astype(np.int16), scale


def _atomic_write_bytes(path: Path, write: Any) -> None:
    """Write via ``write(tmp_path)`` to a temporary name in the same folder, then rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` so readers see either the old file or the whole new one."""
    text = json.dumps(data, indent=1, ensure_ascii=False, default=str) + "\n"
    _atomic_write_bytes(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_parquet_atomic(path: Path, frame: pd.DataFrame) -> None:
    """Write a DataFrame as Parquet (zstd) to ``path`` atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    _atomic_write_bytes(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def store_info(
    leads: Sequence[str], fs: float | None, pipeline: Pipeline | None, **extra: Any,
) -> dict[str, Any]:
    """The ``store.json`` document for a new store."""
    return {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "leads": list(canonical_leads(leads)),
        "fs": None if fs is None else float(fs),
        "dtype": "int16",
        "pipeline": None if pipeline is None else pipeline.to_dict(),
        "pipeline_hash": None if pipeline is None else pipeline.hash,
        **extra,
    }


class ShardWriter:
    """Collects records for one part and commits them atomically.

    >>> writer = ShardWriter(store, "ptbxl-00003", leads)          # doctest: +SKIP
    >>> writer.add({"record_id": "00001_hr", ...}, signal)        # doctest: +SKIP
    >>> writer.commit(keys=["/data/00001_hr.hea"], errors=[])     # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike[str], part: str, leads: Sequence[str]) -> None:
        if not _PART_NAME.match(part):
            raise CorpusError(f"part name {part!r} may only hold letters, digits, '_', '-' and '.'")
        self.root = Path(root)
        self.part = part
        self.leads = tuple(canonical_leads(leads))
        self._blocks: list[np.ndarray] = []
        self._rows: list[dict[str, Any]] = []
        self._offset = 0

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, row: Mapping[str, Any], signal: np.ndarray, lead_mask: np.ndarray | None = None) -> None:
        """Add one record: manifest fields and its signal ``[len(leads), samples]`` (float)."""
        x = np.asarray(signal)
        if x.ndim != 2 or x.shape[0] != len(self.leads):
            raise CorpusError(
                f"record {row.get('record_id')!r}: signal shape {x.shape} does not match the "
                f"store's {len(self.leads)} leads"
            )
        mask = np.ones(len(self.leads), bool) if lead_mask is None else np.asarray(lead_mask, bool)
        if mask.shape != (len(self.leads),):
            raise CorpusError(f"record {row.get('record_id')!r}: lead mask must have {len(self.leads)} entries")
        q, scale = quantise(np.where(mask[:, None], x, 0.0))
        self._blocks.append(q.ravel())
        self._rows.append({
            **row,
            "shard": self.part,
            "offset": self._offset,
            "n_samples": int(x.shape[1]),
            "scale": scale.tolist(),
            "lead_mask": mask.tolist(),
        })
        self._offset += q.size

    def commit(self, keys: Iterable[str] = (), errors: Iterable[Mapping[str, Any]] = ()) -> dict[str, Any]:
        """Write shard, rows and marker (in that order, each atomically); return the marker.

        ``keys`` are the work items (usually source files) this part finished, including those
        that failed with ``errors`` (dicts with at least ``key`` and ``problem``), so a rerun
        skips them all.
        """
        import pandas as pd

        shards, parts = self.root / "shards", self.root / "parts"
        shards.mkdir(parents=True, exist_ok=True)
        parts.mkdir(parents=True, exist_ok=True)
        flat = np.concatenate(self._blocks) if self._blocks else np.zeros(0, np.int16)
        _atomic_write_bytes(shards / f"{self.part}.npy", lambda tmp: _save_npy(tmp, flat))
        write_parquet_atomic(parts / f"{self.part}.parquet", pd.DataFrame(self._rows))
        marker = {
            "part": self.part,
            "n_records": len(self._rows),
            "n_values": int(flat.size),
            "crc32": zlib.crc32(flat.tobytes()),
            "keys": list(keys),
            "errors": [dict(e) for e in errors],
        }
        write_json_atomic(parts / f"{self.part}.json", marker)
        return marker


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


@dataclass(frozen=True)
class PartMarker:
    """A committed part as its marker describes it."""

    part: str
    n_records: int
    n_values: int
    crc32: int
    keys: tuple[str, ...]
    errors: tuple[dict[str, Any], ...]


def committed_parts(root: str | os.PathLike[str]) -> list[PartMarker]:
    """The parts whose commit marker exists, sorted by name."""
    out = []
    for path in sorted((Path(root) / "parts").glob("*.json")):
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CorpusError(f"{path}: unreadable commit marker ({exc})") from None
        out.append(PartMarker(d["part"], int(d["n_records"]), int(d["n_values"]), int(d["crc32"]),
                              tuple(d.get("keys", ())), tuple(d.get("errors", ()))))
    return out


def read_parts(root: str | os.PathLike[str], parts: Sequence[PartMarker] | None = None) -> pd.DataFrame:
    """Concatenate the committed parts' manifest rows (in part order)."""
    import pandas as pd
    import pyarrow.parquet as pq

    root = Path(root)
    parts = committed_parts(root) if parts is None else parts
    frames = [pq.read_table(root / "parts" / f"{p.part}.parquet").to_pandas() for p in parts if p.n_records]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in ARRAY_COLUMNS})
    return pd.concat(frames, ignore_index=True)


class Corpus:
    """A read-only view of a corpus store: manifest plus memory-mapped int16 shards.

    ``Corpus.open(path)`` checks that every committed shard holds exactly the values its
    manifest rows point to (sizes always; CRCs with ``verify="full"``) and raises
    :class:`CorpusError` naming the part otherwise.

    Attributes (``N`` records, ``L`` store leads): ``manifest`` (pandas DataFrame, row ``i`` is
    record ``i``), ``leads``, ``fs``, ``pipeline``, ``offsets`` int64 ``[N]``, ``lengths``
    int64 ``[N]``, ``scales`` float32 ``[N, L]``, ``lead_mask`` bool ``[N, L]``,
    ``shard_index`` int32 ``[N]`` into ``shard_names``.
    """

    def __init__(self, root: Path, info: dict[str, Any], manifest: pd.DataFrame) -> None:
        self.root = root
        self.info = info
        self.leads: tuple[str, ...] = tuple(info["leads"])
        self.fs: float | None = info.get("fs")
        self.manifest = manifest.reset_index(drop=True)
        n, n_leads = len(self.manifest), len(self.leads)
        self.offsets = self.manifest["offset"].to_numpy(np.int64) if n else np.zeros(0, np.int64)
        self.lengths = self.manifest["n_samples"].to_numpy(np.int64) if n else np.zeros(0, np.int64)
        self.scales = (np.array(self.manifest["scale"].tolist(), np.float32).reshape(n, n_leads)
                       if n else np.zeros((0, n_leads), np.float32))
        self.lead_mask = (np.array(self.manifest["lead_mask"].tolist(), bool).reshape(n, n_leads)
                          if n else np.zeros((0, n_leads), bool))
        codes, names = (self.manifest["shard"].factorize() if n else (np.zeros(0, np.int64), []))
        self.shard_index = np.asarray(codes, np.int32)
        self.shard_names: list[str] = list(names)
        self._maps: dict[int, np.ndarray] = {}

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str], *, verify: str | None = "sizes") -> Corpus:
        """Open a store. ``verify``: ``"sizes"`` (default, cheap), ``"full"`` (CRC of every shard) or None."""
        root = Path(path)
        info_path = root / "store.json"
        if not info_path.is_file():
            raise CorpusError(f"{root}: not a corpus store (no store.json)")
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise CorpusError(f"{info_path}: unreadable ({exc})") from None
        if info.get("format") != STORE_FORMAT:
            raise CorpusError(f"{info_path}: format is {info.get('format')!r}, expected {STORE_FORMAT!r}")
        if int(info.get("version", 0)) > STORE_VERSION:
            raise CorpusError(f"{info_path}: store version {info['version']} is newer than this ecgfm reads ({STORE_VERSION})")
        parts = committed_parts(root)
        manifest = _load_manifest(root, parts)
        corpus = cls(root, info, manifest)
        if verify:
            corpus.verify(parts, full=verify == "full")
        return corpus

    def verify(self, parts: Sequence[PartMarker] | None = None, *, full: bool = False) -> None:
        """Raise :class:`CorpusError` where shards and manifest disagree."""
        parts = committed_parts(self.root) if parts is None else parts
        by_part = {p.part: p for p in parts}
        missing = sorted(set(self.shard_names) - set(by_part))
        if missing:
            raise CorpusError(f"{self.root}: manifest rows point to uncommitted shard(s) {missing[:5]}")
        if self.manifest["record_id"].duplicated().any() if len(self.manifest) else False:
            dup = self.manifest.loc[self.manifest["record_id"].duplicated(), "record_id"].iloc[0]
            raise CorpusError(f"{self.root}: record id {dup!r} appears more than once in the manifest")
        counts = np.bincount(self.shard_index, minlength=len(self.shard_names))
        ends = np.zeros(len(self.shard_names), np.int64)
        np.maximum.at(ends, self.shard_index, self.offsets + self.lengths * len(self.leads))
        used = np.zeros(len(self.shard_names), np.int64)
        np.add.at(used, self.shard_index, self.lengths * len(self.leads))
        for k, name in enumerate(self.shard_names):
            marker = by_part[name]
            where = f"{self.root}: part {name}"
            if counts[k] != marker.n_records:
                raise CorpusError(f"{where}: manifest has {counts[k]} rows, the commit marker {marker.n_records}")
            if ends[k] != marker.n_values or used[k] != marker.n_values:
                raise CorpusError(f"{where}: manifest rows cover {used[k]} values ending at {ends[k]}, the shard holds {marker.n_values}")
            shard = self.shard(k)
            if shard.size != marker.n_values:
                raise CorpusError(f"{where}: shard file holds {shard.size} values, the commit marker says {marker.n_values}")
            if full and zlib.crc32(np.ascontiguousarray(shard).tobytes()) != marker.crc32:
                raise CorpusError(f"{where}: shard checksum does not match its commit marker (corrupt file)")

    # -- access ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.manifest)

    def __repr__(self) -> str:
        return f"Corpus({str(self.root)!r}, records={len(self)}, leads={len(self.leads)}, fs={self.fs})"

    @property
    def pipeline(self) -> Pipeline | None:
        """The preprocessing every stored record went through (None when not recorded)."""
        from ecgfm.preprocess import Pipeline

        spec = self.info.get("pipeline")
        return None if spec is None else Pipeline.from_dict(spec)

    def shard(self, k: int | str) -> np.ndarray:
        """The memory-mapped 1-D int16 array of shard ``k`` (index or part name)."""
        k = self.shard_names.index(k) if isinstance(k, str) else k
        arr = self._maps.get(k)
        if arr is None:
            path = self.root / "shards" / f"{self.shard_names[k]}.npy"
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise CorpusError(f"{path}: unreadable shard ({exc})") from None
            if arr.dtype != np.int16 or arr.ndim != 1:
                raise CorpusError(f"{path}: expected a 1-D int16 array, got {arr.dtype} {arr.shape}")
            self._maps[k] = arr
        return arr

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers and Dask tasks get a copy without open memory maps.
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    def raw(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Record ``i`` as stored: int16 ``[L, n]`` (a view into the shard) and float32 scales ``[L]``."""
        n_leads, n = len(self.leads), int(self.lengths[i])
        start = int(self.offsets[i])
        block = self.shard(int(self.shard_index[i]))[start:start + n_leads * n]
        return block.reshape(n_leads, n), self.scales[i]

    def signal(self, i: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """Record ``i`` (or the window ``[start, start + length)``) as float32 ``[L, samples]``."""
        q, scale = self.raw(i)
        stop = q.shape[1] if length is None else start + length
        if start < 0 or stop > q.shape[1]:
            raise CorpusError(f"record {self.manifest['record_id'].iat[i]!r}: window [{start}, {stop}) outside its {q.shape[1]} samples")
        return q[:, start:stop].astype(np.float32) * scale[:, None]

    def ecg(self, i: int) -> ECG:
        """Record ``i`` as an :class:`~ecgfm.ECG` (leads absent from the source are masked)."""
        from ecgfm.record import ECG, Metadata

        row = self.manifest.iloc[i]
        meta = Metadata(
            record_id=str(row["record_id"]),
            patient_id=_opt_str(row.get("patient_id")),
            age=_opt_float(row.get("age")),
            sex=_opt_str(row.get("sex")),
            source_format=_opt_str(row.get("source_format")),
            source_path=_opt_str(row.get("source")),
            interpretation=_opt_str(row.get("report")),
        )
        fs = self.fs if self.fs is not None else float(row["fs"])
        signal, mask = self.signal(i), self.lead_mask[i]
        sample_mask = None if mask.all() else np.repeat(mask[:, None], signal.shape[1], axis=1)
        return ECG(signal, fs, self.leads, meta, mask=sample_mask)

    def __iter__(self) -> Iterator[ECG]:
        for i in range(len(self)):
            yield self.ecg(i)


def _opt_str(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value) if str(value) else None


def _opt_float(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(v) else v


def _load_manifest(root: Path, parts: Sequence[PartMarker]) -> pd.DataFrame:
    """The consolidated manifest when it covers exactly the committed parts, else the parts."""
    import pyarrow.parquet as pq

    path = root / "manifest.parquet"
    if path.is_file():
        meta = pq.read_schema(path).metadata or {}
        recorded = json.loads(meta.get(b"ecgfm_parts", b"null"))
        if recorded == sorted(p.part for p in parts if p.n_records):
            frame = pq.read_table(path).to_pandas()
            absent = [c for c in ARRAY_COLUMNS if c not in frame.columns]
            if absent:
                raise CorpusError(f"{path}: manifest lacks column(s) {absent}")
            return frame
    return read_parts(root, parts)


def write_manifest(root: str | os.PathLike[str], frame: pd.DataFrame, parts: Sequence[PartMarker] | None = None) -> Path:
    """Write the consolidated ``manifest.parquet``, recording which parts it covers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    parts = committed_parts(root) if parts is None else parts
    table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
    covered = json.dumps(sorted(p.part for p in parts if p.n_records)).encode()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"ecgfm_parts": covered})
    path = root / "manifest.parquet"
    _atomic_write_bytes(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))
    return path
