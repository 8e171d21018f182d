"""One full-size visit through the node's processing, from stored DICOM to measurements; prints JSON.

A phantom visit (6 T2 stations, 8 DWI stations) is received by a node on loopback
(dcmtk storescu), then ``process_visit`` runs in this process: wall time per step and the
peak resident memory. Targets on the 2-core machine: ≤ 90 s and ≤ 4 GB.

Then, in the same run, the same visit processed again with a multi-atlas of ``--entries`` (5) entries — built
here from the phantom atlas subjects (as ``myonode atlas build`` would from reviewed visits, without its
leave-one-out accuracy) — once with its entries registered and fused (``[quant] fusion_entries``, the site atlas's
way) and once with its template alone: the fused visit's time over the single-atlas visit's (target ≤ 1.5).

    python bench/pipeline.py [--size full|small] [--keep DIR] [--entries 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import SimpleITK as sitk
from sqlalchemy import select

from node.demo.ports import free_port
from node.demo.scenario import prepare_demo_folder, push_visit
from node.service import start_node
from node.work.processing import process_visit
from phantom.anatomy import AnatomyParams
from phantom.contrast import MuscleState
from phantom.images import VisitMeta
from phantom.scanner import ScanSettings
from phantom.visit import scan_visit
from quant.atlas_build import Subject, build_and_save
from quant.params import QuantParams
from quant.register import register, registration_maps
from stats.importer import import_subjects
from storage import models as m
from storage.database import transaction


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="full", choices=("full", "small"))
    ap.add_argument("--keep", type=Path, default=None)
    ap.add_argument("--entries", type=int, default=5, help="entries of the multi-atlas")
    args = ap.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="myonode-pipeline-"))
    settings = prepare_demo_folder(folder / "node", port=free_port(), small=args.size == "small")
    rng = np.random.default_rng(12)
    params = AnatomyParams.random(rng, "M").placed(rng)
    meta = VisitMeta(subject_id="BENCH01", patient_name="PHANTOM^BENCH", birth_date=date(1970, 1, 1), sex="M", age_years=56.0, weight_kg=80.0, height_m=params.height_mm / 1000,
                     study_date=date(2026, 3, 2), study_time=__import__("datetime").time(9, 0), visit="baseline", seed=12, time_point_id="BASELINE")
    scan_visit(meta, params, MuscleState(), folder / "visit", ScanSettings(size=args.size))  # type: ignore[arg-type]
    (folder / "subjects.csv").write_text("subject_id,group,sex,age,onset_site,onset_side,diagnosis\n"
                                         "BENCH01,control,M,56,,,\n")
    node = start_node(settings)
    node.jobs.stop_consumers()  # the visit is processed below, timed, instead of by the node's workers
    try:
        with transaction(node.sessions) as s:
            import_subjects(s, folder / "subjects.csv")
        t0 = time.perf_counter()
        push_visit(folder / "visit" / "dicom", settings.node.ae_title, settings.node.port)
        receive_s = time.perf_counter() - t0
        deadline = time.monotonic() + 120
        visit_id = None
        while visit_id is None and time.monotonic() < deadline:  # the exam watcher marks it complete
            with node.sessions() as s:
                visit_id = s.scalar(select(m.Visit.id).where(m.Visit.state == m.VisitState.QUEUED))
            time.sleep(0.5)
        if visit_id is None:
            raise SystemExit("the node did not find the visit complete within 120 s")
    finally:
        node.stop()
    warm_up()
    t1 = time.perf_counter()
    outcome = process_visit(settings, node.sessions, node.store, visit_id)
    total = time.perf_counter() - t1
    peak_single = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    t2 = time.perf_counter()
    multi = multi_atlas(folder / "multi-atlas", args.entries, settings.quant.params())
    build_s = time.perf_counter() - t2
    runs = {}
    for name, entries in (("multi_atlas_fused", args.entries), ("multi_atlas_template_only", 0)):
        quant = settings.quant.model_copy(update={"fusion_entries": entries})
        again = settings.model_copy(update={"quant": quant,
                                            "atlas": settings.atlas.model_copy(update={"path": multi})})
        t3 = time.perf_counter()
        done = process_visit(again, node.sessions, node.store, visit_id)
        runs[name] = {"process_s": round(time.perf_counter() - t3, 1),
                      "steps_s": {k: round(v, 1) for k, v in done.timings.items()},
                      "measurements": done.measurements}
    print(json.dumps({
        "benchmark": "pipeline", "date": date.today().isoformat(), "size": args.size,
        "receive_s": round(receive_s, 1), "process_s": round(total, 1),
        "steps_s": {k: round(v, 1) for k, v in outcome.timings.items()},
        "measurements": outcome.measurements, "results": len(outcome.results),
        "peak_rss_mb_single_atlas": round(peak_single),
        "multi_atlas_entries": args.entries, "multi_atlas_build_s": round(build_s, 1), **runs,
        "fused_over_single_atlas": round(runs["multi_atlas_fused"]["process_s"] / total, 2),  # type: ignore[operator]
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "targets": {"process_s": 90, "peak_rss_mb": 4096, "fused_over_single_atlas": 1.5}}, indent=1))


def warm_up() -> None:
    """ITK's elastix wrappers loaded before anything is timed (10 s or so, once per worker process — what every
    visit after a worker's first one finds done)."""
    noise = sitk.GetImageFromArray(np.random.default_rng(0).random((24, 24, 24)).astype(np.float32))
    register(noise, noise, registration_maps(deformable=False, iterations=2, resolutions=1))


def multi_atlas(out: Path, entries: int, params: QuantParams) -> Path:
    """A multi-atlas of ``entries`` phantom atlas subjects (the default atlas's seeds and the next ones)."""
    from phantom.atlas_subjects import atlas_subject
    from phantom.default_atlas import phantom_label_table

    subjects = [Subject(name=f"atlas subject {k}", t2=t2, labels=labels)
                for k, (t2, labels) in ((k, atlas_subject(k)) for k in range(entries))]
    return build_and_save(subjects, phantom_label_table(), out, f"bench-multi-{entries}",
                          f"bench: {entries} phantom subjects", params=params, synthetic=True, measure=False)


if __name__ == "__main__":
    main()
