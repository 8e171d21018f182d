"""Small but complete MR Image Storage instances for tests (the phantom package makes real subjects)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid

CORONAL = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def mr_image(
    *,
    patient_id: str = "MND-001",
    study_uid: str,
    series_uid: str,
    sop_uid: str | None = None,
    description: str = "WB T2 TSE station 1",
    orientation: list[float] = CORONAL,
    position: tuple[float, float, float] = (-200.0, 0.0, 100.0),
    instance_number: int = 1,
    series_number: int = 301,
    size: int = 16,
    seed: int = 0,
    study_date: date = date(2026, 3, 1),
    b_value: float | None = None,
    philips_private_b: bool = False,
    acquisition_number: int | None = None,
    image_type: list[str] | None = None,
) -> Dataset:
    """One MR image with the General/Patient/Study/Series/Frame of Reference/Image Plane/Pixel modules."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Test^Subject"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19690101"
    ds.PatientSex = "M"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = study_date.strftime("%Y%m%d")
    ds.StudyTime = "093000"
    ds.StudyID = "1"
    ds.AccessionNumber = "ACC1"
    ds.ReferringPhysicianName = ""
    ds.Modality = "MR"
    ds.Manufacturer = "Philips"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.ProtocolName = description
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[study_uid, "frame"])
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = instance_number
    ds.ImageType = image_type or ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"]
    if acquisition_number is not None:
        ds.AcquisitionNumber = acquisition_number
    if b_value is not None and philips_private_b:
        block = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
        block.add_new(0x03, "FL", float(b_value))
    elif b_value is not None:
        ds.DiffusionBValue = float(b_value)
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "SK"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.EchoTrainLength = 1
    ds.ImageOrientationPatient = orientation
    ds.ImagePositionPatient = list(position)
    ds.PixelSpacing = [2.0, 2.0]
    ds.SliceThickness = 5.0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    rng = np.random.default_rng(seed)
    ds.PixelData = rng.integers(0, 4096, (size, size), dtype=np.uint16).tobytes()
    return ds


def write_series(folder: Path, n: int, *, study_uid: str | None = None, series_uid: str | None = None,
                 patient_id: str = "MND-001", description: str = "WB T2 TSE station 1", size: int = 16,
                 seed: int = 0) -> list[Path]:
    """``n`` slices of one series as files in ``folder``; returns their paths in slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    paths = []
    for i in range(n):
        ds = mr_image(patient_id=patient_id, study_uid=study_uid, series_uid=series_uid, description=description,
                      position=(-200.0, float(i) * 5.0, 100.0), instance_number=i + 1, size=size, seed=seed + i)
        path = folder / f"IM{i + 1:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def enhanced_mr(*, study_uid: str, series_uid: str, b_values: tuple[float, ...] = (0.0, 1000.0),
                description: str = "WB DWI st1", patient_id: str = "MND-001", z: float = -250.0,
                size: int = 16) -> Dataset:
    """One Enhanced MR Image Storage instance: axial frames with per-frame position and b-value."""
    from pydicom.sequence import Sequence
    from pydicom.uid import EnhancedMRImageStorage

    ds = mr_image(study_uid=study_uid, series_uid=series_uid, description=description, patient_id=patient_id,
                  size=size)
    for keyword in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "SliceThickness"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    ds.NumberOfFrames = len(b_values)
    plane = Dataset()
    plane.ImageOrientationPatient = AXIAL
    measures = Dataset()
    measures.PixelSpacing = [2.3, 2.3]
    measures.SliceThickness = 5.0
    shared = Dataset()
    shared.PlaneOrientationSequence = Sequence([plane])
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for b in b_values:
        position = Dataset()
        position.ImagePositionPatient = [-220.0, -220.0, z]
        diffusion = Dataset()
        diffusion.DiffusionBValue = b
        diffusion.DiffusionDirectionality = "ISOTROPIC" if b else "NONE"
        frame = Dataset()
        frame.PlanePositionSequence = Sequence([position])
        frame.MRDiffusionSequence = Sequence([diffusion])
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    rng = np.random.default_rng(len(b_values))
    ds.PixelData = rng.integers(0, 4096, (len(b_values), size, size), dtype=np.uint16).tobytes()
    return ds
