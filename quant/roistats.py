"""ROI statistics on native station data, relative T2 against a bone-marrow reference, ADC means.

Everything here works on one station's voxel array and its label array (same shape), or
on per-station statistics. Relative T2 is computed **per station** (muscle mean divided by
the reference marrow mean of the same station, so the station's coil gain cancels) and a
muscle that spans stations is combined by voxel count (DESIGN.md, "Domain facts").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage


@dataclass(frozen=True, kw_only=True)
class RoiStat:
    """Statistics of one label in one station (after erosion)."""

    n: int
    mean: float
    sd: float
    median: float | None = None  # computed for reference (marrow) labels only

    @property
    def reference_level(self) -> float:
        """The value a muscle is divided by when this ROI is its reference: the median — robust against
        the cortex, discs and end plates that survive erosion in small bones such as vertebral bodies
        (bench/accuracy.py: median error of vertebra-referenced muscles 15 % with the mean)."""
        return self.median if self.median is not None else self.mean


@dataclass(kw_only=True)
class MuscleResult:
    """One muscle label's result over all stations it was measured in."""

    value: float  # relative T2 (ratio) or ADC (mm²/s)
    mean_signal: float  # voxel-weighted mean of the muscle signal (T2w a.u.; for ADC the ADC itself)
    sd: float  # pooled within-station SD of the muscle signal
    reference_mean: float | None  # voxel-weighted mean of the reference marrow signal (T2 only)
    n: int  # voxels measured
    stations: list[int]
    references: list[str] = field(default_factory=list)  # reference marrow key used, per station
    flags: list[str] = field(default_factory=list)


def erosion_footprint(spacing_mm: tuple[float, float, float], margin_mm: float) -> np.ndarray:
    """Ellipsoidal structuring element on a grid of ``spacing_mm`` (column, row, slice), as a boolean
    array indexed (slice, row, column): ``margin_mm`` rounded to whole voxels, and at least one voxel
    along every axis — partial volume reaches into the neighbouring voxel whatever its size (5 mm
    slices included)."""
    rc, rr, rs = (max(1, round(margin_mm / s)) for s in spacing_mm)
    zz, yy, xx = np.ogrid[-rs:rs + 1, -rr:rr + 1, -rc:rc + 1]
    return (xx / rc) ** 2 + (yy / rr) ** 2 + (zz / rs) ** 2 <= 1.0 + 1e-9


def erode_labels(labels: np.ndarray, spacing_mm: tuple[float, float, float], margin_mm: float) -> np.ndarray:
    """Labels kept only where the whole structuring element lies inside the same label (0 elsewhere),
    so ROI means avoid partial volume with neighbouring tissue. Voxels at the array border are
    dropped too: their neighbourhood is unknown."""
    if margin_mm <= 0:
        return labels.copy()
    fp = erosion_footprint(spacing_mm, margin_mm)
    lo = ndimage.minimum_filter(labels, footprint=fp, mode="constant", cval=0)
    hi = ndimage.maximum_filter(labels, footprint=fp, mode="constant", cval=255)
    return np.where(lo == hi, labels, 0).astype(labels.dtype)


def roi_stats(data: np.ndarray, labels: np.ndarray, values: Iterable[int] | None = None,
              medians_for: Iterable[int] = ()) -> dict[int, RoiStat]:
    """Mean and SD of ``data`` per label value (NaN voxels ignored), for every non-zero label present;
    also the median for the labels in ``medians_for`` (the reference marrow compartments)."""
    finite = np.isfinite(data)
    lab = labels[finite].astype(np.int64).ravel()
    x = data[finite].astype(np.float64).ravel()
    n = np.bincount(lab, minlength=256)
    s1 = np.bincount(lab, weights=x, minlength=256)
    s2 = np.bincount(lab, weights=x * x, minlength=256)
    wanted = set(values) if values is not None else None
    out: dict[int, RoiStat] = {}
    for v in np.nonzero(n)[0]:
        if v == 0 or (wanted is not None and v not in wanted):
            continue
        mean = s1[v] / n[v]
        var = max(s2[v] / n[v] - mean * mean, 0.0) * n[v] / max(n[v] - 1, 1)
        out[int(v)] = RoiStat(n=int(n[v]), mean=float(mean), sd=float(np.sqrt(var)))
    for label in set(medians_for) & set(out):
        stat = out[label]
        out[label] = RoiStat(n=stat.n, mean=stat.mean, sd=stat.sd, median=float(np.median(x[lab == label])))
    return out


