"""DICOM results of a processed visit: stitched T2 series, SEG, TID 1500 measurement report, ADC map.

Pure functions: arrays / SimpleITK images and source headers in, pydicom data sets out (the
caller stores them). Built with highdicom where it has the IOD (Segmentation, Parametric
Map, Comprehensive 3D SR with the TID 1500 Measurement Report). The stitched whole-body T2
is classic MR Image Storage, one DERIVED\\SECONDARY image per slice: every PACS viewer shows
it, and SEG readers (dcmqi, Slicer, OHIF) handle a SEG on single-frame images best.

- Patient, study and Clinical Trial (subject, time point) attributes are copied from the
  source headers (highdicom's module-wise copy, for every object).
- Codes come from :mod:`quant.codes`; the private scheme is declared in every object that
  uses one of its codes.
- Tracking UIDs are derived from patient + muscle + side, so SEG segment, SR measurement
  group and every later visit of the same subject share one tracking UID per muscle × side.
- Re-processing: every object gets new UIDs. The SR lists the report it replaces in the
  Predecessor Documents Sequence; the images, SEG and map list the series they replace in
  the Related Series Sequence (purpose: private "replaced series", CID 7210 has none).
  Content Date/Time (``ResultContext.content_datetime``, node-local time) tells the newest.
- ADC: voxels without an estimate stay NaN in the Float Pixel Data (IEEE NaN is valid in
  OF, PS3.5 §8 / CP-2352; dciodvfy accepts it), so a real ADC of 0 stays distinguishable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import TypedDict

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from quant import codes as C
from quant.atlas import AtlasLabel
from quant.pipeline import MeasurementRow, normalised, summary_mean
from quant.stitch import stitch
from quant.volumes import functional_group
from storage.catalogue import MUSCLE_BY_KEY, MUSCLES, Modality

MANUFACTURER = "myonode"
MODEL = "myonode quantification"
SERIAL = "1"
DEVICE_UID = generate_uid(entropy_srcs=["myonode quantification device"])
ALGORITHM_NAME = "myonode atlas propagation"
STITCHED_DESCRIPTION = "WB T2 stitched (myonode)"
SERIES_NUMBERS = {"stitched_t2": 9001, "seg": 9002, "sr": 9003, "adc_map": 9004}
BODY_PART = "WHOLEBODY"
DISPLAY_MM = 1.5  # in-plane spacing floor of the derived series and its SEG (see build_results)
ADC_WINDOW = (1.5e-3, 3.0e-3)  # centre, width (mm²/s)
_GEOMETRY_MM = 1e-3

# (label value, muscle key, side) of a label image
LabelEntry = tuple[int, str, str]

# Segment colours (sRGB), fixed per muscle; the right side is drawn 30 % darker than the left.
PALETTE: dict[str, tuple[int, int, int]] = {
    "tongue": (230, 25, 75), "splenius_capitis": (245, 130, 48), "trapezius": (255, 225, 25),
    "sternocleidomastoid": (210, 245, 60), "deltoid": (60, 180, 75), "biceps_brachii": (70, 240, 240),
    "forearm": (0, 130, 200), "thoracic_paraspinal": (145, 30, 180), "psoas": (240, 50, 230),
    "gluteus_maximus": (250, 190, 212), "quadriceps": (0, 128, 128), "hamstrings": (220, 190, 255),
    "tibialis_anterior": (170, 110, 40), "gastrocnemius_soleus": (255, 250, 200), "triceps": (128, 0, 0),
    "first_dorsal_interosseous": (170, 255, 195), "thenar": (128, 128, 0), "hypothenar": (255, 215, 180),
}
_MR_ACQUISITION = ("ScanOptions", "MRAcquisitionType", "RepetitionTime", "EchoTime", "EchoTrainLength",
                   "InversionTime", "MagneticFieldStrength", "ImagedNucleus", "PatientPosition",
                   "PositionReferenceIndicator")


@dataclass(frozen=True, kw_only=True)
class ResultContext:
    """Who made the results, when, with what; and the objects of an earlier run of the visit they replace."""

    content_datetime: datetime
    myonode_version: str
    pipeline_version: str
    atlas_id: str
    # kind ("stitched_t2", "seg", "sr", "adc_map") → headers of replaced objects (one per series suffices)
    replaces: Mapping[str, Sequence[Dataset]] = field(default_factory=dict)
    # (muscle, side) the protocol's field of view does not hold: no segment, a group in the SR that says so
    not_covered: Sequence[tuple[str, str]] = ()
    # the atlas was drawn from synthetic (phantom) subjects: every measurement group of the SR says so
    synthetic_atlas: bool = False


@dataclass(frozen=True, kw_only=True)
class Verifier:
    """Who signs a measurement report (Verifying Observer Name, a DICOM person name, and Organization)."""

    name: str
    organisation: str

    def __post_init__(self) -> None:
        if not self.name.strip() or not self.organisation.strip():
            raise ValueError("a verified report needs the verifying observer's name and organisation")
        if len(self.organisation) > 64:
            raise ValueError(f"Verifying Organization {self.organisation!r} is longer than 64 characters")


@dataclass(kw_only=True)
class VisitResults:
    stitched_t2: list[Dataset]
    seg: hd.seg.Segmentation
    sr: hd.sr.Comprehensive3DSR
    adc_map: hd.pm.ParametricMap | None

    def objects(self) -> list[tuple[str, Dataset]]:
        out: list[tuple[str, Dataset]] = [("stitched_t2", ds) for ds in self.stitched_t2]
        out += [("seg", self.seg), ("sr", self.sr)]
        return out + ([("adc_map", self.adc_map)] if self.adc_map is not None else [])


# --- shared pieces ---------------------------------------------------------------------------


def tracking_uid(patient: Dataset, muscle: str, side: str) -> str:
    """The tracking UID of a muscle × side of a patient: the same in SEG, SR and every visit."""
    return generate_uid(entropy_srcs=["myonode tracking", str(patient.get("IssuerOfPatientID", "")),
                                      str(patient.PatientID), muscle, side])


def tracking_id(muscle: str, side: str) -> str:
    return f"{muscle}_{side}"


def _local(when: datetime) -> datetime:
    """Content times are local times in DICOM: an aware datetime is shown in the node's zone."""
    return when.astimezone() if when.tzinfo is not None else when


