"""The synthetic scanner: from a placed label volume and a disease state to reconstructed station images.

For each sequence the tissue signal is painted on the truth grid, blurred to the
sequence's slice profile (partial volume), sampled onto every station's voxel grid, then
multiplied by the station's receive profile (a smooth bias, fixed in the station's frame:
brighter posteriorly near the table coils, falling off towards the station's ends along z)
and by the station's **coil-loading gain** (random per station per visit — what bone-marrow
normalisation has to cancel), and finally given Rician noise.

Alongside the images it returns the truth the images were made from: gains, and per station
and label the noise-free mean signal (tissue signal × gain × mean receive bias over the
label's voxels in that station), so accuracy can be judged per station.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from phantom.contrast import (
    DIXON_PD,
    T2_ECHO_MS,
    MuscleState,
    dixon_lookup_tables,
    echo_lookup_table,
    fat_fraction_table,
    lookup_tables,
)
from phantom.geometry import Layout, Size, Station, stations
from phantom.images import StationImage

B_LOW, B_HIGH = 0.0, 1000.0  # s/mm²


@dataclass(frozen=True, kw_only=True)
class ScanSettings:
    """Acquisition settings a test or the CLI may change."""

    size: Size = "full"
    layout: Layout = "whole_body"  # or "lower_limbs": two axial T2 stations (thigh, calf) with gaps, no DWI
    snr_t2: float = 30.0  # healthy muscle signal / noise SD, at gain 1
    snr_dwi: float = 20.0  # healthy muscle b0 signal / noise SD, at gain 1
    gain_range: tuple[float, float] = (0.8, 1.25)
    scanner_derived: bool = False  # also send the scanner's isotropic (trace) and ADC images
    # a multi-echo spin echo instead of the single-echo T2w FSE: its echo times (ms), 80 among them (the echo the
    # truth's T2w signal is given at); empty: the paper's FSE at 80 ms
    echoes_ms: tuple[float, ...] = ()
    dixon: bool = False  # also a two-point Dixon (water and fat images) on the T2 stations' grids
    snr_dixon: float = 100.0  # healthy muscle water signal / noise SD, at gain 1

    def __post_init__(self) -> None:
        if self.echoes_ms:
            if any(e <= 0 for e in self.echoes_ms) or len(set(self.echoes_ms)) != len(self.echoes_ms):
                raise ValueError(f"echo times must be distinct and positive, got {list(self.echoes_ms)}")
            if T2_ECHO_MS not in self.echoes_ms:
                raise ValueError(f"the echo times must include {T2_ECHO_MS:g} ms (the T2-weighted echo the truth "
                                 f"is given at), got {list(self.echoes_ms)}")


@dataclass(kw_only=True)
class Acquisition:
    t2: list[StationImage]
    dwi: list[StationImage]
    gains: dict[str, list[float]]  # sequence → gain per station (index 1 first)
    dixon: list[StationImage] = field(default_factory=list)
    fat_fraction: dict[int, float] = field(default_factory=dict)  # label value → true fat fraction (%), with Dixon
    # sequence → station index → label value → noise-free mean signal (T2w; DWI b0)
    truth_signal: dict[str, dict[int, dict[int, float]]] = field(default_factory=dict)
    # station index → label value → voxel count of the label in that station's grid
    truth_voxels: dict[str, dict[int, dict[int, int]]] = field(default_factory=dict)


def station_coordinates(st: Station) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World x, y, z (mm) of every voxel centre, as arrays broadcastable to (slices, rows, columns)."""
    d = np.asarray(st.direction).reshape(3, 3)
    idx = [np.arange(n) * s for n, s in zip(st.size, st.spacing)]  # columns, rows, slices
    shapes = [(1, 1, -1), (1, -1, 1), (-1, 1, 1)]
    out: list[np.ndarray] = []
    for axis in range(3):
        total: np.ndarray = np.asarray(st.origin[axis], dtype=np.float32)  # 0-d; broadcasts like the scalar
        for a in range(3):
            total = total + (d[axis, a] * idx[a]).astype(np.float32).reshape(shapes[a])
        out.append(total)
    return out[0], out[1], out[2]


