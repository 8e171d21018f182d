"""DICOM results of a visit: valid (dciodvfy), and read back by highdicom, dcmqi, dcmtk and pydicom unchanged.

A small synthetic visit: a 40 × 40 × 30 coronal stitched T2 (two source stations of
headers), four labelled boxes (deltoid and tibialis anterior, left and right), a
20 × 20 × 15 axial ADC volume with NaN outside the body, and measurement rows computed
from these arrays. The second build replaces the first, as re-processing a visit does.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sr._concepts_dict import concepts
from pydicom.uid import MRImageStorage, generate_uid

from quant import codes as C
from quant.atlas import AtlasLabel
from quant.dicom_out import (
    DEVICE_UID,
    PALETTE,
    STITCHED_DESCRIPTION,
    ResultContext,
    VisitResults,
    adc_parametric_map,
    build_results,
    derived_t2_series,
    measurement_report,
    segmentation,
    tracking_uid,
)
from quant.pipeline import QC_FLAGS, MeasurementRow, summary_mean
from storage.catalogue import MUSCLES, Modality
from tests.support.sr import measurement_groups

VENV_BIN = Path(sys.executable).parent
WHEN = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
LATER = datetime(2026, 11, 26, 4, 30, tzinfo=UTC)
DS_PRECISION = 1e-10  # SR values are Decimal Strings of ≤ 16 characters: ≥ 11 significant digits for an ADC
# dciodvfy warnings the result objects may carry, each for a reason; anything else fails.
ALLOWED_WARNINGS = {
    f"Unrecognized defined term <{C.PRIVATE_SCHEME}> for value 1 of attribute <Coding Scheme Designator>":
        "myonode's private coding scheme, declared in the Coding Scheme Identification Sequence (0008,0110)",
    "Unrecognized defined term <QUANTITY> for value 4 of attribute <Image Type>":
        "parametric map: highdicom writes Derived Pixel Contrast QUANTITY, as PS3.3 C.8.32.4 asks; dicom3tools' "
        "defined-term list does not have it",
    "Unrecognized defined term <QUANTITY> for value 4 of attribute <Frame Type>": "as above, per frame",
}

# label value → (muscle, side); 9 is bone marrow (the reference), not a muscle
TABLE = [(1, "deltoid", "left"), (2, "deltoid", "right"), (3, "tibialis_anterior", "left"),
         (4, "tibialis_anterior", "right"), (5, "tongue", "none")]
BOXES = {1: (slice(8, 18), slice(4, 10), slice(24, 34)), 2: (slice(8, 18), slice(4, 10), slice(6, 16)),
         3: (slice(10, 20), slice(28, 36), slice(22, 30)), 4: (slice(10, 20), slice(28, 36), slice(10, 18)),
         9: (slice(12, 16), slice(20, 24), slice(18, 22))}


@dataclass(kw_only=True)
class Visit:
    sources: list[Dataset]  # T2 headers: two stations, 30 coronal slices each
    dwi: list[Dataset]
    t2: sitk.Image
    labels: sitk.Image
    adc: sitk.Image
    rows: list[MeasurementRow]


def _source_headers(study: str, frame: str, t2: sitk.Image) -> list[Dataset]:
    """Coronal MR headers of two stations (upper and lower half of the volume), as a scanner sends them."""
    out = []
    for station in range(2):
        series = generate_uid()
        for k in range(t2.GetSize()[2]):
            ds = Dataset()
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, generate_uid()
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
            ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "PHANTOM^ONE", "PH0001", "19700101", "M"
            ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260302", "090000", "A1", "1"
            ds.ReferringPhysicianName = ""
            ds.ClinicalTrialSponsorName, ds.ClinicalTrialProtocolID, ds.ClinicalTrialProtocolName = "S", "MND-MRI", ""
            ds.ClinicalTrialSiteID, ds.ClinicalTrialSiteName, ds.ClinicalTrialSubjectID = "1", "", "PH0001"
            ds.ClinicalTrialTimePointID = "M4"
            ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 3 + station, k + 1
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "SK", "", "2D"
            ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength, ds.MagneticFieldStrength = 3000, 80, 16, 3
            ds.Rows, ds.Columns = t2.GetSize()[1] // 2, t2.GetSize()[0]
            ds.PixelSpacing = [t2.GetSpacing()[1], t2.GetSpacing()[0]]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
            ds.ImagePositionPatient = list(t2.TransformIndexToPhysicalPoint((0, station * ds.Rows, k)))
            ds.SliceThickness = t2.GetSpacing()[2]
            ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated = 1, "MONOCHROME2", 16
            out.append(ds)
    return out


def _image(arr: np.ndarray, spacing: tuple[float, ...], origin: tuple[float, ...],
           direction: tuple[float, ...]) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    return img


def _stats(values: np.ndarray) -> tuple[float, float, int]:
    return float(values.mean()), float(values.std(ddof=1)), int(values.size)


def make_visit() -> Visit:
    rng = np.random.default_rng(6)
    coronal = (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0)  # columns: row (1,0,0), col (0,0,−1), normal (0,1,0)
    shape = (30, 40, 40)  # slices (A→P), rows (S→I), columns (R→L)
    lab = np.zeros(shape, np.uint16)
    for value, box in BOXES.items():
        lab[box] = value
    t2_arr = rng.normal(40.0, 5.0, shape).astype(np.float32)
    t2_arr[lab > 0] = rng.normal(300.0, 20.0, int((lab > 0).sum()))
    t2_arr[lab == 9] = rng.normal(700.0, 30.0, int((lab == 9).sum()))
    spacing = (3.0, 3.0, 5.0)
    t2 = _image(t2_arr, spacing, (-58.5, -70.0, 60.0), coronal)
    labels = _image(lab, spacing, t2.GetOrigin(), coronal)
    adc_arr = np.full((15, 20, 20), np.nan, np.float32)
    adc_arr[2:13, 3:17, 3:17] = rng.normal(1.5e-3, 1e-4, (11, 14, 14))
    adc_arr[7, 10, 10] = 0.0  # a real ADC of 0 stays 0; NaN stays NaN
    adc = _image(adc_arr, (6.0, 6.0, 8.0), (-57.0, -57.0, -56.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    adc_labels = sitk.GetArrayFromImage(sitk.Resample(labels, adc, sitk.Transform(), sitk.sitkNearestNeighbor, 0))

    reference = float(t2_arr[lab == 9].mean())
    voxel_ml = float(np.prod(spacing)) / 1000
    rows = []
    for value, muscle, side in TABLE[:4]:
        mean, sd, n = _stats(t2_arr[lab == value])
        flags = ["touches_field_edge"] if value == 1 else []
        rows.append(MeasurementRow(muscle=muscle, side=side, modality=Modality.REL_T2, value=mean / reference, mean_signal=mean, sd=sd, reference_value=reference, voxel_count=n, volume_ml=n * voxel_ml, stations=[1],
                                   qc_flags=flags, references=["humerus"]))
        inside = adc_arr[(adc_labels == value) & np.isfinite(adc_arr)]
        if inside.size:
            mean, sd, n = _stats(inside)
            rows.append(MeasurementRow(muscle=muscle, side=side, modality=Modality.ADC, value=mean, mean_signal=mean, sd=sd, reference_value=None, voxel_count=n, volume_ml=n * voxel_ml, stations=[1],
                                       qc_flags=["roi_too_small"] if n < 100 else []))
    # measured on the native stations but absent from the SEG's grid: a group without a segment
    rows.append(MeasurementRow(muscle="tongue", side="none", modality=Modality.REL_T2, value=1.1, mean_signal=330.0, sd=12.0, reference_value=300.0, voxel_count=25, volume_ml=0.4, stations=[1], qc_flags=["roi_too_small"]))
    study, frame = generate_uid(), generate_uid()
    sources = _source_headers(study, frame, t2)
    dwi = []
    for k in range(15):
        ds = Dataset()
        for keyword in ("SpecificCharacterSet", "StudyInstanceUID", "FrameOfReferenceUID", "PatientName", "PatientID",
                        "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
                        "ReferringPhysicianName", "ClinicalTrialTimePointID", "SamplesPerPixel",
                        "PhotometricInterpretation", "BitsAllocated"):
            setattr(ds, keyword, sources[0].data_element(keyword).value)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = MRImageStorage, generate_uid(), generate_uid()
        ds.Modality, ds.Rows, ds.Columns, ds.PixelSpacing, ds.SliceThickness = "MR", 20, 20, [6.0, 6.0], 8.0
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = list(adc.TransformIndexToPhysicalPoint((0, 0, k)))
        dwi.append(ds)
    return Visit(sources=sources, dwi=dwi, t2=t2, labels=labels, adc=adc, rows=rows)


def build(visit: Visit, ctx: ResultContext) -> VisitResults:
    derived = derived_t2_series(visit.t2, visit.sources, ctx)
    seg = segmentation(derived, visit.labels, TABLE, ctx)
    pm = adc_parametric_map(visit.adc, visit.dwi, ctx)
    return VisitResults(stitched_t2=derived, seg=seg, sr=measurement_report(visit.rows, seg, derived, pm, ctx), adc_map=pm)


def save(results: VisitResults, folder: Path) -> dict[str, list[Path]]:
    folder.mkdir()
    paths: dict[str, list[Path]] = {}
    for i, (kind, ds) in enumerate(results.objects()):
        path = folder / f"{kind}_{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.setdefault(kind, []).append(path)
    return paths


@pytest.fixture(scope="module")
def visit() -> Visit:
    return make_visit()


@pytest.fixture(scope="module")
def first(visit: Visit, tmp_path_factory: pytest.TempPathFactory) -> tuple[VisitResults, dict[str, list[Path]]]:
    res = build(visit, ResultContext(content_datetime=WHEN, myonode_version="0.1.0", pipeline_version="1.0", atlas_id="phantom-atlas-v3"))
    return res, save(res, tmp_path_factory.mktemp("first") / "objects")


@pytest.fixture(scope="module")
def second(visit: Visit, first, tmp_path_factory: pytest.TempPathFactory) -> tuple[VisitResults, dict[str, list[Path]]]:
    """The visit processed again: the new objects replace the first run's."""
    old, _ = first
    replaces = {kind: [ds] for kind, ds in old.objects() if kind != "stitched_t2"}
    replaces["stitched_t2"] = old.stitched_t2[:1]
    res = build(visit, ResultContext(content_datetime=LATER, myonode_version="0.1.1", pipeline_version="1.0", atlas_id="phantom-atlas-v3", replaces=replaces))
    return res, save(res, tmp_path_factory.mktemp("second") / "objects")