class _Common(TypedDict):
    manufacturer: str
    manufacturer_model_name: str
    software_versions: str
    device_serial_number: str
    content_date: date
    content_time: time
    series_date: date
    series_time: time


def _dicom_kwargs(ctx: ResultContext) -> _Common:
    """highdicom constructor arguments every object shares: equipment and creation times."""
    when = _local(ctx.content_datetime)
    return _Common(manufacturer=MANUFACTURER, manufacturer_model_name=MODEL, software_versions=ctx.myonode_version,
                   device_serial_number=SERIAL, content_date=when.date(), content_time=when.time(),
                   series_date=when.date(), series_time=when.time())


def _finish(ds: Dataset, ctx: ResultContext, kind: str) -> None:
    """Instance creation time, the series replaced, the private scheme if used, the body part."""
    when = _local(ctx.content_datetime)
    ds.InstanceCreationDate, ds.InstanceCreationTime = when.strftime("%Y%m%d"), when.strftime("%H%M%S.%f")
    replaced = {(str(r.StudyInstanceUID), str(r.SeriesInstanceUID)) for r in ctx.replaces.get(kind, [])}
    if replaced and kind != "sr":  # the SR Document Series has no Related Series: the SR names predecessors
        items = []
        for study, series in sorted(replaced):
            item = Dataset()
            item.StudyInstanceUID, item.SeriesInstanceUID = study, series
            item.PurposeOfReferenceCodeSequence = [_copy(C.REPLACED_SERIES)]
            items.append(item)
        ds.RelatedSeriesSequence = items
    if "PixelData" in ds or "FloatPixelData" in ds:
        ds.BodyPartExamined = BODY_PART
    if _uses_private_scheme(ds):
        ds.CodingSchemeIdentificationSequence = [C.coding_scheme_identification()]


def _uses_private_scheme(ds: Dataset) -> bool:
    if ds.get("CodingSchemeDesignator") == C.PRIVATE_SCHEME:
        return True
    return any(_uses_private_scheme(item) for elem in ds if elem.VR == "SQ" for item in elem.value)