def receive_bias(st: Station) -> np.ndarray:
    """Smooth multiplicative receive profile over the station's voxels (≈ 0.85–1.1)."""
    x, y, z = station_coordinates(st)
    zmin, zmax = st.z_range()
    zc, half = (zmin + zmax) / 2.0, max((zmax - zmin) / 2.0, 1.0)
    return ((1.0 + 0.06 * y / 150.0) * (1.0 - 0.05 * (x / 200.0) ** 2)
            * (1.0 - 0.08 * ((z - zc) / half) ** 2)).astype(np.float32)


def _blur(img: sitk.Image, fwhm_mm: tuple[float, float, float]) -> sitk.Image:
    """Gaussian blur per world axis to a target resolution (FWHM, mm), given the grid's own resolution."""
    own = img.GetSpacing()[0]
    for axis, fwhm in enumerate(fwhm_mm):
        extra = fwhm * fwhm - own * own
        if extra > 0:
            sigma = float(np.sqrt(extra) / 2.3548)
            img = sitk.RecursiveGaussian(img, sigma=sigma, direction=axis)
    return img


def _resolution(st: Station) -> tuple[float, float, float]:
    """The station's resolution along world x, y, z (mm): its pixels, and its slice thickness across slices."""
    d = np.abs(np.asarray(st.direction).reshape(3, 3))
    across = st.thickness_mm if st.thickness_mm is not None else st.spacing[2]
    return tuple(float(d[axis] @ np.asarray([st.spacing[0], st.spacing[1], across]))  # type: ignore[return-value]
                 for axis in range(3))


def _sample(world: sitk.Image, st: Station, interpolator: int = sitk.sitkLinear) -> np.ndarray:
    out = sitk.Resample(world, st.reference(), sitk.Transform(), interpolator, 0.0,
                        sitk.sitkFloat32 if interpolator != sitk.sitkNearestNeighbor else sitk.sitkUInt8)
    return sitk.GetArrayFromImage(out)


def _rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    re = signal + rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    im = rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    return np.sqrt(re * re + im * im, dtype=np.float32)


def _label_means(labels: np.ndarray, weights: np.ndarray) -> tuple[dict[int, float], dict[int, int]]:
    counts = np.bincount(labels.ravel(), minlength=256)
    sums = np.bincount(labels.ravel(), weights=weights.ravel().astype(np.float64), minlength=256)
    means = {int(v): float(sums[v] / counts[v]) for v in np.nonzero(counts)[0] if v != 0}
    return means, {int(v): int(counts[v]) for v in np.nonzero(counts)[0] if v != 0}


def _world(labels: sitk.Image, table: np.ndarray) -> sitk.Image:
    arr = table[sitk.GetArrayViewFromImage(labels)]
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(labels)
    return img


