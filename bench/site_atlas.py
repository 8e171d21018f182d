"""A site atlas against the default atlas on another site's population; prints JSON.

Phantom subjects of the ``site`` population (:meth:`phantom.anatomy.AnatomyParams.random`: older, shorter,
thinner limbs, arms further from the body), which the default atlas — drawn from the paper's population — fits
worse. ``--train`` of them stand for a site's reviewed visits: scanned, and labelled with their true labels (what
the reviewers' corrected SEGs give when every ROI is corrected to the truth); a site atlas is built from them by
:func:`quant.atlas_build.build_and_save`, the build ``myonode atlas build --from-visits`` runs (registration to the
subject with the largest field, fusion, leave-one-out accuracy). ``--test`` held-out subjects of the same
population are then measured with the default atlas and with the site atlas (:func:`quant.pipeline.quantify`, in
the same run): Dice per muscle against the truth, relative-T2 error against the truth, seconds per visit.

With ``--fusion`` each held-out visit is also measured the classic multi-atlas way, for comparison: every
entry registered to the visit on its own (elastix affine + B-spline) and its labels carried onto the visit's label
grid, fused by majority vote (:func:`quant.atlas_build.fuse_votes`) — Dice and the seconds it takes, beside the
site atlas's one registration.

    python bench/site_atlas.py [--train 5] [--test 3] [--size small|full] [--work DIR] [--fusion]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.accuracy import LEG, dice, truth_ratio, visit_volumes
from phantom.anatomy import AnatomyParams
from phantom.contrast import MuscleState
from phantom.default_atlas import ensure_default_atlas
from phantom.images import VisitMeta
from phantom.scanner import ScanSettings
from phantom.visit import VisitResult, scan_visit
from quant.atlas import Atlas, load_atlas, read_manifest
from quant.atlas_build import Subject, build_and_save
from quant.fusion import fuse_votes
from quant.params import QuantParams
from quant.pipeline import quantify, registration_image, union_grid
from quant.register import register, registration_maps, warp_labels
from storage.catalogue import Modality

TRAIN_SEED, TEST_SEED = 500, 1  # disjoint subject seeds (the default atlas's subjects use 900 000+)


def scanned(out: Path, seed: int, size: str) -> VisitResult:
    """One visit of a ``site``-population subject (sex alternating with the seed)."""
    sex = "F" if seed % 2 else "M"
    rng = np.random.default_rng(seed)
    params = AnatomyParams.random(rng, sex, "site").placed(rng)
    meta = VisitMeta(subject_id=f"SITE{seed:04d}", patient_name=f"PHANTOM^SITE{seed:04d}",
                     birth_date=date(1950, 6, 15), sex=sex, age_years=76.0, weight_kg=62.0,
                     height_m=round(params.height_mm / 1000.0, 2), study_date=date(2026, 3, 2),
                     study_time=__import__("datetime").time(9, 0), visit="baseline", seed=seed, time_point_id=None)
    return scan_visit(meta, params, MuscleState(), out, ScanSettings(size=size))  # type: ignore[arg-type]


def measured(visit: VisitResult, atlas: Atlas, params: QuantParams) -> dict[str, object]:
    t2, dwi, _ = visit_volumes(visit.truth_path.parent)
    t0 = time.perf_counter()
    q = quantify(t2, dwi, atlas, params)
    seconds = time.perf_counter() - t0
    truth = json.loads(visit.truth_path.read_text())
    errors = {f"{r.muscle}:{r.side}": 100.0 * abs(r.value / truth_ratio(r, truth) - 1.0)
              for r in q.rows if r.modality is Modality.REL_T2}
    return {"dice": dice(q.subject_labels, sitk.ReadImage(str(visit.labels_path))), "errors": errors,
            "seconds": seconds}


def fused_per_visit(visit: VisitResult, subjects: list[Subject], params: QuantParams) -> dict[str, object]:
    """The classic multi-atlas: every entry registered to the visit, its labels carried over, majority vote."""
    t2, _, _ = visit_volumes(visit.truth_path.parent)
    t0 = time.perf_counter()
    images = [v.image for v in t2]
    stitched, _ = registration_image(images, params.registration_mm)
    grid = union_grid(images, params.label_mm)
    maps = registration_maps(deformable=True, grid_mm=params.grid_mm, iterations=params.iterations)
    warped = [sitk.GetArrayFromImage(warp_labels(s.labels, register(stitched, s.t2, maps), grid)) for s in subjects]
    fused = sitk.GetImageFromArray(fuse_votes(warped, [np.zeros(warped[0].shape, bool)] * len(warped)))
    fused.CopyInformation(grid)
    seconds = time.perf_counter() - t0
    return {"dice": dice(fused, sitk.ReadImage(str(visit.labels_path))), "errors": {}, "seconds": seconds}


def summary(results: list[dict[str, object]]) -> dict[str, object]:
    dices: dict[str, list[float]] = {}
    errors: dict[str, list[float]] = {}
    for r in results:
        for k, v in r["dice"].items():  # type: ignore[attr-defined]
            dices.setdefault(k, []).append(v)
        for k, v in r["errors"].items():  # type: ignore[attr-defined]
            errors.setdefault(k, []).append(v)
    per_muscle = {k: float(np.median(v)) for k, v in dices.items()}
    worst = min(per_muscle.items(), key=lambda kv: kv[1])
    legs = [v for k, v in per_muscle.items() if k.split(":")[0] in LEG]
    return {"dice_median_all": float(np.median(list(per_muscle.values()))), "dice_worst_muscle": worst,
            "dice_median_thigh_leg": float(np.median(legs)),
            "relT2_abs_error_pct_median": (float(np.median([np.median(v) for v in errors.values()]))
                                           if errors else None),
            "seconds_per_visit_median": float(np.median([r["seconds"] for r in results])),  # type: ignore[misc]
            "dice": per_muscle}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=5, help="reviewed visits the site atlas is built from")
    ap.add_argument("--test", type=int, default=3, help="held-out visits measured with both atlases")
    ap.add_argument("--size", default="small", choices=("full", "small"))
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--fusion", action="store_true", help="also the classic multi-atlas (each entry registered)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="myonode-site-atlas-"))
    params = QuantParams(label_mm=4.0) if args.size == "small" else QuantParams()  # the demo's small settings
    default = load_atlas(ensure_default_atlas(3))

    t0 = time.perf_counter()
    subjects = []
    for k in range(args.train):
        visit = scanned(work / f"train{k}", TRAIN_SEED + k, args.size)
        t2, _, _ = visit_volumes(visit.truth_path.parent)
        image, _ = registration_image([v.image for v in t2], params.registration_mm)
        subjects.append(Subject(name=f"SITE{TRAIN_SEED + k:04d}", t2=image,
                                labels=sitk.Cast(sitk.ReadImage(str(visit.labels_path)), sitk.sitkUInt8),
                                source={"seed": TRAIN_SEED + k}))
    scan_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    site_path = build_and_save(subjects, default.table, work / "site-atlas", "bench-site", "bench: site population",
                               params=params)
    build_seconds = time.perf_counter() - t0
    site = load_atlas(site_path)
    manifest = read_manifest(site_path)

    single = replace(params, fusion_entries=0)  # the site atlas's template and fused labels alone
    results: dict[str, list[dict[str, object]]] = {"default": [], "site_template_only": [], "site": [], "fusion": []}
    for k in range(args.test):
        visit = scanned(work / f"test{k}", TEST_SEED + k, args.size)
        for name, atlas, how in (("default", default, params), ("site_template_only", site, single),
                                 ("site", site, params)):
            results[name].append(measured(visit, atlas, how))
        if args.fusion:
            results["fusion"].append(fused_per_visit(visit, subjects, params))
    fusion = summary(results["fusion"]) if args.fusion else None
    summaries = {name: summary(results[name]) for name in ("default", "site_template_only", "site")}

    def each(key: str) -> dict[str, object]:
        return {name: found[key] for name, found in summaries.items()}

    worst_name = summaries["default"]["dice_worst_muscle"][0]  # type: ignore[index]
    print(json.dumps({
        "benchmark": "site_atlas", "date": date.today().isoformat(), "size": args.size, "population": "site",
        "train": args.train, "test": args.test, "default_atlas": default.id,
        "scan_seconds": scan_seconds, "build_seconds": build_seconds,
        "site_atlas_leave_one_out": {k: v for k, v in (manifest.accuracy or {}).items() if k != "labels"},
        "dice_median_all": each("dice_median_all"),
        "dice_worst_muscle": each("dice_worst_muscle"),
        "default_worst_muscle_with_each": {name: found["dice"][worst_name]  # type: ignore[index]
                                           for name, found in summaries.items()},
        "dice_median_thigh_leg": each("dice_median_thigh_leg"),
        "relT2_abs_error_pct_median": each("relT2_abs_error_pct_median"),
        "seconds_per_visit_median": each("seconds_per_visit_median"),
        "fusion_over_template_only_time": (summaries["site"]["seconds_per_visit_median"]  # type: ignore[operator]
                                           / summaries["site_template_only"]["seconds_per_visit_median"]),
        **({"classic_multi_atlas": {"dice_median_all": fusion["dice_median_all"],
                                    "dice_worst_muscle": fusion["dice_worst_muscle"],
                                    "dice_median_thigh_leg": fusion["dice_median_thigh_leg"],
                                    "seconds_registration_and_fusion_median": fusion["seconds_per_visit_median"]}}
           if fusion else {}),
        "dice": {**each("dice"), **({"classic_multi_atlas": fusion["dice"]} if fusion else {})},
    }, indent=1))


if __name__ == "__main__":
    main()
