"""The synthetic scanner's DICOM writer: station images as a Philips Ingenia 3 T sends them.

Input: the station images of one visit (``phantom.images``). Output: the visit's files under
``out_dir/<series number>_<series description>/IM<instance>.dcm``, Explicit VR Little Endian.

- Classic MR Image Storage, one file per slice (the default), or Enhanced MR Image Storage
  (``DicomOptions.enhanced``): one multi-frame instance per series for the acquired images
  (stations are stacks), plus one instance each for the scanner-derived trace and ADC images.
- One series per station ("WB_T2W_TSE_COR st3", series 303; "WB_DWIBS_AX st3", series 403), or
  every station of a sequence in one series (``one_series``: "WB_T2W_TSE_COR", 301), stations
  told apart by Acquisition Number (classic) or stack and Frame Acquisition Number (enhanced).
- DWI: b0 and b1000 of a station in one series, the b-value in Diffusion b-value (0018,9087)
  and in Philips' private (2001,1003); the scanner's isotropic (trace, DERIVED ... ISOTROPIC)
  and ADC (DERIVED ... ADC) images in the same series when the input has them.
- Pixels: 12-bit stored values SV with a per-image Rescale Slope/Intercept (RS, RI) and
  Philips' private MR Scale Slope (2005,100E) SS; the floating value FP = (SV·RS + RI)/(RS·SS)
  reproduces the input (clipped at 0, NaN as 0) to within half a stored step, 0.5/SS =
  (max − min)/8190 of that image (1.2e-4 of its range).
- Deterministic: every UID is derived from the visit seed and no wall-clock time is written,
  so the same inputs give byte-identical files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_ROOT_UID,
    UID,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from phantom.geometry import Station
from phantom.images import StationImage, VisitImages, VisitMeta
from quant.diffusion import GE_B_VALUE_BIAS, GE_PARM_CREATOR, PHILIPS_IMAGING_CREATOR, SIEMENS_MR_CREATOR

PHILIPS_IMAGING = PHILIPS_IMAGING_CREATOR  # private creator of (2001,xx03) Diffusion B-Factor, FL
VENDORS = {"philips": ("Philips", "Ingenia"), "siemens": ("SIEMENS", "MAGNETOM Prisma"),
           "ge": ("GE MEDICAL SYSTEMS", "SIGNA Premier")}
PHILIPS_MR_IMAGING = "Philips MR Imaging DD 001"  # private creator of (2005,xx0E) MR Scale Slope, FL
PHILIPS_MR_IMAGING_005 = "Philips MR Imaging DD 005"  # private creator of (2005,140F), the per-frame private items
PER_FRAME_PRIVATE_CREATOR_TAG = 0x20050014  # Philips' fixed slot for "Philips MR Imaging DD 005"
PER_FRAME_PRIVATE_TAG = 0x2005140F

BITS_STORED = 12  # as Philips writes magnitude images
STORED_MAX = 2**BITS_STORED - 1

# UIDs are pydicom's root + a SHA-512 of their sources. (prefix=None would ignore the sources: random UUIDs.)
UID_PREFIX = PYDICOM_ROOT_UID
IMPLEMENTATION_CLASS_UID = generate_uid(UID_PREFIX, entropy_srcs=["myonode phantom DICOM writer"])
IMPLEMENTATION_VERSION_NAME = "MYONODE_PHANTOM"

IMAGING_FREQUENCY_MHZ = 127.7487  # ¹H at 3 T
SURVEY_SECONDS = 120.0  # from the study start to the first whole-body station
SEQUENCE_GAP_SECONDS = 60.0  # between the last T2 station and the first DWI station
ENTIRE_BODY = ("38266002", "SCT", "Entire body")  # Frame Anatomy code (CID 4031)


@dataclass(frozen=True, kw_only=True)
class DicomOptions:
    """How the visit is encoded."""

    enhanced: bool = False  # Enhanced MR Image Storage (multi-frame instances) instead of one file per slice
    one_series: bool = False  # all stations of a sequence in one series (Philips "whole-body" style)
    time_point_id: bool = True  # Clinical Trial Time Point ID (0012,0050) when the visit has one
    # whose classic headers: Philips (b-value standard and in (2001,1003), MR Scale Slope), or as Siemens (b-value
    # only in (0019,100C)) and GE (only in (0043,1039), with the 10^9 its software adds) send DWI — pixel values
    # then plain Rescale Slope/Intercept. Enhanced objects carry the standard b-value whoever writes them.
    vendor: Literal["philips", "siemens", "ge"] = "philips"


@dataclass(frozen=True, kw_only=True)
class Scaling:
    """Stored value SV ↔ Philips floating value FP of one image: FP = (SV·RS + RI)/(RS·SS).

    The fields are exactly what a reader decodes: RS and RI as written in DS text, SS as the
    float32 of (2005,100E). Quantisation error of FP: at most 0.5/SS (half a stored step).
    """

    rescale_slope: float  # RS (0028,1053)
    rescale_intercept: float  # RI (0028,1052)
    scale_slope: float  # SS, Philips MR Scale Slope (2005,100E)

    @classmethod
    def fit(cls, data: np.ndarray, display_slope: float) -> Scaling:
        """The scaling mapping [min, max] of ``data`` (clipped at 0) onto stored values [0, STORED_MAX].

        ``display_slope`` becomes RS, so the displayed value SV·RS + RI differs from FP by an
        image-specific factor, as on the scanner; a reader has to apply SS.
        """
        values = _clean(data)
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        scale = float(np.float32(STORED_MAX / (hi - lo))) if hi > lo else 1.0
        slope = float(_ds(display_slope))
        return cls(rescale_slope=slope, rescale_intercept=float(_ds(lo * slope * scale)), scale_slope=scale)

    def stored(self, data: np.ndarray) -> np.ndarray:
        """Stored values (uint16, 0 … STORED_MAX) of ``data``."""
        sv = _clean(data)
        sv *= self.scale_slope
        sv -= self.rescale_intercept / self.rescale_slope
        np.rint(sv, out=sv)
        return np.clip(sv, 0, STORED_MAX, out=sv).astype(np.uint16)


@dataclass(frozen=True, kw_only=True)
class _Protocol:
    """One whole-body sequence as planned on the scanner (the paper's Radiology section)."""

    name: str  # Protocol Name; also the Series Description stem
    series_base: int  # series number = base + station index (one series: base + 1)
    scanning_sequence: tuple[str, ...]
    sequence_variant: tuple[str, ...]
    scan_options: tuple[str, ...]
    pulse_sequence_name: str
    repetition_time_ms: float
    echo_time_ms: float
    inversion_time_ms: float | None  # STIR fat suppression
    echo_train_length: int
    echo_planar: bool
    flip_angle_deg: float
    averages: int
    pixel_bandwidth_hz: float
    sense_factor: float  # in-plane parallel imaging (SENSE) reduction
    acquired_fraction: float  # acquired / reconstructed matrix (the rest is interpolation)
    percent_sampling: float  # phase-encoding steps / frequency-encoding steps, %
    phase_direction: str  # InPlanePhaseEncodingDirection: ROW | COL
    acquisition_contrast: str  # Enhanced MR Acquisition Contrast
    station_seconds: float  # scan time of one station


T2 = _Protocol(
    name="WB_T2W_TSE_COR", series_base=300, scanning_sequence=("SE",), sequence_variant=("SK",),
    scan_options=("PFP",), pulse_sequence_name="TSE", repetition_time_ms=1107.0, echo_time_ms=80.0,
    inversion_time_ms=None, echo_train_length=16, echo_planar=False, flip_angle_deg=90.0, averages=1,
    pixel_bandwidth_hz=289.0, sense_factor=2.0, acquired_fraction=0.5, percent_sampling=80.0,
    phase_direction="ROW", acquisition_contrast="T2", station_seconds=150.0)
LEGS_T2 = dataclasses.replace(T2, name="LEGS_T2W_TSE_AX", station_seconds=180.0)
DIXON_WATER = _Protocol(
    name="mDIXON_W", series_base=500, scanning_sequence=("GR",), sequence_variant=("SP",),
    scan_options=("PFP",), pulse_sequence_name="mDIXON", repetition_time_ms=5.5, echo_time_ms=1.8,
    inversion_time_ms=None, echo_train_length=2, echo_planar=False, flip_angle_deg=10.0, averages=1,
    pixel_bandwidth_hz=1000.0, sense_factor=2.0, acquired_fraction=0.5, percent_sampling=80.0,
    phase_direction="ROW", acquisition_contrast="PROTON_DENSITY", station_seconds=40.0)
DIXON_FAT = dataclasses.replace(DIXON_WATER, name="mDIXON_F", series_base=600)
DWI = _Protocol(
    name="WB_DWIBS_AX", series_base=400, scanning_sequence=("SE", "EP", "IR"), sequence_variant=("SK",),
    scan_options=("PFP",), pulse_sequence_name="DwiSE", repetition_time_ms=9412.0, echo_time_ms=66.0,
    inversion_time_ms=250.0, echo_train_length=47, echo_planar=True, flip_angle_deg=90.0, averages=3,
    pixel_bandwidth_hz=2170.0, sense_factor=2.5, acquired_fraction=0.75, percent_sampling=80.0,
    phase_direction="COL", acquisition_contrast="DIFFUSION", station_seconds=240.0)


@dataclass(frozen=True, kw_only=True)
class _Image:
    """One station image placed in the visit."""

    image: StationImage
    ordinal: int  # position among the images of its sequence (0 first): display slope, UIDs
    start: datetime  # acquisition start of its station

    @property
    def station(self) -> Station:
        return self.image.station

    def scaling(self) -> Scaling:
        return Scaling.fit(self.image.data, 1.0 + self.ordinal / 16.0)


@dataclass(frozen=True, kw_only=True)
class _Series:
    protocol: _Protocol
    number: int
    uid: str
    description: str
    images: tuple[_Image, ...]

    @property
    def folder(self) -> str:
        return f"{self.number:04d}_{self.description.replace(' ', '_')}"


def write_visit(images: VisitImages, meta: VisitMeta, out_dir: Path,
                options: DicomOptions = DicomOptions()) -> list[Path]:
    """Write every file of the visit under ``out_dir``; the paths in write order (series number, instance)."""
    if options.enhanced and options.vendor != "philips":
        raise ValueError(f"vendor {options.vendor!r} headers are for classic MR: enhanced objects carry the standard "
                         "b-value whoever writes them")
    common = _common_attributes(meta, options)
    paths: list[Path] = []
    for series in _plan(images, meta, options):
        folder = out_dir / series.folder
        folder.mkdir(parents=True, exist_ok=True)
        paths.extend(_write_enhanced_series(series, common, meta, folder) if options.enhanced
                     else _write_classic_series(series, common, meta, folder, options.vendor))
    return paths


# ---------------------------------------------------------------------------------------------
# values, UIDs, times


def _clean(data: np.ndarray) -> np.ndarray:
    """The input as float64, NaN as 0, clipped at 0 (magnitude data; Philips stores no negatives here)."""
    values = np.array(data, dtype=np.float64)
    np.nan_to_num(values, copy=False, nan=0.0)
    return np.maximum(values, 0.0, out=values)


def _ds(value: float) -> str:
    """A Decimal String of at most 16 characters (no negative zero)."""
    return format_number_as_ds(float(value) + 0.0)


def _ds_list(values: Iterable[float]) -> list[str]:
    return [_ds(v) for v in values]


def _uid(meta: VisitMeta, *parts: object) -> str:
    """A UID that depends only on the visit and ``parts``."""
    return generate_uid(UID_PREFIX, entropy_srcs=[str(meta.seed), meta.subject_id, meta.visit, *map(str, parts)])


def _da(t: datetime) -> str:
    return t.strftime("%Y%m%d")


def _tm(t: datetime) -> str:
    return t.strftime("%H%M%S")


def _dt(t: datetime) -> str:
    return t.strftime("%Y%m%d%H%M%S")


# ---------------------------------------------------------------------------------------------
# planning: series, image order, times


def _station_starts(items: list[StationImage], first: datetime, protocol: _Protocol) -> dict[int, datetime]:
    """Acquisition start of every station of one sequence, head first, one after the other."""
    indices = sorted({img.station.index for img in items})
    return {index: first + timedelta(seconds=i * protocol.station_seconds) for i, index in enumerate(indices)}


def _plan(images: VisitImages, meta: VisitMeta, options: DicomOptions) -> list[_Series]:
    """The visit's series in series-number order; T2 stations are scanned first, then DWI."""
    t2_start = datetime.combine(meta.study_date, meta.study_time) + timedelta(seconds=SURVEY_SECONDS)
    t2_protocol = LEGS_T2 if images.t2 and abs(images.t2[0].station.normal[2]) > 0.5 else T2  # axial: legs-only
    t2_starts = _station_starts(images.t2, t2_start, t2_protocol)
    dwi_start = t2_start + timedelta(seconds=len(t2_starts) * t2_protocol.station_seconds + SEQUENCE_GAP_SECONDS)
    dwi_starts = _station_starts(images.dwi, dwi_start, DWI)
    dixon_start = dwi_start + timedelta(seconds=len(dwi_starts) * DWI.station_seconds + SEQUENCE_GAP_SECONDS)
    dixon_starts = _station_starts(images.dixon, dixon_start, DIXON_WATER)  # water and fat: one acquisition
    series: list[_Series] = []
    for protocol, items, starts in ((t2_protocol, images.t2, t2_starts), (DWI, images.dwi, dwi_starts),
                                    (DIXON_WATER, [i for i in images.dixon if i.kind == "water"], dixon_starts),
                                    (DIXON_FAT, [i for i in images.dixon if i.kind == "fat"], dixon_starts)):
        if not items:
            continue
        placed = [_Image(image=img, ordinal=n, start=starts[img.station.index]) for n, img in enumerate(items)]
        placed.sort(key=lambda p: p.station.index)  # stable: b-values and derived images keep their order
        if options.one_series:
            number = protocol.series_base + 1
            series.append(_Series(protocol=protocol, number=number, uid=_uid(meta, "series", number), description=protocol.name, images=tuple(placed)))
            continue
        for index in sorted(starts):
            number = protocol.series_base + index
            series.append(_Series(protocol=protocol, number=number, uid=_uid(meta, "series", number), description=f"{protocol.name} st{index}",
                                  images=tuple(p for p in placed if p.station.index == index)))
    return series


# ---------------------------------------------------------------------------------------------
# attributes shared by both storage classes


def _common_attributes(meta: VisitMeta, options: DicomOptions) -> Dataset:
    """Patient, study, equipment, frame of reference and clinical trial attributes of every file of the visit."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = meta.patient_name
    ds.PatientID = meta.subject_id
    ds.PatientBirthDate = meta.birth_date.strftime("%Y%m%d")
    ds.PatientSex = meta.sex
    ds.PatientAge = f"{int(meta.age_years):03d}Y"
    ds.PatientSize = _ds(meta.height_m)
    ds.PatientWeight = _ds(meta.weight_kg)
    ds.StudyInstanceUID = _uid(meta, "study")
    ds.StudyDate = meta.study_date.strftime("%Y%m%d")
    ds.StudyTime = meta.study_time.strftime("%H%M%S")
    ds.AccessionNumber = f"{meta.subject_id[:8]}{meta.study_date:%y%m%d}"[:16]
    ds.StudyID = meta.visit[:16].upper()
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "WB MUSCLE MND"
    ds.Manufacturer, ds.ManufacturerModelName = VENDORS[options.vendor]
    ds.DeviceSerialNumber = "45301"
    ds.SoftwareVersions = ["5.7.1", "5.7.1.2"]
    ds.InstitutionName = "myonode phantom site"
    ds.StationName = "MR-PHANTOM"
    ds.FrameOfReferenceUID = _uid(meta, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.Modality = "MR"
    ds.BodyPartExamined = "WHOLEBODY"
    ds.PatientPosition = "HFS"
    ds.MagneticFieldStrength = "3"
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


def _series_attributes(series: _Series, common: Dataset, sop_class: str) -> Dataset:
    """A new data set with the visit's and the series' attributes.

    Data sets built on another (``update``) share its elements, and assigning to an existing
    attribute changes the element in place; so each level only adds attributes the level
    above does not have: visit → series → image → slice.
    """
    ds = Dataset()
    ds.update(common)
    start = series.images[0].start
    ds.SOPClassUID = sop_class
    ds.SeriesInstanceUID = series.uid
    ds.SeriesNumber = series.number
    ds.SeriesDescription = series.description
    ds.ProtocolName = series.protocol.name
    ds.SeriesDate, ds.SeriesTime = _da(start), _tm(start)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, BITS_STORED, BITS_STORED - 1, 0
    return ds


def _file_meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = UID(sop_class)
    fm.MediaStorageSOPInstanceUID = UID(sop_uid)
    fm.TransferSyntaxUID = ExplicitVRLittleEndian
    fm.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    fm.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return fm


def _image_type(image: StationImage) -> list[str]:
    """Image Type of a classic image, as Philips labels them (value 3 M_SE: spin-echo magnitude)."""
    if image.kind == "trace":
        return ["DERIVED", "PRIMARY", "DIFFUSION", "ISOTROPIC"]
    if image.kind == "adc":
        return ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]
    if image.kind in ("water", "fat"):  # as Philips labels mDIXON images
        return ["DERIVED", "PRIMARY", image.kind.upper()[0], image.kind.upper()[0], "DERIVED"]
    return ["ORIGINAL", "PRIMARY", "M_SE", "M", "SE"]


def _frame_type(image: StationImage) -> list[str]:
    """Frame Type of an enhanced frame: original/derived, primary, image flavor, derived pixel contrast."""
    if image.kind == "trace":
        return ["DERIVED", "PRIMARY", "DIFFUSION", "DIFFUSION_ISO"]
    if image.kind == "adc":
        return ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]
    if image.kind in ("water", "fat"):
        return ["DERIVED", "PRIMARY", "WHOLE_BODY", image.kind.upper()]
    return ["ORIGINAL", "PRIMARY", "WHOLE_BODY" if image.b_value is None else "DIFFUSION", "NONE"]


def _directionality(b_value: float) -> str:
    """b0: no diffusion weighting; b > 0: the isotropic combination of three directions (DWIBS)."""
    return "NONE" if b_value == 0 else "ISOTROPIC"


def _acquired_matrix(protocol: _Protocol, station: Station) -> tuple[int, int]:
    """(frequency-encoding steps, phase-encoding steps) of a station's acquisition."""
    frequency = round(station.size[0] * protocol.acquired_fraction)
    return frequency, round(frequency * protocol.percent_sampling / 100.0)


def _add_vendor_diffusion(ds: Dataset, vendor: str, b_value: float) -> None:
    """A classic DWI header as Siemens or GE writes it: the b-value only in the vendor's private element."""
    if vendor == "siemens":
        ds.private_block(0x0019, SIEMENS_MR_CREATOR, create=True).add_new(0x0C, "IS", str(round(b_value)))
    else:
        block = ds.private_block(0x0043, GE_PARM_CREATOR, create=True)
        block.add_new(0x39, "IS", f"{GE_B_VALUE_BIAS + round(b_value)}\\8\\0\\0")


def _add_philips_private(ds: Dataset, scaling: Scaling, b_value: float | None) -> None:
    """Philips MR Scale Slope (2005,100E) and, for diffusion images, the b-value (2001,1003)."""
    ds.private_block(0x2005, PHILIPS_MR_IMAGING, create=True).add_new(0x0E, "FL", scaling.scale_slope)
    if b_value is not None:
        ds.private_block(0x2001, PHILIPS_IMAGING, create=True).add_new(0x03, "FL", float(b_value))


# ---------------------------------------------------------------------------------------------
# classic MR Image Storage: one file per slice


def _classic_protocol_attributes(ds: Dataset, protocol: _Protocol, station: Station, echo: tuple[float, int] | None
                                 = None) -> None:
    """MR Image module attributes of the sequence (``echo``: the echo time and number of a multi-echo image)."""
    frequency, phase = _acquired_matrix(protocol, station)
    ds.ScanningSequence = list(protocol.scanning_sequence)
    ds.SequenceVariant = list(protocol.sequence_variant)
    ds.ScanOptions = list(protocol.scan_options)
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = protocol.pulse_sequence_name
    ds.AngioFlag = "N"
    ds.RepetitionTime = _ds(protocol.repetition_time_ms)
    ds.EchoTime = _ds(echo[0] if echo else protocol.echo_time_ms)
    if protocol.inversion_time_ms is not None:
        ds.InversionTime = _ds(protocol.inversion_time_ms)
    ds.NumberOfAverages = _ds(protocol.averages)
    ds.ImagingFrequency = _ds(IMAGING_FREQUENCY_MHZ)
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = echo[1] if echo else 1
    ds.NumberOfPhaseEncodingSteps = phase
    ds.EchoTrainLength = protocol.echo_train_length
    ds.PercentSampling = _ds(protocol.percent_sampling)
    ds.PercentPhaseFieldOfView = "100"
    ds.PixelBandwidth = _ds(protocol.pixel_bandwidth_hz)
    ds.ReceiveCoilName = "MULTI COIL"
    ds.TransmitCoilName = "B"
    ds.AcquisitionMatrix = [0, frequency, phase, 0] if protocol.phase_direction == "ROW" else [frequency, 0, 0, phase]
    ds.InPlanePhaseEncodingDirection = protocol.phase_direction
    ds.FlipAngle = _ds(protocol.flip_angle_deg)


def _classic_image_dataset(series: _Series, template: Dataset, placed: _Image, scaling: Scaling,
                           vendor: str = "philips") -> Dataset:
    """The series template plus the attributes common to every slice of one station image."""
    image, station = placed.image, placed.station
    ds = Dataset()
    ds.update(template)
    ds.ImageType = _image_type(image)
    ds.AcquisitionNumber = station.index
    done = placed.start + timedelta(seconds=series.protocol.station_seconds)
    ds.AcquisitionDate, ds.AcquisitionTime = _da(placed.start), _tm(placed.start)
    ds.ContentDate, ds.ContentTime = _da(done), _tm(done)
    echoes = sorted({p.image.echo_time_ms for p in series.images if p.image.echo_time_ms is not None})
    echo = None if image.echo_time_ms is None else (image.echo_time_ms, echoes.index(image.echo_time_ms) + 1)
    _classic_protocol_attributes(ds, series.protocol, station, echo)
    ds.ImageOrientationPatient = _ds_list([*station.row_direction, *station.column_direction])
    ds.PixelSpacing = _ds_list([station.spacing[1], station.spacing[0]])
    ds.SliceThickness = _ds(station.thickness_mm or station.spacing[2])
    ds.SpacingBetweenSlices = _ds(station.spacing[2])
    ds.Rows, ds.Columns = station.size[1], station.size[0]
    if vendor == "philips":
        slope, intercept = scaling.rescale_slope, scaling.rescale_intercept
    else:  # no MR Scale Slope: the rescale gives the floating value itself, FP = SV/SS + RI/(RS·SS)
        slope = float(_ds(1.0 / scaling.scale_slope))
        intercept = float(_ds(scaling.rescale_intercept / (scaling.rescale_slope * scaling.scale_slope)))
    ds.RescaleIntercept = _ds(intercept)
    ds.RescaleSlope = _ds(slope)
    ds.RescaleType = "US"
    ds.WindowCenter = _ds(STORED_MAX * slope / 2 + intercept)
    ds.WindowWidth = _ds(STORED_MAX * slope)
    if vendor != "philips":
        if image.b_value is not None:
            _add_vendor_diffusion(ds, vendor, image.b_value)
        return ds
    if image.b_value is not None:
        ds.DiffusionBValue = float(image.b_value)
        ds.DiffusionDirectionality = _directionality(image.b_value)
    _add_philips_private(ds, scaling, image.b_value)
    return ds


def _write_classic_series(series: _Series, common: Dataset, meta: VisitMeta, folder: Path,
                          vendor: str = "philips") -> list[Path]:
    """One file per slice; instance numbers run through the series."""
    template = _series_attributes(series, common, MRImageStorage)
    paths: list[Path] = []
    for placed in series.images:
        scaling = placed.scaling()
        stored = scaling.stored(placed.image.data)
        ds = _classic_image_dataset(series, template, placed, scaling, vendor)
        for k, pixels in enumerate(stored):
            number = len(paths) + 1
            ds.SOPInstanceUID = _uid(meta, series.uid, placed.ordinal, k)
            ds.file_meta = _file_meta(MRImageStorage, ds.SOPInstanceUID)
            ds.InstanceNumber = number
            position = placed.station.slice_position(k)
            ds.ImagePositionPatient = _ds_list(position)
            ds.SliceLocation = _ds(float(position @ placed.station.normal))
            ds.add_new(0x7FE00010, "OW", pixels.tobytes())
            path = folder / f"IM{number:05d}.dcm"
            dcmwrite(path, ds, enforce_file_format=True)
            paths.append(path)
    return paths


# ---------------------------------------------------------------------------------------------
# Enhanced MR Image Storage: one multi-frame instance per series and image kind


def _item(**attributes: object) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _seq(**attributes: object) -> Sequence:
    """A one-item sequence (a functional group macro)."""
    return Sequence([_item(**attributes)])


def _enhanced_protocol_attributes(ds: Dataset, protocol: _Protocol, multi_echo: bool = False) -> None:
    """MR Pulse Sequence module."""
    ds.PulseSequenceName = protocol.pulse_sequence_name
    ds.MRAcquisitionType = "2D"
    ds.EchoPulseSequence = "SPIN"
    ds.MultipleSpinEcho = "YES" if multi_echo else "NO"
    ds.MultiPlanarExcitation = "YES"
    ds.PhaseContrast = "NO"
    ds.TimeOfFlightContrast = "NO"
    ds.SteadyStatePulseSequence = "NONE"
    ds.EchoPlanarPulseSequence = "YES" if protocol.echo_planar else "NO"
    ds.SaturationRecovery = "NO"
    ds.SpectrallySelectedSuppression = "NONE"
    ds.OversamplingPhase = "NONE"
    ds.GeometryOfKSpaceTraversal = "RECTILINEAR"
    ds.RectilinearPhaseEncodeReordering = "LINEAR"
    ds.SegmentedKSpaceTraversal = "SINGLE" if protocol.echo_planar else "PARTIAL"
    ds.NumberOfKSpaceTrajectories = 1


def _shared_groups(protocol: _Protocol, first: _Image) -> Dataset:
    """Functional groups common to every frame of an instance (one sequence, one image kind)."""
    station = first.station
    frame_type = _frame_type(first.image)
    frequency, phase = _acquired_matrix(protocol, station)
    inversion = protocol.inversion_time_ms is not None
    region = _item(CodeValue=ENTIRE_BODY[0], CodingSchemeDesignator=ENTIRE_BODY[1], CodeMeaning=ENTIRE_BODY[2])
    shared = Dataset()
    shared.PixelMeasuresSequence = _seq(PixelSpacing=_ds_list([station.spacing[1], station.spacing[0]]),
                                        SliceThickness=_ds(station.thickness_mm or station.spacing[2]),
                                        SpacingBetweenSlices=_ds(station.spacing[2]))
    shared.PlaneOrientationSequence = _seq(
        ImageOrientationPatient=_ds_list([*station.row_direction, *station.column_direction]))
    shared.FrameAnatomySequence = _seq(FrameLaterality="B", AnatomicRegionSequence=Sequence([region]))
    shared.MRImageFrameTypeSequence = _seq(
        FrameType=frame_type, PixelPresentation="MONOCHROME", VolumetricProperties="VOLUME",
        VolumeBasedCalculationTechnique="NONE", ComplexImageComponent="MAGNITUDE",
        AcquisitionContrast=protocol.acquisition_contrast)
    shared.MRTimingAndRelatedParametersSequence = _seq(
        RepetitionTime=protocol.repetition_time_ms, FlipAngle=protocol.flip_angle_deg,
        EchoTrainLength=protocol.echo_train_length,
        RFEchoTrainLength=1 if protocol.echo_planar else protocol.echo_train_length,
        GradientEchoTrainLength=protocol.echo_train_length if protocol.echo_planar else 0,
        SpecificAbsorptionRateSequence=_seq(SpecificAbsorptionRateDefinition="IEC_WHOLE_BODY",
                                            SpecificAbsorptionRateValue=1.2),
        GradientOutputType="DB_DT", GradientOutput=60.0,
        OperatingModeSequence=Sequence([_item(OperatingModeType=kind, OperatingMode="IEC_NORMAL")
                                        for kind in ("STATIC FIELD", "RF", "GRADIENT")]))
    shared.MRFOVGeometrySequence = _seq(
        InPlanePhaseEncodingDirection="ROW" if protocol.phase_direction == "ROW" else "COLUMN",
        MRAcquisitionFrequencyEncodingSteps=frequency, MRAcquisitionPhaseEncodingStepsInPlane=phase,
        PercentSampling=protocol.percent_sampling, PercentPhaseFieldOfView=100.0)
    shared.MREchoSequence = _seq(EffectiveEchoTime=first.image.echo_time_ms or protocol.echo_time_ms)
    modifier = _item(InversionRecovery="YES" if inversion else "NO", FlowCompensation="NONE", T2Preparation="NO",
                     SpectrallySelectedExcitation="NONE", SpatialPresaturation="NONE", PartialFourier="YES",
                     PartialFourierDirection="PHASE", ParallelAcquisition="YES", ParallelAcquisitionTechnique="SENSE",
                     ParallelReductionFactorInPlane=protocol.sense_factor, ParallelReductionFactorOutOfPlane=1.0,
                     ParallelReductionFactorSecondInPlane=1.0)
    if inversion:
        modifier.InversionTimes = [protocol.inversion_time_ms]
    shared.MRModifierSequence = Sequence([modifier])
    shared.MRImagingModifierSequence = _seq(
        MagnetizationTransfer="NONE", BloodSignalNulling="NO", Tagging="NONE",
        TransmitterFrequency=IMAGING_FREQUENCY_MHZ, PixelBandwidth=protocol.pixel_bandwidth_hz)
    coils = [_item(MultiCoilElementName=name, MultiCoilElementUsed="YES") for name in ("dS Anterior", "dS Posterior")]
    shared.MRReceiveCoilSequence = _seq(
        ReceiveCoilName="MULTI COIL", ReceiveCoilManufacturerName="Philips", ReceiveCoilType="MULTICOIL",
        QuadratureReceiveCoil="NO", MultiCoilDefinitionSequence=Sequence(coils))
    shared.MRTransmitCoilSequence = _seq(TransmitCoilName="B", TransmitCoilManufacturerName="Philips",
                                         TransmitCoilType="BODY")
    shared.MRAveragesSequence = _seq(NumberOfAverages=float(protocol.averages))
    return shared


@dataclass(frozen=True, kw_only=True)
class _Dimensions:
    """Dimension index values of an instance's frames: stack (station), b-value when all frames have one, slice."""

    stacks: dict[int, int]  # station index → 1-based stack ordinal
    b_values: dict[float, int] | None  # b-value → 1-based ordinal

    @staticmethod
    def of(images: tuple[_Image, ...]) -> _Dimensions:
        stations = sorted({p.station.index for p in images})
        b_values = [p.image.b_value for p in images]
        known = [b for b in b_values if b is not None]
        by_b = None if len(known) < len(b_values) else {b: n + 1 for n, b in enumerate(sorted(set(known)))}
        return _Dimensions(stacks={s: n + 1 for n, s in enumerate(stations)}, b_values=by_b)

    def sequence(self, organization_uid: str) -> Sequence:
        """Dimension Index Sequence, slowest-varying dimension first (the frame order)."""
        pointers = [(0x00209056, 0x00209111, "Stack ID")]
        if self.b_values is not None:
            pointers.append((0x00189087, 0x00189117, "Diffusion b-value"))
        pointers.append((0x00209057, 0x00209111, "In-Stack Position Number"))
        return Sequence([_item(DimensionOrganizationUID=organization_uid, DimensionIndexPointer=index,
                               FunctionalGroupPointer=group, DimensionDescriptionLabel=label)
                         for index, group, label in pointers])

    def values(self, placed: _Image, k: int) -> list[int]:
        b_value = placed.image.b_value
        b = [] if self.b_values is None or b_value is None else [self.b_values[b_value]]
        return [self.stacks[placed.station.index], *b, k + 1]


def _frame_groups(placed: _Image, k: int, scaling: Scaling, dims: _Dimensions, duration_ms: float) -> Dataset:
    """Functional groups of frame ``k`` (slice k) of one station image."""
    image, station = placed.image, placed.station
    frame = Dataset()
    frame.FrameContentSequence = _seq(
        FrameAcquisitionNumber=station.index, FrameReferenceDateTime=_dt(placed.start),
        FrameAcquisitionDateTime=_dt(placed.start), FrameAcquisitionDuration=duration_ms,
        StackID=str(station.index), InStackPositionNumber=k + 1, DimensionIndexValues=dims.values(placed, k))
    frame.PlanePositionSequence = _seq(ImagePositionPatient=_ds_list(station.slice_position(k)))
    frame.PixelValueTransformationSequence = _seq(RescaleIntercept=_ds(scaling.rescale_intercept),
                                                  RescaleSlope=_ds(scaling.rescale_slope), RescaleType="US")
    if image.b_value is not None:
        frame.MRDiffusionSequence = _seq(DiffusionBValue=float(image.b_value),
                                         DiffusionDirectionality=_directionality(image.b_value))
    private = Dataset()
    _add_philips_private(private, scaling, image.b_value)
    frame.add_new(PER_FRAME_PRIVATE_CREATOR_TAG, "LO", PHILIPS_MR_IMAGING_005)
    frame.add_new(PER_FRAME_PRIVATE_TAG, "SQ", Sequence([private]))
    return frame


def _enhanced_groups(images: tuple[_Image, ...]) -> list[tuple[str, tuple[_Image, ...]]]:
    """The instances of an enhanced series: acquired images (of a multi-echo series one instance per echo, as
    Siemens writes them), then scanner-made trace and ADC images, each apart; in each, images ordered by station,
    then b-value (the Dimension Index order)."""
    ordered = sorted(images, key=lambda p: (p.station.index, p.image.b_value or 0.0))
    kinds = ("original", "trace", "adc", "water", "fat")
    echoes = sorted({p.image.echo_time_ms for p in ordered if p.image.echo_time_ms is not None})
    groups = []
    for kind in kinds:
        for echo in echoes if kind == "original" and echoes else [None]:
            group = tuple(p for p in ordered if p.image.kind == kind and (echo is None or p.image.echo_time_ms == echo))
            if group:
                groups.append((kind if echo is None else f"{kind}-echo-{echo:g}", group))
    return groups


def _enhanced_instance(series: _Series, images: tuple[_Image, ...], template: Dataset, uid: str,
                       number: int, meta: VisitMeta) -> Dataset:
    """One Enhanced MR instance holding every slice of ``images`` (one image kind) as frames."""
    protocol, first = series.protocol, images[0]
    frame_type = _frame_type(first.image)
    dims = _Dimensions.of(images)
    ds = Dataset()
    ds.update(template)
    ds.file_meta = _file_meta(EnhancedMRImageStorage, uid)
    ds.SOPInstanceUID = uid
    ds.InstanceNumber = number
    ds.ImageType = frame_type
    start = min(p.start for p in images)
    end = max(p.start for p in images) + timedelta(seconds=protocol.station_seconds)
    ds.AcquisitionNumber = first.station.index if len(dims.stacks) == 1 else 1
    ds.AcquisitionDateTime = _dt(start)
    ds.AcquisitionDuration = (end - start).total_seconds()
    ds.ContentDate, ds.ContentTime = _da(end), _tm(end)
    ds.ContentQualification = "PRODUCT"
    ds.ResonantNucleus = "1H"
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.KSpaceFiltering = "NONE"
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "MAGNITUDE"
    ds.AcquisitionContrast = protocol.acquisition_contrast
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.AcquisitionContextSequence = Sequence()
    if frame_type[0] == "ORIGINAL":
        _enhanced_protocol_attributes(ds, protocol, multi_echo=first.image.echo_time_ms is not None)
    ds.Rows, ds.Columns = first.station.size[1], first.station.size[0]
    organization = _uid(meta, uid, "dimension-organization")
    ds.DimensionOrganizationSequence = _seq(DimensionOrganizationUID=organization)
    ds.DimensionIndexSequence = dims.sequence(organization)
    ds.SharedFunctionalGroupsSequence = Sequence([_shared_groups(protocol, first)])
    frames: list[Dataset] = []
    pixels: list[bytes] = []
    for placed in images:
        scaling = placed.scaling()
        stored = scaling.stored(placed.image.data)
        frames.extend(_frame_groups(placed, k, scaling, dims, protocol.station_seconds * 1000.0)
                      for k in range(stored.shape[0]))
        pixels.append(stored.tobytes())
    ds.NumberOfFrames = len(frames)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.add_new(0x7FE00010, "OW", b"".join(pixels))
    return ds


def _write_enhanced_series(series: _Series, common: Dataset, meta: VisitMeta, folder: Path) -> list[Path]:
    """One multi-frame instance per image kind (acquired, trace, ADC) of the series."""
    template = _series_attributes(series, common, EnhancedMRImageStorage)
    paths: list[Path] = []
    for number, (kind, images) in enumerate(_enhanced_groups(series.images), start=1):
        ds = _enhanced_instance(series, images, template, _uid(meta, series.uid, kind), number, meta)
        path = folder / f"IM{number:05d}.dcm"
        dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths
