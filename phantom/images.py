"""What the synthetic scanner hands to its DICOM writer: reconstructed station images and visit facts.

The scanner simulation (``phantom/scanner.py``) fills these; ``phantom/dicom.py`` turns them
into Philips-like files. Signal values are the scanner's floating-point values (what the
pipeline recovers from stored pixels with Rescale and the Philips private scale slope), in
arbitrary units; per-station coil gain is already applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, time
from typing import Literal

import numpy as np

from phantom.geometry import Station

ImageKind = Literal["original", "trace", "adc", "water", "fat"]


@dataclass(kw_only=True)
class StationImage:
    """One reconstructed 3-D image of one station.

    ``data`` is float32, shape (slices, rows, columns), in the station's voxel order
    (slice k at ``station.slice_position(k)``). For DWI, ``b_value`` is s/mm² (0 or 1000);
    ``kind`` says whether it is an acquired image or one the scanner derived (isotropic
    trace or ADC, whose values are mm²/s × 1e6 as Philips stores them) or a Dixon water or fat image;
    ``echo_time_ms`` is the echo of a multi-echo series' image (None: the sequence's one echo time).
    """

    station: Station
    data: np.ndarray
    b_value: float | None = None
    kind: ImageKind = "original"
    echo_time_ms: float | None = None


@dataclass(kw_only=True)
class VisitImages:
    t2: list[StationImage]
    dwi: list[StationImage]  # b0 and b1000 per station (plus scanner-derived images when asked for)
    dixon: list[StationImage] = field(default_factory=list)  # water and fat per T2 station, when scanned


@dataclass(kw_only=True)
class VisitMeta:
    """Patient, study and visit attributes the scanner writes into every file of the visit."""

    subject_id: str  # also the Patient ID
    patient_name: str
    birth_date: date
    sex: Literal["M", "F"]
    age_years: float
    weight_kg: float
    height_m: float
    study_date: date
    study_time: time
    visit: str  # e.g. baseline, m4, m12, m6
    seed: int  # makes every UID of the visit reproducible
    time_point_id: str | None = None  # Clinical Trial Time Point ID (0012,0050), when sent
    extra: dict[str, str] = field(default_factory=dict)