def _copy(code: hd.sr.CodedConcept) -> hd.sr.CodedConcept:
    """A fresh copy of a table code (items get modifiers attached; the table must stay untouched)."""
    return hd.sr.CodedConcept(code.value, code.scheme_designator, code.meaning)


def _direction(image: sitk.Image) -> np.ndarray:
    return np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)


# --- 1. the stitched T2 as a derived MR series -----------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _SourceImage:
    """One 2-D source image: a classic instance, or one frame (1-based ``frame``) of an enhanced one."""

    ds: Dataset
    frame: int | None
    orientation: np.ndarray  # Image Orientation (Patient), 6 values
    position: np.ndarray  # Image Position (Patient)
    spacing: tuple[float, float]  # Pixel Spacing (between rows, between columns)
    thickness: float


def _group(frame: Dataset, shared: Dataset | None, sequence: str) -> Dataset:
    return functional_group(frame, shared, sequence) or Dataset()


def _source_images(source: Sequence[Dataset]) -> list[_SourceImage]:
    """Every 2-D image of the sources, with its geometry (per frame for Enhanced MR, from its functional groups)."""
    out = []
    for ds in source:
        frames = ds.get("PerFrameFunctionalGroupsSequence") or []
        if not frames:
            out.append(_SourceImage(ds=ds, frame=None, orientation=np.asarray(ds.ImageOrientationPatient, dtype=float),
                                    position=np.asarray(ds.ImagePositionPatient, dtype=float),
                                    spacing=(float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])),
                                    thickness=float(ds.get("SliceThickness") or 0.0)))
            continue
        shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
        for number, frame in enumerate(frames, start=1):
            measures = _group(frame, shared, "PixelMeasuresSequence")
            out.append(_SourceImage(
                ds=ds, frame=number,
                orientation=np.asarray(_group(frame, shared, "PlaneOrientationSequence").ImageOrientationPatient,
                                       dtype=float),
                position=np.asarray(_group(frame, shared, "PlanePositionSequence").ImagePositionPatient, dtype=float),
                spacing=(float(measures.PixelSpacing[0]), float(measures.PixelSpacing[1])),
                thickness=float(measures.get("SliceThickness") or 0.0)))
    return out


def _source_extents(source: Sequence[_SourceImage], normal: np.ndarray) -> np.ndarray:
    """Each source image's extent (mm) along ``normal``: (n, 2) of low, high, including half its thickness."""
    out = np.empty((len(source), 2))
    for i, image in enumerate(source):
        row_dir, col_dir = image.orientation[:3], image.orientation[3:]
        col_mm = image.spacing[1] * (int(image.ds.Columns) - 1)
        row_mm = image.spacing[0] * (int(image.ds.Rows) - 1)
        corners = [image.position + a * col_mm * row_dir + b * row_mm * col_dir for a in (0, 1) for b in (0, 1)]
        along = [float(c @ normal) for c in corners]
        half = image.thickness / 2 * abs(float(np.cross(row_dir, col_dir) @ normal))
        out[i] = (min(along) - half, max(along) + half)
    return out


