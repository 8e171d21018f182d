"""Stations → one whole-body volume on a common grid, feathered in the overlaps.

The stitched volume is for registration and display only. Each station has its own coil
loading and intensity scaling, so blending mixes scales in the overlaps: measurements
(relative T2, ADC ROI means) are always made on the native station volumes.

Grid: the output direction and spacing default to the first station's; the grid spans the
union of the stations' fields of view (the physical extent of their voxels, half a voxel
beyond the outer voxel centres). Each station is resampled (linear) onto the part of the
grid its bounding box covers, so the cost grows with the stations' size, not with the
whole-body grid times the number of stations.

Blending: along the stitching axis (the grid axis along which the station centres spread
most: the column direction for coronal stations, the slice normal for axial ones) a
station's weight is its distance (mm) to its nearer edge on that axis. Normalised, two
overlapping stations therefore cross-fade linearly over the overlap; elsewhere the one
covering station has weight 1. Voxels a station has no valid (finite) value for get no
weight from it; where no station has one, the output is ``fill``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

# Resample's default value for points outside a station. Station data are finite or NaN
# (masked), never −inf, so −inf marks "not covered" apart from "covered but masked".
_OUTSIDE = -np.inf
_MIN_WEIGHT = 1e-3  # mm: weight of a covered voxel centre lying exactly on a station edge
_SOURCE_TYPES = (np.uint8, np.uint16, np.uint32, np.uint64)


@dataclass(kw_only=True)
class Stitched:
    """A stitched volume and where each voxel came from.

    ``image``: float32 on the common grid. ``source``: numpy array in SimpleITK's array order
    (slice, row, column) = ``sitk.GetArrayViewFromImage(image)``'s shape; bit ``i`` (value
    ``1 << i``) is set where station ``i`` (its position in the input list) covers the
    voxel; dtype uint8 for up to 8 stations, uint16 up to 16, and so on; 0 = outside all
    stations.
    """

    image: sitk.Image
    source: np.ndarray


@dataclass(frozen=True, kw_only=True)
class _Grid:
    """An output grid: voxel centre i lies at direction @ (start + i·spacing); start, i, spacing per axis."""

    direction: np.ndarray  # 3×3, columns = grid axes in LPS
    spacing: np.ndarray  # mm
    start: np.ndarray  # grid coordinates (mm) of voxel 0's centre
    size: np.ndarray  # voxels per axis (x, y, z)


def _box(image: sitk.Image, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest grid coordinates (mm, along the columns of ``direction``) of an image's voxel extent."""
    size = np.asarray(image.GetSize(), dtype=float)
    corners = np.array(np.meshgrid(*[(-0.5, n - 0.5) for n in size], indexing="ij")).reshape(3, -1).T
    physical = np.asarray([image.TransformContinuousIndexToPhysicalPoint(tuple(c)) for c in corners])
    coordinates = physical @ direction
    return coordinates.min(axis=0), coordinates.max(axis=0)


def _union_grid(boxes: Sequence[tuple[np.ndarray, np.ndarray]], direction: np.ndarray,
                spacing: np.ndarray) -> _Grid:
    """The grid of ``spacing`` whose voxels tile the union of ``boxes``."""
    low = np.min([b[0] for b in boxes], axis=0)
    high = np.max([b[1] for b in boxes], axis=0)
    size = np.maximum(np.ceil((high - low) / spacing - 1e-6), 1).astype(int)
    return _Grid(direction=direction, spacing=spacing, start=low + spacing / 2, size=size)


def _stitching_axis(boxes: Sequence[tuple[np.ndarray, np.ndarray]]) -> int:
    """The grid axis (0, 1, 2) along which the station centres spread most."""
    centres = np.asarray([(lo + hi) / 2 for lo, hi in boxes])
    return int(np.argmax(np.ptp(centres, axis=0))) if len(boxes) > 1 else 2


