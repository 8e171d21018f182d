"""Atlas labels for a protocol that scans part of the body (a leg protocol): per station, per leg, the atlas region
the station holds registered to it alone.

The whole-body registration (``quant.pipeline.quantify``) stitches every station and registers the whole atlas
to it; for a field of view that holds only the calves (or thighs and calves), with slices tens of millimetres
apart, that fails: the atlas's trunk and arms have nothing to match, and a stitched grid interpolates across
the gaps. Here instead, for each T2 station (head first) and the muscles the protocol says it holds
(:data:`storage.catalogue.PROFILE_STATIONS`):

1. the station is split at the gap between the legs (the two largest parts of its body mask), each leg cut to
   its body's rows, and registered on its own — the legs of a real patient are not placed as the atlas's are;
2. the atlas is cropped to that side's muscles of the station (with a margin), so the registration only
   sees the region the station holds — where in the atlas the field lies is given by the protocol;
3. elastix registers the cropped atlas to the leg (affine, then B-spline with control points every
   ``grid_mm`` in-plane and at least twice the slice spacing along the slices), the image pyramid never
   shrinking the few slices along their axis;
4. the side's labels (muscles and marrow) are carried onto ``reference`` (the subject's label grid);
5. each piece of a marrow label (one label may hold both tibiae) is refined on the images
   (:func:`refine_marrow`): a marrow cavity is a few millimetres across, a registration error of that size puts
   its label on cortex, and the relative T2's reference with it.

Measured on a real Siemens calf exam (myoqmri's volunteer, 8 slices 37 mm apart; ``bench/real_calves.py``,
``tests/node/test_real_exams.py``): over each eroded ROI the exam's own Dixon fat fraction is 2.4–5.6 %, all of it
in its own leg; with the marrow refined the relative T2 is 0.19–0.26 (muscle at TE 77 ms against fat marrow),
without it the label lay partly on cortex (1.0–1.4, flagged ``reference_out_of_range``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from quant.atlas import Atlas
from quant.register import Transform, register, registration_maps, warp_labels
from quant.volumes import StationVolume, VolumeError

MARGIN_IN_PLANE_MM = 30.0
MARGIN_ALONG_MM = 40.0
SIDES = ("left", "right")


@dataclass(frozen=True, kw_only=True)
class PartialLabels:
    labels: sitk.Image  # on the reference grid, every side's labels
    transforms: dict[str, Transform]  # "station<i>_<side>" → atlas → that leg
    warnings: list[str]


def leg_midline_x(image: sitk.Image) -> float:
    """x (LPS, mm) of the gap between the legs: halfway between the centres of the two largest parts of the body
    mask (Otsu), projected along the slices. Raises :class:`VolumeError` when the image does not show two legs."""
    body = sitk.GetArrayFromImage(sitk.OtsuThreshold(sitk.Cast(image, sitk.sitkFloat32), 0, 1)) > 0  # above: 1
    mask = ndimage.binary_opening(body.max(axis=0), iterations=2)
    parts, n = ndimage.label(mask)
    if n < 2:
        raise VolumeError("a leg protocol's station shows one body part, not two legs: cannot tell the sides apart")
    sizes = ndimage.sum(mask, parts, range(1, n + 1))
    two = np.argsort(sizes)[-2:] + 1
    if sizes[two[0] - 1] < 0.2 * sizes[two[1] - 1]:
        raise VolumeError("a leg protocol's station shows one large body part: cannot tell the legs apart")
    centres = [ndimage.center_of_mass(parts == label) for label in two]  # (row, column)
    k = (image.GetSize()[2] - 1) / 2.0
    xs = [image.TransformContinuousIndexToPhysicalPoint((float(c[1]), float(c[0]), k))[0] for c in centres]
    return float(np.mean(xs))


LEG_MARGIN_MM = 20.0  # kept around the leg's body (its rows) when a station is cut to one leg


def _leg(image: sitk.Image, midline_x: float, side: str) -> sitk.Image:
    """The half of ``image`` on ``side`` of the patient (LPS: left is +x), by columns, and its rows cut to the body
    (Otsu) with :data:`LEG_MARGIN_MM` around it — a field of view much deeper than the leg would leave most of the
    registration's samples in air, outside the cropped atlas."""
    row = np.asarray(image.GetDirection()).reshape(3, 3)[:, 0]
    if abs(row[0]) < 0.9:
        raise VolumeError("a leg protocol's station must be axial with its rows along the patient's left-right axis")
    columns = image.GetSize()[0]
    xs = np.asarray([image.TransformContinuousIndexToPhysicalPoint((float(i), 0.0, 0.0))[0] for i in range(columns)])
    keep = xs > midline_x if side == "left" else xs < midline_x
    index = np.flatnonzero(keep)
    if index.size < 8:
        raise VolumeError(f"the {side} leg holds {index.size} columns of the station: not enough to register")
    half = sitk.RegionOfInterest(image, [int(index.size), image.GetSize()[1], image.GetSize()[2]],
                                 [int(index.min()), 0, 0])
    body = sitk.GetArrayFromImage(sitk.OtsuThreshold(sitk.Cast(half, sitk.sitkFloat32), 0, 1)) > 0
    rows = np.flatnonzero(body.any(axis=(0, 2)))
    if rows.size == 0:
        return half
    margin = int(np.ceil(LEG_MARGIN_MM / half.GetSpacing()[1]))
    first, last = max(0, int(rows.min()) - margin), min(half.GetSize()[1] - 1, int(rows.max()) + margin)
    return sitk.RegionOfInterest(half, [half.GetSize()[0], last - first + 1, half.GetSize()[2]], [0, first, 0])


