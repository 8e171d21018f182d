"""ADC from b0 / b1000: known signals give back ADC; noise and impossible voxels are NaN, never inf."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

from quant.adc import adc_map, estimate_noise_floor, station_adc, stitched_adc
from quant.volumes import station_volumes
from tests.support.series_factory import AXIAL, classic_series, stack

TRUE_ADC = np.linspace(0.5e-3, 3.0e-3, 24).reshape(2, 3, 4)  # mm²/s, muscle ≈ 1.5e-3
S0 = 1000.0
SCALE_SLOPE = 2.0  # Philips MR Scale Slope of the test series


def test_known_signals_give_back_the_adc() -> None:
    s_high = S0 * np.exp(-1000.0 * TRUE_ADC)
    adc = adc_map(np.full_like(TRUE_ADC, S0), s_high, 0.0, 1000.0, noise_floor=1.0)
    assert adc.dtype == np.float32
    np.testing.assert_allclose(adc, TRUE_ADC, rtol=1e-6)


def test_known_signals_at_other_b_values_and_as_images_keep_geometry() -> None:
    s_low = S0 * np.exp(-50.0 * TRUE_ADC)
    s_high = S0 * np.exp(-800.0 * TRUE_ADC)
    low, high = sitk.GetImageFromArray(s_low.astype(np.float32)), sitk.GetImageFromArray(s_high.astype(np.float32))
    for image in (low, high):
        image.SetOrigin((1.0, 2.0, 3.0))
        image.SetSpacing((2.3, 2.3, 5.0))
    adc = adc_map(low, high, 50.0, 800.0, noise_floor=1.0)
    assert isinstance(adc, sitk.Image)
    assert (adc.GetOrigin(), adc.GetSpacing()) == (low.GetOrigin(), low.GetSpacing())
    np.testing.assert_allclose(sitk.GetArrayFromImage(adc), TRUE_ADC, rtol=1e-6)


def test_signals_at_the_noise_floor_are_nan_not_inf() -> None:
    s_low = np.array([1000.0, 1000.0, 5.0, 0.0, 1000.0, np.nan])
    s_high = np.array([300.0, 0.0, 2.0, 0.0, 8.0, 300.0])
    adc = adc_map(s_low, s_high, 0.0, 1000.0, noise_floor=10.0)
    assert not np.isinf(adc).any()
    np.testing.assert_array_equal(np.isnan(adc), [False, True, True, True, True, True])
    assert adc[0] == pytest.approx(np.log(1000.0 / 300.0) / 1000.0, rel=1e-6)


def test_a_higher_signal_at_the_higher_b_value_is_nan_and_equal_signal_is_zero() -> None:
    adc = adc_map(np.array([500.0, 500.0]), np.array([600.0, 500.0]), 0.0, 1000.0, noise_floor=10.0)
    assert np.isnan(adc[0])
    assert adc[1] == 0.0


def test_b_values_must_increase() -> None:
    with pytest.raises(ValueError, match="b_high"):
        adc_map(np.ones(3), np.ones(3), 1000.0, 0.0)


def test_default_noise_floor_masks_the_rayleigh_background_and_keeps_the_body() -> None:
    rng = np.random.default_rng(3)
    sigma = 10.0
    shape = (20, 64, 64)
    body = np.zeros(shape, dtype=bool)
    body[:, 16:48, 16:48] = True  # a quarter of the field of view; the rest is air
    body[:, :8, 56:] = True  # but an arm reaches one corner
    adc_true = 1.5e-3

    def magnitude(signal: np.ndarray) -> np.ndarray:
        return np.hypot(signal + rng.normal(0.0, sigma, shape), rng.normal(0.0, sigma, shape))

    s_low = magnitude(np.where(body, 800.0, 0.0))
    s_high = magnitude(np.where(body, 800.0 * np.exp(-1000.0 * adc_true), 0.0))
    floor = estimate_noise_floor(s_low)
    assert 2.5 * sigma < floor < 4.5 * sigma  # ≈ 3.5 σ for Rayleigh noise
    adc = adc_map(s_low, s_high, 0.0, 1000.0)
    assert np.isnan(adc[~body]).mean() > 0.99
    assert np.isfinite(adc[body]).mean() > 0.99
    assert np.nanmedian(adc[body]) == pytest.approx(adc_true, rel=0.05)


def dwi_station(series_uid: str, top: float, adc_value: float, b_values: tuple[float, float] = (0.0, 1000.0)):
    """Classic DWI instances of one axial station whose stored values encode S0·exp(−b·ADC) (Philips-scaled)."""
    positions = stack((0.0, 0.0, top - 15.0), AXIAL, 4, 5.0)
    datasets = []
    for b in b_values:
        fp = np.full((4, 6, 6), S0 * np.exp(-b * adc_value))  # Philips floating values
        fp[:, 0, :] = 0.0  # a row of background
        stored = np.rint(fp * SCALE_SLOPE).astype(np.uint16)  # FP = SV / SS with RS = 1, RI = 0
        datasets += classic_series(stored, positions, orientation=AXIAL, series_uid=series_uid, b_value=b,
                                   rescale=(1.0, 0.0), philips_scale_slope=SCALE_SLOPE)
    return datasets


def test_station_adc_from_dicom_pairs_the_b_values_of_the_station() -> None:
    volumes = station_volumes(dwi_station(generate_uid(), 0.0, 1.5e-3))
    adc = sitk.GetArrayFromImage(station_adc(volumes, noise_floor=1.0))
    assert np.isnan(adc[:, 0, :]).all()
    stored_b0, stored_b1000 = np.rint(S0 * SCALE_SLOPE), np.rint(S0 * np.exp(-1.5) * SCALE_SLOPE)
    expected = np.log(stored_b0 / stored_b1000) / 1000.0
    np.testing.assert_allclose(adc[:, 1:, :], expected, rtol=1e-6)


def test_station_adc_needs_two_b_values() -> None:
    volumes = [v for v in station_volumes(dwi_station(generate_uid(), 0.0, 1.5e-3)) if v.b_value == 0.0]
    with pytest.raises(ValueError, match="two b-values"):
        station_adc(volumes)


def test_stitched_adc_of_two_stations_is_nan_where_masked_and_keeps_each_station_s_adc() -> None:
    upper = station_volumes(dwi_station(generate_uid(), 0.0, 1.0e-3))
    lower = station_volumes(dwi_station(generate_uid(), -20.0, 2.0e-3))
    result = stitched_adc([*upper, *lower], noise_floor=1.0)
    values = sitk.GetArrayFromImage(result.image)  # z from -35 to 0 (8 slices), upper station on top
    assert values.shape == (8, 6, 6)
    assert np.isnan(values[:, 0, :]).all()
    assert not np.isinf(values).any()
    body = values[:, 1:, :]
    assert body[-1] == pytest.approx(1.0e-3, rel=0.01)
    assert body[0] == pytest.approx(2.0e-3, rel=0.01)
    np.testing.assert_array_equal(result.source[:, 3, 3], [2] * 4 + [1] * 4)
