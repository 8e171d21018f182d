"""The phantom's DICOM: valid (dciodvfy), Philips-like (scaling, b-values, derived images), read back exactly."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from datetime import date, time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from node.classify import b_values, is_derived, station_key
from phantom.anatomy import AnatomyParams, build
from phantom.contrast import MuscleState
from phantom.dicom import PHILIPS_IMAGING, PHILIPS_MR_IMAGING, DicomOptions
from phantom.images import VisitMeta
from phantom.geometry import stations, truth_grid
from phantom.scanner import ScanSettings, acquire
from phantom.visit import VisitResult, scan_visit
from quant.volumes import load_series

# dciodvfy warnings a Philips-like classic MR file carries, each on purpose:
ALLOWED_WARNINGS = {
    "Unrecognized defined term <M_SE>": "Philips' Image Type value 3 for a spin-echo magnitude image",
    "Unrecognized defined term <M_FFE>": "Philips' Image Type value 3 for a diffusion EPI magnitude image",
    "Unrecognized defined term <DIFFUSION>": "Philips' Image Type of scanner-made trace and ADC images",
    "Rescale Intercept": "Philips writes Rescale Slope/Intercept in classic MR (standard extended SOP class)",
    "Rescale Slope": "as above",
    "Rescale Type": "as above",
    "Diffusion Directionality": "Philips writes the MR diffusion attributes in classic MR images",
    "Diffusion b-value": "as above: the b-value where readers look for it first",
    "Standard Extended SOP Class": "the consequence of the attributes above",
}


def meta(seed: int = 4, visit: str = "baseline") -> VisitMeta:
    return VisitMeta("PH0001", "PHANTOM^PH0001", date(1970, 1, 1), "M", 56.0, 80.0, 1.78, date(2026, 3, 2),
                     time(9, 0), visit, seed, visit.upper())


def scan(out: Path, options: DicomOptions = DicomOptions(), seed: int = 4) -> VisitResult:
    rng = np.random.default_rng(seed)
    params = AnatomyParams.random(rng, "M").placed(rng)
    return scan_visit(meta(seed), params, MuscleState(), out, ScanSettings(size="small", scanner_derived=True), options)


@pytest.fixture(scope="module")
def visit(tmp_path_factory) -> VisitResult:
    return scan(tmp_path_factory.mktemp("visit"))


def test_dciodvfy_finds_no_errors(visit: VisitResult) -> None:
    """T2, DWI b0/b1000 and the scanner's trace and ADC images are valid MR Image Storage objects."""
    dciodvfy = shutil.which("dciodvfy")
    assert dciodvfy, "dicom3tools (dciodvfy) is installed by make test"
    by_kind: dict[str, Path] = {}
    for path in visit.files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        kind = "t2" if "T2" in ds.SeriesDescription else "/".join(ds.ImageType[2:4])
        by_kind.setdefault(kind + str(ds.get("DiffusionBValue", "")), path)
    assert len(by_kind) >= 4
    for path in by_kind.values():
        out = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True).stderr
        errors = [line for line in out.splitlines() if line.startswith("Error")]
        assert not errors, f"{path}: {errors}"
        for line in out.splitlines():
            if line.startswith("Warning"):
                assert any(k in line for k in ALLOWED_WARNINGS), f"unexpected warning for {path}: {line}"


def test_read_back_gives_the_simulated_signal_and_geometry(tmp_path: Path) -> None:
    """quant.volumes (Rescale + Philips scale slope, geometry sorting) returns the simulated station
    images within the 12-bit quantisation (0.5/SS), at the stations' positions."""

    rng = np.random.default_rng(4)
    params = AnatomyParams.random(rng, "M").placed(rng)
    acq = acquire(build(truth_grid("small"), params), MuscleState(), ScanSettings(size="small"),
                  np.random.default_rng(meta().seed))
    result = scan(tmp_path)
    volumes = load_series(result.files)
    t2 = sorted((v for v in volumes if v.b_value is None), key=lambda v: -v.image.GetOrigin()[2])  # head first
    assert len(t2) == 6
    for vol, expected, st in zip(t2, acq.t2, stations("t2", "small")):
        arr = sitk.GetArrayFromImage(vol.image)
        tol = np.nanmax(expected.data) / 4095
        np.testing.assert_allclose(arr, expected.data, atol=tol)
        np.testing.assert_allclose(vol.image.GetOrigin(), st.origin, atol=1e-3)
        np.testing.assert_allclose(vol.image.GetSpacing(), st.spacing, atol=1e-6)
    dwi = [v for v in volumes if v.b_value is not None]
    assert sorted({v.b_value for v in dwi}) == [0.0, 1000.0] and len(dwi) == 16  # derived images left out


def test_philips_tags_and_classification(visit: VisitResult) -> None:
    """b-values in (0018,9087) and private (2001,1003); scale slope in private (2005,100E); the node
    classifies T2/DWI series, b-values and scanner-derived images from them."""
    seen = {"t2": 0, "b0": 0, "b1000": 0, "derived": 0}
    for path in visit.files[::5]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.Manufacturer == "Philips" and ds.get_private_item(0x2005, 0x0E, PHILIPS_MR_IMAGING).value > 0
        if "T2" in ds.SeriesDescription:
            seen["t2"] += 1
            assert ds.ImageOrientationPatient == [1, 0, 0, 0, 0, -1]
            continue
        if is_derived(ds):
            seen["derived"] += 1
            continue
        b = ds.DiffusionBValue
        assert ds.get_private_item(0x2001, 0x03, PHILIPS_IMAGING).value == b
        assert b_values(ds) == [b]
        seen["b0" if b == 0 else "b1000"] += 1
    assert all(seen.values()), seen


def test_one_series_with_all_stations_splits_by_station(tmp_path: Path) -> None:
    """All T2 stations in one series: Acquisition Number and position give six station keys."""
    result = scan(tmp_path, DicomOptions(one_series=True))
    t2 = [pydicom.dcmread(p, stop_before_pixels=True) for p in result.files]
    t2 = [ds for ds in t2 if "T2" in ds.SeriesDescription]
    assert len({ds.SeriesInstanceUID for ds in t2}) == 1
    assert len({station_key(ds) for ds in t2}) == 6
    assert len([v for v in load_series(result.files) if v.b_value is None]) == 6


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    """Everything, UIDs included, follows from the seed."""
    a, b = scan(tmp_path / "a"), scan(tmp_path / "b")

    def digest(result: VisitResult) -> list[str]:
        return [hashlib.sha256(p.read_bytes()).hexdigest() for p in result.files]

    assert digest(a) == digest(b)
    assert a.truth_path.read_bytes() == b.truth_path.read_bytes()