# --- codes --------------------------------------------------------------------------------------


def test_standard_codes_exist_in_pydicoms_dictionary_with_that_meaning() -> None:
    """Every SCT/DCM code of quant.codes is in pydicom's code dictionary with the same value and meaning; private
    codes are short (SH), unique, and cover every catalogue muscle, every pipeline QC flag and every palette colour."""
    for code in C.all_codes():
        if code.scheme_designator == C.PRIVATE_SCHEME:
            continue
        known = [meaning for entries in concepts[code.scheme_designator].values()
                 for value, (meaning, _) in entries.items() if value == code.value]
        assert code.meaning in known, f"{code.scheme_designator} {code.value} {code.meaning!r}: not in pydicom"
    private = [c.value for c in C.all_codes() if c.scheme_designator == C.PRIVATE_SCHEME]
    assert len(private) == len(set(private)) and all(len(v) <= 16 for v in private)
    assert set(C.MUSCLE_CODES) == set(PALETTE) == {m.key for m in MUSCLES}
    assert set(C.QC_VALUES) == set(QC_FLAGS)


# --- validity -----------------------------------------------------------------------------------


def _dciodvfy(path: Path) -> list[str]:
    dciodvfy = shutil.which("dciodvfy")
    assert dciodvfy, "dicom3tools is installed by make debs"
    out = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, check=False)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith(("Error", "Warning"))]