def choose_reference(stats: Mapping[int, Mapping[int, RoiStat]], stations: Iterable[int],
                     marrow: Mapping[str, int], preferred: str | None, min_voxels: int) -> tuple[str, list[int]] | None:
    """One reference marrow compartment for a muscle, and the stations it is measured in.

    Relative T2 values against different bones are not comparable (vertebral red marrow is
    darker than fatty long-bone marrow), so a muscle uses **one** reference in all its
    stations: the preferred one (its atlas default, e.g. the femur for the quadriceps) in the
    stations where both have at least ``min_voxels``; when the preferred one is in none of
    them, the marrow compartment present in most of the muscle's stations (then most voxels).
    """
    stations = list(stations)

    def where(key: str) -> list[int]:
        v = marrow[key]
        return [s for s in stations
                if v in stats[s] and stats[s][v].n >= min_voxels and stats[s][v].reference_level > 0]

    if preferred is not None and preferred in marrow and where(preferred):
        return preferred, where(preferred)
    candidates = [(len(where(k)), sum(stats[s][marrow[k]].n for s in where(k)), k) for k in marrow if where(k)]
    if not candidates:
        return None
    _, _, key = max(candidates)
    return key, where(key)


def relative_t2(stats: Mapping[int, Mapping[int, RoiStat]], muscle: int, marrow: Mapping[str, int],
                preferred: str | None, min_voxels: int,
                station_override: Mapping[int, str] | None = None) -> MuscleResult | None:
    """Relative T2 of one muscle label from per-station statistics ``stats[station][label]``.

    Per station: muscle mean / reference marrow level (median) of that station (its coil gain cancels);
    the reference is chosen by :func:`choose_reference`, or forced per station by
    ``station_override`` (the ``[quant] reference`` setting); stations are combined by muscle
    voxel count. None when the muscle was measurable nowhere.
    """
    measured = [s for s, st in sorted(stats.items()) if muscle in st and st[muscle].n >= min_voxels]
    chosen = choose_reference(stats, measured, marrow, preferred, min_voxels)
    refs: dict[int, str] = {s: chosen[0] for s in chosen[1]} if chosen else {}
    for s, key in (station_override or {}).items():
        if s in measured and key in marrow and marrow[key] in stats[s] and stats[s][marrow[key]].reference_level > 0:
            refs[s] = key
    if not refs:
        return None
    parts = []
    for s in sorted(refs):
        roi, ref = stats[s][muscle], stats[s][marrow[refs[s]]]
        parts.append((s, roi.n, roi.mean / ref.reference_level, roi.mean, roi.sd, ref.reference_level, refs[s]))
    n = np.array([p[1] for p in parts], dtype=float)
    w = n / n.sum()
    return MuscleResult(
        value=float(np.dot(w, [p[2] for p in parts])),
        mean_signal=float(np.dot(w, [p[3] for p in parts])),
        sd=float(np.sqrt(np.dot(w, [p[4] ** 2 for p in parts]))),
        reference_mean=float(np.dot(w, [p[5] for p in parts])),
        n=int(n.sum()),
        stations=[p[0] for p in parts],
        references=[p[6] for p in parts],
    )


def pooled_mean(stats: Mapping[int, Mapping[int, RoiStat]], label: int, min_voxels: int) -> MuscleResult | None:
    """Voxel-weighted mean of one label over stations (ADC: each station's ADC map measured natively)."""
    parts = [(station, st[label]) for station, st in sorted(stats.items())
             if label in st and st[label].n >= min_voxels]
    if not parts:
        return None
    n = np.array([p.n for _, p in parts], dtype=float)
    w = n / n.sum()
    mean = float(np.dot(w, [p.mean for _, p in parts]))
    return MuscleResult(value=mean, mean_signal=mean, sd=float(np.sqrt(np.dot(w, [p.sd ** 2 for _, p in parts]))),
                        reference_mean=None, n=int(n.sum()), stations=[s for s, _ in parts])


def touches_edge(labels: np.ndarray, value: int, axes: Iterable[int] = (0, 1, 2)) -> bool:
    """True when the label reaches the border of the array along any of ``axes`` (0 slice, 1 row,
    2 column) — cut by the field of view. Callers leave out the stitching axis between stations."""
    for axis in axes:
        for index in (0, labels.shape[axis] - 1):
            if bool((np.take(labels, index, axis=axis) == value).any()):
                return True
    return False
