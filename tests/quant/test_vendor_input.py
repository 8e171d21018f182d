"""Vendor headers as scanners write them, read as dcm2niix reads them: b-values wherever each vendor keeps them,
and a real Siemens enhanced multi-echo series (myoqmri's calves) with its echo times and slice order."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from node.intake.classify import b_values
from node.intake.fields import series_fields
from quant.diffusion import DiffusionSource, diffusion_of
from quant.volumes import StationVolume, station_volumes
from tests.support.dcm2niix import dcm2niix
from tests.support.real_data import mese_files, nibabel_dicom


def _written(folder: Path, datasets: list[Dataset]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, ds in enumerate(datasets):
        ds.save_as(folder / f"{i:03d}.dcm", enforce_file_format=True)
    return folder


def test_siemens_classic_dwi_b_values_come_from_the_csa_header_as_dcm2niix_reads_them(tmp_path: Path) -> None:
    """nibabel's two real Siemens diffusion images (no standard b-value): the CSA header's B_value and gradient,
    named as a private source; without the CSA header, (0019,100C) gives the same b-value."""
    b0, b1000 = nibabel_dicom("siemens_dwi_0.dcm.gz"), nibabel_dicom("siemens_dwi_1000.dcm.gz")
    assert "DiffusionBValue" not in b0 and "DiffusionBValue" not in b1000
    found = [diffusion_of(ds) for ds in (b0, b1000)]
    assert [(d.b_value, d.source) for d in found if d] == [(0.0, DiffusionSource.SIEMENS_CSA),
                                                          (1000.0, DiffusionSource.SIEMENS_CSA)]
    assert found[1] is not None and found[1].direction is not None
    assert np.allclose(found[1].direction, (0.99997449, 0.00505012, -0.00505012), atol=1e-6)
    assert "Siemens CSA image header (0029,1010)" in (found[1].warning or "")

    repeat = copy.deepcopy(b1000)  # a second average of b 1000 (dcm2niix writes b-values for 3 volumes or more)
    repeat.SOPInstanceUID, repeat.InstanceNumber, repeat.AcquisitionNumber = generate_uid(), 3, 3
    converted = dcm2niix(_written(tmp_path / "dicom", [b0, b1000, repeat]), tmp_path / "nifti")
    assert [c.b_values for c in converted] == [[d.b_value for d in (*found, diffusion_of(repeat)) if d]] == [[0, 1000, 1000]]

    no_csa = copy.deepcopy(b1000)
    del no_csa[0x0029, 0x1010]
    fallback = diffusion_of(no_csa)
    assert fallback is not None and (fallback.b_value, fallback.source) == (1000.0, DiffusionSource.SIEMENS_PRIVATE)
    assert b_values(no_csa) == [1000.0]


def _vendor_series(manufacturer: str, tag: callable) -> list[Dataset]:  # type: ignore[valid-type]
    """pydicom's real MR_small, three times in one series, each given a vendor's private diffusion elements."""
    base = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    series, out = generate_uid(), []
    for number, (b_value, direction) in enumerate([(0, (0.0, 0.0, 0.0)), (1000, (1.0, 0.0, 0.0)),
                                                   (1000, (0.0, 1.0, 0.0))], start=1):
        ds = copy.deepcopy(base)
        ds.Manufacturer, ds.SeriesInstanceUID, ds.SOPInstanceUID = manufacturer, series, generate_uid()
        ds.InstanceNumber, ds.AcquisitionNumber = number, 1
        tag(ds, b_value, direction)
        out.append(ds)
    return out


def _ge(ds: Dataset, b_value: int, direction: tuple[float, float, float]) -> None:
    acquisition = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
    for offset, value in zip((0xBB, 0xBC, 0xBD), direction, strict=True):
        acquisition.add_new(offset, "DS", f"{value:g}")
    # the 10^9 some GE software adds to the b-value
    ds.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x39, "IS", f"{1_000_000_000 + b_value}\\8\\0\\0")


def _philips(ds: Dataset, b_value: int, direction: tuple[float, float, float]) -> None:
    ds.private_block(0x2001, "Philips Imaging DD 001", create=True).add_new(0x03, "FL", float(b_value))
    gradient = ds.private_block(0x2005, "Philips MR Imaging DD 004", create=True)
    for offset, value in zip((0xB0, 0xB1, 0xB2), direction, strict=True):
        gradient.add_new(offset, "FL", value)


@pytest.mark.parametrize(("manufacturer", "tag", "source"), [
    ("GE MEDICAL SYSTEMS", _ge, DiffusionSource.GE_PRIVATE),
    ("Philips Medical Systems", _philips, DiffusionSource.PHILIPS_PRIVATE),
], ids=["ge", "philips"])
def test_private_b_values_of_ge_and_philips_read_as_dcm2niix_reads_them(
        tmp_path: Path, manufacturer: str, tag: callable, source: DiffusionSource) -> None:  # type: ignore[valid-type]
    series = _vendor_series(manufacturer, tag)
    found = [diffusion_of(ds) for ds in series]
    assert [(d.b_value, d.source) for d in found if d] == [(0.0, source), (1000.0, source), (1000.0, source)]
    if source is DiffusionSource.GE_PRIVATE:  # GE's gradient direction (0019,10BB..BD) comes with it
        assert [d.direction for d in found if d] == [None, (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)]
    converted = dcm2niix(_written(tmp_path / "dicom", series), tmp_path / "nifti")
    assert [c.b_values for c in converted] == [[0.0, 1000.0, 1000.0]]
    said = [w for w in series_fields(series[1], []).warnings if w.keyword == "DiffusionBValue"]
    assert len(said) == 1 and "the standard (0018,9087) is absent" in said[0].problem


def test_the_standard_b_value_wins_over_every_private_one() -> None:
    (ds, *_) = _vendor_series("GE MEDICAL SYSTEMS", _ge)
    ds.DiffusionBValue = 500.0
    found = diffusion_of(ds)
    assert found is not None and (found.b_value, found.source, found.warning) == (500.0, DiffusionSource.STANDARD, None)
    foreign = _vendor_series("Philips Medical Systems", _philips)[1]
    foreign.private_block(0x2001, "Philips Imaging DD 001").add_new(0x03, "FL", float("nan"))
    assert diffusion_of(foreign) is None  # a value that is no number is no b-value


@pytest.fixture(scope="module")
def mese() -> list[Dataset]:
    return [pydicom.dcmread(path) for path in mese_files()]


def test_a_siemens_enhanced_multi_echo_series_gives_one_station_per_echo_with_its_echo_time(mese) -> None:
    volumes = station_volumes(mese)
    assert [v.echo_time_ms for v in volumes] == [11.0 * k for k in range(1, 18)]
    assert {v.image.GetSize() for v in volumes} == {(256, 128, 8)}
    assert all(v.b_value is None for v in volumes)
    measures = mese[0].PerFrameFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SpacingBetweenSlices) == 37.1  # 7 mm slices with gaps
    assert np.allclose(volumes[0].image.GetSpacing(), (1.5625, 1.5625, 37.1), atol=1e-3)


def test_of_a_multi_echo_series_the_echo_nearest_the_wanted_one_is_the_t2_weighted_image(mese) -> None:
    (chosen,) = station_volumes(mese, echo_ms=80.0)
    assert chosen.echo_time_ms == 77.0 and len(chosen.echoes_ms) == 17
    (shortest,) = station_volumes(mese, echo_ms=1.0)
    assert shortest.echo_time_ms == 11.0
    (tie,) = station_volumes(mese, echo_ms=82.5)  # 77 and 88 as near: the shorter
    assert tie.echo_time_ms == 77.0


def _voxels_match(volume: StationVolume, voxels: np.ndarray, affine_lps: np.ndarray) -> None:
    """Every voxel of ``volume`` has the value of the NIfTI voxel at the same place in the patient."""
    ours = sitk.GetArrayFromImage(volume.image)  # (k, j, i)
    size = volume.image.GetSize()
    indices = np.stack(np.meshgrid(*(np.arange(n) for n in size), indexing="ij"), axis=-1).reshape(-1, 3)
    points = np.asarray([volume.image.TransformIndexToPhysicalPoint([int(v) for v in index]) for index in indices])
    theirs = np.linalg.solve(affine_lps, np.column_stack([points, np.ones(len(points))]).T).T[:, :3]
    rounded = np.rint(theirs).astype(int)
    assert np.abs(theirs - rounded).max() < 1e-3  # the grids coincide
    assert np.array_equal(ours[indices[:, 2], indices[:, 1], indices[:, 0]],
                          voxels[rounded[:, 0], rounded[:, 1], rounded[:, 2]])


def test_echo_times_geometry_and_slice_order_agree_with_dcm2niix(mese, tmp_path: Path) -> None:
    converted = dcm2niix(mese_files()[0].parent, tmp_path / "nifti")
    echoes = {round(float(c.sidecar["EchoTime"]) * 1000.0, 3): c for c in converted if "EchoTime" in c.sidecar}
    volumes = {v.echo_time_ms: v for v in station_volumes(mese)}
    assert sorted(echoes) == sorted(volumes)
    for echo in (11.0, 77.0, 187.0):
        voxels, affine = echoes[echo].voxels_lps()
        _voxels_match(volumes[echo], voxels, affine)
