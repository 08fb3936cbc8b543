"""Philips XLI waveform decompression (the ``compression="XLI"`` data of Sierra ECG XML).

The layout was worked out by the open-source ``sierra-ecg-tools`` project (C. Watford, MIT) and
is confirmed here against the Philips files in the shared data. The waveform block holds one
chunk per channel::

    int32 size | int16 (always 1) | int16 first delta | `size` bytes of LZW codes

The LZW stream uses fixed 10-bit codes, most significant bit first, a dictionary that starts
with the 256 byte values, grows to code 1022 and is never reset; code 1023 ends the stream.
The decompressed bytes are the high bytes of all samples followed by all the low bytes; the
resulting int16 values are second-order differences that :func:`integrate_deltas` integrates.

Philips writes 16 chunks (its DXL front end has 16 channels); the channels beyond the file's
lead count hold only a calibration pulse and are skipped by the caller asking for fewer.
"""

from __future__ import annotations

import struct

import numpy as np

CODE_BITS = 10
END_CODE = (1 << CODE_BITS) - 1  # 1023 terminates a stream
MAX_CODE = END_CODE - 1  # the dictionary stops growing at 1022
DELTA_BIAS = 64  # the encoder stores each second difference plus 64
_HEADER = struct.Struct("<ihh")


class XliError(ValueError):
    """XLI data that cannot be decoded; the message says where and why."""


def decode_xli(data: bytes, n_leads: int, n_samples: int | None = None) -> np.ndarray:
    """Decode the first ``n_leads`` channels of an XLI waveform block.

    Args:
        data: the base64-decoded content of ``parsedwaveforms``.
        n_leads: channels to decode (later chunks are ignored).
        n_samples: samples every channel must decode to, or None to take the first
            channel's length (all channels must then agree).

    Returns:
        int64 array ``[n_leads, n_samples]`` of raw sample values (ADC units), as stored: the
        limb leads III, aVR, aVL and aVF are still the residuals Philips stores for them.

    Raises:
        XliError: a chunk header or payload is truncated, the LZW stream is corrupt, or a
            channel decodes to the wrong number of samples.
    """
    leads: list[np.ndarray] = []
    offset = 0
    for index in range(n_leads):
        if offset + _HEADER.size > len(data):
            raise XliError(
                f"data ends after {index} of {n_leads} lead chunks ({len(data)} bytes; truncated?)"
            )
        size, _, first = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        if size < 0 or offset + size > len(data):
            raise XliError(
                f"lead chunk {index + 1} declares {size} bytes but {len(data) - offset} remain "
                "(truncated?)"
            )
        expected_bytes = None if n_samples is None else 2 * n_samples
        limit = expected_bytes if expected_bytes is not None else 64 * size + 1024
        try:
            raw = lzw_decode(data[offset : offset + size], limit=limit)
        except XliError as exc:
            raise XliError(f"lead chunk {index + 1}: {exc}") from None
        offset += size
        if expected_bytes is None:
            expected_bytes = len(raw)
            n_samples = len(raw) // 2
        if len(raw) != expected_bytes or len(raw) < 4:
            raise XliError(
                f"lead chunk {index + 1} decompresses to {len(raw)} bytes, expected "
                f"{expected_bytes} ({n_samples} samples x 2 bytes)"
            )
        leads.append(integrate_deltas(unpack_deltas(raw), first))
    return np.stack(leads)


def lzw_decode(chunk: bytes, *, limit: int) -> bytes:
    """Expand one chunk of 10-bit LZW codes into bytes (stopping at the end code 1023).

    Raises:
        XliError: a code refers to a dictionary entry that does not exist yet, or the output
            would exceed ``limit`` bytes (a corrupt or hostile stream).
    """
    bits = np.unpackbits(np.frombuffer(chunk, dtype=np.uint8))
    n_codes = bits.size // CODE_BITS
    weights = 1 << np.arange(CODE_BITS - 1, -1, -1)
    codes = bits[: n_codes * CODE_BITS].reshape(n_codes, CODE_BITS) @ weights

    table = [bytes([value]) for value in range(256)]
    previous = b""
    out: list[bytes] = []
    produced = 0
    for code in codes.tolist():
        if code == END_CODE:
            break
        if code < len(table):
            entry = table[code]
        elif code == len(table) and previous:
            # The classic LZW corner case: the code being defined by this very step.
            entry = previous + previous[:1]
        else:
            raise XliError(f"corrupt LZW stream: code {code} is not yet defined")
        if previous and len(table) <= MAX_CODE:
            table.append(previous + entry[:1])
        previous = entry
        out.append(entry)
        produced += len(entry)
        if produced > limit:
            raise XliError(f"decompresses to more than the {limit} bytes expected")
    return b"".join(out)


def unpack_deltas(raw: bytes) -> np.ndarray:
    """Join the high-byte half and the low-byte half of ``raw`` into int16 values (as int64)."""
    half = len(raw) // 2
    buf = np.frombuffer(raw, dtype=np.uint8)
    words = (buf[:half].astype(np.uint16) << 8) | buf[half : 2 * half]
    return words.view(np.int16).astype(np.int64)


def integrate_deltas(deltas: np.ndarray, first: int) -> np.ndarray:
    """Undo XLI's second-order difference coding.

    ``deltas[0]`` and ``deltas[1]`` are the first two samples; after that
    ``x[i] = 2*x[i-1] - x[i-2] - e[i-1]`` with ``e[1] = first`` (the chunk header's value) and
    ``e[k] = deltas[k] - 64``. Written as two cumulative sums so it runs in numpy.
    """
    d = np.asarray(deltas, dtype=np.int64)
    n = d.size
    if n <= 2:
        return d.copy()
    e = np.empty(n - 2, dtype=np.int64)
    e[0] = first
    e[1:] = d[2 : n - 1] - DELTA_BIAS
    slopes = np.empty(n - 1, dtype=np.int64)  # x[i] - x[i-1] for i = 1 .. n-1
    slopes[0] = d[1] - d[0]
    slopes[1:] = slopes[0] - np.cumsum(e)
    out = np.empty(n, dtype=np.int64)
    out[0] = d[0]
    out[1:] = d[0] + np.cumsum(slopes)
    return out