def _window(stored: np.ndarray) -> tuple[float, float]:
    """Display window (centre, width) from the 1st–99.5th percentile of the non-zero voxels."""
    sample = stored[:: max(1, stored.shape[0] // 16)]
    sample = sample[sample > 0]
    if sample.size == 0:
        return 0.5, 1.0
    lo, hi = np.percentile(sample, (1.0, 99.5))
    return float(lo + hi) / 2, max(float(hi - lo), 1.0)


def derived_t2_series(stitched: sitk.Image, source: Sequence[Dataset], ctx: ResultContext) -> list[Dataset]:
    """The stitched T2 (float, LPS) as classic MR images, one per slice, DERIVED\\SECONDARY.

    Pixel values are the stitched signal rounded to uint16 (display only: no modality LUT).
    Each image lists the source images whose slab intersects its own in the Source Image
    Sequence. Frame of Reference: the sources' when they share one, else a new one.
    """
    if not source:
        raise ValueError("derived T2 series: no source T2 headers given")
    first = source[0]
    frames = {str(ds.FrameOfReferenceUID) for ds in source}
    frame_uid = frames.pop() if len(frames) == 1 else generate_uid()
    stored = np.rint(np.clip(np.nan_to_num(sitk.GetArrayViewFromImage(stitched)), 0, 65535)).astype(np.uint16)
    centre, width = _window(stored)
    d = _direction(stitched)
    spacing = stitched.GetSpacing()
    images = _source_images(source)
    extents = _source_extents(images, d[:, 2])
    series_uid = generate_uid()
    derivation = ("Stations stitched with feathered overlaps, each scaled to a common bright-fat level "
                  f"(display only: measurements use the native stations); myonode {ctx.myonode_version}, "
                  f"pipeline {ctx.pipeline_version}")
    out: list[Dataset] = []
    for k in range(stored.shape[0]):
        ds = hd.SOPClass(
            study_instance_uid=first.StudyInstanceUID, series_instance_uid=series_uid,
            series_number=SERIES_NUMBERS["stitched_t2"], sop_instance_uid=generate_uid(), sop_class_uid=MRImageStorage,
            instance_number=k + 1, modality="MR", transfer_syntax_uid=ExplicitVRLittleEndian,
            series_description=STITCHED_DESCRIPTION, specific_character_set=first.get("SpecificCharacterSet"),
            **_dicom_kwargs(ctx))
        ds.copy_patient_and_study_information(first)
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        for keyword in _MR_ACQUISITION:
            if keyword in first:
                ds.add(first[keyword])
        ds.ScanningSequence = first.get("ScanningSequence", "RM")  # type 1; RM: research mode
        ds.SequenceVariant = first.get("SequenceVariant", "NONE")
        for keyword in ("ScanOptions", "MRAcquisitionType", "EchoTime", "EchoTrainLength", "PatientPosition"):  # type 2
            if keyword not in ds:
                setattr(ds, keyword, None)
        ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
        ds.DerivationDescription = derivation
        ds.DerivationCodeSequence = [_copy(C.IMAGE_STITCHING)]
        position = np.asarray(stitched.TransformIndexToPhysicalPoint((0, 0, k)))
        level = float(position @ d[:, 2])
        hit = (extents[:, 0] < level + spacing[2] / 2) & (extents[:, 1] > level - spacing[2] / 2)
        ds.SourceImageSequence = [_source_item(images[int(i)]) for i in np.flatnonzero(hit)]
        ds.ImagePositionPatient = [round(float(v), 4) for v in position]
        ds.ImageOrientationPatient = [round(float(v), 6) for v in (*d[:, 0], *d[:, 1])]
        ds.PixelSpacing = [round(spacing[1], 6), round(spacing[0], 6)]
        ds.SliceThickness = ds.SpacingBetweenSlices = round(spacing[2], 6)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.WindowCenter, ds.WindowWidth = round(centre, 1), round(width, 1)
        ds.PixelData = stored[k].tobytes()
        _finish(ds, ctx, "stitched_t2")
        out.append(ds)
    return out


def _source_item(src: _SourceImage) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = src.ds.SOPClassUID, src.ds.SOPInstanceUID
    if src.frame is not None:
        item.ReferencedFrameNumber = src.frame
    item.PurposeOfReferenceCodeSequence = [_copy(C.SOURCE_IMAGE_PURPOSE)]
    return item


# --- 2. the ADC parametric map ---------------------------------------------------------------


def adc_parametric_map(adc: sitk.Image, source: Sequence[Dataset], ctx: ResultContext) -> hd.pm.ParametricMap:
    """The stitched ADC (float32 mm²/s, NaN where not estimated) as a Parametric Map with a UCUM mapping."""
    if not source:
        raise ValueError("ADC map: no source DWI headers given")
    arr = sitk.GetArrayFromImage(adc).astype(np.float32)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        raise ValueError("ADC map: no voxel has an ADC value")
    d = _direction(adc)
    sp = adc.GetSpacing()
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="ADC", lut_explanation="Apparent diffusion coefficient (NaN: not estimated)", unit=C.MM2_PER_S,
        value_range=(float(finite.min()), float(finite.max())), slope=1.0, intercept=0.0, quantity_definition=C.ADC)
    pm = hd.pm.ParametricMap(
        source_images=[source[0]], further_source_images=list(source[1:]) or None, pixel_array=arr,
        series_instance_uid=generate_uid(), series_number=SERIES_NUMBERS["adc_map"],
        sop_instance_uid=generate_uid(), instance_number=1, contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=ADC_WINDOW[0], window_width=ADC_WINDOW[1],
                                                         voi_lut_function="LINEAR_EXACT")],
        pixel_measures=hd.PixelMeasuresSequence(pixel_spacing=(sp[1], sp[0]), slice_thickness=sp[2],
                                                spacing_between_slices=sp[2]),
        plane_orientation=hd.PlaneOrientationSequence(hd.CoordinateSystemNames.PATIENT, (*d[:, 0], *d[:, 1])),
        plane_positions=[hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT,
                                                  adc.TransformIndexToPhysicalPoint((0, 0, k)))
                         for k in range(arr.shape[0])],
        series_description="WB ADC (myonode)", content_label="ADC",
        content_description=f"ADC from two b-values per station, stitched; pipeline {ctx.pipeline_version}",
        **_dicom_kwargs(ctx))
    _finish(pm, ctx, "adc_map")
    return pm


