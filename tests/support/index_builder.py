"""An index the size of a busy site's year, built fast through the project's own models (no files).

The visits of the year up to yesterday, evenly spread; a visit as the scanner and the pipeline leave it: 18 series — a survey (3 images), 6 coronal T2
stations (50 each), 8 axial DWI stations (95 each: b0 and b1000 slices), the stitched T2 (30), a SEG
and an SR — about 1,100 instance rows; three visits per patient, one patient in twenty named DOE. Rows go in with Core bulk inserts (executemany), as a restore
would, not through ingest: building 660,000 rows takes a minute, not hours.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import Engine, insert, update

from storage import models as m
from storage.catalogue import MUSCLES

MR, SEG, SR = "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34"
SERIES_MIX: list[tuple[str, m.SeriesKind, str, int, str]] = [  # description, kind, modality, images, SOP class
    ("Survey", m.SeriesKind.OTHER, "MR", 3, MR),
    *[(f"WB T2 TSE station {i + 1}", m.SeriesKind.T2, "MR", 50, MR) for i in range(6)],
    *[(f"WB DWI station {i + 1}", m.SeriesKind.DWI, "MR", 95, MR) for i in range(8)],
    ("myonode stitched T2", m.SeriesKind.RESULT, "MR", 30, MR),
    ("myonode muscle ROIs", m.SeriesKind.RESULT, "SEG", 1, SEG),
    ("myonode measurements", m.SeriesKind.RESULT, "SR", 1, SR),
]
INSTANCES_PER_VISIT = sum(n for _, _, _, n, _ in SERIES_MIX)
SURNAMES = ["SMITH", "JONES", "TAYLOR", "BROWN", "WILSON", "EVANS", "THOMAS", "JOHNSON", "ROBERTS", "WALKER",
            "WRIGHT", "DOE", "HALL", "GREEN", "WOOD", "HARRIS", "LEWIS", "CLARKE", "JACKSON", "HUGHES"]


def query(level: str, **keys: object) -> Dataset:
    """A C-FIND identifier at ``level`` with ``keys`` (keyword = value), to ask the built index."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _first_visit_for_review(conn: Any, store: Path) -> int:
    """The files of visit 0's first T2 station, and visit 0 as processed: subject, visit, measurements."""
    from tests.support.dicom_factory import mr_image

    for n in range(SERIES_MIX[1][3]):
        ds = mr_image(patient_id="MND-0000", study_uid=uid(1, 0), series_uid=uid(2, 0, 1), sop_uid=uid(3, 0, 1, n),
                      size=64, seed=n, instance_number=n + 1, position=(-200.0, float(n), 100.0))
        path = store / f"0/1/{n}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        conn.execute(update(m.Instance).where(m.Instance.sop_instance_uid == uid(3, 0, 1, n))
                     .values(size_bytes=path.stat().st_size))
    subject = conn.execute(insert(m.Subject).returning(m.Subject.id), {
        "subject_id": "MND-0000", "group": m.Group.PATIENT, "created_at": datetime.now(UTC)}).scalar_one()
    conn.execute(insert(m.SubjectPatientId), {"subject_fk": subject, "patient_id": "MND-0000"})
    visit = conn.execute(insert(m.Visit).returning(m.Visit.id), {
        "subject_fk": subject, "label": "baseline", "state": m.VisitState.PROCESSED, "incomplete": False,
        "updated_at": datetime.now(UTC)}).scalar_one()
    conn.execute(update(m.Study).where(m.Study.study_instance_uid == uid(1, 0)).values(visit_fk=visit))
    conn.execute(insert(m.Measurement), [
        {"visit_fk": visit, "modality": modality, "muscle": muscle.key, "side": m.Side(side),
         "source": m.MeasurementSource.AUTOMATIC, "value": 1.1 if modality is m.Modality.REL_T2 else 1.4e-3,
         "voxel_count": 500, "pipeline_version": "built"}
        for muscle in MUSCLES for side in muscle.sides for modality in (m.Modality.REL_T2, m.Modality.ADC)
        if modality is m.Modality.REL_T2 or muscle.adc])
    return int(visit)


