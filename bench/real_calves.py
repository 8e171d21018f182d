"""A real calf exam nobody here made, measured with the calves profile; prints JSON.

The ``myoqmri==2.0.2`` sdist's Siemens MAGNETOM Prisma (XA60) exam of a healthy volunteer's calves (fetched by
pip, SHA-256 checked, cached outside the repository): the 17-echo spin echo (the echo nearest 80 ms is the
T2-weighted image), registered leg by leg to the default atlas (quant.partial), and judged by the exam's own
two-point Dixon (fat 016, water 018) resampled onto the T2 slices through their shared frame of reference:
per reported ROI (eroded as the pipeline erodes), its voxels, its mean fat fraction and its 85th percentile,
the share of it in its own leg, and its relative T2 and QC flags; and the marrow the relative T2 is referred to
(refined onto the cavity: quant.partial.refine_marrow), with its fat fraction. The Dixon water and fat are given
to the pipeline too, as the node gives them: its fat fraction per muscle (quant.fat: on the Dixon grid, within the
T2 slices) is printed beside the judge's (the Dixon resampled onto the T2 ROI), and their difference.

``--slices A:B`` keeps only those slices of the spin echo (a field that covers part of the calves).

    python bench/real_calves.py [--slices 4:8]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from phantom.default_atlas import ensure_default_atlas
from quant.atlas import load_atlas
from quant.fat import dixon_stations
from quant.params import QuantParams
from quant.partial import leg_midline_x
from quant.pipeline import labels_on, quantify
from quant.roistats import erode_labels
from quant.volumes import station_volumes
from storage.catalogue import PROFILE_MUSCLES, PROFILE_STATIONS, Modality, ScanProfile
from tests.support.real_data import dixon_on, dixon_volumes, mese_files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", default=None, help="A:B — only these slices of the spin echo (0-based, B excluded)")
    args = ap.parse_args()
    params = QuantParams()
    (t2,) = station_volumes([pydicom.dcmread(f) for f in mese_files()], echo_ms=80.0)
    if args.slices:
        first, last = (int(v) for v in args.slices.split(":"))
        t2 = dataclasses.replace(t2, image=t2.image[:, :, first:last], sop_uids=t2.sop_uids[first:last],
                                 frame_numbers=t2.frame_numbers[first:last])
    atlas = load_atlas(ensure_default_atlas(3))
    dixon, dixon_warnings = dixon_stations(dixon_volumes("018_dixon_2echo_RR_W"), dixon_volumes("016_dixon_2echo_RR_F"))
    started = time.perf_counter()
    q = quantify([t2], [], atlas, params, covered=PROFILE_MUSCLES[ScanProfile.CALVES],
                 station_muscles=PROFILE_STATIONS[ScanProfile.CALVES], dixon=dixon)
    seconds = time.perf_counter() - started
    labels = erode_labels(labels_on(q.subject_labels, t2.image), t2.image.GetSpacing(), params.erosion_mm)
    fat, water = dixon_on("016_dixon_2echo_RR_F", t2.image), dixon_on("018_dixon_2echo_RR_W", t2.image)
    fraction = fat / np.maximum(fat + water, 1e-6)
    gap = leg_midline_x(t2.image)
    x = np.asarray([t2.image.TransformIndexToPhysicalPoint((i, 0, 0))[0] for i in range(t2.image.GetSize()[0])])
    table = {(lab.key, lab.side): lab.value for lab in atlas.table}
    rois = {}
    fat_fractions = {(r.muscle, r.side): r for r in q.rows if r.modality is Modality.FF}
    for row in (r for r in q.rows if r.modality is Modality.REL_T2):
        roi = labels == table[(row.muscle, row.side)]
        xs = x[np.nonzero(roi)[2]]
        ff = fat_fractions.get((row.muscle, row.side))
        rois[f"{row.muscle}:{row.side}"] = {
            "voxels": int(roi.sum()), "dixon_fat_fraction_mean": round(float(fraction[roi].mean()), 4),
            "dixon_fat_fraction_p85": round(float(np.percentile(fraction[roi], 85)), 4),
            "in_own_leg": round(float(((xs > gap) if row.side == "left" else (xs < gap)).mean()), 4),
            "relative_t2": round(row.value, 4), "qc_flags": row.qc_flags,
            "measured_fat_fraction_pct": round(ff.value, 2) if ff else None,
            "measured_fat_fraction_voxels": ff.voxel_count if ff else None,
            "measured_minus_judge_pp": round(ff.value - 100 * float(fraction[roi].mean()), 2) if ff else None}
    for lab in (lab for lab in atlas.table if lab.is_marrow):
        roi = labels == lab.value
        if roi.any():  # the relative T2's reference: fat marrow, so its Dixon fat fraction is high
            rois[f"{lab.key}:{lab.side}"] = {"voxels": int(roi.sum()),
                                             "dixon_fat_fraction_mean": round(float(fraction[roi].mean()), 4)}
    print(json.dumps({"benchmark": "real_calves", "date": date.today().isoformat(), "atlas": atlas.id,
                      "slices": args.slices or "all",
                      "echo_ms": t2.echo_time_ms, "quantify_s": round(seconds, 1), "rois": rois,
                      "warnings": [*dixon_warnings, *q.warnings]}, indent=1))


if __name__ == "__main__":
    main()
