"""Content-based format detection: which reader handles a file, decided from its bytes.

File extensions lie (``.ECG`` is used for SCP-ECG and for raw Contec dumps, ``.xml`` for three
vendors); the first few kilobytes do not. Detection imports nothing heavy.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

from ecgfm.errors import ReadError, UnsupportedFormatError

HEAD_BYTES = 8192

_XML_ROOTS = {
    "AnnotatedECG": "hl7_aecg",
    "restingecgdata": "philips_xml",
    "RestingECG": "muse_xml",
}
_XML_ROOT = re.compile(rb"<\s*(?:[A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)[\s/>]")
# Contec ECG90A raw dumps: a zero-padded record number, NULs, then "YYYY-MM-DD hh:mm:ss".
_CONTEC_RAW = re.compile(rb"^\d{7}\x00+\d{4}-\d{1,2}-\d{1,2} \d{1,2}:\d{2}:\d{2}\x00")
_WFDB_RECORD_LINE = re.compile(
    rb"^\s*[\w.-]+(?:/\d+)?\s+\d+(?:\s+[\d.eE+-]+(?:/[\d.eE+-]+)?(?:\([\d.eE+-]+\))?)?"
)


def _first_xml_element(head: bytes) -> str | None:
    text = head
    # Skip the byte-order mark, the declaration, processing instructions, comments and DOCTYPE.
    text = text.lstrip(b"\xef\xbb\xbf").lstrip()
    pos = 0
    while pos < len(text):
        if text.startswith(b"<?", pos):
            end, skip = text.find(b"?>", pos), 2
        elif text.startswith(b"<!--", pos):
            end, skip = text.find(b"-->", pos), 3
        elif text.startswith(b"<!", pos):
            bracket, end = text.find(b"[", pos), text.find(b">", pos)
            if 0 <= bracket < end:  # an internal DTD subset: its declarations contain '>'
                close = text.find(b"]", bracket)
                end = text.find(b">", close) if close >= 0 else -1
            skip = 1
        else:
            match = _XML_ROOT.match(text, pos)
            return match.group(1).decode("ascii", "replace") if match else None
        if end < 0:
            return None
        pos = end + skip
        while pos < len(text) and text[pos : pos + 1] in (b" ", b"\n", b"\r", b"\t"):
            pos += 1
    return None


def _as_utf8(head: bytes) -> bytes:
    """Re-encode UTF-16 text (Philips writes UTF-16 XML with a byte-order mark) as UTF-8."""
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return head[: len(head) // 2 * 2].decode("utf-16", "ignore").encode("utf-8")
    return head


def _looks_like_wfdb_header(head: bytes) -> bool:
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        return bool(_WFDB_RECORD_LINE.match(stripped.encode()))
    return False


def _is_mat(head: bytes) -> bool:
    if head.startswith(b"MATLAB 5.0 MAT-file") or head.startswith(b"MATLAB 7"):
        return True
    # MATLAB v4 (what PhysioNet/CinC and wfdb write): int32 type MOPT, rows, cols, imagf, namelen,
    # with M=0 (little-endian), O=0, P in 0-5, T in 0-2.
    if len(head) < 20:
        return False
    mopt, rows, cols, imagf, namelen = (int.from_bytes(head[i : i + 4], "little") for i in range(0, 20, 4))
    return mopt < 100 and (mopt // 10) % 10 <= 5 and mopt % 10 <= 2 and imagf in (0, 1) and 0 < namelen < 64 and rows < 2**24 and cols < 2**31


def companion_header(path: Path) -> Path | None:
    """The WFDB header beside a signal file (``x.dat``, ``x.mat``) that names it, if any."""
    # Multi-file records name their files "<record>_1.dat", "<record>_2.dat" (PTB-XL FLAC).
    split = path.with_name(re.sub(r"_\d+$", "", path.stem) + ".hea")
    for candidate in (path.with_suffix(".hea"), Path(str(path) + ".hea"), split):
        if candidate == path or not candidate.is_file():
            continue
        try:
            with open(candidate, "rb") as fh:
                text = fh.read(HEAD_BYTES * 8)
        except OSError:
            continue
        # Only a header whose signal lines name this file describes it ("x.dat 16 ...").
        if re.search(rb"(?m)^\s*" + re.escape(path.name.encode()) + rb"\s", text):
            return candidate
    return None


def detect_format(path: str | os.PathLike[str]) -> str:
    """Name of the reader for ``path``, from its content.

    Returns one of the names in :data:`ecgfm.io.READERS`. A WFDB record may be given as its
    header (``x.hea``), its record name without extension (``x``), or a signal file (``x.dat``,
    ``x.mat``) with a header beside it.

    Raises:
        ReadError: the file does not exist or is empty.
        UnsupportedFormatError: the content matches no supported format.
    """
    path = Path(path)
    if not path.exists():
        if Path(str(path) + ".hea").is_file():
            return "wfdb"
        raise ReadError(path, "no such file")
    if path.is_dir():
        raise ReadError(path, "is a directory, not an ECG file")
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    if not head:
        raise ReadError(path, "file is empty")

    if len(head) > 132 and head[128:132] == b"DICM":
        return "dicom"
    if len(head) >= 22 and head[16:22] == b"SCPECG":
        return "scp_ecg"
    if _CONTEC_RAW.match(head):
        raise UnsupportedFormatError(
            path,
            "looks like a raw Contec ECG90A .ECG dump, whose layout is undocumented; "
            "export the recording as SCP-ECG from the device software and read that file",
        )
    if head.startswith(b"0       ") and len(head) >= 256:
        return "edf"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as zf:
                if any(name.endswith(".npy") for name in zf.namelist()):
                    return "npz"
        except zipfile.BadZipFile:
            raise ReadError(path, "starts like a ZIP/NPZ archive but is corrupt") from None
        raise UnsupportedFormatError(path, "is a ZIP archive without .npy arrays")
    stripped = _as_utf8(head).lstrip(b"\xef\xbb\xbf").lstrip()
    if stripped.startswith(b"<"):
        root = _first_xml_element(stripped)
        if root in _XML_ROOTS:
            return _XML_ROOTS[root]
        raise UnsupportedFormatError(
            path,
            f"XML root element <{root}> is not an ECG format ecgfm reads "
            f"(known: {', '.join('<' + r + '>' for r in _XML_ROOTS)})",
        )
    if _looks_like_wfdb_header(head):
        return "wfdb"
    if companion_header(path) is not None:
        # A signal file (.dat/.mat) named with its header beside it: read the record.
        return "wfdb"
    if _is_mat(head):
        return "mat"
    if _looks_like_csv(head):
        return "csv"
    raise UnsupportedFormatError(path, "content matches no supported ECG format")



def _looks_like_csv(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    lines = [line for line in text.splitlines() if line.strip()][:5]
    if len(lines) < 2:
        return False
    delim = "," if "," in lines[1] else ("\t" if "\t" in lines[1] else ";" if ";" in lines[1] else None)
    if delim is None:
        return False
    numeric = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$|^\s*(nan|NaN)\s*$")
    data_lines = lines[1:-1] if len(lines) > 2 else lines[1:]
    return all(all(numeric.match(f) for f in line.split(delim)) for line in data_lines)