# --- 3. the segmentation ---------------------------------------------------------------------


def _check_label_table(table: Sequence[LabelEntry]) -> None:
    seen_values, seen_keys = set(), set()
    for value, muscle, side in table:
        if muscle not in MUSCLE_BY_KEY:
            raise ValueError(f"label {value}: {muscle!r} is not a muscle of the catalogue")
        if side not in MUSCLE_BY_KEY[muscle].sides:
            raise ValueError(f"label {value}: side {side!r} is not a side of {muscle}")
        if value in seen_values or (muscle, side) in seen_keys:
            raise ValueError(f"label {value} ({muscle}, {side}) appears twice in the label table")
        seen_values.add(value)
        seen_keys.add((muscle, side))


def segment_label(muscle: str, side: str) -> str:
    name = MUSCLE_BY_KEY[muscle].name
    return name if side == "none" else f"{name} {side}"


def _colour(muscle: str, side: str) -> hd.color.CIELabColor:
    r, g, b = (round(c * (0.7 if side == "right" else 1.0)) for c in PALETTE[muscle])
    return hd.color.CIELabColor.from_rgb(r, g, b)


def segmentation(derived: Sequence[Dataset], labels: sitk.Image, table: Sequence[LabelEntry],
                 ctx: ResultContext) -> hd.seg.Segmentation:
    """A binary SEG with one segment per muscle × side of ``table`` present in ``labels`` (on the derived grid).

    Segments are numbered in table order; each carries its tracking identifier
    ``<muscle>_<side>`` and tracking UID (:func:`tracking_uid`).
    """
    _check_label_table(table)
    arr = sitk.GetArrayViewFromImage(labels)
    first = derived[0]
    if arr.shape != (len(derived), first.Rows, first.Columns):
        raise ValueError(f"labels of shape {arr.shape} do not match the derived series "
                         f"({len(derived)} × {first.Rows} × {first.Columns})")
    if not np.allclose(labels.GetOrigin(), np.asarray(first.ImagePositionPatient, dtype=float), atol=_GEOMETRY_MM):
        raise ValueError("labels are not on the derived series' grid (origin differs)")
    counts = np.bincount(arr.ravel(), minlength=max([v for v, _, _ in table], default=0) + 1)
    present = [(v, m, s) for v, m, s in table if counts[v] > 0]
    if not present:
        raise ValueError("no label of the table is present in the label image")
    lut = np.zeros(len(counts), np.uint8 if len(present) < 256 else np.uint16)
    for number, (value, _, _) in enumerate(present, start=1):
        lut[value] = number
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME, family=C.ALGORITHM_FAMILY, version=ctx.pipeline_version, source=MANUFACTURER,
        parameters={"atlas_id": ctx.atlas_id, "myonode_version": ctx.myonode_version})
    descriptions = []
    for number, (_, muscle, side) in enumerate(present, start=1):
        region = _copy(C.MUSCLE_CODES[muscle])
        if side in C.LATERALITY:
            region.AnatomicRegionModifierSequence = [_copy(C.LATERALITY[side])]
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=segment_label(muscle, side), segmented_property_category=C.TISSUE,
            segmented_property_type=C.SKELETAL_MUSCLE, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, tracking_uid=tracking_uid(first, muscle, side),
            tracking_id=tracking_id(muscle, side), anatomic_regions=[region], display_color=_colour(muscle, side)))
    seg = hd.seg.Segmentation(
        source_images=list(derived), pixel_array=lut[arr], segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=SERIES_NUMBERS["seg"],
        sop_instance_uid=generate_uid(), instance_number=1, content_label="MUSCLES",
        content_description=f"Muscle ROIs propagated from atlas {ctx.atlas_id}"[:64],
        series_description="Muscle ROIs (myonode)", **_dicom_kwargs(ctx))
    _finish(seg, ctx, "seg")
    return seg


