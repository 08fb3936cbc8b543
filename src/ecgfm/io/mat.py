"""MATLAB ``.mat`` ECG files that have no WFDB header beside them.

Known layouts (the rate and units are defined by the dataset, and noted in ``meta.extra``):

- CPSC 2018: a struct ``ECG`` with ``data`` ``[12, samples]`` in mV at 500 Hz, ``sex``, ``age``.
- CPSC 2019: ``ecg`` ``[samples, 1]`` in mV at 500 Hz, single lead.

Any other matrix (including a PhysioNet/CinC ``val`` matrix whose ``.hea`` went missing) needs
``fs=`` and ``leads=`` (and ``units=`` or ``gain=``), since the file does not say them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ecgfm.errors import ReadError
from ecgfm.io._limits import check_declared_size
from ecgfm.leads import STANDARD_12
from ecgfm.record import ECG, Metadata
from ecgfm.units import mv_per_unit


def _loadmat(path: Path) -> dict[str, Any]:
    import scipy.io

    try:
        return scipy.io.loadmat(path, squeeze_me=False, struct_as_record=False)
    except NotImplementedError:
        raise ReadError(path, "MATLAB v7.3 (HDF5) files are not supported; save with -v7") from None
    except (ValueError, TypeError, OSError, EOFError) as exc:
        raise ReadError(path, f"corrupt or truncated MAT file ({exc})") from None


def _orient(array: np.ndarray, n_leads: int | None) -> np.ndarray:
    """``[leads, samples]``: the shorter axis is leads unless ``n_leads`` says otherwise."""
    if array.ndim == 1:
        return array[None, :]
    if n_leads is not None:
        return array if array.shape[0] == n_leads else array.T
    return array if array.shape[0] <= array.shape[1] else array.T


def read_mat(
    path: Path,
    *,
    fs: float | None = None,
    leads: Sequence[str] | None = None,
    units: str = "mV",
    gain: float | None = None,
    key: str | None = None,
) -> ECG:
    """Read a header-less MATLAB ECG file.

    Args:
        path: the ``.mat`` file (MATLAB v4 to v7).
        fs: sampling rate in Hz; required unless the layout is a known dataset's.
        leads: lead names in row order; required unless the layout is known or has 12 rows
            (then the standard order is assumed and noted).
        units: physical units of the stored values (``mV``, ``uV``, ``V``), when ``gain`` is None.
        gain: ADC units per mV for integer matrices (PhysioNet ``val``: 1000).
        key: the variable to read when the file holds several.
    """
    content = {k: v for k, v in _loadmat(path).items() if not k.startswith("__")}
    notes: dict[str, Any] = {}
    meta_fields: dict[str, Any] = {}
    if key is None and "ECG" in content and hasattr(content["ECG"].flat[0], "data"):
        struct = content["ECG"].flat[0]  # CPSC 2018
        array = np.asarray(struct.data, dtype=np.float64)
        fs = fs or 500.0
        leads = leads or STANDARD_12
        notes["assumed"] = "CPSC 2018 layout: 500 Hz, standard 12-lead order, mV"
        sex = str(np.asarray(struct.sex).ravel()[0]).strip().lower() if hasattr(struct, "sex") else ""
        meta_fields["sex"] = {"male": "M", "m": "M", "female": "F", "f": "F"}.get(sex)
        try:
            age = float(np.asarray(struct.age).ravel()[0])
            meta_fields["age"] = age if 0 <= age <= 150 else None
        except (AttributeError, ValueError, IndexError):
            pass
    elif key is None and set(content) == {"ecg"} and fs is None:
        array = np.asarray(content["ecg"], dtype=np.float64)  # CPSC 2019
        fs = 500.0
        leads = leads or ("I",)
        notes["assumed"] = "CPSC 2019 layout: 500 Hz, mV, single lead (lead name not recorded; read as I)"
    else:
        arrays = {k: v for k, v in content.items() if isinstance(v, np.ndarray) and v.dtype.kind in "iuf" and v.ndim <= 2 and v.size > 1}
        if key is not None:
            if key not in content:
                raise ReadError(path, f"no variable {key!r} (variables: {', '.join(content)})")
            arrays = {key: content[key]}
        if len(arrays) != 1:
            raise ReadError(path, f"cannot tell which variable is the ECG (numeric variables: {', '.join(arrays) or 'none'}); pass key=")
        name, array = next(iter(arrays.items()))
        if fs is None:
            raise ReadError(
                path,
                f"variable {name!r} carries no sampling rate: keep the WFDB .hea beside the file, or pass fs= and leads=",
            )
        if array.dtype.kind in "iu" and gain is None and name == "val":
            raise ReadError(path, "integer 'val' matrix without its .hea: pass gain= (ADC units per mV, usually 1000)")
        array = np.asarray(array, dtype=np.float64)
        if leads is None:
            oriented = _orient(array, None)
            if oriented.shape[0] != 12:
                raise ReadError(path, f"{oriented.shape[0]} channels and no lead names: pass leads=")
            leads = STANDARD_12
            notes["assumed"] = "12 channels without names read in the standard 12-lead order"
    signal = _orient(array, len(leads))
    if signal.shape[0] != len(leads):
        raise ReadError(path, f"{len(leads)} lead names for a matrix of shape {array.shape}")
    check_declared_size(path, *signal.shape)
    if gain is not None:
        signal = signal / gain
    else:
        factor = mv_per_unit(units)
        if factor is None:
            raise ReadError(path, f"unknown units {units!r} (known: mV, uV, V)")
        signal = signal * factor
    meta = Metadata(record_id=path.stem, source_format="mat", source_path=str(path), extra=notes, **meta_fields)
    return ECG.with_gaps(signal, fs, tuple(leads), meta)
