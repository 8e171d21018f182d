"""The synthetic scanner's DICOM writer: station images as a Philips Ingenia 3 T sends them.

Classic MR Image Storage, one file per slice (the default), or Enhanced MR Image Storage,
one multi-frame instance per series. T2: one series per station, or all stations in one
series (``one_series``), stations told apart by Acquisition Number. DWI: b0 and b1000 of a
station in one series, b-value in (0018,9087) and in Philips' private (2001,1003), with
the scanner-made isotropic (trace) and ADC images in the same series when asked for.

Pixel values: uint16 stored values (12 bits) with a Rescale Slope/Intercept and the
Philips private MR Scale Slope (2005,100E); the floating value FP = (SV·RS + RI)/(RS·SS)
reproduces the simulated signal to within 0.5/SS (≤ 1/8190 of the image maximum). Every
UID derives from the visit seed, and no wall-clock time is written, so the same inputs
give byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, EnhancedMRImageStorage, generate_uid

from phantom.geometry import Station
from phantom.images import StationImage, VisitImages, VisitMeta

UID_PREFIX = "1.2.826.0.1.3680043.10.1424."  # myonode phantom (pydicom's generate_uid under this root)
IMPLEMENTATION_UID = UID_PREFIX + "1"
IMPLEMENTATION_VERSION = "MYONODE_PHANTOM"
PHILIPS_IMAGING = "Philips Imaging DD 001"  # (2001,xx03) diffusion b-factor
PHILIPS_MR_IMAGING = "Philips MR Imaging DD 001"  # (2005,xx0E) MR scale slope
STORED_MAX = 4095  # 12 bits stored, as Philips writes magnitude images

T2_SERIES, DWI_SERIES = 300, 400  # series number = this + station index (one_series: + 1)


@dataclass(frozen=True)
class DicomOptions:
    enhanced: bool = False  # Enhanced MR Image Storage (one multi-frame instance per series)
    one_series: bool = False  # all stations of a sequence in one series
    time_point_id: bool = True  # Clinical Trial Time Point ID (0012,0050) when the visit has one


@dataclass(frozen=True)
class Scaling:
    """Stored value ↔ floating value for one image: FP = (SV·RS + RI)/(RS·SS)."""

    rescale_slope: float
    rescale_intercept: float
    scale_slope: float

    @staticmethod
    def for_data(data: np.ndarray, display_slope: float) -> Scaling:
        top = float(np.nanmax(data)) if data.size else 0.0
        return Scaling(display_slope, 0.0, STORED_MAX / top if top > 0 else 1.0)

    def stored(self, data: np.ndarray) -> np.ndarray:
        fp = np.clip(np.nan_to_num(data, nan=0.0), 0.0, None)
        sv = np.rint((fp * self.rescale_slope * self.scale_slope - self.rescale_intercept) / self.rescale_slope)
        return np.clip(sv, 0, STORED_MAX).astype(np.uint16)


def _uid(meta: VisitMeta, *parts: object) -> str:
    return generate_uid(UID_PREFIX, entropy_srcs=[str(meta.seed), meta.subject_id, meta.visit, *map(str, parts)])


def _ds_number(value: float) -> str:
    """A DS value of at most 16 characters."""
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.6e}"


def _patient_study(meta: VisitMeta, options: DicomOptions) -> Dataset:
    ds = Dataset()
    ds.PatientName = meta.patient_name
    ds.PatientID = meta.subject_id
    ds.PatientBirthDate = meta.birth_date.strftime("%Y%m%d")
    ds.PatientSex = meta.sex
    ds.PatientAge = f"{int(meta.age_years):03d}Y"
    ds.PatientSize = _ds_number(meta.height_m)
    ds.PatientWeight = _ds_number(meta.weight_kg)
    ds.StudyInstanceUID = _uid(meta, "study")
    ds.StudyDate = meta.study_date.strftime("%Y%m%d")
    ds.StudyTime = meta.study_time.strftime("%H%M%S")
    ds.AccessionNumber = f"{meta.subject_id[:8]}{meta.study_date:%y%m%d}"[:16]
    ds.StudyID = meta.visit[:16].upper()
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "WB MUSCLE MND"
    ds.Manufacturer = "Philips"
    ds.ManufacturerModelName = "Ingenia"
    ds.SoftwareVersions = "5.7.1"
    ds.DeviceSerialNumber = "45301"
    ds.InstitutionName = "myonode phantom site"
    ds.StationName = "MR-PHANTOM"
    ds.MagneticFieldStrength = "3"
    ds.FrameOfReferenceUID = _uid(meta, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    if options.time_point_id and meta.time_point_id is not None:
        ds.ClinicalTrialSponsorName = "myonode"
        ds.ClinicalTrialProtocolID = "MND-WB-MRI"
        ds.ClinicalTrialProtocolName = "Whole-body muscle MRI in motor neuron disease"
        ds.ClinicalTrialSiteID = "1"
        ds.ClinicalTrialSiteName = "phantom"
        ds.ClinicalTrialSubjectID = meta.subject_id
        ds.ClinicalTrialTimePointID = meta.time_point_id
        ds.ClinicalTrialTimePointDescription = meta.visit
    return ds


def _sequence_attributes(ds: Dataset, kind: str) -> None:
    """MR Image module attributes of the two whole-body sequences (the paper's Radiology section)."""
    ds.MRAcquisitionType = "2D"
    ds.SliceThickness = None  # set per station
    ds.NumberOfAverages = "1"
    ds.ImagingFrequency = "127.76"
    ds.ImagedNucleus = "1H"
    ds.MagneticFieldStrength = "3"
    if kind == "t2":
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = ["SK"]
        ds.ScanOptions = ""
        ds.RepetitionTime = "1107"
        ds.EchoTime = "80"
        ds.EchoTrainLength = "16"
        ds.FlipAngle = "90"
        ds.SequenceName = "TSE"
        ds.ProtocolName = "WB_T2W_TSE_COR"
    else:
        ds.ScanningSequence = ["EP", "IR"]
        ds.SequenceVariant = ["SK"]
        ds.ScanOptions = "FS"
        ds.RepetitionTime = "9412"
        ds.EchoTime = "66"
        ds.InversionTime = "250"
        ds.EchoTrainLength = "47"
        ds.FlipAngle = "90"
        ds.SequenceName = "DWIBS"
        ds.ProtocolName = "WB_DWIBS_AX"


@dataclass
class _Series:
    kind: str  # t2 | dwi
    number: int
    uid: str
    description: str
    images: list[StationImage]


def _plan(images: VisitImages, meta: VisitMeta, options: DicomOptions) -> list[_Series]:
    out: list[_Series] = []
    for kind, items, base, desc in (("t2", images.t2, T2_SERIES, "WB_T2W_TSE_COR"),
                                    ("dwi", images.dwi, DWI_SERIES, "WB_DWIBS_AX")):
        if options.one_series:
            out.append(_Series(kind, base + 1, _uid(meta, kind, "series"), desc, list(items)))
            continue
        by_station: dict[int, list[StationImage]] = {}
        for img in items:
            by_station.setdefault(img.station.index, []).append(img)
        for index, group in sorted(by_station.items()):
            out.append(_Series(kind, base + index, _uid(meta, kind, "series", index),
                               f"{desc} st{index}", group))
    return out


def _image_type(img: StationImage) -> list[str]:
    if img.kind == "trace":
        return ["DERIVED", "PRIMARY", "DIFFUSION", "ISOTROPIC"]
    if img.kind == "adc":
        return ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]
    return ["ORIGINAL", "PRIMARY", "M_SE" if img.b_value is None else "M_FFE", "M", "SE" if img.b_value is None
            else "FFE"]


