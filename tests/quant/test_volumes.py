"""Series → station volumes: geometry, completeness checks, Philips scaling, b-values, stations."""

from __future__ import annotations

import random
import struct
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import (
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from node.intake.classify import is_derived, station_key
from quant.volumes import StationVolume, VolumeError, is_derived_image_type, load_series, station_volumes
from tests.support.series_factory import AXIAL, CORONAL, classic_series, enhanced_series, normal, stack

ROWS, COLUMNS = 5, 7  # non-square, so row/column mix-ups show


def stored(slices: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, (slices, ROWS, COLUMNS), dtype=np.uint16)


def array(volume: StationVolume) -> np.ndarray:
    return sitk.GetArrayFromImage(volume.image)


def test_slices_are_ordered_by_position_along_the_normal_not_by_file_or_instance_number(tmp_path: Path) -> None:
    pixels = stored(6)
    positions = stack((-10.0, -20.0, 30.0), CORONAL, 6, 5.0)
    series = classic_series(pixels, positions, pixel_spacing=(1.5, 2.0), instance_numbers=[4, 1, 6, 2, 5, 3])
    order = list(range(6))
    random.Random(1).shuffle(order)
    paths = []
    for name, i in enumerate(order):  # file names in shuffled order too
        paths.append(tmp_path / f"IM{name:03d}.dcm")
        series[i].save_as(paths[-1], enforce_file_format=True)

    (volume,) = load_series(reversed(paths))

    np.testing.assert_array_equal(array(volume), pixels.astype(np.float32))
    assert volume.sop_uids == [ds.SOPInstanceUID for ds in series]
    assert volume.frame_numbers == [None] * 6
    image = volume.image
    assert image.GetSize() == (COLUMNS, ROWS, 6)
    assert image.GetSpacing() == (2.0, 1.5, 5.0)  # (along row, along column, slice)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)),
                               np.column_stack([CORONAL[:3], CORONAL[3:], normal(CORONAL)]))
    # voxel (column 3, row 2, slice 4) sits where DICOM puts it: IPP + 3·Δc·row + 2·Δr·col
    expected = np.asarray(positions[4]) + 3 * 2.0 * np.asarray(CORONAL[:3]) + 2 * 1.5 * np.asarray(CORONAL[3:])
    np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((3, 2, 4)), expected)


def test_a_missing_slice_is_an_error_naming_the_series_and_the_gap() -> None:
    positions = stack((0.0, 0.0, -100.0), AXIAL, 8, 5.0)
    del positions[5]  # z = -75 missing: a gap from -80 to -70
    uid = generate_uid()
    with pytest.raises(VolumeError, match=rf"{uid}.*gap.*-80\.0.*-70\.0"):
        station_volumes(classic_series(stored(7), positions, orientation=AXIAL, series_uid=uid))


def test_a_duplicated_slice_position_is_an_error() -> None:
    positions = stack((0.0, 0.0, 0.0), AXIAL, 6, 5.0)
    positions[3] = positions[2]
    with pytest.raises(VolumeError, match=r"duplicated slice position \[0\.0, 0\.0, 10\.0\]"):
        station_volumes(classic_series(stored(6), positions, orientation=AXIAL))


def test_slices_of_a_station_must_share_orientation() -> None:
    series = classic_series(stored(5), stack((0.0, 0.0, 0.0), AXIAL, 5, 5.0), orientation=AXIAL)
    series[2].ImageOrientationPatient = [0.9998, 0.02, 0.0, -0.02, 0.9998, 0.0]  # same plane, slightly rotated
    with pytest.raises(VolumeError, match=rf"{series[2].SOPInstanceUID} has orientation"):
        station_volumes(series)


def test_slices_of_a_station_must_share_pixel_spacing_and_matrix() -> None:
    series = classic_series(stored(5), stack((0.0, 0.0, 0.0), AXIAL, 5, 5.0), orientation=AXIAL)
    series[1].PixelSpacing = [1.6, 2.0]
    with pytest.raises(VolumeError, match=r"pixel spacing \(1\.6, 2\.0\) mm"):
        station_volumes(series)
    series = classic_series(stored(5), stack((0.0, 0.0, 0.0), AXIAL, 5, 5.0), orientation=AXIAL)
    series[3].Rows, series[3].Columns = COLUMNS, ROWS
    with pytest.raises(VolumeError, match=r"rows×columns \(7, 5\)"):
        station_volumes(series)


