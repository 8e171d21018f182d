"""DICOM results: valid (dciodvfy), read back by highdicom and dcmqi with the measured values, rendered by dsrdump."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from node.atlases import phantom_label_table
from phantom.anatomy import AnatomyParams, build
from phantom.contrast import MuscleState
from phantom.dicom import DicomOptions
from phantom.geometry import truth_grid
from phantom.images import VisitMeta
from phantom.scanner import ScanSettings
from phantom.visit import scan_visit
from quant.adc import station_adc
from quant.atlas import Atlas
from quant.codes import PRIVATE_SCHEME
from quant.dicom_out import ResultContext, VisitResults, build_results
from quant.pipeline import QuantSettings, dwi_pairs, measure_t2
from quant.volumes import load_series

VENV_BIN = Path(__import__("sys").executable).parent
# dciodvfy warnings the result objects carry, each for a reason:
ALLOWED_WARNINGS = {
    f"Unrecognized defined term <{PRIVATE_SCHEME}>": "our private coding scheme, declared in (0008,0110)",
    "Unrecognized defined term <QUANTITY>": "highdicom's Image/Frame Type of a parametric map (PS3.3 defined term "
                                            "list lags the IOD)",
    "Anatomic Region Modifier Sequence": "laterality of a segment's anatomic region, copied into the SR's "
                                         "referenced segment description",
    "Code Value": "as above (the modifier's code)",
    "Coding Scheme Designator": "as above",
    "Code Meaning": "as above",
    "Standard Extended SOP Class": "the consequence of the modifier above",
}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[VisitResults, list, Path, Atlas]:
    """A small phantom visit measured with its true labels (registration is tested elsewhere)."""
    out = tmp_path_factory.mktemp("results")
    rng = np.random.default_rng(8)
    params = AnatomyParams.random(rng, "M").placed(rng)
    meta = VisitMeta("PH0008", "PHANTOM^PH0008", __import__("datetime").date(1970, 1, 1), "M", 56.0, 80.0, 1.78,
                     __import__("datetime").date(2026, 3, 2), __import__("datetime").time(9, 0), "m4", 8, "M4")
    visit = scan_visit(meta, params, MuscleState(), out / "visit", ScanSettings(size="small"), DicomOptions())
    labels = build(truth_grid("small"), params)
    volumes = load_series(visit.files)
    t2 = sorted((v for v in volumes if v.b_value is None), key=lambda v: -v.image.GetOrigin()[2])
    dwi = [v for v in volumes if v.b_value is not None]
    atlas = Atlas("truth-labels", out, sitk.Image(1, 1, 1, sitk.sitkFloat32), labels, phantom_label_table())
    rows, _, _ = measure_t2(t2, labels, atlas, QuantSettings())
    adc = [station_adc([lo, hi]) for lo, hi in dwi_pairs(dwi)]
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in visit.files]
    t2_header = next(h for h in headers if "T2" in h.SeriesDescription)
    dwi_header = next(h for h in headers if "DWI" in h.SeriesDescription)
    ctx = ResultContext(datetime(2026, 11, 25, 3, 0, tzinfo=timezone.utc), "0.1.0", "1.0", atlas.id)
    res = build_results(rows, [v.image for v in t2], labels, adc, t2_header, dwi_header, atlas.table, ctx)
    folder = out / "results"
    folder.mkdir()
    for i, (kind, ds) in enumerate(res.objects()):
        ds.save_as(folder / f"{kind}_{i:03d}.dcm", enforce_file_format=True)
    return res, rows, folder, atlas


def test_every_object_passes_dciodvfy(results) -> None:
    """Stitched T2 image, SEG, SR and parametric map: no dciodvfy errors; warnings only from the allow-list."""
    _, _, folder, _ = results
    dciodvfy = shutil.which("dciodvfy")
    assert dciodvfy, "dicom3tools is installed by make test"
    kinds = {}
    for path in sorted(folder.iterdir()):
        kinds.setdefault(path.name.rsplit("_", 1)[0], path)
    assert set(kinds) == {"stitched_t2", "seg", "sr", "adc_map"}
    for path in kinds.values():
        out = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True).stderr
        assert not [line for line in out.splitlines() if line.startswith("Error")], f"{path.name}: {out}"
        for line in out.splitlines():
            if line.startswith("Warning"):
                assert any(k in line for k in ALLOWED_WARNINGS), f"{path.name}: {line}"


def test_highdicom_reads_back_segments_and_measurements(results) -> None:
    """segread: one segment per measured muscle × side, its mask the label's voxels; srread: each group's
    relative T2 equals the measurement row."""
    res, rows, folder, atlas = results
    seg = hd.seg.segread(next(folder.glob("seg_*.dcm")))
    labels_by_tracking = {d.tracking_id: d.segment_number for d in
                          (seg.get_segment_description(n) for n in seg.segment_numbers)}
    assert {f"{r.muscle}_{r.side}" for r in rows if r.modality == "T2"} <= set(labels_by_tracking)
    sr = hd.sr.srread(next(folder.glob("sr_*.dcm")))
    groups = sr.content.get_volumetric_roi_measurement_groups()
    got = {}
    for g in groups:
        rel = next(m for m in g.get_measurements() if m.name.meaning == "Relative T2 signal")
        got[g.tracking_identifier] = rel.value
    for r in rows:
        if r.modality == "T2":
            assert got[f"{r.muscle}_{r.side}"] == pytest.approx(r.value, rel=1e-9)
    assert sr.PatientID == "PH0008" and sr.ClinicalTrialTimePointID == "M4"


def test_dcmqi_converts_the_seg_and_reads_the_sr(results, tmp_path: Path) -> None:
    """dcmqi segimage2itkimage writes one volume per segment; tid1500reader finds every measured muscle."""
    _, rows, folder, _ = results
    out = tmp_path / "seg"
    out.mkdir()
    proc = subprocess.run([str(VENV_BIN / "segimage2itkimage"), "--inputDICOM", str(next(folder.glob("seg_*.dcm"))),
                           "--outputDirectory", str(out), "--outputType", "nifti"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert len(list(out.glob("*.nii*"))) >= 1
    meta = json.loads(next(out.glob("*.json")).read_text())
    n_segments = sum(len(group) for group in meta["segmentAttributes"])
    assert n_segments == 34  # every muscle × side propagated, measured or not (small muscles vanish when eroded)
    sr_json = tmp_path / "sr.json"
    proc = subprocess.run([str(VENV_BIN / "tid1500reader"), "--inputDICOM", str(next(folder.glob("sr_*.dcm"))),
                           "--outputMetadata", str(sr_json)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    groups = {g["TrackingIdentifier"]: g for g in json.loads(sr_json.read_text())["Measurements"]}
    for r in rows:
        if r.modality != "T2":
            continue
        items = {i["quantity"]["CodeMeaning"]: float(i["value"]) for i in groups[f"{r.muscle}_{r.side}"]["measurementItems"]}
        assert items["Relative T2 signal"] == pytest.approx(r.value, rel=1e-6)


def test_dsrdump_renders_the_report(results) -> None:
    _, _, folder, _ = results
    proc = subprocess.run(["dsrdump", str(next(folder.glob("sr_*.dcm")))], capture_output=True, text=True)
    assert proc.returncode == 0 and "Relative T2 signal" in proc.stdout and "Imaging Measurement Report" in proc.stdout


def test_adc_map_carries_mm2_per_s_and_the_measured_range(results) -> None:
    """The parametric map's real-world value mapping is UCUM mm2/s and its values are muscle-like ADCs."""
    res, _, _, _ = results
    pm = res.adc_map
    assert pm is not None
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "mm2/s"
    values = pm.pixel_array
    assert 1.0e-3 < np.median(values[values > 5e-4]) < 2.5e-3
