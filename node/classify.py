"""Classify a series as whole-body T2, whole-body DWI or other, by the ``[protocol]`` rules."""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset

from node.settings import SeriesRule

Orientation = Literal["coronal", "axial", "sagittal"]

# Result objects myonode (or another tool) derived: never input to processing.
RESULT_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.30",  # Parametric Map
    "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
}


def _first_orientation(ds: Dataset) -> list[float] | None:
    iop = ds.get("ImageOrientationPatient")
    if iop is None:
        # Enhanced MR: Plane Orientation in the shared (or first per-frame) functional groups.
        for seq_name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            seq = ds.get(seq_name)
            if seq and "PlaneOrientationSequence" in seq[0]:
                iop = seq[0].PlaneOrientationSequence[0].ImageOrientationPatient
                break
    return None if iop is None else [float(v) for v in iop]


def orientation(ds: Dataset) -> Orientation | None:
    """The plane of an image from its direction cosines: the axis the slice normal is closest to."""
    iop = _first_orientation(ds)
    if iop is None or len(iop) != 6:
        return None
    normal = np.cross(np.asarray(iop[:3]), np.asarray(iop[3:]))
    axis = int(np.argmax(np.abs(normal)))  # LPS: 0 = x (sagittal), 1 = y (coronal), 2 = z (axial)
    return ("sagittal", "coronal", "axial")[axis]


def classify_series(ds: Dataset, rules: list[SeriesRule]) -> Literal["t2", "dwi", "result", "other"]:
    """The kind of the series ``ds`` belongs to; the first rule whose conditions all match wins."""
    if str(ds.get("SOPClassUID", "")) in RESULT_SOP_CLASSES:
        return "result"
    text = f"{ds.get('SeriesDescription', '')}\n{ds.get('ProtocolName', '')}"
    plane = orientation(ds)
    sequence = str(ds.get("ScanningSequence", ""))
    for rule in rules:
        if not re.search(rule.description, text, re.IGNORECASE):
            continue
        if rule.orientation is not None and rule.orientation != plane:
            continue
        if rule.scanning_sequence is not None and not re.search(rule.scanning_sequence, sequence):
            continue
        return rule.kind
    return "other"