@pytest.mark.parametrize("run", ["first", "second"])
def test_dciodvfy_finds_no_error_in_any_object(run: str, request: pytest.FixtureRequest) -> None:
    """Every derived T2 image, the SEG, the SR and the parametric map, first and replacing run: no dciodvfy error,
    and only allow-listed warnings."""
    _, paths = request.getfixturevalue(run)
    assert set(paths) == {"stitched_t2", "seg", "sr", "adc_map"}
    for path in [p for group in paths.values() for p in group]:
        for line in _dciodvfy(path):
            assert line.removeprefix("Warning - ").strip() in ALLOWED_WARNINGS, f"{path.name}: {line}"


def test_pydicom_reads_every_object_and_its_pixels(first) -> None:
    """pydicom reads every file whole (pixel data decoded) with the source's patient and time point."""
    _, paths = first
    for path in [p for group in paths.values() for p in group]:
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID and ds.ClinicalTrialTimePointID == "M4" and ds.PatientID == "PH0001"
        if ds.Modality != "SR":
            assert ds.pixel_array.size > 0


def test_dsrdump_renders_the_report(first) -> None:
    """dcmtk's dsrdump renders the SR without a complaint, names and values included."""
    _, paths = first
    proc = subprocess.run(["dsrdump", str(paths["sr"][0])], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    for text in ("Imaging Measurement Report", "Relative T2 signal", "Tibialis anterior", "Apparent Diffusion"):
        assert text in proc.stdout


# --- the derived series -------------------------------------------------------------------------


def test_derived_series_is_the_stitched_volume_with_its_geometry_and_sources(visit: Visit, first) -> None:
    """One DERIVED\\SECONDARY MR image per slice: pixels = rounded stitched values, LPS geometry of the volume,
    the sources' Frame of Reference, and as sources exactly the two station images of the same slab."""
    res, _ = first
    arr = sitk.GetArrayFromImage(visit.t2)
    by_uid = {ds.SOPInstanceUID: ds for ds in visit.sources}
    assert len(res.stitched_t2) == arr.shape[0]
    assert len({ds.SeriesInstanceUID for ds in res.stitched_t2}) == 1
    for k, ds in enumerate(res.stitched_t2):
        assert ds.ImageType == ["DERIVED", "SECONDARY", "OTHER"] and ds.SeriesDescription == STITCHED_DESCRIPTION
        assert ds.FrameOfReferenceUID == visit.sources[0].FrameOfReferenceUID
        assert np.array_equal(ds.pixel_array, np.rint(np.clip(arr[k], 0, 65535)).astype(np.uint16))
        position = [float(v) for v in ds.ImagePositionPatient]
        assert np.allclose(position, visit.t2.TransformIndexToPhysicalPoint((0, 0, k)), atol=1e-3)
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 0, -1]
        assert ds.DerivationCodeSequence[0].CodeValue == C.IMAGE_STITCHING.value
        sources = [by_uid[item.ReferencedSOPInstanceUID] for item in ds.SourceImageSequence]
        assert sorted(s.InstanceNumber for s in sources) == [k + 1, k + 1]
        assert str(ds.ContentDate) == WHEN.astimezone().strftime("%Y%m%d")


