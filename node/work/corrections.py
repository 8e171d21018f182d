"""Corrections sent back as DICOM: a Segmentation edited on a workstation re-measures the visit it belongs to.

Every Segmentation instance the node receives that it did not write itself (not one of its result
objects) becomes a :class:`storage.models.Correction` when the exam watcher next looks
(:func:`find_corrections`), and an ``apply_correction`` job (:func:`apply_correction`):

1. the visit: the SEG's Referenced Series must be the stitched T2 series of a processed visit
   (what myonode's own SEG references; a workstation keeps it);
2. its segments map to catalogue muscle × sides (:func:`quant.corrected_labels.segment_targets`); a
   workstation saves every segment, so only those whose voxels differ from myonode's own SEG of
   the visit count as corrected;
3. the automatic subject labels with those muscles replaced (:func:`quant.corrected_labels.corrected_labels`)
   are measured on the native T2 stations (:func:`quant.pipeline.measure_t2`; no registration) and, where the
   visit has Dixon images, on them (:func:`quant.pipeline.measure_fat`), and the corrected muscles' relative T2
   and fat fraction are kept as ``source = corrected`` beside the automatic values. The visit's reviewed labels
   (``reviewed_labels.nii.gz`` in its QC folder, :data:`REVIEWED_LABELS`: the automatic labels with every correction
   applied so far) are written first, atomically, so a site atlas built from reviewed visits learns from them
   (:mod:`node.work.site_atlas`); a correction applied twice writes the same file.

What cannot be applied — a SEG of myonode's own making, one that references no known series, a
segment that is no muscle of the catalogue — is stored like any instance and listed as refused
with the reason (console: Corrections; ``myonode status``), never applied in part.
ADC of a corrected ROI is not re-measured (it needs the T2 → DWI transform); the automatic ADC stays.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime

import pydicom
from pydicom.uid import SegmentationStorage
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from node.settings import Settings
from storage import models as m
from storage.catalogue import not_covered
from storage.database import transaction
from storage.filestore import FileStore

log = logging.getLogger(__name__)

SUBJECT_LABELS = "subject_labels.nii.gz"  # the automatic labels, in the visit's QC folder (node.work.processing)
REVIEWED_LABELS = "reviewed_labels.nii.gz"  # the automatic labels with every applied correction

MYONODE_MANUFACTURER = "myonode"


def find_corrections(s: Session, store: FileStore) -> list[int]:
    """Record every SEG newly received from a peer that the node did not write; returns the ids of those to
    apply."""
    own = select(m.ResultObject.instance_fk).where(m.ResultObject.instance_fk.is_not(None))
    seen = select(m.Correction.instance_fk)
    pending = []
    # received from a peer (C-STORE, STOW-RS: a peer address): the pipeline's own SEGs are stored by the node
    # itself before their result rows are written, and must not be taken for corrections meanwhile
    for inst in s.scalars(select(m.Instance).where(m.Instance.sop_class_uid == SegmentationStorage,
                                                  m.Instance.peer_address.is_not(None),
                                                  m.Instance.id.not_in(own), m.Instance.id.not_in(seen))):
        try:
            header = pydicom.dcmread(store.absolute(inst.file_path), stop_before_pixels=True)
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            s.add(m.Correction(instance_fk=inst.id, state=m.CorrectionState.REFUSED, reason=f"unreadable: {exc}"))
            continue
        manufacturer = str(header.get("Manufacturer", "") or "")[:64]
        if manufacturer.strip().lower() == MYONODE_MANUFACTURER:
            s.add(m.Correction(instance_fk=inst.id, manufacturer=manufacturer, state=m.CorrectionState.REFUSED,
                               reason="made by myonode (not a correction): a SEG a workstation saves names "
                                      "its own manufacturer"))
            continue
        correction = m.Correction(instance_fk=inst.id, manufacturer=manufacturer or None)
        s.add(correction)
        s.flush()
        pending.append(correction.id)
    return pending


def _refuse(sessions: sessionmaker[Session], correction_id: int, reason: str, visit_id: int | None = None) -> None:
    with transaction(sessions) as s:
        row = s.get_one(m.Correction, correction_id)
        row.state, row.reason, row.visit_fk = m.CorrectionState.REFUSED, reason, visit_id
    log.warning("correction %d refused: %s", correction_id, reason)


def apply_correction(settings: Settings, sessions: sessionmaker[Session], store: FileStore, correction_id: int) -> None:
    """The ``apply_correction`` job (see the module docstring)."""
    import numpy as np
    import SimpleITK as sitk

    from node.work.atlas_in_use import atlas_in_use, current_pin
    from node.work.results import newest_results
    from quant.corrected_labels import CorrectionError, corrected_labels, derived_grid, seg_label_array, segment_targets
    from quant.pipeline import PIPELINE_VERSION, label_volumes_ml, measure_fat, measure_t2
    from quant.visit_io import load_visit, measurement_record
    from quant.volumes import head_first

    with sessions() as s:
        correction = s.get_one(m.Correction, correction_id)
        seg = pydicom.dcmread(store.absolute(correction.instance.file_path))
    referenced = [str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])]
    with sessions() as s:
        found = s.execute(select(m.ResultObject.visit_fk, m.ResultObject.series_instance_uid)
                          .where(m.ResultObject.kind == m.ResultKind.STITCHED_T2,
                                 m.ResultObject.series_instance_uid.in_(referenced))).first()
        if found is None or found[0] is None:
            return _refuse(sessions, correction_id, f"references series {', '.join(referenced) or '(none)'}, "
                                                    "which is no stitched T2 series of a visit this node processed")
        visit_id, series_uid = int(found[0]), str(found[1])
        visit = s.get_one(m.Visit, visit_id)
        if visit.state is not m.VisitState.PROCESSED:
            return _refuse(sessions, correction_id, f"visit {visit_id} is {visit.state.value}, not processed",
                           visit_id)
        uncovered = set(not_covered(visit.profile))
        paths = list(s.scalars(select(m.Instance.file_path).join(m.ResultObject, m.ResultObject.instance_fk ==
                                                                 m.Instance.id)
                               .where(m.ResultObject.series_instance_uid == series_uid)))
        own_seg = newest_results(s, store, visit_id, m.ResultKind.SEG)
    derived = [pydicom.dcmread(store.absolute(p)) for p in paths]
    with sessions() as s:
        atlas = atlas_in_use(settings.atlas, current_pin(s))
    targets, unknown = segment_targets(seg, atlas.table)
    if unknown:
        return _refuse(sessions, correction_id, f"{'; '.join(unknown)}: no muscle × side of the catalogue "
                                                "(by tracking identifier or segment label)", visit_id)
    if not targets:
        return _refuse(sessions, correction_id, "the segmentation holds no segment", visit_id)
    outside = sorted(f"{t.key} {t.side}" for t in targets.values() if (t.key, t.side) in uncovered)
    if outside:
        return _refuse(sessions, correction_id, f"{', '.join(outside)}: not covered by the protocol the visit was "
                                                "measured with (its field of view holds no such muscle)", visit_id)
    automatic_path = settings.quant.qc_dir / f"visit-{visit_id}" / SUBJECT_LABELS
    reviewed_path = automatic_path.with_name(REVIEWED_LABELS)
    try:
        grid = derived_grid(derived)
        corrected = seg_label_array(seg, derived, targets)
        if own_seg:  # a workstation saves every segment: only those a person changed are corrections
            own = own_seg[0]
            automatic = seg_label_array(own, derived, segment_targets(own, atlas.table)[0])
            targets = {n: t for n, t in targets.items()
                       if not np.array_equal(corrected == t.value, automatic == t.value)}
            if not targets:
                return _refuse(sessions, correction_id, "no segment differs from the automatic ROIs: nothing to "
                                                        "re-measure", visit_id)
            corrected = np.where(np.isin(corrected, [t.value for t in targets.values()]), corrected, 0)
    except CorrectionError as exc:
        return _refuse(sessions, correction_id, str(exc), visit_id)
    before = reviewed_path if reviewed_path.is_file() else automatic_path  # earlier corrections stay
    labels = corrected_labels(sitk.ReadImage(str(before)), grid, corrected, [t.value for t in targets.values()])
    partial = reviewed_path.with_name(f".{REVIEWED_LABELS}.partial.nii.gz")
    sitk.WriteImage(labels, str(partial), useCompression=True)
    os.replace(partial, reviewed_path)
    with sessions() as s:
        visit_input = load_visit(s, store, visit_id, t2_te_ms=settings.protocol.t2_te_ms)
    wanted = {(t.key, t.side) for t in targets.values()}
    rows, station_labels, warnings = measure_t2(visit_input.t2, labels, atlas, settings.quant.params())
    if visit_input.dixon:
        ff_rows, ff_warnings = measure_fat(visit_input.dixon, head_first(visit_input.t2), station_labels,
                                           [a for a in atlas.muscles() if (a.key, a.side) in wanted],
                                           settings.quant.params(), label_volumes_ml(labels))
        rows, warnings = [*rows, *ff_rows], [*warnings, *ff_warnings]
    rows = [r for r in rows if (r.muscle, r.side) in wanted]
    with transaction(sessions) as s:
        for muscle, side in wanted:
            s.execute(delete(m.Measurement).where(m.Measurement.visit_fk == visit_id,
                                                  m.Measurement.source == m.MeasurementSource.CORRECTED,
                                                  m.Measurement.muscle == muscle, m.Measurement.side == m.Side(side)))
        s.add_all(measurement_record(visit_id, r, source=m.MeasurementSource.CORRECTED,
                                     pipeline_version=PIPELINE_VERSION, atlas_id=atlas.id) for r in rows)
        row = s.get_one(m.Correction, correction_id)
        row.state, row.visit_fk, row.applied_at = m.CorrectionState.APPLIED, visit_id, datetime.now(UTC)
        row.muscles = sorted(f"{k} {side}" for k, side in wanted)
        row.reason = "; ".join(w for w in warnings if any(t.name in w for t in targets.values())) or None
    log.info("correction %d applied to visit %d: %s", correction_id, visit_id, ", ".join(row.muscles))
