"""Put a simulated cohort into the database as the pipeline and the importers would leave it."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
from sqlalchemy.orm import Session

from storage import models as m

CLINICAL = {"ALSFRS-R", "MRC", "MRC_sum", "dynamometry", "weight"}


def load_cohort(s: Session, subjects: pd.DataFrame, observations: pd.DataFrame,
                skip_ephys: set[tuple[str, str]] = frozenset()) -> None:
    """Visits processed, relT2/ADC as measurements, the rest as imported observations."""
    start = date(2025, 1, 6)
    for row in subjects.to_dict("records"):
        sub = m.Subject(subject_id=row["subject_id"], group=m.Group(row["group"]), sex=m.Sex(row["sex"]),
                        baseline_age=float(row["age"]),
                        onset_site=m.OnsetSite(row["onset_site"]) if row["onset_site"] else None,
                        onset_side=m.Side(row["onset_side"]) if row["onset_side"] else None)
        s.add(sub)
        for (visit_label, days), part in observations[observations["subject_id"] == row["subject_id"]].groupby(
                ["visit", "days"]):
            visit = m.Visit(subject=sub, label=visit_label, visit_date=start + timedelta(days=int(days)),
                            state=m.VisitState.PROCESSED)
            for r in part.to_dict("records"):
                if r["measure"] in ("relT2", "ADC"):
                    visit.measurements.append(m.Measurement(
                        modality=m.Modality(r["measure"]), muscle=r["muscle"], side=m.Side(r["side"]),
                        value=float(r["value"]), voxel_count=500, pipeline_version="simulated"))
                elif r["measure"] in CLINICAL or (row["subject_id"], visit_label) not in skip_ephys:
                    source = m.ObservationSource.CLINICAL if r["measure"] in CLINICAL else m.ObservationSource.EPHYS
                    visit.observations.append(m.Observation(source=source, measure=r["measure"],
                                                            muscle=r["muscle"], side=m.Side(r["side"]),
                                                            value=float(r["value"])))
            s.add(visit)