# --- 4. the TID 1500 measurement report ------------------------------------------------------


def _check_rows(rows: Sequence[MeasurementRow], not_covered: Sequence[tuple[str, str]] = ()) -> None:
    seen = set()
    for muscle, side in not_covered:
        if muscle not in MUSCLE_BY_KEY or side not in MUSCLE_BY_KEY[muscle].sides:
            raise ValueError(f"not covered: {muscle} {side} is not a muscle × side of the catalogue")
    for r in rows:
        if (r.muscle, r.side) in set(not_covered):
            raise ValueError(f"measurement {r.modality} {r.muscle} {r.side}: a value for a muscle the protocol "
                             "does not cover")
        key = (r.modality, r.muscle, r.side)
        if not isinstance(r.modality, Modality):
            raise ValueError(f"measurement {r.muscle} {r.side}: unknown modality {r.modality!r}")
        if r.muscle not in MUSCLE_BY_KEY or r.side not in MUSCLE_BY_KEY[r.muscle].sides:
            raise ValueError(f"measurement {r.modality}: {r.muscle} {r.side} is not a muscle × side of the catalogue")
        if key in seen:
            raise ValueError(f"measurement {r.modality} {r.muscle} {r.side} appears twice")
        unknown = set(r.qc_flags) - set(C.QC_VALUES)
        if unknown:
            raise ValueError(f"measurement {r.modality} {r.muscle} {r.side}: QC flags without a code: "
                             f"{sorted(unknown)}")
        seen.add(key)


def _measurements(t2: MeasurementRow | None, adc: MeasurementRow | None, ff: MeasurementRow | None,
                  adc_map: Dataset | None) -> list[hd.sr.Measurement]:
    out = []
    if t2 is not None:
        out += [hd.sr.Measurement(C.T2W_SIGNAL, t2.mean_signal, C.ARBITRARY_UNIT, derivation=C.MEAN),
                hd.sr.Measurement(C.T2W_SIGNAL, t2.sd, C.ARBITRARY_UNIT, derivation=C.STANDARD_DEVIATION)]
        if t2.reference_value is not None:
            out.append(hd.sr.Measurement(C.REFERENCE_SIGNAL, t2.reference_value, C.ARBITRARY_UNIT, derivation=C.MEAN))
        out.append(hd.sr.Measurement(C.RELATIVE_T2, t2.value, C.RATIO))
    volume = next((r.volume_ml for r in (t2, adc, ff) if r is not None), None)
    if volume is not None:
        out.append(hd.sr.Measurement(C.VOLUME, volume, C.MILLILITRE))
    if adc is not None:
        source = [hd.sr.SourceImageForMeasurement.from_source_image(adc_map)] if adc_map is not None else None
        out += [hd.sr.Measurement(C.ADC, adc.value, C.MM2_PER_S, derivation=C.MEAN, referenced_images=source),
                hd.sr.Measurement(C.ADC, adc.sd, C.MM2_PER_S, derivation=C.STANDARD_DEVIATION,
                                  referenced_images=source)]
    if ff is not None:
        out += [hd.sr.Measurement(C.FAT_FRACTION, ff.value, C.PERCENT, derivation=C.MEAN),
                hd.sr.Measurement(C.FAT_FRACTION, ff.sd, C.PERCENT, derivation=C.STANDARD_DEVIATION)]
    return out


