"""DICOM results of a processed visit: stitched T2 series, SEG, TID 1500 measurement report, ADC map.

Built with highdicom where it has the IOD (Segmentation, Parametric Map, Comprehensive 3D
SR with the TID 1500 Measurement Report); the stitched whole-body T2 is written as classic
MR Image Storage (one coronal image per slice, DERIVED\\SECONDARY) with pydicom, because
that is what every PACS viewer displays and what the SEG references frame by frame.

Patient, study and Clinical Trial attributes are copied from the visit's source T2
images. Every object gets new UIDs; an object that replaces one from an earlier run of
the same visit says so (SR: Predecessor Documents Sequence; images, SEG and map:
Referenced Series / derivation text), and Content Date/Time tell which is newest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from quant import codes as C
from quant.atlas import AtlasLabel
from quant.pipeline import MeasurementRow, summary_mean

MANUFACTURER = "myonode"
MODEL = "myonode quantification"
SERIAL = "1"
STITCHED_DESCRIPTION = "WB T2 stitched (myonode)"
SERIES_NUMBERS = {"stitched_t2": 9001, "seg": 9002, "sr": 9003, "adc_map": 9004}
COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "PatientSize", "PatientWeight",
          "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName",
          "StudyDescription", "ClinicalTrialSponsorName", "ClinicalTrialProtocolID", "ClinicalTrialProtocolName",
          "ClinicalTrialSiteID", "ClinicalTrialSiteName", "ClinicalTrialSubjectID", "ClinicalTrialTimePointID",
          "ClinicalTrialTimePointDescription")


@dataclass(frozen=True)
class ResultContext:
    """Who made the results, when, with what; and which earlier objects they replace (kind → SOP UIDs)."""

    content_datetime: datetime
    myonode_version: str
    pipeline_version: str
    atlas_id: str
    # kind ("stitched_t2", "seg", "sr", "adc_map") → headers of the objects of an earlier run they replace
    replaces: dict[str, list[Dataset]] = field(default_factory=dict)


@dataclass
class VisitResults:
    stitched_t2: list[Dataset]
    seg: Dataset
    sr: Dataset
    adc_map: Dataset | None

    def objects(self) -> list[tuple[str, Dataset]]:
        out = [("stitched_t2", ds) for ds in self.stitched_t2] + [("seg", self.seg), ("sr", self.sr)]
        return out + ([("adc_map", self.adc_map)] if self.adc_map is not None else [])


def _copy_patient_study(target: Dataset, source: Dataset) -> None:
    for keyword in COPIED:
        if keyword in source:
            setattr(target, keyword, source.data_element(keyword).value)


def display_grid(stitched_native: sitk.Image, in_plane_mm: float = 1.5) -> sitk.Image:
    """The derived series' grid: the stitched volume's orientation, in-plane spacing ≥ ``in_plane_mm``."""
    sp = stitched_native.GetSpacing()
    new_sp = (max(sp[0], in_plane_mm), max(sp[1], in_plane_mm), sp[2])
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(stitched_native.GetSize(), sp, new_sp)]
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetOrigin(stitched_native.TransformContinuousIndexToPhysicalPoint(
        tuple((t / s - 1) / 2 for s, t in zip(sp[:2], new_sp[:2])) + (0.0,)))
    ref.SetSpacing(new_sp)
    ref.SetDirection(stitched_native.GetDirection())
    return ref


def stitched_series(image: sitk.Image, source: Dataset, ctx: ResultContext) -> list[Dataset]:
    """The stitched whole-body T2 as classic MR images, one per slice: uint16 values of the station-normalised
    signal (bright fat ≈ 1000; display only, so no Modality LUT)."""
    arr = np.clip(np.nan_to_num(sitk.GetArrayFromImage(image)), 0, 4095)
    stored = np.rint(arr).astype(np.uint16)
    series_uid = generate_uid()
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    when = ctx.content_datetime
    replaced = ctx.replaces.get("stitched_t2", [])
    out = []
    for k in range(stored.shape[0]):
        ds = Dataset()
        _copy_patient_study(ds, source)
        sop = generate_uid()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop
        ds.Modality = "MR"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = SERIES_NUMBERS["stitched_t2"]
        ds.SeriesDescription = STITCHED_DESCRIPTION
        ds.FrameOfReferenceUID = source.FrameOfReferenceUID
        ds.PositionReferenceIndicator = ""
        ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions = MANUFACTURER, MODEL, ctx.myonode_version
        ds.DeviceSerialNumber = SERIAL
        ds.InstanceNumber = k + 1
        ds.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
        ds.DerivationDescription = (f"Stations stitched with feathered overlaps and per-station intensity scaling "
                                    f"(display only: measurements use the native stations); pipeline "
                                    f"{ctx.pipeline_version}"
                                    + (f"; replaces series {replaced[0].SeriesInstanceUID}" if replaced else ""))
        ds.ContentDate, ds.ContentTime = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
        ds.SeriesDate, ds.SeriesTime = ds.ContentDate, ds.ContentTime
        ds.ImagePositionPatient = [f"{v:.4f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*d[:, 0], *d[:, 1])]
        sp = image.GetSpacing()
        ds.PixelSpacing = [f"{sp[1]:.6g}", f"{sp[0]:.6g}"]
        ds.SliceThickness = f"{sp[2]:.6g}"
        ds.SpacingBetweenSlices = f"{sp[2]:.6g}"
        for keyword in ("ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType", "RepetitionTime",
                        "EchoTime", "EchoTrainLength", "MagneticFieldStrength", "BodyPartExamined", "PatientPosition"):
            if keyword in source:
                setattr(ds, keyword, source.data_element(keyword).value)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.WindowCenter, ds.WindowWidth = "400", "900"
        ds.PixelData = stored[k].tobytes()
        out.append(ds)
    return out


def _algorithm(ctx: ResultContext) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name="myonode atlas propagation", family=C.ALGORITHM_FAMILY, version=ctx.pipeline_version,
        source="myonode", parameters={"atlas": ctx.atlas_id, "myonode": ctx.myonode_version})


def _segment_colour(i: int) -> hd.color.CIELabColor:
    hue = (i * 0.61803398875) % 1.0
    rgb = np.clip(np.abs(((hue * 6 + np.array([0, 4, 2])) % 6) - 3) - 1, 0, 1) * 0.8 + 0.2
    return hd.color.CIELabColor(*_lab(rgb))


def _lab(rgb: np.ndarray) -> tuple[float, float, float]:
    """sRGB (0–1) to CIE L*a*b* (D65)."""
    c = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ c
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return float(116 * f[1] - 16), float(500 * (f[0] - f[1])), float(200 * (f[1] - f[2]))


def segmentation(derived: Sequence[Dataset], labels: np.ndarray, table: Sequence[AtlasLabel],
                 ctx: ResultContext) -> tuple[hd.seg.Segmentation, dict[int, int]]:
    """One binary segment per muscle label present (label map ``labels`` on the derived series' grid).

    Returns the SEG and label value → segment number.
    """
    muscles = [lab for lab in table if lab.is_muscle and (labels == lab.value).any()]
    segment_of = {lab.value: i + 1 for i, lab in enumerate(muscles)}
    lut = np.zeros(256, np.uint8)
    for value, number in segment_of.items():
        lut[value] = number
    descriptions = []
    for lab in muscles:
        n = segment_of[lab.value]
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=n, segment_label=lab.name[:64], segmented_property_category=C.TISSUE,
            segmented_property_type=C.SKELETAL_MUSCLE, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=_algorithm(ctx), tracking_uid=generate_uid(), tracking_id=f"{lab.key}_{lab.side}",
            anatomic_regions=[C.MUSCLE_CODES[lab.key]], display_color=_segment_colour(n)))
    seg = hd.seg.Segmentation(
        source_images=list(derived), pixel_array=lut[labels], segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=SERIES_NUMBERS["seg"],
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name=MODEL,
        software_versions=ctx.myonode_version, device_serial_number=SERIAL,
        content_description="Muscle ROIs propagated from the atlas", content_label="MUSCLES",
        series_description="Muscle ROIs (myonode)")
    for lab, item in zip(muscles, seg.SegmentSequence):
        if lab.side in C.LATERALITY:
            item.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [C.LATERALITY[lab.side]]
    _declare_private_scheme(seg)
    _content_time(seg, ctx)
    return seg, segment_of


def adc_parametric_map(adc: sitk.Image, source: Dataset, ctx: ResultContext) -> hd.pm.ParametricMap:
    """The stitched ADC (mm²/s, float32; 0 where masked) as a Parametric Map with a UCUM real-world mapping."""
    arr = np.nan_to_num(sitk.GetArrayFromImage(adc).astype(np.float32), nan=0.0)
    d = np.asarray(adc.GetDirection()).reshape(3, 3)
    sp = adc.GetSpacing()
    positions = [hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT,
                                          adc.TransformIndexToPhysicalPoint((0, 0, k))) for k in range(arr.shape[0])]
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="ADC", lut_explanation="Apparent diffusion coefficient",
        unit=hd.sr.CodedConcept("mm2/s", "UCUM", "mm2/s"), value_range=(float(arr.min()), float(arr.max())),
        slope=1.0, intercept=0.0, quantity_definition=C.ADC)
    pm = hd.pm.ParametricMap(
        source_images=[source], pixel_array=arr, series_instance_uid=generate_uid(),
        series_number=SERIES_NUMBERS["adc_map"], sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name=MODEL, software_versions=ctx.myonode_version,
        device_serial_number=SERIAL, contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=1.5e-3, window_width=3e-3,
                                                         voi_lut_function="LINEAR_EXACT")],
        pixel_measures=hd.PixelMeasuresSequence(pixel_spacing=(sp[1], sp[0]), slice_thickness=sp[2],
                                                spacing_between_slices=sp[2]),
        plane_orientation=hd.PlaneOrientationSequence(hd.CoordinateSystemNames.PATIENT,
                                                      (*d[:, 0], *d[:, 1])),
        plane_positions=positions, series_description="WB ADC (myonode)")
    pm.BodyPartExamined = "WHOLEBODY"  # unpaired: General Series Laterality (2C) stays absent
    _content_time(pm, ctx)
    return pm


def _group(row: MeasurementRow, adc_row: MeasurementRow | None, seg: hd.seg.Segmentation,
           segment: int | None) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """A muscle's measurement group; volumetric (referencing its SEG segment) when it has one."""
    tracking = f"{row.muscle}_{row.side}"
    site = hd.sr.FindingSite(anatomic_location=C.MUSCLE_CODES[row.muscle],
                             laterality=C.LATERALITY.get(row.side))
    measurements = [
        hd.sr.Measurement(C.MEAN_T2W_SIGNAL, row.mean_signal, hd.sr.CodedConcept("1", "UCUM", "no units")),
        hd.sr.Measurement(C.RELATIVE_T2, row.value, hd.sr.CodedConcept("1", "UCUM", "ratio")),
    ]
    if row.reference_value is not None:
        measurements.insert(1, hd.sr.Measurement(C.REFERENCE_MEAN, row.reference_value,
                                                  hd.sr.CodedConcept("1", "UCUM", "no units")))
    if row.volume_ml is not None:
        measurements.append(hd.sr.Measurement(C.VOLUME, row.volume_ml, hd.sr.CodedConcept("ml", "UCUM", "milliliter")))
    if adc_row is not None:
        measurements.append(hd.sr.Measurement(C.MEAN_ADC, adc_row.value, hd.sr.CodedConcept("mm2/s", "UCUM", "mm2/s")))
    evaluations = [hd.sr.QualitativeEvaluation(C.QC_FLAG, C.QC_VALUES[f]) for f in sorted(set(row.qc_flags))
                   if f in C.QC_VALUES]
    common = dict(tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=tracking),
                  finding_type=C.SKELETAL_MUSCLE, finding_sites=[site], measurements=measurements,
                  qualitative_evaluations=evaluations or None)
    if segment is None:
        return hd.sr.MeasurementsAndQualitativeEvaluations(**common)
    referenced = hd.sr.ReferencedSegment(sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
                                         segment_number=segment, source_series=_series_of(seg))
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(referenced_segment=referenced, **common)