def test_a_slice_shifted_in_plane_is_an_error() -> None:
    positions = stack((0.0, 0.0, 0.0), AXIAL, 5, 5.0)
    positions[2] = (1.0, 0.0, 10.0)  # 1 mm along the rows: same station by the 1 cm key, but not one stack
    with pytest.raises(VolumeError, match=r"shifted in-plane by \[1\.0, 0\.0\] mm"):
        station_volumes(classic_series(stored(5), positions, orientation=AXIAL))


def test_irregular_slice_spacing_is_an_error() -> None:
    positions = stack((0.0, 0.0, 0.0), AXIAL, 6, 5.0)
    positions[4] = (0.0, 0.0, 18.0)  # steps 5, 5, 5, 3, 7
    with pytest.raises(VolumeError, match=r"irregular slice step of 3\.000 mm"):
        station_volumes(classic_series(stored(6), positions, orientation=AXIAL))


@pytest.mark.parametrize("transfer_syntax", [None, ImplicitVRLittleEndian])
def test_rescale_and_philips_scale_slope_give_back_the_floating_values(tmp_path: Path,
                                                                      transfer_syntax: str | None) -> None:
    pixels = stored(4)
    series = classic_series(pixels, stack((0.0, 0.0, 0.0), AXIAL, 4, 5.0), orientation=AXIAL,
                            rescale=(2.5, -100.0), philips_scale_slope=0.04)
    paths = []
    for i, ds in enumerate(series):  # through files, explicit and implicit VR (private VR from the dictionary)
        if transfer_syntax is not None:
            ds.file_meta.TransferSyntaxUID = transfer_syntax
        paths.append(tmp_path / f"{i}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)

    (volume,) = load_series(paths)

    fp = (pixels * 2.5 - 100.0) / (2.5 * 0.04)  # Philips FP = (SV·RS + RI) / (RS·SS)
    np.testing.assert_allclose(array(volume), fp, rtol=1e-6)
    assert volume.image.GetPixelID() == sitk.sitkFloat32


def test_philips_private_values_stored_as_raw_un_bytes_are_decoded() -> None:
    """A peer that does not know the private dictionary may pass FL values on as VR UN (raw little-endian)."""
    pixels = stored(3)
    series = classic_series(pixels, stack((0.0, 0.0, 0.0), AXIAL, 3, 5.0), orientation=AXIAL, rescale=(2.0, 0.0))
    for ds in series:
        ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True).add_new(0x0E, "UN", struct.pack("<f", 0.5))
        ds.private_block(0x2001, "Philips Imaging DD 001", create=True).add_new(0x03, "UN", struct.pack("<f", 800.0))
    (volume,) = station_volumes(series)
    assert volume.b_value == 800.0
    np.testing.assert_allclose(array(volume), pixels / 0.5, rtol=1e-6)


def test_rescale_without_philips_scale_slope_gives_the_displayed_values() -> None:
    pixels = stored(3)
    series = classic_series(pixels, stack((0.0, 0.0, 0.0), AXIAL, 3, 5.0), orientation=AXIAL, rescale=(0.5, 10.0))
    (volume,) = station_volumes(series)
    np.testing.assert_allclose(array(volume), pixels * 0.5 + 10.0, rtol=1e-6)


def test_enhanced_frames_use_their_own_plane_position_and_pixel_value_transformation() -> None:
    pixels = stored(4)
    positions = stack((-20.0, -30.0, 40.0), AXIAL, 4, 4.0)
    order = [2, 0, 3, 1]  # frames stored out of slice order
    rescale = [(1.0, 0.0), (2.0, 5.0), (0.5, -1.0), (4.0, 0.0)]
    scale = [0.1, 0.2, 0.4, 0.8]
    ds = enhanced_series(pixels[order], [positions[i] for i in order], rescale=[rescale[i] for i in order],
                         philips_scale_slope=[scale[i] for i in order])

    (volume,) = station_volumes([ds])

    expected = [(pixels[k] * rs + ri) / (rs * ss) for k, ((rs, ri), ss) in enumerate(zip(rescale, scale))]
    np.testing.assert_allclose(array(volume), np.stack(expected), rtol=1e-6)
    assert volume.frame_numbers == [2, 4, 1, 3]
    assert volume.sop_uids == [ds.SOPInstanceUID] * 4
    assert volume.image.GetOrigin() == positions[0]
    assert volume.image.GetSpacing() == (2.0, 1.5, 4.0)