def _qc(*rows: MeasurementRow | None) -> list[hd.sr.QualitativeEvaluation]:
    return [hd.sr.QualitativeEvaluation(C.QC_FLAG[r.modality], C.QC_VALUES[flag])
            for r in rows if r is not None for flag in sorted(set(r.qc_flags))]


def _atlas_evaluation(ctx: ResultContext) -> list[hd.sr.QualitativeEvaluation]:
    """A synthetic atlas said in every group that holds a value (a reader of one group sees it)."""
    return [hd.sr.QualitativeEvaluation(C.ATLAS_ANATOMY, C.SYNTHETIC_ATLAS)] if ctx.synthetic_atlas else []


def measurement_report(rows: Sequence[MeasurementRow], seg: Dataset, derived: Sequence[Dataset],
                       adc_map: Dataset | None, ctx: ResultContext,
                       verifier: Verifier | None = None) -> hd.sr.Comprehensive3DSR:
    """TID 1500: one measurement group per measured muscle × side, and the summary mean.

    ``verifier``: a reviewer signs the report — Verification Flag VERIFIED, the Verifying Observer
    (name, organisation, date-time), final; it names the report it replaces as its predecessor
    (``ctx.replaces["sr"]``), which stays stored and queryable.

    A group holds the T2 measurements (mean and SD of the T2-weighted signal, the bone marrow
    reference mean, relative T2), the volume, for the axial muscles mean and SD of the
    ADC with the ADC map as their source of measurement, and where the visit has Dixon images mean and SD of
    the fat fraction (DCM 129100, %); its QC flags are qualitative
    evaluations (one concept per modality). It references its SEG segment (TID 1411) when
    the SEG has one for that muscle × side; otherwise it is a TID 1501 group. Measured with a synthetic atlas
    (``ctx.synthetic_atlas``), each group with a value says so (qualitative evaluation "synthetic atlas"). A muscle × side the
    protocol does not cover (``ctx.not_covered``) has a TID 1501 group with no measurement and the
    qualitative evaluation "not covered".
    """
    _check_rows(rows, ctx.not_covered)
    by_key = {(r.modality, r.muscle, r.side): r for r in rows}
    segments = {str(item.TrackingID): int(item.SegmentNumber) for item in seg.SegmentSequence}
    patient = derived[0]
    time_point = (hd.sr.TimePointContext(time_point=str(patient.ClinicalTrialTimePointID))
                  if patient.get("ClinicalTrialTimePointID") else None)
    algorithm = hd.sr.AlgorithmIdentification(name=ALGORITHM_NAME, version=ctx.pipeline_version,
                                              parameters=[f"atlas_id={ctx.atlas_id}",
                                                          f"myonode_version={ctx.myonode_version}"])
    source_series = hd.sr.SourceSeriesForSegmentation(str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID))
    groups: list[hd.sr.MeasurementsAndQualitativeEvaluations
                 | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations] = []
    for muscle in MUSCLES:
        for side in muscle.sides:
            t2, adc, ff = (by_key.get((modality, muscle.key, side))
                           for modality in (Modality.REL_T2, Modality.ADC, Modality.FF))
            if t2 is None and adc is None and ff is None:
                continue
            ident = tracking_id(muscle.key, side)
            tracking = hd.sr.TrackingIdentifier(uid=tracking_uid(patient, muscle.key, side), identifier=ident)
            sites = [hd.sr.FindingSite(_copy(C.MUSCLE_CODES[muscle.key]), laterality=C.LATERALITY.get(side))]
            measurements = _measurements(t2, adc, ff, adc_map)
            evaluations = [*_qc(t2, adc, ff), *_atlas_evaluation(ctx)] or None
            if ident in segments:
                segment = hd.sr.ReferencedSegment(seg.SOPClassUID, seg.SOPInstanceUID, segments[ident],
                                                  source_series=source_series)
                groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=tracking, referenced_segment=segment, finding_type=C.SKELETAL_MUSCLE,
                    time_point_context=time_point, algorithm_id=algorithm, finding_sites=sites,
                    measurements=measurements, qualitative_evaluations=evaluations))
            else:
                groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
                    tracking_identifier=tracking, finding_type=C.SKELETAL_MUSCLE, time_point_context=time_point,
                    algorithm_id=algorithm, finding_sites=sites, measurements=measurements,
                    qualitative_evaluations=evaluations))
    for muscle_key, side in sorted(set(ctx.not_covered)):
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid(patient, muscle_key, side),
                                                         identifier=tracking_id(muscle_key, side)),
            finding_type=C.SKELETAL_MUSCLE, time_point_context=time_point, algorithm_id=algorithm,
            finding_sites=[hd.sr.FindingSite(_copy(C.MUSCLE_CODES[muscle_key]), laterality=C.LATERALITY.get(side))],
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(C.COVERAGE, C.NOT_COVERED)]))
    summary = summary_mean(list(rows))
    if summary is not None:
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid(patient, "summary_mean", "none"),
                                                         identifier="summary_mean"),
            finding_type=C.SKELETAL_MUSCLE, time_point_context=time_point, algorithm_id=algorithm,
            measurements=[hd.sr.Measurement(C.SUMMARY_RELATIVE_T2, summary, C.RATIO)]))
    observer = hd.sr.ObserverContext(
        observer_type=C.DEVICE_OBSERVER,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=DEVICE_UID, name=MANUFACTURER, manufacturer_name=MANUFACTURER, model_name=MODEL,
            serial_number=SERIAL))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=C.WHOLE_BODY_MRI, imaging_measurements=groups, title=C.REPORT_TITLE)
    evidence = [seg, *derived, *([adc_map] if adc_map is not None else [])]
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report, series_instance_uid=generate_uid(), series_number=SERIES_NUMBERS["sr"],
        sop_instance_uid=generate_uid(), instance_number=1,
        series_description="Muscle MRI measurements, verified (myonode)" if verifier else
        "Muscle MRI measurements (myonode)",
        is_complete=True, is_final=verifier is not None, is_verified=verifier is not None,
        verifying_observer_name=verifier.name if verifier else None,
        verifying_organization=verifier.organisation if verifier else None,
        previous_versions=list(ctx.replaces.get("sr", [])) or None, **_dicom_kwargs(ctx))
    _finish(sr, ctx, "sr")
    return sr