def _series_of(seg: hd.seg.Segmentation) -> hd.sr.SourceSeriesForSegmentation:
    return hd.sr.SourceSeriesForSegmentation(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)


def measurement_report(rows: Sequence[MeasurementRow], seg: hd.seg.Segmentation, segment_of: dict[tuple[str, str], int],
                       source: Dataset, evidence: Sequence[Dataset], ctx: ResultContext) -> hd.sr.Comprehensive3DSR:
    """TID 1500: a measurement group per muscle × side (relative T2, its parts, volume, ADC) and the summary."""
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=["myonode-device"]), name="myonode", manufacturer_name=MANUFACTURER,
            model_name=MODEL, serial_number=SERIAL))
    adc = {(r.muscle, r.side): r for r in rows if r.modality == "ADC"}
    groups = [_group(r, adc.get((r.muscle, r.side)), seg, segment_of.get((r.muscle, r.side)))
              for r in rows if r.modality == "T2"]
    summary = summary_mean(list(rows))
    if summary is not None:
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="summary_mean"),
            finding_type=C.SKELETAL_MUSCLE,
            measurements=[hd.sr.Measurement(C.SUMMARY_RELATIVE_T2, summary, hd.sr.CodedConcept("1", "UCUM", "ratio"))]))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=None,
                                                     observer_device_context=observer),
        procedure_reported=C.WHOLE_BODY_MRI, imaging_measurements=groups,
        title=codes.cid7021.ImagingMeasurementReport)
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(evidence), content=report, series_instance_uid=generate_uid(),
        series_number=SERIES_NUMBERS["sr"], sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer=MANUFACTURER, series_description="Muscle MRI measurements (myonode)",
        is_complete=True, is_final=False, is_verified=False,
        previous_versions=list(ctx.replaces.get("sr", [])) or None)
    _declare_private_scheme(sr)
    _content_time(sr, ctx)
    return sr


