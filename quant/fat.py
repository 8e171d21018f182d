"""Dixon fat fraction per muscle: the field's standard muscle MRI biomarker, beside the paper's relative T2.

Where a protocol has Dixon water and fat images (any vendor's: the series kinds ``dixon_water`` and ``dixon_fat``),
each voxel's signal fat fraction is F / (W + F), in percent. The noise floor is handled by leaving out every voxel
whose W + F is not above it (background, cortical bone, air: their fraction is the ratio of two noise values): the
floor is :func:`quant.adc.estimate_noise_floor` of W + F (three times the quietest corner's median).

A muscle's fat fraction is measured over the very ROI its relative T2 is measured on: each T2 station's eroded
labels are carried onto each Dixon station through the Frame of Reference the images share (the caller checks that
they do), a Dixon voxel taking the label of the T2 voxel it lies in, and only within that T2 slice
(:func:`t2_rois_on`) — with sparse T2 slices (a calf protocol's 7 mm slices 37 mm apart) the labels between the
slices are an interpolation no image confirmed, and the erosion that keeps the T2 ROI off its neighbours (and off
a station's first and last slices) keeps the Dixon's off them too. Stations combine by voxel count. No I/O here.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from quant.adc import estimate_noise_floor
from quant.roistats import MuscleResult, pooled_mean, roi_stats
from quant.volumes import StationVolume, head_first, same_grid

# A Dixon image with fewer distinct values than this holds no picture (a magnitude image of a body has hundreds):
# scanners export such series beside the real ones (the myoqmri exam's 017 and 019 store 2047–2048 throughout).
MIN_DISTINCT_VALUES = 16
GEOMETRY_TOLERANCE_MM = 0.01


@dataclass(frozen=True, kw_only=True)
class DixonStation:
    """The water and fat images of one Dixon station (one grid)."""

    water: StationVolume
    fat: StationVolume

    @property
    def image(self) -> sitk.Image:
        return self.water.image


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return same_grid(a, b, position_mm=GEOMETRY_TOLERANCE_MM, spacing_mm=GEOMETRY_TOLERANCE_MM)


def is_flat(volume: StationVolume) -> bool:
    """True when the image holds no picture: fewer than :data:`MIN_DISTINCT_VALUES` distinct values."""
    return len(np.unique(sitk.GetArrayViewFromImage(volume.image))) < MIN_DISTINCT_VALUES


def dixon_stations(water: Sequence[StationVolume], fat: Sequence[StationVolume]
                   ) -> tuple[list[DixonStation], list[str]]:
    """Pairs of water and fat images on the same grid, head first, and what was left out and why: a series that
    holds no picture (:func:`is_flat`), an image with no partner on its grid, a second pair on a grid already
    paired (the first series, by Series Instance UID, is kept)."""
    warnings: list[str] = []
    usable: dict[str, list[StationVolume]] = {"water": [], "fat": []}
    for kind, volumes in (("water", water), ("fat", fat)):
        for v in volumes:
            if is_flat(v):
                warnings.append(f"Dixon {kind} series {v.series_uid}: holds no image (fewer than {MIN_DISTINCT_VALUES} "
                                "distinct values); not used")
            else:
                usable[kind].append(v)
    pairs: list[DixonStation] = []
    unpaired_fat = sorted(usable["fat"], key=lambda v: v.series_uid)
    for w in sorted(usable["water"], key=lambda v: v.series_uid):
        partner = next((f for f in unpaired_fat if _same_grid(w.image, f.image)), None)
        if partner is None:
            warnings.append(f"Dixon water series {w.series_uid}: no fat image on its grid; not used")
            continue
        unpaired_fat = [f for f in unpaired_fat if f is not partner]  # by identity: == would compare the images
        if any(_same_grid(p.image, w.image) for p in pairs):
            warnings.append(f"Dixon series {w.series_uid} and {partner.series_uid}: a second water/fat pair on a "
                            "grid already measured; not used")
            continue
        pairs.append(DixonStation(water=w, fat=partner))
    warnings += [f"Dixon fat series {f.series_uid}: no water image on its grid; not used" for f in unpaired_fat]
    order = {id(v): i for i, v in enumerate(head_first(p.water for p in pairs))}
    return sorted(pairs, key=lambda p: order[id(p.water)]), warnings


def fat_fraction_map(station: DixonStation) -> np.ndarray:
    """Signal fat fraction F / (W + F) in percent per voxel (slice, row, column); NaN where W + F is not above the
    noise floor."""
    water = sitk.GetArrayViewFromImage(station.water.image).astype(np.float64)
    fat = sitk.GetArrayViewFromImage(station.fat.image).astype(np.float64)
    total = water + fat
    floor = max(estimate_noise_floor(total), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ff = np.where(total > floor, 100.0 * fat / total, np.nan)
    return ff.astype(np.float32)


def _voxel_points(grid: sitk.Image, k: int) -> np.ndarray:
    """Physical points (n, 3) of every voxel of slice ``k`` of ``grid``."""
    size = grid.GetSize()
    jj, ii = np.mgrid[0:size[1], 0:size[0]]
    index = np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k)], axis=1).astype(np.float64)
    m = np.asarray(grid.GetDirection()).reshape(3, 3) @ np.diag(grid.GetSpacing())
    return np.asarray(grid.GetOrigin()) + index @ m.T


def t2_rois_on(grid: sitk.Image, t2: Sequence[StationVolume], rois: Sequence[np.ndarray]) -> np.ndarray:
    """The T2 stations' ROIs (``rois``: per station, its eroded label array as measured) on ``grid`` (slice, row,
    column): a voxel takes the label of the T2 voxel it lies in — nearest in-plane, and only within half a slice
    (the Slice Thickness, or the step if thinner or not given) of that slice's plane, so the gaps between sparse
    slices stay empty. The first station that holds a voxel gives its label."""
    size = grid.GetSize()
    out = np.zeros((size[2], size[1], size[0]), dtype=np.uint8)
    stations = []
    for vol, roi in zip(t2, rois, strict=True):
        img = vol.image
        m = np.asarray(img.GetDirection()).reshape(3, 3) @ np.diag(img.GetSpacing())
        step = img.GetSpacing()[2]
        half = 0.5 * min(vol.slice_thickness_mm or step, step) / step  # in slice index units
        stations.append((np.linalg.inv(m), np.asarray(img.GetOrigin()), roi, half))
    for k in range(size[2]):
        points = _voxel_points(grid, k)
        labels = np.zeros(points.shape[0], dtype=np.uint8)
        for inverse, origin, roi, half in stations:
            idx = (points - origin) @ inverse.T
            nearest = np.rint(idx).astype(np.int64)
            inside = ((nearest >= 0).all(axis=1) & (nearest[:, 0] < roi.shape[2]) & (nearest[:, 1] < roi.shape[1])
                      & (nearest[:, 2] < roi.shape[0]) & (np.abs(idx[:, 2] - nearest[:, 2]) <= half + 1e-6)
                      & (labels == 0))
            hit = np.flatnonzero(inside)
            labels[hit] = roi[nearest[hit, 2], nearest[hit, 1], nearest[hit, 0]]
        out[k] = labels.reshape(size[1], size[0])
    return out


def muscle_fat_fractions(stations: Sequence[DixonStation], t2: Sequence[StationVolume], rois: Sequence[np.ndarray],
                         label_values: Collection[int], *, min_voxels: int) -> dict[int, MuscleResult]:
    """Fat fraction (%: value, pooled SD, voxels, stations) of every label value in ``label_values`` measurable in at
    least one Dixon station (stations numbered head first from 1), over the T2 ROIs (``rois``, see
    :func:`t2_rois_on`), combined over stations by voxel count (:func:`quant.roistats.pooled_mean`)."""
    stats = {index: roi_stats(fat_fraction_map(st), t2_rois_on(st.image, t2, rois))
             for index, st in enumerate(stations, start=1)}
    found = {value: pooled_mean(stats, value, min_voxels) for value in label_values}
    return {value: res for value, res in found.items() if res is not None}
