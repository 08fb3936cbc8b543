"""Huffman decoding as SCP-ECG (EN 1064 / ISO 11073-91064) uses it for waveform data.

SCP-ECG codes each sample (or each first/second difference) with a prefix code: a code either
stands for a fixed value, or is an escape followed by the value itself in ``total - prefix``
two's-complement bits, or switches to another table. Section 2 of a file holds its own tables,
or says "use the default table" (19999), or is absent (samples are stored as raw int16).

The bitstream is read most significant bit first. Base codes stored in section 2 are written
bit-reversed (least significant bit = first bit of the code), which is why
:func:`parse_tables` reverses them; the default table below is written in reading order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

DEFAULT_TABLE_MARKER = 19999  # "number of tables" value meaning: use the standard's default table
MAX_PREFIX_BITS = 16  # longest prefix we build a lookup table for (2**16 entries)
MAX_EXTRA_BITS = 32  # longest escaped value; SCP samples are 16-bit, so real files use <= 16


class HuffmanError(ValueError):
    """The Huffman tables or the coded bitstream are malformed."""


@dataclass(frozen=True)
class Code:
    """One code structure of an SCP-ECG Huffman table."""

    prefix_bits: int  # length of the code itself
    total_bits: int  # code plus the escaped value that follows it (== prefix_bits if none)
    is_value: bool  # False: a table-switch code, ``value`` is the 1-based table to switch to
    value: int  # the value the code stands for (added to an escaped value, if any)
    code: int  # the prefix bits, first bit read = most significant


def _default_table() -> tuple[Code, ...]:
    # EN 1064 default table: 0 -> "0"; +-k (k = 1..8) -> k ones, a zero, then the sign bit
    # (0 positive, 1 negative); "1111111110" + 8-bit value; "1111111111" + 16-bit value.
    codes = [Code(1, 1, True, 0, 0b0)]
    for k in range(1, 9):
        ones = (1 << k) - 1
        prefix = k + 2
        codes.append(Code(prefix, prefix, True, k, ((ones << 1) << 1) | 0))
        codes.append(Code(prefix, prefix, True, -k, ((ones << 1) << 1) | 1))
    codes.append(Code(10, 18, True, 0, 0b1111111110))
    codes.append(Code(10, 26, True, 0, 0b1111111111))
    return tuple(codes)


DEFAULT_TABLE: tuple[Code, ...] = _default_table()


def _reverse_bits(value: int, n: int) -> int:
    out = 0
    for _ in range(n):
        out = (out << 1) | (value & 1)
        value >>= 1
    return out


def parse_tables(body: bytes) -> tuple[tuple[Code, ...], ...] | None:
    """Parse the body of section 2 (after its 16-byte header).

    Returns:
        The tables in file order (table 1 first), ``(DEFAULT_TABLE,)`` when the section asks
        for the default table, or ``None`` when it declares zero tables (data are not coded).

    Raises:
        HuffmanError: the section is shorter than its tables or a table is malformed.
    """
    if len(body) < 2:
        raise HuffmanError("section 2 is too short to hold the number of Huffman tables")
    (n_tables,) = struct.unpack_from("<H", body, 0)
    if n_tables == DEFAULT_TABLE_MARKER:
        return (DEFAULT_TABLE,)
    if n_tables == 0:
        return None
    pos = 2
    tables = []
    for t in range(n_tables):
        if pos + 2 > len(body):
            raise HuffmanError(f"section 2 ends before Huffman table {t + 1} of {n_tables}")
        (n_codes,) = struct.unpack_from("<H", body, pos)
        pos += 2
        if n_codes == 0 or pos + 9 * n_codes > len(body):
            raise HuffmanError(
                f"Huffman table {t + 1} declares {n_codes} codes ({9 * n_codes} bytes), "
                f"{len(body) - pos} bytes left in section 2"
            )
        codes = []
        for _ in range(n_codes):
            prefix, total, mode, value, stored = struct.unpack_from("<BBBhI", body, pos)
            pos += 9
            codes.append(Code(prefix, total, mode == 1, value, _reverse_bits(stored, prefix)))
        tables.append(tuple(codes))
    return tuple(tables)


@dataclass(frozen=True)
class _Lookup:
    """A table compiled for decoding: entry per ``peek_bits``-bit pattern, None where invalid."""

    peek_bits: int
    entries: list[tuple[int, int, bool, int] | None]
    max_extra: int


def _compile(table: tuple[Code, ...], number: int) -> _Lookup:
    peek = max(c.prefix_bits for c in table)
    if peek > MAX_PREFIX_BITS:
        raise HuffmanError(
            f"Huffman table {number} has a {peek}-bit code (at most {MAX_PREFIX_BITS} supported)"
        )
    entries: list[tuple[int, int, bool, int] | None] = [None] * (1 << peek)
    max_extra = 0
    for c in table:
        extra = c.total_bits - c.prefix_bits
        if c.prefix_bits < 1 or extra < 0 or extra > MAX_EXTRA_BITS or c.code >> c.prefix_bits:
            raise HuffmanError(
                f"Huffman table {number} has an invalid code ({c.prefix_bits} prefix bits, "
                f"{c.total_bits} total bits, code {c.code:#x})"
            )
        if not c.is_value and extra:
            raise HuffmanError(f"Huffman table {number} has a table-switch code with value bits")
        max_extra = max(max_extra, extra)
        shift = peek - c.prefix_bits
        lo, hi = c.code << shift, (c.code + 1) << shift
        if any(e is not None for e in entries[lo:hi]):
            raise HuffmanError(
                f"Huffman table {number} is not a prefix code (code {c.code:#x} overlaps another)"
            )
        entries[lo:hi] = [(c.prefix_bits, c.total_bits, c.is_value, c.value)] * (hi - lo)
    return _Lookup(peek, entries, max_extra)


def compile_tables(tables: tuple[tuple[Code, ...], ...]) -> tuple[_Lookup, ...]:
    """Check and compile tables once per file (decoding every lead reuses them)."""
    return tuple(_compile(table, i + 1) for i, table in enumerate(tables))


def decode(data: bytes, n: int, tables: tuple[_Lookup, ...]) -> np.ndarray:
    """Decode up to ``n`` values from a Huffman-coded byte string.

    Decoding starts with table 1 (the standard restarts it for every lead). It stops after
    ``n`` values or when the remaining bits cannot hold another whole code, so a result shorter
    than ``n`` means the stream ran out.

    Returns:
        int64 array of at most ``n`` decoded values (still differences, if the file uses them).

    Raises:
        HuffmanError: a bit pattern matches no code, or a switch names a missing table.
    """
    nbits = 8 * len(data)
    width = max(max(t.peek_bits, t.max_extra) for t in tables)
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).astype(np.int64)
    bits = np.concatenate([bits, np.zeros(width, np.int64)])
    # window[p] = the `width` bits starting at bit p, first bit most significant: one numpy pass
    # instead of bit-by-bit reads in the Python loop below.
    window = np.zeros(nbits, np.int64)
    for i in range(width):
        window |= bits[i : i + nbits] << (width - 1 - i)
    win = window.tolist()

    out: list[int] = []
    pos = 0
    lookup = tables[0]
    entries, shift = lookup.entries, width - lookup.peek_bits
    while len(out) < n and pos < nbits:
        entry = entries[win[pos] >> shift]
        if entry is None:
            if nbits - pos < 8:
                break  # zero padding of the last byte need not form a code
            raise HuffmanError(f"bit pattern at bit {pos} matches no Huffman code")
        prefix, total, is_value, value = entry
        if pos + total > nbits:
            break  # only padding bits are left
        if not is_value:
            # Tables are numbered from 1 in the order section 2 lists them (as the ECG Toolkit
            # reads them; no available file switches tables, so this is unverified on real data).
            if not 1 <= value <= len(tables):
                raise HuffmanError(
                    f"switch to Huffman table {value} at bit {pos}, file has {len(tables)}"
                )
            lookup = tables[value - 1]
            entries, shift = lookup.entries, width - lookup.peek_bits
            pos += prefix
            continue
        extra = total - prefix
        if extra:
            raw = (win[pos + prefix] >> (width - extra)) & ((1 << extra) - 1)
            if raw >> (extra - 1):
                raw -= 1 << extra
            value += raw
        out.append(value)
        pos += total
    return np.asarray(out, dtype=np.int64)