def test_derived_series_gets_a_new_frame_of_reference_when_the_sources_have_several(visit: Visit) -> None:
    """Stations in different Frames of Reference: the derived series cannot claim one of them."""
    sources = [pydicom.Dataset(ds) for ds in visit.sources]
    for ds in sources[30:]:
        ds.FrameOfReferenceUID = generate_uid()
    derived = derived_t2_series(visit.t2, sources, ResultContext(content_datetime=WHEN, myonode_version="0.1.0", pipeline_version="1.0", atlas_id="a"))
    assert derived[0].FrameOfReferenceUID not in {ds.FrameOfReferenceUID for ds in sources}
    assert len({ds.FrameOfReferenceUID for ds in derived}) == 1


# --- SEG ------------------------------------------------------------------------------------------


def test_highdicom_reads_back_every_segment_equal_to_its_label_mask(visit: Visit, first) -> None:
    """segread: one segment per labelled muscle × side (absent labels skipped), each mask equal to the label's
    voxels, labelled and coded with the muscle and its laterality, coloured, tracked, and attributed to the atlas."""
    res, paths = first
    seg = hd.seg.segread(paths["seg"][0])
    labels = sitk.GetArrayFromImage(visit.labels)
    sop_uids = [ds.SOPInstanceUID for ds in res.stitched_t2]
    volume = seg.get_pixels_by_source_instance(sop_uids, segment_numbers=list(seg.segment_numbers),
                                               ignore_spatial_locations=True)
    assert list(seg.segment_numbers) == [1, 2, 3, 4]
    for number, (value, muscle, side) in zip(seg.segment_numbers, TABLE):
        assert np.array_equal(volume[..., number - 1] > 0, labels == value), muscle
        desc = seg.get_segment_description(number)
        assert desc.segment_label == f"{'Deltoid' if muscle == 'deltoid' else 'Tibialis anterior'} {side}"
        region = desc.anatomic_regions[0]
        assert region == C.MUSCLE_CODES[muscle]
        modifier = seg.SegmentSequence[number - 1].AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0]
        assert modifier.CodeValue == C.LATERALITY[side].value
        assert desc.tracking_id == f"{muscle}_{side}"
        assert desc.tracking_uid == tracking_uid(visit.sources[0], muscle, side)
        assert desc.segmented_property_type == C.SKELETAL_MUSCLE
        assert desc.segmented_property_category == C.TISSUE
        assert "RecommendedDisplayCIELabValue" in seg.SegmentSequence[number - 1]
        algo = seg.SegmentSequence[number - 1].SegmentationAlgorithmIdentificationSequence[0]
        assert algo.AlgorithmName == "myonode atlas propagation" and algo.AlgorithmVersion == "1.0"
        assert "atlas_id=phantom-atlas-v3" in algo.AlgorithmParameters
    assert "AnatomicRegionModifierSequence" not in C.MUSCLE_CODES["deltoid"]  # the code table is not mutated
    assert seg.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == C.PRIVATE_SCHEME
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == res.stitched_t2[0].SeriesInstanceUID