def _index_range(grid: _Grid, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last grid index (per axis) whose voxel centre lies within [low, high], clipped to the grid."""
    first = np.ceil((low - grid.start) / grid.spacing).astype(int)
    last = np.floor((high - grid.start) / grid.spacing).astype(int)
    return np.clip(first, 0, grid.size - 1), np.clip(last, 0, grid.size - 1)


def _resample(image: sitk.Image, grid: _Grid, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """``image`` resampled (linear) on grid voxels first..last; array (z, y, x), float32, −inf outside."""
    resampler = sitk.ResampleImageFilter()
    resampler.SetOutputDirection(tuple(grid.direction.ravel()))
    resampler.SetOutputSpacing(tuple(float(s) for s in grid.spacing))
    resampler.SetOutputOrigin(tuple(float(v) for v in grid.direction @ (grid.start + first * grid.spacing)))
    resampler.SetSize([int(n) for n in last - first + 1])
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(_OUTSIDE)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampler.Execute(image))


def _ramp(grid: _Grid, axis: int, first: np.ndarray, last: np.ndarray, low: float, high: float) -> np.ndarray:
    """Feather weight along ``axis`` for grid voxels first..last: distance (mm) to the nearer of low/high.

    Shaped to broadcast over a (z, y, x) block.
    """
    coordinate = grid.start[axis] + np.arange(first[axis], last[axis] + 1) * grid.spacing[axis]
    weight = np.maximum(np.minimum(coordinate - low, high - coordinate), _MIN_WEIGHT).astype(np.float32)
    shape = [1, 1, 1]
    shape[2 - axis] = weight.size
    return weight.reshape(shape)


def _source_type(count: int) -> type[np.unsignedinteger]:
    for dtype in _SOURCE_TYPES:
        if count <= np.iinfo(dtype).bits:
            return dtype
    raise ValueError(f"cannot stitch {count} stations: the source bitmask holds at most 64")


def _add_station(volume: sitk.Image, index: int, box: tuple[np.ndarray, np.ndarray], grid: _Grid, axis: int,
                 total: np.ndarray, weights: np.ndarray, source: np.ndarray) -> None:
    """Accumulate one station's weighted values and weights on the grid block it covers; set its source bit."""
    low, high = box
    first, last = _index_range(grid, low, high)
    block = tuple(slice(int(a), int(b) + 1) for a, b in zip(first[::-1], last[::-1]))
    values = _resample(volume, grid, first, last)
    covered = values != _OUTSIDE
    valid = np.isfinite(values)
    values[~valid] = 0.0
    weight = valid * _ramp(grid, axis, first, last, float(low[axis]), float(high[axis]))
    values *= weight
    total[block] += values
    weights[block] += weight
    bits = source[block]
    np.bitwise_or(bits, source.dtype.type(1 << index), out=bits, where=covered)


def _to_image(array: np.ndarray, grid: _Grid) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(tuple(float(v) for v in grid.direction @ grid.start))
    image.SetSpacing(tuple(float(s) for s in grid.spacing))
    image.SetDirection(tuple(float(v) for v in grid.direction.ravel()))
    return image


def stitch(volumes: Sequence[sitk.Image], spacing: tuple[float, float, float] | None = None,
           direction: Sequence[float] | None = None, fill: float = 0.0) -> Stitched:
    """Stitch station images (LPS, mm) onto one grid spanning their union field of view.

    ``spacing`` (mm, along the grid's x, y, z) defaults to the first station's spacing, e.g.
    ``(4, 4, 4)`` for registration; ``direction`` (9 values, row-major, columns = grid axes)
    defaults to the first station's. Voxels no station has valid data for are ``fill``.
    Station values must be finite or NaN (NaN = masked, e.g. in an ADC map).
    """
    if not volumes:
        raise ValueError("stitch needs at least one station")
    first_station = volumes[0]
    grid_direction = np.asarray(direction if direction is not None else first_station.GetDirection(),
                                dtype=float).reshape(3, 3)
    grid_spacing = np.asarray(spacing if spacing is not None else first_station.GetSpacing(), dtype=float)
    boxes = [_box(v, grid_direction) for v in volumes]
    grid = _union_grid(boxes, grid_direction, grid_spacing)
    axis = _stitching_axis(boxes)
    shape = tuple(int(n) for n in grid.size[::-1])
    total = np.zeros(shape, dtype=np.float32)
    weights = np.zeros(shape, dtype=np.float32)
    source = np.zeros(shape, dtype=_source_type(len(volumes)))
    for index, (volume, box) in enumerate(zip(volumes, boxes)):
        _add_station(volume, index, box, grid, axis, total, weights, source)
    np.divide(total, weights, out=total, where=weights > 0)
    total[weights == 0] = fill
    del weights  # free it before the image copy
    return Stitched(image=_to_image(total, grid), source=source)