# --- the visit -------------------------------------------------------------------------------


def build_results(rows: Sequence[MeasurementRow], t2_stations: Sequence[sitk.Image], subject_labels: sitk.Image,
                  adc_stations: Sequence[sitk.Image], t2_headers: Sequence[Dataset],
                  dwi_header: Dataset | None, table: Sequence[AtlasLabel], ctx: ResultContext) -> VisitResults:
    """All result objects of one visit, from its stations (head first), labels and measurements.

    The derived series (and so the SEG) is stitched on a grid of the first station's
    orientation with an in-plane spacing of at least ``DISPLAY_MM``: the subject labels come
    from a 2 mm grid (``QuantParams.label_mm``), so a finer SEG would add bytes (×4), not
    detail. ``t2_headers``: every T2 header of the visit (the derived images cite those of
    their slab as sources).
    """
    first = t2_stations[0]
    sp = first.GetSpacing()
    spacing = (max(sp[0], DISPLAY_MM), max(sp[1], DISPLAY_MM), sp[2])
    display = stitch(normalised(list(t2_stations)), spacing=spacing, direction=first.GetDirection()).image
    derived = derived_t2_series(display, t2_headers, ctx)
    labels = sitk.Resample(subject_labels, display, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
    uncovered = set(ctx.not_covered)
    seg = segmentation(derived, labels, [(lab.value, lab.key, lab.side) for lab in table
                                         if lab.is_muscle and (lab.key, lab.side) not in uncovered], ctx)
    adc_map = None
    if adc_stations and dwi_header is not None:
        adc_map = adc_parametric_map(stitch(list(adc_stations), fill=float("nan")).image, [dwi_header], ctx)
    sr = measurement_report(rows, seg, derived, adc_map, ctx)
    return VisitResults(stitched_t2=derived, seg=seg, sr=sr, adc_map=adc_map)
