"""Corrected ROIs: a Segmentation a person edited on a workstation (3D Slicer, OHIF) back into subject labels.

Pure functions on data sets and images (the node finds the SEG and the visit, ``node.work.corrections``):

- :func:`segment_targets` — which catalogue muscle × side each segment is: by the tracking
  identifier myonode wrote (``<muscle>_<side>``), else by the anatomic region code and its
  laterality modifier it wrote (:mod:`quant.codes`), else by the segment label it wrote
  (:func:`quant.dicom_out.segment_label`); what matches none is named, not guessed;
- :func:`seg_label_array` — the segments on the grid of the derived stitched T2 series the SEG
  references (highdicom reads the frames by their source instances), as atlas label values;
- :func:`corrected_labels` — the automatic subject labels with the corrected muscles replaced:
  each corrected muscle × side loses its automatic voxels and takes the corrected ones; the
  marrow references and every other muscle stay as the atlas propagated them.

Measured then with :func:`quant.pipeline.measure_t2` on the native stations — no registration.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

from quant import codes as C
from quant.atlas import AtlasLabel
from quant.dicom_out import segment_label, tracking_id


class CorrectionError(ValueError):
    """A segmentation that cannot be applied, and why."""


def segment_targets(seg: Dataset, table: Sequence[AtlasLabel]) -> tuple[dict[int, AtlasLabel], list[str]]:
    """Segment number → the atlas muscle it corrects; and the segments that are no catalogue muscle × side."""
    muscles = [lab for lab in table if lab.is_muscle]
    by_tracking = {tracking_id(lab.key, lab.side): lab for lab in muscles}
    by_label = {segment_label(lab.key, lab.side).casefold(): lab for lab in muscles}
    by_code = {(C.MUSCLE_CODES[lab.key].scheme_designator, C.MUSCLE_CODES[lab.key].value,
                C.LATERALITY[lab.side].value if lab.side in C.LATERALITY else None): lab for lab in muscles}
    found: dict[int, AtlasLabel] = {}
    unknown = []
    for item in seg.get("SegmentSequence", []):
        number = int(item.SegmentNumber)
        label = str(item.get("SegmentLabel", "")).strip()
        code = _region_code(item)
        target = (by_tracking.get(str(item.get("TrackingID", "")).strip())
                  or (by_code.get(code) if code is not None else None) or by_label.get(label.casefold()))
        if target is None:
            unknown.append(f"segment {number} {label!r}")
        else:
            found[number] = target
    return found, unknown


def _region_code(item: Dataset) -> tuple[str, str, str | None] | None:
    """(scheme, code, laterality code) of a segment's first anatomic region, as myonode writes it."""
    regions = item.get("AnatomicRegionSequence", [])
    if not regions:
        return None
    region = regions[0]
    modifiers = region.get("AnatomicRegionModifierSequence", [])
    return (str(region.get("CodingSchemeDesignator", "")), str(region.get("CodeValue", "")),
            str(modifiers[0].CodeValue) if modifiers else None)


def derived_grid(derived: Sequence[Dataset]) -> sitk.Image:
    """The image grid (empty) of the derived stitched T2 series, from its slices' geometry.

    Written here rather than with :func:`quant.volumes.station_volumes`, which reads acquired
    stations and leaves derived images out on purpose."""
    if len(derived) < 2:
        raise CorrectionError("the referenced series has fewer than two slices")
    iop = np.asarray(derived[0].ImageOrientationPatient, dtype=float)
    row, col = iop[:3], iop[3:]
    positions = np.asarray([d.ImagePositionPatient for d in derived], dtype=float)
    along = positions @ np.cross(row, col)
    order = np.argsort(along)
    steps = np.diff(along[order])
    if np.any(steps <= 0) or not np.allclose(steps, np.median(steps), rtol=0.01):
        raise CorrectionError("the referenced series' slices are not evenly spaced")
    first, last = positions[order[0]], positions[order[-1]]
    normal = (last - first) / np.linalg.norm(last - first)
    ps = [float(v) for v in derived[0].PixelSpacing]
    grid = sitk.Image(int(derived[0].Columns), int(derived[0].Rows), len(derived), sitk.sitkUInt16)
    grid.SetSpacing((ps[1], ps[0], float(np.median(steps))))
    grid.SetOrigin(tuple(float(v) for v in first))
    grid.SetDirection(tuple(float(v) for v in np.column_stack([row, col, normal]).ravel()))
    return grid


def seg_label_array(seg: Dataset, derived: Sequence[Dataset], targets: dict[int, AtlasLabel]) -> np.ndarray:
    """The segments of ``targets`` as atlas label values on the derived series' grid (slices × rows × columns)."""
    grid = derived_grid(derived)
    segmentation = hd.seg.Segmentation.from_dataset(seg, copy=True)
    out = np.zeros(sitk.GetArrayViewFromImage(grid).shape, dtype=np.uint16)
    # A SEG whose frames cite their source images but do not say Spatial Locations Preserved (OHIF 3 writes
    # none) is placed by those citations when it shares the series' frame of reference: its frames were drawn
    # on those very images. Another frame of reference is refused as before.
    same_frame = str(seg.get("FrameOfReferenceUID", "")) == str(derived[0].get("FrameOfReferenceUID", "-"))
    for number, target in targets.items():
        try:
            masks = segmentation.get_pixels_by_source_instance(
                source_sop_instance_uids=[str(d.SOPInstanceUID) for d in derived], segment_numbers=[number],
                assert_missing_frames_are_empty=True, ignore_spatial_locations=same_frame)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CorrectionError(f"segment {number}: its frames do not map onto the referenced series: {exc}") from exc
        for ds, mask in zip(derived, masks[..., 0], strict=True):
            k = grid.TransformPhysicalPointToIndex([float(v) for v in ds.ImagePositionPatient])[2]
            out[k][mask > 0] = target.value
    return out


def corrected_labels(automatic: sitk.Image, grid: sitk.Image, corrected: np.ndarray,
                     values: Sequence[int]) -> sitk.Image:
    """``automatic`` (resampled onto ``grid``) with each label of ``values`` replaced by its voxels in ``corrected``."""
    labels = sitk.Resample(automatic, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
    arr = sitk.GetArrayFromImage(labels)
    for value in values:
        arr[arr == value] = 0
        arr[corrected == value] = value
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(grid)
    return out