def test_b_values_from_the_standard_tag_split_a_dwi_series_into_volumes_per_b_value() -> None:
    positions = stack((0.0, 0.0, 0.0), AXIAL, 4, 5.0)
    uid = generate_uid()
    b0 = classic_series(stored(4, 1), positions, orientation=AXIAL, series_uid=uid, b_value=0.0)
    b1000 = classic_series(stored(4, 2), positions, orientation=AXIAL, series_uid=uid, b_value=1000.0)
    mixed = [ds for pair in zip(b0, b1000) for ds in pair]  # interleaved as a scanner may send them

    volumes = station_volumes(mixed)

    assert [v.b_value for v in volumes] == [0.0, 1000.0]
    assert volumes[0].station_key == volumes[1].station_key
    np.testing.assert_array_equal(array(volumes[1]), stored(4, 2))


def test_b_values_from_the_philips_private_tag_alone() -> None:
    positions = stack((0.0, 0.0, 0.0), AXIAL, 3, 5.0)
    uid = generate_uid()
    series = [*classic_series(stored(3, 1), positions, orientation=AXIAL, series_uid=uid, b_value=0.0, private_b=True),
              *classic_series(stored(3, 2), positions, orientation=AXIAL, series_uid=uid, b_value=1000.0,
                              private_b=True)]
    assert all("DiffusionBValue" not in ds for ds in series)
    assert [v.b_value for v in station_volumes(series)] == [0.0, 1000.0]


def test_b_values_per_frame_in_enhanced_mr() -> None:
    positions = stack((0.0, 0.0, 0.0), AXIAL, 3, 5.0)
    pixels = stored(6)
    ds = enhanced_series(pixels, [*positions, *positions], b_values=[1000.0, 0.0, 1000.0, 0.0, 1000.0, 0.0])
    # frames alternate b1000 / b0 at positions 0,1,2,0,1,2
    volumes = station_volumes([ds])
    assert [v.b_value for v in volumes] == [0.0, 1000.0]
    assert volumes[0].frame_numbers == [4, 2, 6]
    assert volumes[1].frame_numbers == [1, 5, 3]
    np.testing.assert_array_equal(array(volumes[1]), pixels[[0, 4, 2]])


def test_scanner_made_trace_and_adc_images_are_left_out() -> None:
    positions = stack((0.0, 0.0, 0.0), AXIAL, 3, 5.0)
    uid = generate_uid()
    acquired = [*classic_series(stored(3, 1), positions, orientation=AXIAL, series_uid=uid, b_value=0.0),
                *classic_series(stored(3, 2), positions, orientation=AXIAL, series_uid=uid, b_value=1000.0)]
    trace = classic_series(stored(3, 3), positions, orientation=AXIAL, series_uid=uid, b_value=1000.0,
                           image_type=["ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW"])
    adc = classic_series(stored(3, 4), positions, orientation=AXIAL, series_uid=uid,
                         image_type=["DERIVED", "PRIMARY", "DIFFUSION", "ADC"])
    volumes = station_volumes([*trace, *acquired, *adc])
    assert [v.b_value for v in volumes] == [0.0, 1000.0]
    np.testing.assert_array_equal(array(volumes[1]), stored(3, 2))


def test_scanner_made_frames_of_an_enhanced_instance_are_left_out() -> None:
    positions = stack((0.0, 0.0, 0.0), AXIAL, 2, 5.0)
    original, derived = ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"], ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]
    ds = enhanced_series(stored(4), [*positions, *positions], b_values=[0.0, 0.0, 0.0, 0.0],
                         frame_types=[original, original, derived, derived])
    (volume,) = station_volumes([ds])
    assert volume.frame_numbers == [1, 2]


@pytest.mark.parametrize("image_type", [
    [], ["ORIGINAL", "PRIMARY", "M_SE", "M", "SE"], ["DERIVED", "PRIMARY", "MPR"], ["ORIGINAL", "PRIMARY", "ADC"],
    ["ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW"], ["ORIGINAL", "PRIMARY", "ISOTROPIC"], ["ORIGINAL", "FA"],
])
def test_derived_rule_is_node_classify_s(image_type: list[str]) -> None:
    ds = classic_series(stored(1), [(0.0, 0.0, 0.0)], image_type=image_type or None)[0]
    if not image_type:
        del ds.ImageType
    assert is_derived_image_type(ds.get("ImageType") or []) == is_derived(ds)


def test_one_series_with_all_coronal_stations_is_split_into_stations_head_first() -> None:
    uid = generate_uid()
    series = []
    for station, top in enumerate([100.0, -150.0, -400.0]):  # coronal stations step down along the column direction
        series += classic_series(stored(4, station), stack((-200.0, -10.0, top), CORONAL, 4, 5.0), series_uid=uid,
                                 acquisition_number=station + 1)
    random.Random(0).shuffle(series)

    volumes = station_volumes(series)

    assert [v.image.GetOrigin()[2] for v in volumes] == [100.0, -150.0, -400.0]
    for station, volume in enumerate(volumes):
        np.testing.assert_array_equal(array(volume), stored(4, station))
        instances = [ds for ds in series if ds.SOPInstanceUID in volume.sop_uids]
        assert {station_key(ds) for ds in instances} == {volume.station_key}  # node.intake.classify's notion