def _atlas_region(atlas: Atlas, values: Collection[int]) -> tuple[sitk.Image, sitk.Image]:
    """The atlas template and labels cropped to the bounding box of ``values`` plus the margins."""
    lab = sitk.GetArrayFromImage(atlas.labels)
    zz, yy, xx = np.nonzero(np.isin(lab, list(values)))
    if zz.size == 0:
        raise VolumeError(f"the atlas {atlas.id} has none of the labels {sorted(values)}")
    spacing, origin = np.asarray(atlas.labels.GetSpacing()), np.asarray(atlas.labels.GetOrigin())
    margin = np.asarray([MARGIN_IN_PLANE_MM, MARGIN_IN_PLANE_MM, MARGIN_ALONG_MM])
    lo = np.asarray([xx.min(), yy.min(), zz.min()]) * spacing + origin - margin
    hi = np.asarray([xx.max(), yy.max(), zz.max()]) * spacing + origin + margin

    def crop(image: sitk.Image) -> sitk.Image:
        sp, og, size = np.asarray(image.GetSpacing()), np.asarray(image.GetOrigin()), np.asarray(image.GetSize())
        first = np.maximum(0, np.floor((lo - og) / sp)).astype(int)
        last = np.minimum(size - 1, np.ceil((hi - og) / sp)).astype(int)
        return sitk.RegionOfInterest(image, [int(v) for v in last - first + 1], [int(v) for v in first])

    return crop(atlas.template), crop(atlas.labels)


def partial_maps(slice_spacing_mm: float, grid_mm: float, iterations: int) -> list[dict[str, list[str]]]:
    """Affine then B-spline maps for a leg: three levels, the pyramid never shrinking along the slices."""
    maps = registration_maps(deformable=True, grid_mm=grid_mm, iterations=iterations, resolutions=3)
    along = str(max(100.0, 2.0 * slice_spacing_mm))
    for m in maps:
        m["FixedImagePyramidSchedule"] = ["4", "4", "1", "2", "2", "1", "1", "1", "1"]
        m["MovingImagePyramidSchedule"] = ["4", "4", "4", "2", "2", "2", "1", "1", "1"]
        if m["Transform"][0] == "BSplineTransform":
            m["FinalGridSpacingInPhysicalUnits"] = [str(grid_mm), str(grid_mm), along]
    return maps


def partial_labels(stations: Sequence[StationVolume], station_muscles: Sequence[Collection[str]], atlas: Atlas,
                   reference: sitk.Image, *, grid_mm: float = 40.0, iterations: int = 200) -> PartialLabels:
    """The atlas labels of each station's muscles (``station_muscles``, head first, one entry per T2 station) and of
    that side's marrow, registered leg by leg (see the module docstring) and carried onto ``reference``."""
    if len(stations) != len(station_muscles):
        raise VolumeError(f"the protocol expects {len(station_muscles)} T2 station(s); the visit has {len(stations)}")
    out = np.zeros(sitk.GetArrayFromImage(reference).shape, np.uint16)
    transforms: dict[str, Transform] = {}
    warnings: list[str] = []
    ref_x = _x_of_voxels(reference)
    # each side's own labels, and the unpaired ones (a marrow label may hold both tibiae) on its side of the gap
    side_labels = {side: [lab for lab in atlas.table if lab.side in (side, "none") and lab.tissue != "air"]
                   for side in SIDES}
    for index, (station, muscles) in enumerate(zip(stations, station_muscles, strict=True), start=1):
        midline = leg_midline_x(station.image)
        for side in SIDES:
            wanted = [lab.value for lab in side_labels[side] if lab.key in muscles]
            if not wanted:
                continue
            template, labels = _atlas_region(atlas, wanted)
            leg = _leg(station.image, midline, side)
            transform = register(leg, template, partial_maps(station.image.GetSpacing()[2], grid_mm, iterations))
            transforms[f"station{index}_{side}"] = transform
            warped = sitk.GetArrayFromImage(warp_labels(labels, transform, reference)).astype(np.uint16)
            own = np.isin(warped, [lab.value for lab in side_labels[side]])
            own &= (ref_x > midline) if side == "left" else (ref_x < midline)  # never across the gap between legs
            own &= out == 0
            out[own] = warped[own]
            missing = [v for v in wanted if not (warped[own] == v).any()]
            if missing:
                warnings.append(f"station {index}, {side} leg: atlas labels {missing} not found in the field of view")
    marrows = {lab.value for lab in atlas.table if lab.is_marrow}
    muscle_values = {lab.value for lab in atlas.table if lab.tissue == "muscle"}
    for station in stations:  # each label-grid voxel sees the station voxel nearest to it (its acquired slice)
        seen = sitk.GetArrayFromImage(sitk.Resample(station.image, reference, sitk.Transform(),
                                                    sitk.sitkNearestNeighbor, 0.0, sitk.sitkFloat32))
        ones = sitk.Image(station.image.GetSize(), sitk.sitkUInt8) + 1
        ones.CopyInformation(station.image)
        covered = sitk.GetArrayFromImage(sitk.Resample(ones, reference, sitk.Transform(), sitk.sitkNearestNeighbor,
                                                       0)) > 0
        refine_marrow(out, seen, covered, marrows, muscle_values, radius_mm=MARROW_SEARCH_MM,
                      spacing=reference.GetSpacing())
    labels_image = sitk.GetImageFromArray(out)
    labels_image.CopyInformation(reference)
    return PartialLabels(labels=labels_image, transforms=transforms, warnings=warnings)


