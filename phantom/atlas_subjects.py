"""Contoured phantom subjects for the default atlas: a T2-weighted image and its true labels.

The atlas subjects are healthy, in their canonical pose, with their own body parameters
drawn from seeds that the test and demo cohorts never use (``ATLAS_SEED_BASE`` upwards).
The T2 image is the noise-free signal blurred to the coronal protocol's slice profile and
sampled on a coarse template grid (registration works there); labels stay on the finer
truth grid. Each muscle label names the marrow compartment that is its preferred
relative-T2 reference — the nearest long bone, or the vertebral bodies for axial muscles —
among those a coronal 5 mm station can measure: radius/ulna marrow is 8–10 mm thick and
nothing of it survives erosion, so the hands (beside the thighs) take the femur of their
station and the forearm, which spans two stations, the vertebral bodies present in both.
Left to the fallback (the marrow with most voxels) the hands flipped between femur and
vertebra from subject to subject — a 45 % step in relative T2 (bench/accuracy.py, 2026-12-02).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from phantom.anatomy import LABELS, AnatomyParams, Label, draw_canonical
from phantom.contrast import MuscleState, lookup_tables
from phantom.geometry import truth_grid
from quant.regional import box_grid, label_box

ATLAS_SEED_BASE = 900_000
TEMPLATE_MM = 4.0

REFERENCE_MARROW: dict[str, str] = {
    "tongue": "marrow_vertebra", "splenius_capitis": "marrow_vertebra", "trapezius": "marrow_vertebra",
    "sternocleidomastoid": "marrow_vertebra", "deltoid": "marrow_humerus", "biceps_brachii": "marrow_humerus",
    "triceps": "marrow_humerus", "forearm": "marrow_vertebra", "first_dorsal_interosseous": "marrow_femur",
    "thenar": "marrow_femur", "hypothenar": "marrow_femur", "thoracic_paraspinal": "marrow_vertebra",
    "psoas": "marrow_vertebra", "gluteus_maximus": "marrow_pelvis", "quadriceps": "marrow_femur",
    "hamstrings": "marrow_femur", "tibialis_anterior": "marrow_tibia", "gastrocnemius_soleus": "marrow_tibia",
}


def reference_for(label: Label) -> str | None:
    return REFERENCE_MARROW[label.key] if label.tissue == "muscle" and label.key in REFERENCE_MARROW else None


def template_grid(labels_grid: sitk.Image, spacing_mm: float = TEMPLATE_MM) -> sitk.Image:
    """A coarser grid over the same extent as ``labels_grid``."""
    size = [int(np.ceil(n * s / spacing_mm)) for n, s in zip(labels_grid.GetSize(), labels_grid.GetSpacing())]
    ref = sitk.Image(size, sitk.sitkFloat32)
    ref.SetOrigin(labels_grid.GetOrigin())
    ref.SetSpacing((spacing_mm,) * 3)
    ref.SetDirection(labels_grid.GetDirection())
    return ref


def t2_template_image(labels: sitk.Image, spacing_mm: float = TEMPLATE_MM) -> sitk.Image:
    """Noise-free T2w signal of a labelled body, blurred to ``spacing_mm`` (and 5 mm coronal slices)."""
    t2_lut, _, _ = lookup_tables(MuscleState())
    img = sitk.GetImageFromArray(t2_lut[sitk.GetArrayViewFromImage(labels)])
    img.CopyInformation(labels)
    own = labels.GetSpacing()[0]
    for axis, fwhm in enumerate((spacing_mm, max(spacing_mm, 5.0), spacing_mm)):
        extra = fwhm * fwhm - own * own
        if extra > 0:
            img = sitk.RecursiveGaussian(img, sigma=float(np.sqrt(extra) / 2.3548), direction=axis)
    return sitk.Resample(img, template_grid(labels, spacing_mm), sitk.Transform(), sitk.sitkLinear, 0.0,
                         sitk.sitkFloat32)


def atlas_subject(k: int) -> tuple[sitk.Image, sitk.Image]:
    """Atlas subject ``k`` (0 = an average 1.75 m adult): its T2 template image and full-resolution labels."""
    if k == 0:
        params = AnatomyParams()
    else:
        rng = np.random.default_rng(ATLAS_SEED_BASE + k)
        params = AnatomyParams.random(rng, "M" if k % 3 else "F")
    labels = draw_canonical(truth_grid("full"), params)
    return t2_template_image(labels), labels


HAND_MUSCLES = ("thenar", "hypothenar", "first_dorsal_interosseous")
REGION_MM = 1.0
REGION_MARGIN_MM = 25.0


def hand_regions(labels: sitk.Image, params: AnatomyParams | None = None, spacing_mm: float = REGION_MM,
                 margin_mm: float = REGION_MARGIN_MM) -> list[tuple[str, sitk.Image, sitk.Image, tuple[int, ...]]]:
    """A finer template and labels around each hand of atlas subject 0 (whose space is the atlas's).

    The hand muscles are a centimetre or two across — a few voxels of the whole-body
    template — so the atlas carries each hand drawn again at ``spacing_mm`` over the hand's
    bounding box in ``labels`` plus ``margin_mm``, for :mod:`quant.regional` to register
    locally. Returns ``(name, template, labels, label values to refine)`` per side.
    """
    params = params or AnatomyParams()
    out = []
    for side in ("left", "right"):
        values = tuple(lab.value for lab in LABELS if lab.key in HAND_MUSCLES and lab.side == side)
        box = label_box(labels, values, margin_mm)
        if box is None:
            continue
        fine = draw_canonical(box_grid(*box, spacing_mm), params)
        out.append((f"hand_{side}", t2_template_image(fine, spacing_mm), fine, values))
    return out