def uid(*parts: int) -> str:
    return "2.25." + ".".join(str(p) for p in parts)


def build_index(engine: Engine, visits: int, *, chunk: int = 20_000, store: Path | None = None) -> dict[str, Any]:
    """``visits`` visits into the (migrated, empty) database of ``engine``; returns facts to query with.

    ``store``: also the files of the first visit's first T2 station (small real MR images, under that root) and
    the first visit as the pipeline leaves it for review (a subject, a processed visit, its measurements), so
    that WADO-RS metadata and the visit's page can be asked for."""
    rows: list[dict[str, Any]] = []
    instance_id = 0
    start = datetime.now(UTC).replace(hour=8, minute=0, second=0, microsecond=0) - timedelta(days=366)
    with engine.begin() as conn:
        for v in range(visits):
            n_patient, n_visit = divmod(v, 3)
            when = start + timedelta(days=365 * v / visits)  # the year up to yesterday, evenly
            if n_visit == 0:
                name = f"{SURNAMES[n_patient % len(SURNAMES)]}^P{n_patient}"
                patient_pk = conn.execute(insert(m.Patient).returning(m.Patient.id), {
                    "patient_id": f"MND-{n_patient:04d}", "issuer": "", "patient_name": name,
                    "birth_date": date(1950 + n_patient % 30, 1, 1), "sex": "MF"[n_patient % 2],
                    "created_at": when}).scalar_one()
            study_pk = conn.execute(insert(m.Study).returning(m.Study.id), {
                "patient_fk": patient_pk, "study_instance_uid": uid(1, v), "study_date": when.date(),
                "study_time": "080000", "accession_number": f"ACC{v:06d}", "study_description": "WB muscle MRI",
                "created_at": when}).scalar_one()
            for n_series, (description, kind, modality, images, sop_class) in enumerate(SERIES_MIX):
                series_pk = conn.execute(insert(m.Series).returning(m.Series.id), {
                    "study_fk": study_pk, "series_instance_uid": uid(2, v, n_series), "modality": modality,
                    "series_number": n_series + 1, "series_description": description, "kind": kind,
                    "n_instances": images, "bytes_stored": images * 530_000, "first_received_at": when,
                    "last_received_at": when}).scalar_one()
                for n in range(images):
                    instance_id += 1
                    rows.append({
                        "series_fk": series_pk, "sop_instance_uid": uid(3, v, n_series, n), "version": 1,
                        "sop_class_uid": sop_class, "transfer_syntax_uid": "1.2.840.10008.1.2.1",
                        "instance_number": n + 1, "content_date": when.strftime("%Y%m%d"), "content_time": "080000",
                        "station_key": f"{uid(2, v, n_series)}|1|coronal|0|{n_series}", "b_values": [],
                        "derived": False, "file_path": f"{v}/{n_series}/{n}.dcm", "size_bytes": 530_000,
                        "sha256": f"{instance_id:064x}", "calling_ae": "SCANNER", "peer_address": "10.0.0.5",
                        "conflict": False, "received_at": when + timedelta(seconds=n)})
                    if len(rows) >= chunk:
                        conn.execute(insert(m.Instance), rows)
                        rows.clear()
        if rows:
            conn.execute(insert(m.Instance), rows)
        visit_id = _first_visit_for_review(conn, store) if store is not None else None
    return {"visit_id": visit_id, "visits": visits, "instances": visits * INSTANCES_PER_VISIT, "patient_id": "MND-0000",
            "study_uid": uid(1, 0), "series_uid": uid(2, 0, 1), "doe_patients": sum(
                1 for p in range((visits + 2) // 3) if SURNAMES[p % len(SURNAMES)] == "DOE")}