MARROW_SEARCH_MM = 8.0  # how far from its registered label a marrow cavity is looked for


def refine_marrow(labels: np.ndarray, image: np.ndarray, covered: np.ndarray, marrows: Collection[int],
                  muscles: Collection[int], *, radius_mm: float, spacing: Sequence[float]) -> None:
    """Move each marrow label (in place, slice by slice where ``covered``) onto the bright cavity it was meant for:
    for each connected piece of the registered label (one label may hold both legs' tibiae), within ``radius_mm``
    of it, the voxels above Otsu's threshold of that neighbourhood, the connected part overlapping the piece most
    (else the largest). Muscle labels are never overwritten; marrow voxels left behind become unlabelled."""
    radius = max(1, round(radius_mm / min(spacing[0], spacing[1])))
    structure = ndimage.generate_binary_structure(2, 1)
    for value in marrows:
        for z in np.flatnonzero((labels == value).any(axis=(1, 2)) & covered.any(axis=(1, 2))):
            mask = labels[z] == value
            pieces, n_pieces = ndimage.label(mask, structure)
            cavities = np.zeros_like(mask)
            kept = np.zeros_like(mask)  # pieces whose neighbourhood could not be judged stay as registered
            for piece_index in range(1, n_pieces + 1):
                piece = pieces == piece_index
                cavity = _cavity(image[z], piece, covered[z], radius, structure)
                if cavity is None:
                    kept |= piece
                else:
                    cavities |= cavity
            labels[z][mask & ~cavities & ~kept] = 0
            labels[z][cavities & ~np.isin(labels[z], list(muscles))] = value


def _cavity(image: np.ndarray, piece: np.ndarray, covered: np.ndarray, radius: int,
            structure: np.ndarray) -> np.ndarray | None:
    """The bright connected part near ``piece`` (see :func:`refine_marrow`), or None when its neighbourhood is too
    small or flat to tell."""
    region = ndimage.binary_dilation(piece, structure, iterations=radius) & covered
    values = image[region]
    if values.size < 16 or float(values.max()) <= float(values.min()):
        return None
    parts, n = ndimage.label(region & (image > _otsu(image, region)), structure)
    if n == 0:
        return None
    overlap = ndimage.sum(piece, parts, range(1, n + 1))
    sizes = ndimage.sum(np.ones_like(piece), parts, range(1, n + 1))
    best = int(np.argmax(overlap)) + 1 if overlap.max() > 0 else int(np.argmax(sizes)) + 1
    return parts == best


def _otsu(image: np.ndarray, region: np.ndarray) -> float:
    """Otsu's threshold (SimpleITK, 128 bins) of the values of a slice ``image`` inside ``region``."""
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.SetNumberOfHistogramBins(128)
    otsu.SetMaskValue(1)
    otsu.Execute(sitk.GetImageFromArray(image.astype(np.float32)), sitk.GetImageFromArray(region.astype(np.uint8)))
    return float(otsu.GetThreshold())


def _x_of_voxels(image: sitk.Image) -> np.ndarray:
    """x (LPS, mm) of every voxel of ``image``, as an array of its shape (k, j, i)."""
    step = np.asarray(image.GetDirection()).reshape(3, 3)[0] * np.asarray(image.GetSpacing())  # x per index step
    i, j, k = (np.arange(n) for n in image.GetSize())
    return (image.GetOrigin()[0] + step[0] * i[None, None, :] + step[1] * j[None, :, None]
            + step[2] * k[:, None, None])
