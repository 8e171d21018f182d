"""Stitching stations onto one grid: union field of view, feathered overlaps, source bitmask."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import SimpleITK as sitk

from quant.stitch import stitch

# Coronal stations as the scanner tiles them: rows along x, columns towards the feet (−z),
# slices along +y. Size (x, y-index = column direction, slices) = (8, 20, 3), 2 × 2 × 5 mm.
CORONAL_DIRECTION = (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0)
AXIAL_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
SIZE = (8, 20, 3)
SPACING = (2.0, 2.0, 5.0)


def station(values: np.ndarray | float, origin: tuple[float, float, float], size: tuple[int, int, int] = SIZE,
            direction: tuple[float, ...] = CORONAL_DIRECTION) -> sitk.Image:
    array = np.broadcast_to(np.asarray(values, dtype=np.float32), size[::-1])
    image = sitk.GetImageFromArray(np.array(array))
    image.SetOrigin(origin)
    image.SetSpacing(SPACING)
    image.SetDirection(direction)
    return image


def upper_and_lower(upper: float, lower: float) -> list[sitk.Image]:
    """Two coronal stations overlapping by 20 mm along z: rows 10..19 of the upper = rows 0..9 of the lower."""
    return [station(upper, (0.0, 0.0, 0.0)), station(lower, (0.0, 0.0, -20.0))]


def test_union_field_of_view_spans_all_stations_on_the_first_station_grid() -> None:
    result = stitch(upper_and_lower(1.0, 1.0))
    image = result.image
    assert image.GetDirection() == CORONAL_DIRECTION
    assert image.GetSpacing() == SPACING
    assert image.GetOrigin() == (0.0, 0.0, 0.0)  # the upper station's first voxel
    assert image.GetSize() == (8, 30, 3)  # 20 + 20 rows less the 10 shared
    assert image.TransformIndexToPhysicalPoint((0, 29, 0)) == (0.0, 0.0, -58.0)  # the lower station's last row
    assert result.source.shape == (3, 30, 8)


def test_a_constant_object_crossing_the_overlap_stays_constant() -> None:
    values = sitk.GetArrayFromImage(stitch(upper_and_lower(100.0, 100.0)).image)
    np.testing.assert_allclose(values, 100.0, rtol=1e-6)


def test_different_station_offsets_cross_fade_linearly_over_the_overlap_without_a_seam() -> None:
    values = sitk.GetArrayFromImage(stitch(upper_and_lower(100.0, 200.0)).image)
    profile = values[1, :, 4]  # along the column direction, head to feet
    # Overlap: rows 10..19 at 20..38 mm below the top voxel; the station edges (half a voxel out) at 19 and 39 mm.
    depth = 2.0 * np.arange(30)
    share_lower = np.clip((depth - 19.0) / 20.0, 0.0, 1.0)
    np.testing.assert_allclose(profile, 100.0 + 100.0 * share_lower, rtol=1e-6)
    assert np.all(np.diff(profile) >= 0)
    assert np.abs(np.diff(profile)).max() <= 100.0 * 2.0 / 20.0 + 1e-3  # no step beyond the ramp's slope
    assert np.ptp(values, axis=(0, 2)).max() < 1e-3  # the same across each row and through the slices


def test_source_bitmask_marks_each_station_and_both_in_the_overlap() -> None:
    shifted = [station(1.0, (0.0, 0.0, 0.0)), station(2.0, (4.0, 0.0, -20.0))]  # lower station 2 voxels along x
    result = stitch(shifted)
    assert result.image.GetSize() == (10, 30, 3)
    assert result.source.dtype == np.uint8
    expected = np.zeros((30, 10), dtype=np.uint8)
    expected[:20, :8] |= 1
    expected[10:, 2:] |= 2
    np.testing.assert_array_equal(result.source, np.broadcast_to(expected, (3, 30, 10)))
    values = sitk.GetArrayFromImage(result.image)
    np.testing.assert_array_equal(values[result.source == 0], 0.0)  # outside every station: fill


def test_axial_stations_are_feathered_along_the_slice_normal() -> None:
    upper = station(10.0, (0.0, 0.0, 0.0), size=(4, 4, 8), direction=AXIAL_DIRECTION)  # slices at z 0..35
    lower = station(30.0, (0.0, 0.0, -20.0), size=(4, 4, 8), direction=AXIAL_DIRECTION)  # z -20..15
    result = stitch([upper, lower])
    assert result.image.GetSize() == (4, 4, 12)
    profile = sitk.GetArrayFromImage(result.image)[:, 2, 2]  # z = -20 .. 35
    z = -20.0 + 5.0 * np.arange(12)
    share_upper = np.clip((z - -2.5) / 20.0, 0.0, 1.0)  # overlap from z -2.5 to 17.5 (slice edges)
    np.testing.assert_allclose(profile, 30.0 + (10.0 - 30.0) * share_upper, rtol=1e-6)
    np.testing.assert_array_equal(result.source[:, 0, 0], [2] * 4 + [3] * 4 + [1] * 4)


def test_isotropic_registration_grid() -> None:
    result = stitch(upper_and_lower(100.0, 100.0), spacing=(4.0, 4.0, 4.0))
    image = result.image
    assert image.GetSpacing() == (4.0, 4.0, 4.0)
    assert image.GetSize() == (4, 15, 4)  # 16 × 60 × 15 mm field of view in 4 mm voxels
    values = sitk.GetArrayFromImage(image)
    assert np.all(result.source > 0)
    np.testing.assert_allclose(values, 100.0, rtol=1e-6)


def test_resampling_onto_another_direction_keeps_positions() -> None:
    """A field linear in position is reproduced exactly by linear interpolation, so any misplacement shows."""
    def field(point: np.ndarray) -> np.ndarray:
        return 0.5 * point[..., 0] - 2.0 * point[..., 1] + 3.0 * point[..., 2] + 1000.0

    stations = []
    for origin in [(0.0, 0.0, 0.0), (0.0, 0.0, -20.0)]:
        index = np.stack(np.meshgrid(*[np.arange(n) for n in SIZE], indexing="ij"), axis=-1)
        points = np.asarray(origin) + (index * SPACING) @ np.reshape(CORONAL_DIRECTION, (3, 3)).T
        stations.append(station(field(points).transpose(2, 1, 0), origin))
    result = stitch(stations, spacing=(3.0, 3.0, 3.0), direction=AXIAL_DIRECTION)
    assert result.image.GetDirection() == AXIAL_DIRECTION
    values = sitk.GetArrayFromImage(result.image)
    checked = 0
    for i, j, k in itertools.product(*[range(n) for n in result.image.GetSize()]):
        point = result.image.TransformIndexToPhysicalPoint((i, j, k))
        inside = any(np.all((np.asarray(s.TransformPhysicalPointToContinuousIndex(point)) >= 0)
                            & (np.asarray(s.TransformPhysicalPointToContinuousIndex(point)) <= np.asarray(SIZE) - 1))
                     for s in stations)
        if inside:
            assert values[k, j, i] == pytest.approx(field(np.asarray(point)), rel=1e-5)
            checked += 1
    assert checked > 100


def test_masked_voxels_take_the_other_station_or_fill() -> None:
    upper = np.full(SIZE[::-1], 100.0, dtype=np.float32)
    upper[1, 15, 4] = np.nan  # in the overlap
    upper[1, 5, 4] = np.nan  # upper station only
    result = stitch([station(upper, (0.0, 0.0, 0.0)), station(200.0, (0.0, 0.0, -20.0))], fill=float("nan"))
    values = sitk.GetArrayFromImage(result.image)
    assert values[1, 15, 4] == 200.0
    assert np.isnan(values[1, 5, 4])
    assert result.source[1, 5, 4] == 1  # still covered by the upper station
    finite = np.isfinite(values)
    finite[1, 5, 4] = True
    assert finite.all()


def test_source_bitmask_widens_beyond_eight_stations() -> None:
    stations = [station(float(i), (0.0, 0.0, -30.0 * i)) for i in range(9)]
    result = stitch(stations)
    assert result.source.dtype == np.uint16
    assert result.source.max() == (1 << 8) | (1 << 7)
