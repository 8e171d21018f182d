"""Classify a series as the protocol's T2, DWI, Dixon water or fat, a result or other, by the ``[protocol]`` rules."""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset

from node.settings import SeriesRule
from quant.diffusion import Diffusion, diffusion_of
from quant.volumes import functional_group, is_derived_image_type

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


def classify_series(ds: Dataset, rules: list[SeriesRule]
                    ) -> Literal["t2", "dwi", "dixon_water", "dixon_fat", "result", "other"]:
    """The kind of the series ``ds`` belongs to; the first rule whose conditions all match wins."""
    if str(ds.get("SOPClassUID", "")) in RESULT_SOP_CLASSES:
        return "result"
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if image_type[:2] == ["DERIVED", "SECONDARY"]:  # made by software after the scan (myonode's stitched T2)
        return "result"
    text = f"{ds.get('SeriesDescription', '')}\n{ds.get('ProtocolName', '')}"
    plane = orientation(ds)
    sequence = str(ds.get("ScanningSequence", ""))
    image_type_text = "\\".join(str(v) for v in image_type)
    for rule in rules:
        if not re.search(rule.description, text, re.IGNORECASE):
            continue
        if rule.orientation is not None and rule.orientation != plane:
            continue
        if rule.scanning_sequence is not None and not re.search(rule.scanning_sequence, sequence):
            continue
        if rule.image_type is not None and not re.search(rule.image_type, image_type_text, re.IGNORECASE):
            continue
        return rule.kind
    return "other"


def diffusions(ds: Dataset) -> list[Diffusion]:
    """The diffusion weightings of an image, wherever its vendor keeps them (:mod:`quant.diffusion`): one per
    frame of an enhanced instance (its MR Diffusion Sequence, per-frame or shared), one for a classic instance;
    empty when it is not diffusion-weighted."""
    frames = ds.get("PerFrameFunctionalGroupsSequence", []) or []
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    found = []
    for frame in frames or [None]:
        weighting = diffusion_of(ds, functional_group(frame, shared, "MRDiffusionSequence"))
        if weighting is not None:
            found.append(weighting)
    return found


def b_values(ds: Dataset) -> list[float]:
    """Diffusion b-values (s/mm²) of an image, distinct and sorted (see :func:`diffusions`)."""
    return sorted({d.b_value for d in diffusions(ds)})


def is_derived(ds: Dataset) -> bool:
    """True for images the scanner computed (ADC, trace/isotropic DWI), which processing must not use as input."""
    return is_derived_image_type(ds.get("ImageType") or [])


def station_key(ds: Dataset) -> str | None:
    """Which station (stack of parallel slices) an image belongs to, as a short stable string.

    Stations of a whole-body exam differ by where their field of view sits in the slice
    plane (coronal stations step along the column direction) or, when several stations are
    sent in one series, by Acquisition Number. Axial stations that share their in-plane
    origin and acquisition number are indistinguishable here and count as one.
    """
    iop = _first_orientation(ds)
    ipp = ds.get("ImagePositionPatient")
    if ipp is None:
        for seq_name in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
            seq = ds.get(seq_name)
            if seq and "PlanePositionSequence" in seq[0]:
                ipp = seq[0].PlanePositionSequence[0].ImagePositionPatient
                break
    if iop is None or ipp is None:
        return None
    row, col, pos = np.asarray(iop[:3]), np.asarray(iop[3:]), np.asarray([float(v) for v in ipp])
    plane = orientation(ds) or "?"
    # In-plane offsets rounded to 1 cm: the same for every slice of a station.
    u, v = round(float(pos @ row) / 10.0), round(float(pos @ col) / 10.0)
    acq = str(ds.get("AcquisitionNumber", "") or "")
    return f"{ds.get('SeriesInstanceUID', '')}|{acq}|{plane}|{u}|{v}"