def test_axial_stations_in_one_series_are_told_apart_by_acquisition_number() -> None:
    uid = generate_uid()
    upper = classic_series(stored(6, 1), stack((0.0, 0.0, 0.0), AXIAL, 6, 5.0), orientation=AXIAL,
                           series_uid=uid, acquisition_number=1)
    lower = classic_series(stored(6, 2), stack((0.0, 0.0, -20.0), AXIAL, 6, 5.0), orientation=AXIAL,
                           series_uid=uid, acquisition_number=2)  # overlaps the upper station by 10 mm
    volumes = station_volumes([*lower, *upper])
    assert [v.image.GetOrigin()[2] for v in volumes] == [0.0, -20.0]
    assert [v.image.GetSize()[2] for v in volumes] == [6, 6]


def test_enhanced_instance_with_all_stations_is_split_by_frame_acquisition_number_and_b_value() -> None:
    positions = [*stack((0.0, 0.0, 0.0), AXIAL, 3, 5.0), *stack((0.0, 0.0, -15.0), AXIAL, 3, 5.0)]
    ds = enhanced_series(stored(12), positions * 2, b_values=[0.0] * 6 + [1000.0] * 6,
                         acquisition_numbers=[1, 1, 1, 2, 2, 2] * 2)
    volumes = station_volumes([ds])
    assert [(v.image.GetOrigin()[2], v.b_value) for v in volumes] == [
        (0.0, 0.0), (0.0, 1000.0), (-15.0, 0.0), (-15.0, 1000.0)]
    assert [v.frame_numbers for v in volumes] == [[1, 2, 3], [7, 8, 9], [4, 5, 6], [10, 11, 12]]


def test_abutting_axial_stations_without_acquisition_numbers_form_one_volume() -> None:
    """Known limit: same series, plane, in-plane origin and acquisition number leave nothing to tell them apart.

    Abutting stations then make one regular stack (harmless for voxel-wise ADC); overlapping ones
    fail the spacing check instead of being silently interleaved.
    """
    uid = generate_uid()
    upper = classic_series(stored(4, 1), stack((0.0, 0.0, 0.0), AXIAL, 4, 5.0), orientation=AXIAL, series_uid=uid)
    lower = classic_series(stored(4, 2), stack((0.0, 0.0, -20.0), AXIAL, 4, 5.0), orientation=AXIAL, series_uid=uid)
    (volume,) = station_volumes([*upper, *lower])
    np.testing.assert_array_equal(array(volume), np.concatenate([stored(4, 2), stored(4, 1)]))
    overlapping = classic_series(stored(4, 2), stack((0.0, 0.0, -12.0), AXIAL, 4, 5.0), orientation=AXIAL,
                                 series_uid=uid)
    with pytest.raises(VolumeError, match="irregular slice step"):
        station_volumes([*upper, *overlapping])


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless, JPEGLosslessSV1])
def test_a_station_sent_compressed_reads_as_the_same_volume(tmp_path: Path, syntax: str) -> None:
    """A site whose scanner compresses losslessly: the pipeline decodes the stations through pydicom's
    pixel handlers (the same as the node's transcoding) and gets the very same volume."""
    pixels = np.random.default_rng(3).integers(0, 4000, (4, 64, 48), dtype=np.uint16)
    positions = stack((0.0, 0.0, -50.0), CORONAL, 4, 5.0)
    paths = []
    for i, ds in enumerate(classic_series(pixels, positions, rescale=(2.0, -10.0))):
        if syntax == JPEGLosslessSV1:  # pydicom writes no JPEG lossless: DCMTK's dcmcjpeg does, as a scanner would
            plain = tmp_path / f"plain{i}.dcm"
            ds.save_as(plain, enforce_file_format=True)
            paths.append(tmp_path / f"IM{i}.dcm")
            subprocess.run(["dcmcjpeg", "+e1", str(plain), str(paths[-1])], check=True, capture_output=True)
            continue
        ds.compress(syntax, generate_instance_uid=False)
        paths.append(tmp_path / f"IM{i}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    assert {str(pydicom.dcmread(p).file_meta.TransferSyntaxUID) for p in paths} == {syntax}

    (volume,) = load_series(paths)

    np.testing.assert_array_equal(array(volume), pixels.astype(np.float32) * 2.0 - 10.0)