def acquire(labels: sitk.Image, state: MuscleState, settings: ScanSettings,
            rng: np.random.Generator) -> Acquisition:
    """Scan one visit: T2 stations, then DWI stations at b = 0 and 1000 s/mm²."""
    t2_lut, s0_lut, adc_lut = lookup_tables(state)
    t2_stations = stations("t2", settings.size, settings.layout)
    dwi_stations = stations("dwi", settings.size, settings.layout)
    gains = {"t2": [float(rng.uniform(*settings.gain_range)) for _ in t2_stations],
             "dwi": [float(rng.uniform(*settings.gain_range)) for _ in dwi_stations]}
    acq = Acquisition(t2=[], dwi=[], gains=gains, truth_signal={"t2": {}, "dwi": {}}, truth_voxels={"t2": {}, "dwi": {}})
    muscle_t2 = float(t2_lut[4])  # "other muscle": the healthy reference level for SNR
    muscle_s0 = float(s0_lut[4])

    resolution = _resolution(t2_stations[0])
    for n, echo in enumerate(settings.echoes_ms or (None,)):  # the noise is the same on every echo's scale: σ at 80 ms
        lut = t2_lut if echo is None else echo_lookup_table(state, echo)
        world_t2 = _blur(_world(labels, lut), resolution)
        for st, gain in zip(t2_stations, gains["t2"]):
            bias = receive_bias(st) * np.float32(gain)
            if n == 0:  # the truth: the noise-free T2w signal (80 ms) of every label, once per station
                lab = _sample(labels, st, sitk.sitkNearestNeighbor)
                truth, counts = _label_means(lab, t2_lut[lab] * bias)
                acq.truth_signal["t2"][st.index], acq.truth_voxels["t2"][st.index] = truth, counts
            clean = _sample(world_t2, st) * bias
            acq.t2.append(StationImage(station=st, data=_rician(clean, muscle_t2 * gain / settings.snr_t2, rng),
                                       echo_time_ms=echo))
        del world_t2
    if settings.dixon:
        water_lut, fat_lut = dixon_lookup_tables(state)
        acq.fat_fraction = {v: round(100.0 * float(ff), 6) for v, ff in enumerate(fat_fraction_table(state))
                            if water_lut[v] + fat_lut[v] > 0}
        for kind, table in (("water", water_lut), ("fat", fat_lut)):
            world = _blur(_world(labels, table), resolution)
            for st, gain in zip(t2_stations, gains["t2"]):
                sigma = DIXON_PD["muscle"] * gain / settings.snr_dixon
                clean = _sample(world, st) * (receive_bias(st) * np.float32(gain))
                acq.dixon.append(StationImage(station=st, data=_rician(clean, sigma, rng), kind=kind))  # type: ignore[arg-type]
            del world

    if not dwi_stations:  # a legs-only protocol
        return acq
    dwi_res = _resolution(dwi_stations[0])
    world_b0 = _blur(_world(labels, s0_lut), dwi_res)
    decay = np.exp(-B_HIGH * adc_lut).astype(np.float32)
    world_b1000 = _blur(_world(labels, s0_lut * decay), dwi_res)
    for st, gain in zip(dwi_stations, gains["dwi"]):
        bias = receive_bias(st) * np.float32(gain)
        lab = _sample(labels, st, sitk.sitkNearestNeighbor)
        truth, counts = _label_means(lab, s0_lut[lab] * bias)
        acq.truth_signal["dwi"][st.index], acq.truth_voxels["dwi"][st.index] = truth, counts
        sigma = muscle_s0 * gain / settings.snr_dwi
        b0 = _rician(_sample(world_b0, st) * bias, sigma, rng)
        # The scanner's b1000 is the isotropic combination of three directions: noise SD / √3.
        b1000 = _rician(_sample(world_b1000, st) * bias, sigma / np.sqrt(3.0), rng)
        acq.dwi.append(StationImage(station=st, data=b0, b_value=B_LOW))
        acq.dwi.append(StationImage(station=st, data=b1000, b_value=B_HIGH))
        if settings.scanner_derived:
            acq.dwi.append(StationImage(station=st, data=b1000.copy(), b_value=B_HIGH, kind="trace"))
            acq.dwi.append(StationImage(station=st, data=scanner_adc(b0, b1000, sigma), kind="adc"))
    return acq


def scanner_adc(b0: np.ndarray, b1000: np.ndarray, sigma: float) -> np.ndarray:
    """The scanner's own ADC image as Philips stores it (mm²/s × 1e6, 0 where the b0 is noise)."""
    valid = (b0 > 3.0 * sigma) & (b1000 > 0)
    out = np.zeros_like(b0)
    out[valid] = np.log(b0[valid] / b1000[valid]) / (B_HIGH - B_LOW) * 1e6
    return np.clip(out, 0.0, 4000.0)
