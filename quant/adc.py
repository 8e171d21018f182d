"""Apparent diffusion coefficient from two b-values: ADC = ln(S_low / S_high) / (b_high − b_low).

b-values in s/mm², ADC in mm²/s (muscle ≈ 1.5e-3). Voxels without a meaningful estimate
are NaN, never ±inf:

- either signal at or below the noise floor (background, or signal lost in the noise at
  b_high), or not finite;
- S_high > S_low: a negative ADC, physically impossible (S_high = S_low gives ADC 0).

Masking S_high > S_low (rather than keeping small negative values) drops noise-driven
voxels in tissue with very low ADC; muscle ROIs are far from that regime.

Default noise floor: ``NOISE_FLOOR_FACTOR`` × the median of S_low in the lowest-intensity
in-plane corner of the field of view (the four corner blocks of ``CORNER_FRACTION`` of the
rows and columns, through all slices; the one with the lowest median). In a whole-body
axial station the corners are air, whose magnitude noise is Rayleigh with median ≈ 1.18σ, so
the floor is ≈ 3.5σ and keeps ≈ 0.2 % of pure-noise voxels. Pass ``noise_floor`` when the
corners are not air (small field of view, ghosting).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast, overload

import numpy as np
import SimpleITK as sitk

from quant.stitch import Stitched, stitch
from quant.volumes import StationVolume

CORNER_FRACTION = 0.125  # of the rows and of the columns
NOISE_FLOOR_FACTOR = 3.0
GEOMETRY_TOLERANCE = 1e-4  # mm / direction cosines: b-value volumes of a station share one grid


def estimate_noise_floor(signal: np.ndarray) -> float:
    """Noise floor (signal units) of an array (…, rows, columns): NOISE_FLOOR_FACTOR × median of its quietest corner."""
    if signal.ndim < 2:
        raise ValueError("the noise floor is estimated from in-plane corners: pass an image or noise_floor")
    rows, columns = (max(1, int(n * CORNER_FRACTION)) for n in signal.shape[-2:])
    corners = [signal[..., r, c] for r in (slice(None, rows), slice(-rows, None))
               for c in (slice(None, columns), slice(-columns, None))]
    return NOISE_FLOOR_FACTOR * min(float(np.nanmedian(corner)) for corner in corners)


def _adc_array(s_low: np.ndarray, s_high: np.ndarray, b_low: float, b_high: float,
               noise_floor: float | None) -> np.ndarray:
    """ADC (mm²/s, float32) of two signal arrays of one shape; NaN where masked."""
    low = np.asarray(s_low, dtype=np.float64)
    high = np.asarray(s_high, dtype=np.float64)
    if low.shape != high.shape:
        raise ValueError(f"S_low has shape {low.shape}, S_high {high.shape}")
    # Each image against its own floor: the high-b image's noise is lower when the scanner averages directions.
    floor_low = max(estimate_noise_floor(low) if noise_floor is None else noise_floor, 0.0)
    floor_high = max(estimate_noise_floor(high) if noise_floor is None else noise_floor, 0.0)
    with np.errstate(invalid="ignore"):  # NaN inputs compare False: masked below
        valid = (low > floor_low) & (high > floor_high) & (high <= low)
    adc = np.full(low.shape, np.nan, dtype=np.float32)
    adc[valid] = np.log(low[valid] / high[valid]) / (b_high - b_low)
    return adc


@overload
def adc_map(s_low: np.ndarray, s_high: np.ndarray, b_low: float, b_high: float,
            noise_floor: float | None = None) -> np.ndarray: ...


@overload
def adc_map(s_low: sitk.Image, s_high: sitk.Image, b_low: float, b_high: float,
            noise_floor: float | None = None) -> sitk.Image: ...


def adc_map(s_low: np.ndarray | sitk.Image, s_high: np.ndarray | sitk.Image, b_low: float, b_high: float,
            noise_floor: float | None = None) -> np.ndarray | sitk.Image:
    """ADC map (mm²/s, float32) from signals at b_low < b_high (s/mm²); NaN where masked (see module doc).

    Arrays in, array out; SimpleITK images in (same grid), image out with S_low's geometry.
    ``noise_floor`` is in signal units; None estimates it from S_low's background.
    """
    if not b_high > b_low:
        raise ValueError(f"b_high ({b_high}) must exceed b_low ({b_low}) s/mm²")
    if isinstance(s_low, sitk.Image):
        adc = _adc_array(sitk.GetArrayViewFromImage(s_low), sitk.GetArrayViewFromImage(cast(sitk.Image, s_high)),
                         b_low, b_high, noise_floor)
        image = sitk.GetImageFromArray(adc)
        image.CopyInformation(s_low)
        return image
    return _adc_array(s_low, cast(np.ndarray, s_high), b_low, b_high, noise_floor)


def _check_same_grid(a: StationVolume, b: StationVolume) -> None:
    for name in ("GetSize", "GetOrigin", "GetSpacing", "GetDirection"):
        if not np.allclose(getattr(a.image, name)(), getattr(b.image, name)(), rtol=0.0, atol=GEOMETRY_TOLERANCE):
            raise ValueError(f"station {a.station_key}: b={a.b_value} and b={b.b_value} volumes differ in "
                             f"{name[3:].lower()}: {getattr(a.image, name)()} vs {getattr(b.image, name)()}")


def station_adc(volumes: Sequence[StationVolume], noise_floor: float | None = None) -> sitk.Image:
    """ADC map (mm²/s) of one station from its volumes at the lowest and highest b-value."""
    pairs = sorted(((b, v) for v in volumes if (b := v.b_value) is not None), key=lambda pair: pair[0])
    if len({b for b, _ in pairs}) < 2:
        keys = sorted({v.station_key for v in volumes})
        raise ValueError(f"station {keys}: ADC needs two b-values, has {[b for b, _ in pairs]}")
    (b_low, low), (b_high, high) = pairs[0], pairs[-1]
    _check_same_grid(low, high)
    return adc_map(low.image, high.image, b_low, b_high, noise_floor)


def by_station(volumes: Sequence[StationVolume]) -> dict[str, list[StationVolume]]:
    """A DWI exam's volumes grouped by station key (each group: that station's b-values)."""
    stations: dict[str, list[StationVolume]] = {}
    for volume in volumes:
        stations.setdefault(volume.station_key, []).append(volume)
    return stations


def stitched_adc(volumes: Sequence[StationVolume], spacing: tuple[float, float, float] | None = None,
                 noise_floor: float | None = None) -> Stitched:
    """Per-station ADC maps of a DWI exam (volumes grouped by station key), stitched; NaN where masked or outside."""
    maps = [station_adc(group, noise_floor) for group in by_station(volumes).values()]
    return stitch(maps, spacing=spacing, fill=float("nan"))
