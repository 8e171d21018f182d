"""Multi-atlas label fusion at visit time: a multi-atlas's entries registered to the subject, their votes fused.

A multi-atlas (:mod:`quant.atlas_build`) keeps every entry's T2 and labels carried into the template's space (each
entry registered there once, offline, at the build). A visit measured with it:

1. the template is registered to the subject (the pipeline's affine + B-spline, as for any atlas); the affine part
   of that registration carries every entry's T2 onto the subject (a resampling, no registration), which ranks the
   entries by their similarity to the subject (correlation where both hold an image): with many entries only the
   ``[quant] fusion_entries`` most similar are used;
2. each chosen entry gets its own B-spline registration to the subject, starting from that shared affine (no
   affine stage of its own; :data:`ENTRY_RESOLUTIONS` × :data:`ENTRY_ITERATIONS`), and its labels are carried by
   the composition (its B-spline, then the affine) onto the subject's label grid in one resampling through a
   displacement field (:func:`quant.register.as_displacement`);
3. the labels are fused per voxel by majority vote (:func:`fuse_votes`, also the build's: an entry abstains outside
   its own field of view and on a label a reviewer rejected in it), computed only where the entries disagree.

Measured on the site population (``bench/site_atlas.py`` data, full size, 5 entries; Dice median of one held-out
visit against its truth): the template alone 0.885; every entry registered from scratch (affine + B-spline, four
resolutions of 200) 0.897 in 4.1 s an entry; a short B-spline refinement of each entry from the template's whole
transform was no better than the template (small size: 0.843 against 0.853) — the shared B-spline's errors are
then every entry's; from the shared affine, the B-spline in three resolutions of 120 iterations: **0.908 in 1.9 s
an entry** (0.903 / 0.887 on the two other held-out visits, against 0.897 / 0.877 for the template). What else keeps
it cheap: elastix's step size from the displacement distribution (:func:`quant.register.registration_maps`) and
labels carried through a field sampled every 8 mm instead of by transformix on the 2 mm grid.

Without entries that carry a T2, or with ``fusion_entries`` below 2, the pipeline uses the atlas's template labels
(:func:`is_usable`). No I/O beyond reading a chosen entry's label file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from quant.atlas import Atlas, FusionEntry
from quant.params import QuantParams
from quant.register import Transform, register, registration_maps, to_sitk, warp_labels

# each chosen entry's B-spline registration to the subject, from the template's affine: three resolutions of 120
# iterations (bench notes in the module docstring)
ENTRY_RESOLUTIONS, ENTRY_ITERATIONS = 3, 120


@dataclass(frozen=True, kw_only=True)
class Fused:
    """A visit's fused labels (the subject's label grid), the entries that voted (most similar first) with their
    registrations to the subject, and every entry's similarity to the subject (correlation of its T2, carried by
    the template's registration, with the subject's where both hold an image)."""

    labels: sitk.Image
    entries: list[str]
    transforms: dict[str, Transform]  # entry name → its registration (subject → entry points)
    similarity: dict[str, float]


def is_usable(atlas: Atlas, params: QuantParams) -> bool:
    """Whether a visit measured with ``atlas`` fuses its entries (at least two with a T2, fusion not off)."""
    return params.fusion_entries >= 2 and len(atlas.entries) >= 2


def similarity(subject: np.ndarray, carried: np.ndarray) -> float:
    """Pearson correlation of two images of the same grid where both hold an image (> 0); −1 with too little
    overlap to say."""
    both = (subject > 0) & (carried > 0)
    if both.sum() < 100:
        return -1.0
    a, b = subject[both].astype(np.float64), carried[both].astype(np.float64)
    a -= a.mean()
    b -= b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else -1.0


def fuse_votes(labels: Sequence[np.ndarray], abstains: Sequence[np.ndarray]) -> np.ndarray:
    """Per voxel, the label the most subjects give it among those that do not abstain there (ties: the earlier
    subject's label); 0 where every subject abstains. Without abstentions this is plain majority voting."""
    best = np.zeros_like(labels[0])
    best_votes = np.zeros(labels[0].shape, dtype=np.int16)
    for k, candidate in enumerate(labels):
        votes = np.zeros(candidate.shape, dtype=np.int16)
        for other, abstain in zip(labels, abstains):
            votes += (other == candidate) & ~abstain
        votes[abstains[k]] = 0  # a label given where its subject abstains is no candidate
        better = votes > best_votes
        best[better] = candidate[better]
        best_votes[better] = votes[better]
    return best


def abstain_value(values: frozenset[int]) -> int:
    """The label value that stands for "abstains here" in carried votes: one the atlas's table does not use."""
    return next(v for v in range(255, 0, -1) if v not in values)


def votes_of(entry: FusionEntry, abstain: int) -> sitk.Image:
    """The entry's labels (uint8, template space) with ``abstain`` where it may not vote: outside its field of view
    (its T2 is 0) or on a label a reviewer rejected in it."""
    labels = entry.labels()
    inside = sitk.Resample(sitk.Cast(entry.t2 > 0, sitk.sitkUInt8), labels, sitk.Transform(), sitk.sitkNearestNeighbor,
                           0, sitk.sitkUInt8)
    lut = np.arange(256, dtype=np.uint8)
    lut[list(entry.unusable)] = abstain
    votes = lut[sitk.GetArrayViewFromImage(labels)]
    votes[sitk.GetArrayViewFromImage(inside) == 0] = abstain
    image = sitk.GetImageFromArray(votes)
    image.CopyInformation(labels)
    return image


def fuse_where_they_differ(carried: list[np.ndarray], abstain: int) -> np.ndarray:
    """:func:`fuse_votes` over carried votes (``abstain`` where an entry abstains), computed only at the voxels where
    they are not one label given by all."""
    first = carried[0]
    differ = first == abstain
    for other in carried[1:]:
        differ |= other != first
    out = first.copy()  # where all agree and none abstains: that label
    labels = [c[differ] for c in carried]
    out[differ] = fuse_votes(labels, [v == abstain for v in labels])
    return out


def linear_part(transform: Transform) -> Transform:
    """The maps of ``transform`` before its first B-spline (the affine of the pipeline's registration)."""
    maps = []
    for m in transform.maps:
        if m["Transform"][0] == "BSplineTransform":
            break
        maps.append(m)
    if not maps:
        raise ValueError("the transform has no linear part")
    return Transform(maps=tuple(maps))


def fuse_entries(subject: sitk.Image, atlas: Atlas, atlas_tf: Transform, label_grid: sitk.Image,
                 params: QuantParams, progress: Callable[[str], None] | None = None) -> Fused:
    """The fused labels of ``atlas``'s entries on ``label_grid`` (see the module docstring); ``subject`` is the
    stitched T2 the template was registered to, ``atlas_tf`` that registration (subject → template points)."""
    say = progress or (lambda _step: None)
    linear = linear_part(atlas_tf)
    carry = to_sitk(linear)
    subject_arr = sitk.GetArrayViewFromImage(subject)
    carried, scores = {}, {}
    for entry in atlas.entries:
        carried[entry.name] = sitk.Resample(entry.t2, subject, carry, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        scores[entry.name] = round(similarity(subject_arr, sitk.GetArrayViewFromImage(carried[entry.name])), 4)
        if len(carried) > params.fusion_entries:  # only the most similar are kept (a site atlas grows with its visits)
            del carried[min(reversed(carried), key=scores.__getitem__)]  # of equals, the later: as the sort below
    chosen = sorted(atlas.entries, key=lambda e: -scores[e.name])[: params.fusion_entries]
    maps = registration_maps(deformable=True, affine=False, initialise=False, grid_mm=params.grid_mm,
                             iterations=ENTRY_ITERATIONS, resolutions=ENTRY_RESOLUTIONS)
    abstain = abstain_value(frozenset(lab.value for lab in atlas.table))
    votes, transforms = [], {}
    for k, entry in enumerate(chosen, start=1):
        say(f"register atlas entry {entry.name} ({k}/{len(chosen)})")
        deformable = register(subject, carried[entry.name], maps)
        # the entry's own B-spline first (subject → the entry carried by the affine), then the affine (→ template)
        own = transforms[entry.name] = Transform(maps=(*deformable.maps, *linear.maps))
        votes.append(sitk.GetArrayFromImage(warp_labels(votes_of(entry, abstain), own, label_grid, outside=abstain)))
    fused = sitk.GetImageFromArray(fuse_where_they_differ(votes, abstain))
    fused.CopyInformation(label_grid)
    return Fused(labels=fused, entries=[e.name for e in chosen], transforms=transforms, similarity=scores)
