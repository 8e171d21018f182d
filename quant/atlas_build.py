"""Atlases from subjects whose labels a person made or accepted: one template, fused labels, leave-one-out accuracy.

- :class:`Subject` — one subject: its T2 (the stitched registration image of a visit, or a contoured scan), its
  labels in the same physical space, and the label values that may not vote (a reviewer rejected the ROI).
- :func:`build_atlas` — every subject registered to the one with the largest field of view (elastix affine +
  B-spline, the visit pipeline's maps); their T2s averaged into the template where each has an image; their labels
  carried into the template's space and fused per voxel by :func:`quant.fusion.fuse_votes`: the label most subjects
  give the voxel, among those that may vote there (not where their label is one they may not vote with, not outside their
  image).
- :func:`leave_one_out` — each subject in turn measured with an atlas made of the others, as a visit would be (their
  mean T2 registered to it, and with two or more others their entries registered and fused, :mod:`quant.fusion`;
  all already in the template's space): Dice per label against its own labels, and the
  relative T2 per muscle measured on its T2 with either label set (:func:`quant.pipeline.measure_t2`, the T2 taken
  as one station) — what ``atlas.json`` says of an atlas's accuracy.
- :func:`build_and_save` (``myonode atlas build --from-visits``) and :func:`import_atlas` (``myonode atlas import``).

No database here: the node gathers the subjects (:mod:`node.work.site_atlas`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from quant.atlas import Atlas, AtlasEntry, AtlasLabel, FusionEntry, contoured_subjects, read_label_table, save_atlas
from quant.fusion import fuse_entries, fuse_votes, is_usable
from quant.params import QuantParams
from quant.pipeline import measure_t2
from quant.register import register, registration_maps, resample, warp_labels
from quant.volumes import StationVolume

DEFAULT_PARAMS = QuantParams()


@dataclass(frozen=True, kw_only=True)
class Subject:
    """A subject an atlas is built from: T2 and labels (uint8) in one physical space, and the label values it may
    not vote with (an ROI a reviewer rejected)."""

    name: str
    t2: sitk.Image
    labels: sitk.Image
    unusable: frozenset[int] = frozenset()
    source: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class InTemplate:
    """A subject carried into the template's space: its T2 and where it adds to the template's mean (template
    grid), its labels and where it may not vote (label grid: outside its image, or a label it may not vote with)."""

    t2: np.ndarray
    inside: np.ndarray
    labels: np.ndarray
    abstains: np.ndarray


@dataclass(kw_only=True)
class BuiltAtlas:
    template: sitk.Image
    labels: sitk.Image
    reference: int  # index of the subject the others were registered to
    carried: list[InTemplate]


def _field_mm3(img: sitk.Image) -> float:
    return float(np.prod(np.asarray(img.GetSize()) * np.asarray(img.GetSpacing())))


def _outside_on(inside: np.ndarray, t2_img: sitk.Image, label_img: sitk.Image) -> np.ndarray:
    """The label grid's voxels outside a carried subject's image (``inside``: on the template grid)."""
    outside = sitk.GetImageFromArray((~inside).astype(np.uint8))
    outside.CopyInformation(t2_img)
    on_labels = sitk.Resample(outside, label_img, sitk.Transform(), sitk.sitkNearestNeighbor, 1, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(on_labels).astype(bool)


def build_atlas(subjects: Sequence[Subject], params: QuantParams = DEFAULT_PARAMS,
                progress: Callable[[str], None] | None = None, reference: int | None = None,
                partial_fields: bool = True) -> BuiltAtlas:
    """One template and one fused label volume from ``subjects`` (see the module docstring), on the grids of the
    subject ``reference`` (default: the one with the largest field of view). ``partial_fields``: a subject neither
    votes nor adds to the template's mean outside its image (a visit of a leg protocol); off, every subject counts
    everywhere (the default phantom atlas's whole-body subjects, built so since its first version)."""
    if not subjects:
        raise ValueError("an atlas needs at least one subject")
    say = progress or (lambda _step: None)
    ref = reference if reference is not None else max(range(len(subjects)),
                                                      key=lambda k: (_field_mm3(subjects[k].t2), -k))
    ref_t2, ref_labels = subjects[ref].t2, subjects[ref].labels
    maps = registration_maps(deformable=True, grid_mm=params.grid_mm, iterations=params.iterations)
    carried: list[InTemplate] = []
    for k, subject in enumerate(subjects):
        if k == ref:
            t2, labels = sitk.GetArrayFromImage(ref_t2), sitk.GetArrayFromImage(ref_labels)
        else:
            say(f"registering {subject.name} to {subjects[ref].name} ({k + 1}/{len(subjects)})")
            transform = register(ref_t2, subject.t2, maps)
            t2 = sitk.GetArrayFromImage(resample(subject.t2, transform, ref_t2))
            labels = sitk.GetArrayFromImage(warp_labels(subject.labels, transform, ref_labels))
        abstains = np.isin(labels, sorted(subject.unusable))  # a label it may not vote with
        if partial_fields:  # nor outside its image, where it neither votes nor adds to the mean
            inside = t2 > 0
            abstains |= _outside_on(inside, ref_t2, ref_labels)
        else:
            inside = np.ones(t2.shape, dtype=bool)
        carried.append(InTemplate(t2=t2.astype(np.float32), inside=inside, labels=labels.astype(np.uint8),
                                  abstains=abstains))
    template, fused = _fused(carried, ref_t2, ref_labels)
    return BuiltAtlas(template=template, labels=fused, reference=ref, carried=carried)


def _fused(carried: Sequence[InTemplate], ref_t2: sitk.Image, ref_labels: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    """The mean T2 (over the subjects with an image at each voxel) and the fused labels of ``carried``."""
    total = np.zeros(carried[0].t2.shape, dtype=np.float64)
    count = np.zeros(carried[0].t2.shape, dtype=np.int16)
    for c in carried:
        total += np.where(c.inside, c.t2, 0.0)
        count += c.inside
    template = sitk.GetImageFromArray((total / np.maximum(count, 1)).astype(np.float32))
    template.CopyInformation(ref_t2)
    fused = sitk.GetImageFromArray(fuse_votes([c.labels for c in carried], [c.abstains for c in carried])
                                   .astype(np.uint8))
    fused.CopyInformation(ref_labels)
    return template, fused


def _as_station(t2: sitk.Image, name: str) -> StationVolume:
    """A subject's T2 as the one station :func:`quant.pipeline.measure_t2` measures on."""
    n = t2.GetSize()[2]
    return StationVolume(image=t2, series_uid=name, station_key=name, b_value=None, sop_uids=[name] * n,
                         frame_numbers=[None] * n)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int((a & b).sum()) / total if total else 1.0


def _median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def _entry(subject: Subject, carried: InTemplate, template: sitk.Image, labels: sitk.Image,
           table: Sequence[AtlasLabel]) -> FusionEntry:
    """A carried subject as a multi-atlas entry in memory (its T2 0 outside its field, as written)."""
    t2 = sitk.GetImageFromArray(np.where(carried.inside, carried.t2, 0.0).astype(np.float32))
    t2.CopyInformation(template)
    image = sitk.GetImageFromArray(carried.labels)
    image.CopyInformation(labels)
    return FusionEntry(name=subject.name, t2=t2, labels_path=None, image=image,
                       unusable=tuple(sorted(subject.unusable)), values=frozenset(lab.value for lab in table))


def leave_one_out(subjects: Sequence[Subject], built: BuiltAtlas, table: Sequence[AtlasLabel],
                  params: QuantParams = DEFAULT_PARAMS, progress: Callable[[str], None] | None = None
                  ) -> dict[str, Any] | None:
    """Each subject measured with an atlas of the others (see the module docstring); None with fewer than two.

    Per label: Dice median and worst over the subjects that may vote with it and hold it; per muscle also the
    relative-T2 difference (%) between the held-out labels and the subject's own, median and worst. The held-out
    atlas is built in the template's space, so the reference subject's registration takes part in it — a small
    optimism the figures keep."""
    if len(subjects) < 2:
        return None
    say = progress or (lambda _step: None)
    maps = registration_maps(deformable=True, grid_mm=params.grid_mm, iterations=params.iterations)
    ref_t2, ref_labels = built.template, built.labels
    dice: dict[int, list[float]] = {lab.value: [] for lab in table}
    rel_diff: dict[int, list[float]] = {lab.value: [] for lab in table if lab.is_muscle}
    for i, subject in enumerate(subjects):
        say(f"leave-one-out: {subject.name} ({i + 1}/{len(subjects)})")
        others = [(subjects[k], c) for k, c in enumerate(built.carried) if k != i]
        template, labels = _fused([c for _, c in others], ref_t2, ref_labels)
        transform = register(subject.t2, template, maps)
        atlas = Atlas(id="leave-one-out", path=Path("."), template=template, labels=labels, table=list(table),
                      entries=[_entry(s, c, ref_t2, ref_labels, table) for s, c in others])
        fusing = is_usable(atlas, params)  # measured as a visit is: the others' entries registered and fused
        if fusing:
            held = fuse_entries(subject.t2, atlas, transform, subject.labels, params).labels
        else:
            held = warp_labels(labels, transform, subject.labels)
        own, got = sitk.GetArrayViewFromImage(subject.labels), sitk.GetArrayViewFromImage(held)
        for lab in table:
            if lab.value in subject.unusable or not (own == lab.value).any():
                continue
            dice[lab.value].append(_dice(own == lab.value, got == lab.value))
        station = [_as_station(subject.t2, subject.name)]
        measured = {}
        for which, lab_img in (("own", subject.labels), ("held", held)):
            rows, _, _ = measure_t2(station, lab_img, atlas, params)
            measured[which] = {(r.muscle, r.side): r.value for r in rows}
        for lab in atlas.muscles():
            own_value, held_value = measured["own"].get((lab.key, lab.side)), measured["held"].get((lab.key, lab.side))
            if lab.value in subject.unusable or own_value is None or held_value is None or own_value == 0:
                continue
            rel_diff[lab.value].append(100.0 * abs(held_value / own_value - 1.0))
    per_label = []
    for lab in table:
        if not dice[lab.value]:
            continue
        row: dict[str, Any] = {"value": lab.value, "key": lab.key, "side": lab.side, "tissue": lab.tissue,
                               "name": lab.name, "subjects": len(dice[lab.value]),
                               "dice_median": _median(dice[lab.value]), "dice_worst": round(min(dice[lab.value]), 4)}
        diffs = rel_diff.get(lab.value, [])
        row["rel_t2_diff_pct_median"] = _median(diffs)
        row["rel_t2_diff_pct_worst"] = round(max(diffs), 3) if diffs else None
        per_label.append(row)
    muscles = [r for r in per_label if r["tissue"] == "muscle"]
    worst = min(muscles, key=lambda r: r["dice_median"]) if muscles else None
    diffs_all = [r["rel_t2_diff_pct_median"] for r in muscles if r["rel_t2_diff_pct_median"] is not None]
    return {"method": "leave-one-out: each subject measured with an atlas of the others as a visit is ("
                      + ("their entries registered to it and fused" if fusing
                         else "their mean T2 and fused labels registered to it")
                      + "); Dice against its own labels; relative T2 on its T2 with both",
            "subjects": len(subjects),
            "dice_median": _median([r["dice_median"] for r in muscles]),
            "dice_worst_muscle": {"name": worst["name"], "dice_median": worst["dice_median"]} if worst else None,
            "rel_t2_diff_pct_median": _median(diffs_all),
            "labels": per_label}


def build_and_save(subjects: Sequence[Subject], table: Sequence[AtlasLabel], out: Path, atlas_id: str,
                   description: str, *, params: QuantParams = DEFAULT_PARAMS, synthetic: bool = False,
                   source: dict[str, Any] | None = None, progress: Callable[[str], None] | None = None,
                   measure: bool = True) -> Path:
    """Build an atlas from ``subjects`` (:func:`build_atlas`), measure its leave-one-out accuracy (unless not
    ``measure``: ``atlas.json`` then says nothing of it) and write it with its entries (each subject's T2 and labels
    in the template's space and what it may not vote with) to ``out``."""
    built = build_atlas(subjects, params, progress)
    accuracy = leave_one_out(subjects, built, table, params, progress) if measure else None
    entries = []
    for subject, carried in zip(subjects, built.carried):
        entry = _entry(subject, carried, built.template, built.labels, table)
        entries.append(AtlasEntry(name=subject.name, labels=entry.labels(), t2=entry.t2, unusable=entry.unusable,
                                  source=subject.source))
    return save_atlas(out, atlas_id, description, built.template, built.labels, table, synthetic=synthetic,
                      entries=entries, accuracy=accuracy, source=source)


def import_atlas(folder: Path, out: Path, atlas_id: str, description: str,
                 progress: Callable[[str], None] | None = None) -> Path:
    """An atlas from a site's contoured scans in ``folder`` (``labels.csv`` and the subject pairs, see
    :func:`quant.atlas.contoured_subjects`), built, measured and written by :func:`build_and_save`; not synthetic."""
    table = read_label_table(folder / "labels.csv")
    subjects = [Subject(name=name, t2=t2, labels=labels, source={"file": str(folder / f"{name}_t2.nii.gz")})
                for name, (t2, labels) in contoured_subjects(folder, table).items()]
    return build_and_save(subjects, table, out, atlas_id, description, source={"folder": str(folder)},
                          progress=progress)