def test_dcmqi_converts_the_seg_to_masks_equal_to_the_labels(visit: Visit, first, tmp_path: Path) -> None:
    """segimage2itkimage writes NIfTI volumes whose masks, resampled by their own geometry, are the label boxes."""
    _, paths = first
    proc = subprocess.run([str(VENV_BIN / "segimage2itkimage"), "--inputDICOM", str(paths["seg"][0]),
                           "--outputDirectory", str(tmp_path), "--outputType", "nifti"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(next(tmp_path.glob("*.json")).read_text())
    attributes = [a for group in meta["segmentAttributes"] for a in group]
    assert sorted(a["SegmentLabel"] for a in attributes) == ["Deltoid left", "Deltoid right",
                                                             "Tibialis anterior left", "Tibialis anterior right"]
    labels = sitk.GetArrayFromImage(visit.labels)
    found = {}
    for path in sorted(tmp_path.glob("*.nii*")):
        image = sitk.ReadImage(str(path))
        # back onto our grid by physical position (dcmqi may crop to the non-empty frames)
        on_grid = sitk.GetArrayFromImage(sitk.Resample(image, visit.labels, sitk.Transform(),
                                                       sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16))
        for value in np.unique(on_grid[on_grid > 0]):
            found[(path.name, int(value))] = on_grid == value
    masks = list(found.values())
    for value, muscle, side in TABLE[:4]:
        assert any(np.array_equal(mask, labels == value) for mask in masks), (muscle, side)


# --- SR -------------------------------------------------------------------------------------------


def _expected(row: MeasurementRow) -> dict[tuple[str, str | None], float]:
    if row.modality is Modality.ADC:
        return {("Apparent Diffusion Coefficient", "Mean"): row.value,
                ("Apparent Diffusion Coefficient", "Standard Deviation"): row.sd}
    out = {("T2-weighted signal intensity", "Mean"): row.mean_signal,
           ("T2-weighted signal intensity", "Standard Deviation"): row.sd,
           ("Relative T2 signal", None): row.value, ("Volume", None): row.volume_ml}
    if row.reference_value is not None:
        out[("Bone marrow reference T2-weighted signal intensity", "Mean")] = row.reference_value
    return out


def test_highdicom_reads_back_every_measurement_equal_to_its_row(visit: Visit, first) -> None:
    """srread: a group per measured muscle × side with every row value (T2 and ADC in the muscle's group), its QC
    flags, finding site with laterality, the SEG segment of the same tracking UID, and the summary mean."""
    res, paths = first
    sr = hd.sr.srread(paths["sr"][0])
    seg_numbers = {item.TrackingUID: int(item.SegmentNumber) for item in res.seg.SegmentSequence}
    groups = {g.tracking_identifier: g for g in sr.content.get_volumetric_roi_measurement_groups()
              + sr.content.get_image_measurement_groups()}
    expected: dict[str, dict[tuple[str, str | None], float]] = {}
    flags: dict[str, set[tuple[str, str]]] = {}
    for row in visit.rows:
        key = f"{row.muscle}_{row.side}"
        expected.setdefault(key, {}).update(_expected(row))
        flags.setdefault(key, set()).update((f"{'ADC' if row.modality is Modality.ADC else 'Relative T2'} quality control "
                                             "flag", C.QC_VALUES[f].meaning) for f in row.qc_flags)
    assert set(groups) == set(expected) | {"summary_mean"}
    for key, values in expected.items():
        group = groups[key]
        got = {(m.name.meaning, m.derivation.meaning if m.derivation else None): m.value
               for m in group.get_measurements()}
        assert got == pytest.approx(values, rel=DS_PRECISION, abs=0), key
        assert {(e.name.meaning, e.value.meaning) for e in group.get_qualitative_evaluations()} == flags[key]
        muscle, side = key.rsplit("_", 1)
        site = group.finding_sites[0]
        assert site.value == C.MUSCLE_CODES[muscle]
        assert (site.laterality == C.LATERALITY[side]) if side != "none" else site.laterality is None
        assert group.tracking_uid == tracking_uid(visit.sources[0], muscle, side)
        if muscle == "tongue":
            assert not isinstance(group, hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations)
        else:
            segment = group.referenced_segment
            assert segment.referenced_sop_instance_uid == res.seg.SOPInstanceUID
            assert segment.referenced_segment_numbers == [seg_numbers[group.tracking_uid]]
    summary = groups["summary_mean"].get_measurements()[0]
    assert summary.value == pytest.approx(summary_mean(visit.rows), rel=DS_PRECISION)
    assert sr.ClinicalTrialTimePointID == "M4" and sr.PatientID == "PH0001"
    device = sr.content.get_observer_contexts(observer_type=C.DEVICE_OBSERVER)[0]
    assert device.observer_identifying_attributes.uid == DEVICE_UID
    procedure = next(i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121058")
    assert procedure.ConceptCodeSequence[0].CodeValue == C.WHOLE_BODY_MRI.value
    assert str(sr.ContentDate) == WHEN.astimezone().strftime("%Y%m%d")


def test_dcmqi_tid1500reader_reads_the_same_values(visit: Visit, first, tmp_path: Path) -> None:
    """tid1500reader's JSON has every row value (quantity + derivation) of every muscle × side, and the summary."""
    _, paths = first
    out = tmp_path / "sr.json"
    proc = subprocess.run([str(VENV_BIN / "tid1500reader"), "--inputDICOM", str(paths["sr"][0]),
                           "--outputMetadata", str(out)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    groups = {g["TrackingIdentifier"]: g["measurementItems"] for g in json.loads(out.read_text())["Measurements"]}
    for row in visit.rows:
        items = {(i["quantity"]["CodeMeaning"], i.get("derivationModifier", {}).get("CodeMeaning")): float(i["value"])
                 for i in groups[f"{row.muscle}_{row.side}"]}
        for key, value in _expected(row).items():
            assert items[key] == pytest.approx(value, rel=DS_PRECISION), (row.muscle, row.side, key)
    summary = groups["summary_mean"][0]
    assert float(summary["value"]) == pytest.approx(summary_mean(visit.rows), rel=DS_PRECISION)


# --- parametric map -------------------------------------------------------------------------------


def test_adc_map_holds_the_values_nan_included_in_mm2_per_s(visit: Visit, first) -> None:
    """Every voxel of the map equals the input ADC (NaN kept), with a UCUM mm2/s mapping of quantity DCM 113041."""
    res, paths = first
    pm = pydicom.dcmread(paths["adc_map"][0])
    expected = sitk.GetArrayFromImage(visit.adc)
    for frame, item in zip(pm.pixel_array, pm.PerFrameFunctionalGroupsSequence):  # highdicom orders the frames
        position = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        k = visit.adc.TransformPhysicalPointToIndex(position)[2]
        np.testing.assert_array_equal(frame, expected[k])  # NaN where not estimated, 0 where ADC is 0
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "mm2/s"
    assert mapping.MeasurementUnitsCodeSequence[0].CodingSchemeDesignator == "UCUM"
    quantity = mapping.QuantityDefinitionSequence[0].ConceptCodeSequence[0]
    assert (quantity.CodeValue, quantity.CodingSchemeDesignator) == ("113041", "DCM")
    assert hd.pm.ParametricMap.from_dataset(pm).SOPInstanceUID == res.adc_map.SOPInstanceUID


# --- re-processing --------------------------------------------------------------------------------


def test_reprocessing_makes_new_objects_that_reference_the_replaced_ones(first, second) -> None:
    """New SOP and series UIDs throughout; the SR's Predecessor Documents Sequence names the old SR; SEG, map and
    derived series name the series they replace; the new Content Date/Time is later; tracking UIDs are stable."""
    old, _ = first
    new, _ = second
    old_uids = {ds.SOPInstanceUID for _, ds in old.objects()} | {ds.SeriesInstanceUID for _, ds in old.objects()}
    new_uids = {ds.SOPInstanceUID for _, ds in new.objects()} | {ds.SeriesInstanceUID for _, ds in new.objects()}
    assert not old_uids & new_uids
    predecessor = new.sr.PredecessorDocumentsSequence[0]
    assert predecessor.StudyInstanceUID == old.sr.StudyInstanceUID
    series = predecessor.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == old.sr.SeriesInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == old.sr.SOPInstanceUID
    for new_ds, old_ds in ((new.seg, old.seg), (new.adc_map, old.adc_map), (new.stitched_t2[0], old.stitched_t2[0])):
        related = new_ds.RelatedSeriesSequence[0]
        assert related.SeriesInstanceUID == old_ds.SeriesInstanceUID
        assert related.PurposeOfReferenceCodeSequence[0].CodeValue == C.REPLACED_SERIES.value
        assert new_ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == C.PRIVATE_SCHEME
        assert (new_ds.ContentDate, new_ds.ContentTime) > (old_ds.ContentDate, old_ds.ContentTime)
    assert [i.TrackingUID for i in new.seg.SegmentSequence] == [i.TrackingUID for i in old.seg.SegmentSequence]
    assert "RelatedSeriesSequence" not in old.seg and "CodingSchemeIdentificationSequence" not in old.stitched_t2[0]


# --- bad input ------------------------------------------------------------------------------------


def test_bad_input_is_refused_with_a_message_naming_it(visit: Visit, first) -> None:
    """Unknown muscle, impossible side, labels off the derived grid, QC flag without a code: ValueError naming it."""
    res, _ = first
    ctx = ResultContext(content_datetime=WHEN, myonode_version="0.1.0", pipeline_version="1.0", atlas_id="a")
    with pytest.raises(ValueError, match="tendon"):
        segmentation(res.stitched_t2, visit.labels, [(1, "tendon", "left")], ctx)
    with pytest.raises(ValueError, match="side 'none' is not a side of deltoid"):
        segmentation(res.stitched_t2, visit.labels, [(1, "deltoid", "none")], ctx)
    shifted = sitk.Image(visit.labels)
    shifted.SetOrigin((0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="grid"):
        segmentation(res.stitched_t2, shifted, TABLE, ctx)
    row = visit.rows[0]
    bad = MeasurementRow(muscle=row.muscle, side=row.side, modality=Modality.REL_T2, value=1.0, mean_signal=1.0, sd=1.0, reference_value=1.0, voxel_count=10, volume_ml=1.0, stations=[1], qc_flags=["cosmic_rays"])
    with pytest.raises(ValueError, match=re.escape("['cosmic_rays']")):
        measurement_report([bad], res.seg, res.stitched_t2, None, ctx)


# --- the pipeline's entry point -------------------------------------------------------------------


def test_build_results_stitches_stations_and_builds_all_four_objects(visit: Visit) -> None:
    """From two T2 stations, subject labels, one ADC station and atlas labels: the derived series on the display
    grid, a SEG of the four muscles on it, the SR and the map."""
    arr = sitk.GetArrayFromImage(visit.t2)
    stations = []
    for half in (slice(0, 20), slice(20, 40)):
        station = sitk.GetImageFromArray(arr[:, half])
        station.SetSpacing(visit.t2.GetSpacing())
        station.SetDirection(visit.t2.GetDirection())
        station.SetOrigin(visit.t2.TransformIndexToPhysicalPoint((0, half.start, 0)))
        stations.append(station)
    table = [AtlasLabel(value=v, key=m, side=s, tissue="muscle", name=m) for v, m, s in TABLE] + [AtlasLabel(value=9, key="humerus", side="left", tissue="marrow", name="h")]
    res = build_results(visit.rows, stations, visit.labels, [visit.adc], visit.sources, visit.dwi[0], table,
                        ResultContext(content_datetime=WHEN, myonode_version="0.1.0", pipeline_version="1.0", atlas_id="a"))
    assert [kind for kind, _ in res.objects()][-3:] == ["seg", "sr", "adc_map"]
    assert res.stitched_t2[0].PixelSpacing == [3.0, 3.0] and len(res.stitched_t2) == 30
    assert len(res.seg.SegmentSequence) == 4


# --- a reviewer's signature --------------------------------------------------------------------------


def test_a_verified_report_is_valid_names_its_observer_and_its_predecessor(visit: Visit, first, tmp_path: Path) -> None:
    """Signed by a reviewer, with one ROI left out: Verification Flag VERIFIED with the Verifying Observer (name,
    organisation, date-time), final, the unverified SR as predecessor; dciodvfy finds no error; highdicom and
    dcmqi's tid1500reader read it; the rejected ROI is not in it."""
    from quant.dicom_out import Verifier

    old, _ = first
    kept = [r for r in visit.rows if (r.muscle, r.side) != ("deltoid", "left")]
    ctx = ResultContext(content_datetime=LATER, myonode_version="0.1.1", pipeline_version="1.0",
                        atlas_id="phantom-atlas-v3", replaces={"sr": [old.sr]})
    signed = measurement_report(kept, old.seg, old.stitched_t2, old.adc_map, ctx,
                                verifier=Verifier(name="Physicist^Anna", organisation="Motor Neuron Disease Unit"))
    path = tmp_path / "verified.dcm"
    signed.save_as(path, enforce_file_format=True)
    for line in _dciodvfy(path):
        assert line.removeprefix("Warning - ").strip() in ALLOWED_WARNINGS, line
    back = hd.sr.srread(path)
    assert (back.VerificationFlag, back.CompletionFlag, back.PreliminaryFlag) == ("VERIFIED", "COMPLETE", "FINAL")
    observer = back.VerifyingObserverSequence[0]
    assert (str(observer.VerifyingObserverName), observer.VerifyingOrganization) == \
        ("Physicist^Anna", "Motor Neuron Disease Unit")
    assert observer.VerificationDateTime
    predecessor = back.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == old.sr.SOPInstanceUID
    tracked = {g.tracking_identifier for g in back.content.get_volumetric_roi_measurement_groups()}
    assert "deltoid_left" not in tracked and "deltoid_right" in tracked
    out = tmp_path / "verified.json"
    proc = subprocess.run([str(VENV_BIN / "tid1500reader"), "--inputDICOM", str(path), "--outputMetadata", str(out)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "deltoid_left" not in {g["TrackingIdentifier"] for g in json.loads(out.read_text())["Measurements"]}


def test_a_verifier_needs_a_name_and_an_organisation() -> None:
    from quant.dicom_out import Verifier

    with pytest.raises(ValueError, match="name and organisation"):
        Verifier(name="Physicist^Anna", organisation=" ")


# --- a corrected segmentation back -------------------------------------------------------------------


def test_a_segmentation_saved_by_a_workstation_comes_back_as_the_labels_it_holds(visit: Visit, first) -> None:
    """myonode's SEG with one segment moved by three columns, saved again by "another manufacturer" with highdicom:
    its segments map to the catalogue by tracking identifier, its voxels land on the derived grid where they were
    drawn, and the corrected labels keep every other label as it was."""
    from quant.atlas import AtlasLabel
    from quant.corrected_labels import (
        CorrectionError,
        corrected_labels,
        derived_grid,
        seg_label_array,
        segment_targets,
    )

    res, _ = first
    derived = res.stitched_t2
    seg = hd.seg.Segmentation.from_dataset(res.seg, copy=True)
    uids = [str(d.SOPInstanceUID) for d in derived]
    masks = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, assert_missing_frames_are_empty=True)
    numbers = [int(item.SegmentNumber) for item in seg.SegmentSequence]
    moved = masks.copy()
    ta = numbers[[str(i.TrackingID) for i in seg.SegmentSequence].index("tibialis_anterior_left")]
    moved[..., ta - 1] = np.roll(masks[..., ta - 1], 3, axis=2)
    workstation = hd.seg.Segmentation(
        source_images=derived, pixel_array=moved.astype(np.uint8), segmentation_type="BINARY",
        segment_descriptions=[hd.seg.SegmentDescription.from_dataset(i) for i in seg.SegmentSequence],
        series_instance_uid=hd.UID(), series_number=900, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="Kitware", manufacturer_model_name="3D Slicer", software_versions="5.6", device_serial_number="1")
    table = [AtlasLabel(value=v, key=k, side=side, tissue="muscle", name=k) for v, k, side in TABLE] + \
        [AtlasLabel(value=9, key="marrow_x", side="none", tissue="marrow", name="marrow")]
    targets, unknown = segment_targets(workstation, table)
    assert unknown == [] and {t.key + "_" + t.side for t in targets.values()} == \
        {str(i.TrackingID) for i in seg.SegmentSequence}
    stripped = copy.deepcopy(workstation)  # a workstation that keeps only the codes: mapped by them
    for item in stripped.SegmentSequence:
        del item.TrackingID
        item.SegmentLabel = f"Segment_{item.SegmentNumber}"
    assert segment_targets(stripped, table) == (targets, [])
    renamed = copy.deepcopy(stripped)
    for item in renamed.SegmentSequence:
        del item.AnatomicRegionSequence
    unnamed = segment_targets(renamed, table)
    assert unnamed[0] == {} and unnamed[1][0].startswith("segment 1 'Segment_1'")
    grid = derived_grid(derived)
    corrected = seg_label_array(workstation, derived, {n: t for n, t in targets.items() if t.value == 3})
    expected = np.zeros_like(corrected)
    original = seg_label_array(res.seg, derived, {n: t for n, t in segment_targets(res.seg, table)[0].items()
                                                 if t.value == 3})
    expected[np.roll(original == 3, 3, axis=2)] = 3
    assert (corrected == expected).all() and (corrected == 3).sum() > 0
    # as OHIF 3 writes it: each frame cites its source image without saying Spatial Locations Preserved
    ohif = copy.deepcopy(workstation)
    for frame in ohif.PerFrameFunctionalGroupsSequence:
        for source in frame.DerivationImageSequence[0].SourceImageSequence:
            if "SpatialLocationsPreserved" in source:
                del source.SpatialLocationsPreserved
    ohif_targets = {n: t for n, t in targets.items() if t.value == 3}
    assert (seg_label_array(ohif, derived, ohif_targets) == corrected).all()  # placed by its citations
    ohif.FrameOfReferenceUID = hd.UID()  # drawn in another frame of reference: the citations do not say where
    with pytest.raises(CorrectionError, match="do not map onto the referenced series"):
        seg_label_array(ohif, derived, ohif_targets)
    automatic = sitk.Resample(visit.labels, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
    merged = sitk.GetArrayFromImage(corrected_labels(visit.labels, grid, corrected, [3]))
    auto = sitk.GetArrayFromImage(automatic)
    assert ((merged == 3) == (corrected == 3)).all()
    assert (merged[(auto != 3) & (corrected != 3)] == auto[(auto != 3) & (corrected != 3)]).all()


# --- a protocol that does not cover every muscle ------------------------------------------------------


def test_a_muscle_the_protocol_does_not_cover_has_a_group_saying_so_and_no_value(visit: Visit, first,
                                                                                 tmp_path: Path) -> None:
    """A visit scanned with a leg profile: every catalogue muscle × side outside its field has a TID 1501 group
    with the qualitative evaluation "not covered" and no measurement; dciodvfy and dcmqi's tid1500reader take the
    report; a value for such a muscle is refused."""
    from quant import codes as C

    old, _ = first
    measured = {(r.muscle, r.side) for r in visit.rows}
    uncovered = [("quadriceps", "left"), ("quadriceps", "right")]
    assert not measured & set(uncovered)
    ctx = ResultContext(content_datetime=LATER, myonode_version="0.1.1", pipeline_version="1.0",
                        atlas_id="phantom-atlas-v3", not_covered=uncovered)
    report = measurement_report(visit.rows, old.seg, old.stitched_t2, old.adc_map, ctx)
    path = tmp_path / "partial.dcm"
    report.save_as(path, enforce_file_format=True)
    for line in _dciodvfy(path):
        assert line.removeprefix("Warning - ").strip() in ALLOWED_WARNINGS, line
    groups = measurement_groups(pydicom.dcmread(path))
    for muscle, side in uncovered:
        items = groups[f"{muscle}_{side}"]
        assert not [i for i in items if i.ValueType == "NUM"]  # no value
        assert [(i.ConceptNameCodeSequence[0].CodeValue, i.ConceptCodeSequence[0].CodeValue)
                for i in items if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeValue == C.COVERAGE.value
                ] == [(C.COVERAGE.value, C.NOT_COVERED.value)]
    assert {f"{m}_{s}" for m, s in measured} <= set(groups)  # the measured ones are all still there
    out = tmp_path / "partial.json"
    proc = subprocess.run([str(VENV_BIN / "tid1500reader"), "--inputDICOM", str(path), "--outputMetadata", str(out)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(ValueError, match="a value for a muscle the protocol does not cover"):
        measurement_report(visit.rows, old.seg, old.stitched_t2, old.adc_map,
                           ResultContext(content_datetime=LATER, myonode_version="0.1.1", pipeline_version="1.0",
                                         atlas_id="phantom-atlas-v3", not_covered=[sorted(measured)[0]]))


def test_a_report_measured_with_a_synthetic_atlas_says_so_in_every_group_with_a_value(visit: Visit, first,
                                                                                      tmp_path: Path) -> None:
    """Every measurement group with a value carries the qualitative evaluation "synthetic atlas" when the atlas was
    drawn from phantom subjects, none when it was not; dciodvfy takes the report."""
    from quant import codes as C
    from tests.support.sr import evaluations

    old, _ = first
    flagged = (C.ATLAS_ANATOMY.value, C.SYNTHETIC_ATLAS.value)
    for synthetic in (True, False):
        ctx = ResultContext(content_datetime=LATER, myonode_version="0.1.1", pipeline_version="1.0",
                            atlas_id="phantom-atlas-v3", synthetic_atlas=synthetic)
        path = tmp_path / f"synthetic-{synthetic}.dcm"
        measurement_report(visit.rows, old.seg, old.stitched_t2, old.adc_map, ctx).save_as(path,
                                                                                        enforce_file_format=True)
        for line in _dciodvfy(path):
            assert line.removeprefix("Warning - ").strip() in ALLOWED_WARNINGS, line
        groups = measurement_groups(pydicom.dcmread(path))
        with_value = {f"{r.muscle}_{r.side}" for r in visit.rows}
        assert with_value and all((flagged in evaluations(groups[g])) is synthetic for g in with_value)
