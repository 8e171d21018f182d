"""The ``sign_visit`` job: the verified SR of a visit a reviewer accepted.

It writes a new TID 1500 SR with Verification Flag VERIFIED and the Verifying Observer (the reviewer,
and the organisation of the acceptance, of ``[review] organisation`` or the node's AE title), the
rejected ROIs left out, naming the unverified SR as its predecessor (which stays stored and
queryable), and publishes it like the other results (:func:`node.work.results.publish`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from node import __version__
from node.settings import Settings
from node.work.results import newest_results, publish
from node.work.review import ReviewError, visit_review
from quant.dicom_out import ResultContext, Verifier, measurement_report
from quant.visit_io import measurement_row
from storage import models as m
from storage.catalogue import not_covered
from storage.filestore import FileStore

log = logging.getLogger(__name__)


def sign_visit(settings: Settings, sessions: sessionmaker[Session], store: FileStore, visit_id: int) -> str:
    """The ``sign_visit`` job: the verified SR of an accepted visit (rejected ROIs left out); its SOP Instance UID."""
    with sessions() as s:
        review = visit_review(s, visit_id)
        if review.verdict is not m.ReviewVerdict.ACCEPTED or review.reviewer is None:
            raise ReviewError(f"visit {visit_id} is not accepted: nothing to sign")
        accepted = s.scalars(select(m.Review).where(m.Review.visit_fk == visit_id, m.Review.muscle.is_(None))
                             .order_by(m.Review.id.desc())).first()
        organisation = ((accepted.organisation if accepted else None) or settings.review.organisation
                        or settings.node.ae_title)
        measurements = m.in_effect(s.scalars(select(m.Measurement).where(m.Measurement.visit_fk == visit_id)))
        rows = [measurement_row(x) for x in measurements if (x.muscle, x.side.value) not in review.rejected]
        seg = newest_results(s, store, visit_id, m.ResultKind.SEG)
        derived = newest_results(s, store, visit_id, m.ResultKind.STITCHED_T2)
        adc = newest_results(s, store, visit_id, m.ResultKind.ADC_MAP)
        previous = newest_results(s, store, visit_id, m.ResultKind.SR)
        profile = s.get_one(m.Visit, visit_id).profile
    if not rows or not seg or not derived or not previous:
        raise ReviewError(f"visit {visit_id} lacks measurements or results to sign")
    ctx = ResultContext(content_datetime=datetime.now(UTC), myonode_version=__version__,
                        pipeline_version=measurements[0].pipeline_version, atlas_id=measurements[0].atlas_id or "-",
                        replaces={"sr": previous[:1]}, not_covered=not_covered(profile))
    sr = measurement_report(rows, seg[0], derived, adc[0] if adc else None, ctx,
                            verifier=Verifier(name=review.reviewer, organisation=organisation))
    publish(settings, sessions, store, visit_id, [("sr", sr)], replaces={"sr": previous[:1]})
    log.info("visit %d signed by %s (%s): verified SR %s replaces %s", visit_id, review.reviewer, organisation,
             sr.SOPInstanceUID, previous[0].SOPInstanceUID)
    return str(sr.SOPInstanceUID)
