"""Regional refinement: register small parts of the atlas again, locally and finely, after the whole body.

One whole-body deformation on a 4 mm grid places the hands only to within a few
millimetres — as much as a hand muscle's radius (bench/accuracy.py: hand Dice 0.42–0.72,
scan–rescan CoV up to 23 %). An atlas may carry finer templates of such parts
(:class:`quant.atlas.AtlasRegion`); for each, this module

1. finds the part on the subject where the whole-body result put it (bounding box of its
   labels plus a margin),
2. samples the subject's native T2 stations on a fine grid over that box,
3. carries the regional template and labels there with the whole-body transform (so the
   local problem starts close to the answer), and
4. registers the fine subject patch to that pre-warped template (elastix, affine then a
   dense B-spline, no centre-of-gravity initialisation), and pastes the resulting labels
   of the region's refined values into the subject label volume.

The two label resamplings happen on the fine grid, below the 2 mm of the subject label volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from quant.atlas import AtlasRegion
from quant.params import RegionParams
from quant.register import Transform, register, registration_maps, resample, warp_labels

_OUTSIDE = -1.0  # stations are magnitude images (≥ 0): below zero marks "no station here"


@dataclass(kw_only=True)
class RegionResult:
    labels: sitk.Image  # the subject label volume with the region's labels replaced
    transform: Transform  # pre-warped regional template → subject patch (box grid)
    changed_voxels: int


def label_box(labels: sitk.Image, values: Sequence[int], margin_mm: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Physical bounding box (lo, hi corners, mm) of the voxels of ``labels`` with any of ``values``,
    grown by ``margin_mm``; None when none is there. ``labels`` must be axis-aligned (identity direction)."""
    idx = np.argwhere(np.isin(sitk.GetArrayViewFromImage(labels), list(values)))
    if idx.size == 0:
        return None
    spacing, origin = np.asarray(labels.GetSpacing()), np.asarray(labels.GetOrigin())
    lo = origin + idx.min(axis=0)[::-1] * spacing - margin_mm
    hi = origin + idx.max(axis=0)[::-1] * spacing + margin_mm
    return lo, hi


def box_grid(lo: np.ndarray, hi: np.ndarray, spacing_mm: float) -> sitk.Image:
    """An axis-aligned float32 grid of ``spacing_mm`` from ``lo`` covering ``hi``."""
    grid = sitk.Image([int(np.ceil(v)) + 1 for v in (hi - lo) / spacing_mm], sitk.sitkFloat32)
    grid.SetOrigin(tuple(float(v) for v in lo))
    grid.SetSpacing((spacing_mm,) * 3)
    return grid


def subject_patch(stations: Sequence[sitk.Image], scales: Sequence[float], grid: sitk.Image) -> sitk.Image:
    """The native T2 stations (each times its normalising scale, so gains match) sampled linearly on
    ``grid``; where stations overlap, their mean. Voxels no station covers are 0."""
    total = np.zeros(grid.GetSize()[::-1], dtype=np.float32)
    count = np.zeros_like(total)
    for image, scale in zip(stations, scales):
        arr = sitk.GetArrayFromImage(sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, _OUTSIDE,
                                                   sitk.sitkFloat32))
        inside = arr > _OUTSIDE / 2
        total[inside] += arr[inside] * scale
        count[inside] += 1
    np.divide(total, count, out=total, where=count > 0)
    out = sitk.GetImageFromArray(total)
    out.CopyInformation(grid)
    return out


def paste(labels: sitk.Image, refined: sitk.Image, values: Sequence[int]) -> tuple[sitk.Image, int]:
    """``labels`` with the block under ``refined`` (same spacing, axis-aligned, inside ``labels``) updated:
    voxels ``refined`` gives one of ``values`` take it; voxels that were one of ``values`` but no longer
    are take ``refined``'s label (the tissue around the muscle there). Returns the image and the
    number of voxels changed."""
    start = labels.TransformPhysicalPointToIndex(refined.GetOrigin())
    size = refined.GetSize()
    arr = sitk.GetArrayFromImage(labels)
    block = arr[start[2]:start[2] + size[2], start[1]:start[1] + size[1], start[0]:start[0] + size[0]]
    new = sitk.GetArrayViewFromImage(refined)[:block.shape[0], :block.shape[1], :block.shape[2]]
    region = np.isin(new, values) | np.isin(block, values)
    changed = int(np.count_nonzero(block[region] != new[region]))
    block[region] = new[region]
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(labels)
    return out, changed


def label_block(labels: sitk.Image, lo: np.ndarray, hi: np.ndarray) -> sitk.Image | None:
    """The part of the label grid covering [lo, hi] (clipped to the grid), as an empty image of its geometry."""
    first = np.maximum(np.floor((lo - np.asarray(labels.GetOrigin())) / labels.GetSpacing()).astype(int), 0)
    last = np.minimum(np.ceil((hi - np.asarray(labels.GetOrigin())) / labels.GetSpacing()).astype(int),
                      np.asarray(labels.GetSize()) - 1)
    if np.any(last < first):
        return None
    block = sitk.Image([int(v) for v in last - first + 1], sitk.sitkUInt8)
    block.SetOrigin(labels.TransformIndexToPhysicalPoint([int(v) for v in first]))
    block.SetSpacing(labels.GetSpacing())
    block.SetDirection(labels.GetDirection())
    return block


def refine_region(stations: Sequence[sitk.Image], scales: Sequence[float], subject_labels: sitk.Image,
                  atlas_tf: Transform, region: AtlasRegion, settings: RegionParams = RegionParams()
                  ) -> RegionResult | None:
    """Register one atlas region locally and paste its refined labels (module docstring); None when the
    whole-body result has none of the region's labels or no station covers them (e.g. the hand is
    outside the field of view). Elastix's own failures raise RuntimeError."""
    box = label_box(subject_labels, region.refine, settings.margin_mm)
    if box is None:
        return None
    # No finer than the stations' own pixels: a coarse (e.g. --size small) series gains nothing below them.
    spacing = max(settings.spacing_mm, min(min(img.GetSpacing()) for img in stations))
    grid = box_grid(*box, spacing)
    block = label_block(subject_labels, *box)
    if block is None:
        return None
    fixed = subject_patch(stations, scales, grid)
    if not np.any(sitk.GetArrayViewFromImage(fixed)):
        return None  # no station covers the part
    moving = resample(region.template, atlas_tf, grid)
    moving_labels = warp_labels(region.labels, atlas_tf, grid)
    maps = registration_maps(deformable=True, grid_mm=settings.grid_mm, iterations=settings.iterations, resolutions=settings.resolutions, initialise=False)
    local = register(fixed, moving, maps)
    refined = warp_labels(moving_labels, local, block)
    labels, changed = paste(subject_labels, refined, region.refine)
    return RegionResult(labels=labels, transform=local, changed_voxels=changed)
