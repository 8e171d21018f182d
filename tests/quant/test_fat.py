"""Dixon fat fraction on a real Siemens exam (myoqmri's calves): which series are used, the voxel fat fraction and the
T2 ROIs carried onto the Dixon grid only within the T2 slices."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from quant.fat import dixon_stations, fat_fraction_map, muscle_fat_fractions, t2_rois_on
from quant.volumes import StationVolume, station_volumes
from tests.support.real_data import dixon_volumes, mese_files


@pytest.fixture(scope="module")
def t2() -> StationVolume:
    (volume,) = station_volumes([pydicom.dcmread(f) for f in mese_files()], echo_ms=80.0)
    return volume


def test_the_siemens_series_that_hold_no_image_are_left_out_by_name_and_water_pairs_with_fat_on_its_grid() -> None:
    water = [*dixon_volumes("018_dixon_2echo_RR_W"), *dixon_volumes("019_dixon_2echo_RR_W")]
    fat = [*dixon_volumes("016_dixon_2echo_RR_F"), *dixon_volumes("017_dixon_2echo_RR_F")]
    pairs, warnings = dixon_stations(water, fat)
    assert [(p.water.series_uid, p.fat.series_uid) for p in pairs] == [(water[0].series_uid, fat[0].series_uid)]
    assert sorted(warnings) == sorted(f"Dixon {kind} series {uid}: holds no image (fewer than 16 distinct values); "
                                      "not used" for kind, uid in (("water", water[1].series_uid),
                                                                   ("fat", fat[1].series_uid)))
    _, alone = dixon_stations(water[:1], [])
    assert alone == [f"Dixon water series {water[0].series_uid}: no fat image on its grid; not used"]


def test_the_voxel_fat_fraction_is_fat_over_water_plus_fat_in_percent_and_nan_outside_the_body() -> None:
    (pair,), _ = dixon_stations(dixon_volumes("018_dixon_2echo_RR_W"), dixon_volumes("016_dixon_2echo_RR_F"))
    ff = fat_fraction_map(pair)
    water = sitk.GetArrayFromImage(pair.water.image).astype(float)
    fat = sitk.GetArrayFromImage(pair.fat.image).astype(float)
    measured = np.isfinite(ff)
    assert 0.2 < measured.mean() < 0.8  # the legs, not the air around them
    total = water + fat
    assert total[~measured].max() <= total[measured].min()  # one threshold (the noise floor) decides
    np.testing.assert_allclose(ff[measured], 100 * fat[measured] / (water + fat)[measured], rtol=1e-5)
    assert float(np.nanmin(ff)) >= 0.0 and float(np.nanmax(ff)) <= 100.0


def test_t2_rois_reach_the_dixon_grid_only_within_the_t2_slices_and_never_in_the_gaps(t2: StationVolume) -> None:
    """7 mm slices 37 mm apart: a Dixon slice (2 mm, parallel) is labelled where its plane lies within 3.5 mm of a T2
    slice's, along their (oblique) normal."""
    (pair,), _ = dixon_stations(dixon_volumes("018_dixon_2echo_RR_W"), dixon_volumes("016_dixon_2echo_RR_F"))
    size = t2.image.GetSize()
    roi = np.ones((size[2], size[1], size[0]), np.uint8)  # every T2 voxel in label 1
    on_dixon = t2_rois_on(pair.image, [t2], [roi])
    normal = np.asarray(t2.image.GetDirection()).reshape(3, 3)[:, 2]
    assert np.allclose(normal, np.asarray(pair.image.GetDirection()).reshape(3, 3)[:, 2])
    t2_at = np.asarray([t2.image.TransformIndexToPhysicalPoint((0, 0, k)) for k in range(size[2])]) @ normal
    dixon_at = np.asarray([pair.image.TransformIndexToPhysicalPoint((0, 0, k))
                           for k in range(pair.image.GetSize()[2])]) @ normal
    within = np.abs(dixon_at[:, None] - t2_at[None, :]).min(axis=1) <= 3.5 + 1e-6
    assert t2.slice_thickness_mm == pytest.approx(7.0)
    assert np.array_equal(on_dixon.any(axis=(1, 2)), within)
    assert 24 <= within.sum() <= 32  # 8 slabs of 3–4 Dixon slices
    # in-plane, the T2's field (400 mm across) as SimpleITK places it on the Dixon grid (500 mm across)
    ones = sitk.GetImageFromArray(roi)
    ones.CopyInformation(t2.image)
    field = sitk.GetArrayFromImage(sitk.Resample(ones, pair.image, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    disagree = (on_dixon[within] != field[within]).mean()
    assert disagree < 0.002  # a voxel centre on the field's very edge may fall either way
    assert 0.75 < on_dixon[within].mean() < 0.85


def test_a_muscle_fat_fraction_is_the_mean_over_its_t2_roi_on_the_dixon_voxels_and_none_below_the_minimum(
        t2: StationVolume) -> None:
    (pair,), _ = dixon_stations(dixon_volumes("018_dixon_2echo_RR_W"), dixon_volumes("016_dixon_2echo_RR_F"))
    size = t2.image.GetSize()
    roi = np.zeros((size[2], size[1], size[0]), np.uint8)
    roi[3, 40:60, 60:100] = 5  # a block in one slice
    roi[4, 50, 50] = 6  # one voxel: too few
    found = muscle_fat_fractions([pair], [t2], [roi], [5, 6], min_voxels=20)
    assert set(found) == {5}
    mapped = t2_rois_on(pair.image, [t2], [roi])
    ff = fat_fraction_map(pair)[mapped == 5]
    ff = ff[np.isfinite(ff)]
    assert found[5].n == ff.size and found[5].stations == [1]
    assert found[5].value == pytest.approx(float(ff.mean()), rel=1e-6)
