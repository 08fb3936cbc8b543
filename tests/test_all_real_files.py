"""Every real ECG file in the shared data reads, or is refused for the documented reason.

This is the foundation's acceptance sweep: 4,800+ files in ten formats through ``ecgfm.read``,
the way ``ecgfm info FOLDER`` finds them.
"""

from __future__ import annotations

import numpy as np
import pytest

import ecgfm
from conftest import data_path
from ecgfm.cli import expand_inputs

# folder -> (records read, expected refusals as {file name: message fragment})
EXPECTED = {
    "ptb-xl/records500": (1998, {}),
    "ptb-xl/records100": (859, {}),
    "ludb/data": (200, {}),
    "cinc2021": (50, {}),
    "cinc2017": (100, {}),
    "cpsc2019/data": (50, {}),
    "cpsc2021": (18, {}),
    "mitdb": (4, {}),
    "formats": (
        22,  # 1 DICOM, 1 EDF, 11 HL7 aECG, 6 Philips, 3 SCP-ECG (raw Contec dumps are passed over)
        {
            "empty.xml": "no waveform series",
            "test_edfann.edf": "only annotations",
        },
    ),
}


@pytest.mark.parametrize("folder", list(EXPECTED))
def test_every_file_reads_or_is_refused_for_its_reason(folder: str) -> None:
    root = data_path(*folder.split("/"))
    files, _ = expand_inputs([root])
    n_read, refusals = EXPECTED[folder]
    read, refused = 0, {}
    for path in files:
        try:
            ecg = ecgfm.read(path)
        except ecgfm.ReadError as exc:
            refused[path.name] = str(exc)
            continue
        read += 1
        assert np.isfinite(ecg.signal).all() and ecg.signal.dtype == np.float32, path
        assert 1 <= ecg.n_leads <= 15 and ecg.duration >= 0.01, path
        peak = float(np.abs(ecg.signal).max())
        assert peak < 1000, f"{path}: {peak} mV is not an ECG amplitude"
    assert set(refused) == set(refusals), refused
    for name, fragment in refusals.items():
        assert fragment in refused[name] and refused[name].startswith(str(root)), refused[name]
    assert read == n_read