def _set_private(ds: Dataset, scaling: Scaling, b_value: float | None) -> None:
    block = ds.private_block(0x2005, PHILIPS_MR_IMAGING, create=True)
    block.add_new(0x0E, "FL", float(scaling.scale_slope))
    if b_value is not None:
        ds.private_block(0x2001, PHILIPS_IMAGING, create=True).add_new(0x03, "FL", float(b_value))


def _acquisition_time(meta: VisitMeta, offset_s: float) -> str:
    t = datetime.combine(meta.study_date, meta.study_time) + timedelta(seconds=offset_s)
    return t.strftime("%H%M%S.%f")[:13]


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = sop_class
    fm.MediaStorageSOPInstanceUID = sop_uid
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.ImplementationClassUID = IMPLEMENTATION_UID
    fm.ImplementationVersionName = IMPLEMENTATION_VERSION
    return fm


def _station_offset_s(kind: str, station: Station) -> float:
    """Seconds after the study start at which a station was acquired (T2 first, ~3 min per station)."""
    return (0 if kind == "t2" else 1200) + 180.0 * (station.index - 1)


def _classic(series: _Series, common: Dataset, meta: VisitMeta, out: Path) -> list[Path]:
    paths = []
    folder = out / f"{series.number:04d}_{series.description.replace(' ', '_')}"
    folder.mkdir(parents=True, exist_ok=True)
    instance = 0
    for img_index, img in enumerate(series.images):
        st = img.station
        scaling = Scaling.for_data(img.data, 1.0 + 0.125 * st.index) if img.kind != "adc" else Scaling(1.0, 0.0, 1.0)
        stored = scaling.stored(img.data)
        template = Dataset()
        template.update(common)
        _sequence_attributes(template, series.kind)
        template.SOPClassUID = MRImageStorage
        template.Modality = "MR"
        template.SeriesInstanceUID = series.uid
        template.SeriesNumber = series.number
        template.SeriesDescription = series.description
        template.BodyPartExamined = "WHOLEBODY"
        template.PatientPosition = "HFS"
        template.ImageType = _image_type(img)
        template.AcquisitionNumber = st.index
        template.ImageOrientationPatient = [_ds_number(v) for v in (*st.row_direction, *st.column_direction)]
        template.PixelSpacing = [_ds_number(st.spacing[1]), _ds_number(st.spacing[0])]
        template.SliceThickness = _ds_number(st.spacing[2])
        template.SpacingBetweenSlices = _ds_number(st.spacing[2])
        template.SamplesPerPixel = 1
        template.PhotometricInterpretation = "MONOCHROME2"
        template.Rows, template.Columns = st.size[1], st.size[0]
        template.BitsAllocated, template.BitsStored, template.HighBit, template.PixelRepresentation = 16, 12, 11, 0
        template.RescaleIntercept = _ds_number(scaling.rescale_intercept)
        template.RescaleSlope = _ds_number(scaling.rescale_slope)
        template.RescaleType = "US"
        template.WindowCenter = _ds_number(STORED_MAX * scaling.rescale_slope / 4)
        template.WindowWidth = _ds_number(STORED_MAX * scaling.rescale_slope / 2)
        if img.b_value is not None:
            template.DiffusionBValue = float(img.b_value)
            template.DiffusionDirectionality = "NONE" if img.b_value == 0 else "ISOTROPIC"
        _set_private(template, scaling, img.b_value)
        time_s = _station_offset_s(series.kind, st) + 20.0 * img_index
        for k in range(stored.shape[0]):
            instance += 1
            ds = Dataset()
            ds.update(template)
            sop = _uid(meta, series.uid, "sop", img_index, k)
            ds.SOPInstanceUID = sop
            ds.InstanceNumber = instance
            pos = st.slice_position(k)
            ds.ImagePositionPatient = [_ds_number(v) for v in pos]
            ds.SliceLocation = _ds_number(float(pos @ st.normal))
            ds.AcquisitionDate = ds.ContentDate = meta.study_date.strftime("%Y%m%d")
            ds.AcquisitionTime = _acquisition_time(meta, time_s)
            ds.ContentTime = _acquisition_time(meta, time_s + 0.01 * k)
            ds.PixelData = stored[k].tobytes()
            ds.file_meta = _file_meta(MRImageStorage, sop)
            path = folder / f"IM{instance:05d}.dcm"
            dcmwrite(path, ds, enforce_file_format=True)
            paths.append(path)
    return paths


def write_visit(images: VisitImages, meta: VisitMeta, out_dir: Path, options: DicomOptions = DicomOptions()) -> list[Path]:
    """Write every file of the visit under ``out_dir`` (a folder per series); paths in write order."""
    if options.enhanced:
        from phantom.dicom_enhanced import write_enhanced_series

        writer = write_enhanced_series
    else:
        writer = _classic
    common = _patient_study(meta, options)
    paths: list[Path] = []
    for series in _plan(images, meta, options):
        paths.extend(writer(series, common, meta, out_dir))
    return paths
