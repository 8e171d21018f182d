"""Contoured calves for atlas tests: phantom atlas subjects cut to 60 mm of mid-calf, written as a site's contoured
scans (``NAME_t2.nii.gz`` + ``NAME_labels.nii.gz`` and ``labels.csv``, the format ``myonode atlas import`` reads)."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from quant.atlas import LABEL_TABLE_COLUMNS

LEG_KEYS = ("tibialis_anterior", "gastrocnemius_soleus", "marrow_tibia")


def write_contoured_calves(folder: Path, subjects: Iterable[int], slab_mm: float | None = 60.0) -> Path:
    """The phantom atlas subjects ``subjects`` as contoured calves in ``folder`` — ``slab_mm`` of mid-calf (every leg
    label in 60 mm: a quick registration), or None: the whole lower leg, 20 mm beyond its labels — with the label
    table of :data:`LEG_KEYS`."""
    from phantom.atlas_subjects import atlas_subject
    from phantom.default_atlas import phantom_label_table

    folder.mkdir(parents=True, exist_ok=True)
    table = [lab for lab in phantom_label_table() if lab.key in LEG_KEYS]
    keep = [lab.value for lab in table]
    for k in subjects:
        t2, labels = atlas_subject(k)
        t2 = sitk.Resample(t2, labels, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)  # one grid
        arr = sitk.GetArrayViewFromImage(labels)
        zs = np.flatnonzero(np.isin(arr, keep).any(axis=(1, 2)))
        step = labels.GetSpacing()[2]
        if slab_mm is None:
            margin = round(20.0 / step)
            lo, hi = max(int(zs.min()) - margin, 0), min(int(zs.max()) + margin, labels.GetSize()[2] - 1)
        else:
            middle, half = (int(zs.min()) + int(zs.max())) // 2, round(slab_mm / step / 2)
            lo, hi = middle - half, middle + half
        size = [labels.GetSize()[0], labels.GetSize()[1], hi - lo + 1]
        cut = [sitk.RegionOfInterest(image, size, [0, 0, lo]) for image in (t2, labels)]
        cut[1] = sitk.Cast(sitk.ChangeLabel(cut[1], {v: 0 for v in np.unique(sitk.GetArrayViewFromImage(cut[1])).tolist()
                                                     if v not in keep}), sitk.sitkUInt8)
        sitk.WriteImage(cut[0], str(folder / f"calf{k}_t2.nii.gz"))
        sitk.WriteImage(cut[1], str(folder / f"calf{k}_labels.nii.gz"))
    with (folder / "labels.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LABEL_TABLE_COLUMNS)
        writer.writeheader()
        for lab in table:
            writer.writerow({"value": lab.value, "key": lab.key, "side": lab.side, "tissue": lab.tissue,
                             "name": lab.name, "reference": lab.reference or ""})
    return folder