def _declare_private_scheme(ds: Dataset) -> None:
    ds.CodingSchemeIdentificationSequence = [C.coding_scheme_identification()]


def _content_time(ds: Dataset, ctx: ResultContext) -> None:
    ds.ContentDate = ctx.content_datetime.strftime("%Y%m%d")
    ds.ContentTime = ctx.content_datetime.strftime("%H%M%S.%f")


def build_results(rows: Sequence[MeasurementRow], t2_stations: Sequence[sitk.Image], subject_labels: sitk.Image,
                  adc_stations: Sequence[sitk.Image], t2_header: Dataset, dwi_header: Dataset | None,
                  table: Sequence[AtlasLabel], ctx: ResultContext) -> VisitResults:
    """All result objects of one visit (see the module docstring)."""
    from quant.pipeline import normalised
    from quant.stitch import stitch

    first = t2_stations[0]
    sp = first.GetSpacing()
    spacing = (max(sp[0], 1.5), max(sp[1], 1.5), sp[2])
    display = stitch(normalised(list(t2_stations)), spacing=spacing, direction=first.GetDirection()).image
    derived = stitched_series(display, t2_header, ctx)
    labels = sitk.GetArrayFromImage(sitk.Resample(subject_labels, display, sitk.Transform(),
                                                  sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
    seg, segment_of_value = segmentation(derived, labels, table, ctx)
    by_value = {lab.value: lab for lab in table}
    segment_of = {(by_value[v].key, by_value[v].side): n for v, n in segment_of_value.items()}
    pm = None
    if adc_stations and dwi_header is not None:
        adc = stitch(list(adc_stations), fill=float("nan")).image
        pm = adc_parametric_map(adc, dwi_header, ctx)
    sr = measurement_report(rows, seg, segment_of, t2_header, [seg, *derived], ctx)
    return VisitResults(derived, seg, sr, pm)
