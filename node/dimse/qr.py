"""Query/Retrieve over the index: C-FIND matching at PATIENT, STUDY, SERIES and IMAGE level,
and the instance files a C-GET or C-MOVE identifier selects.

Records are built from the SQL index (not by opening files) and matched with
:mod:`node.dimse.matching`. Unique keys (Patient ID, Study/Series/SOP Instance UIDs) narrow the
SQL query first. Re-sent instances kept as several versions are served as their newest.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from node.dimse.matching import matches
from storage import models as m

Level = Literal["PATIENT", "STUDY", "SERIES", "IMAGE"]
LEVELS: tuple[Level, ...] = ("PATIENT", "STUDY", "SERIES", "IMAGE")

PATIENT_KEYS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "IssuerOfPatientID")
STUDY_KEYS = ("StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyDescription",
              "ClinicalTrialTimePointID", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
              "NumberOfStudyRelatedInstances")
SERIES_KEYS = ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "ProtocolName",
               "NumberOfSeriesRelatedInstances")
IMAGE_KEYS = ("SOPInstanceUID", "SOPClassUID", "InstanceNumber", "ContentDate", "ContentTime")
PATIENT_COUNTS = ("NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances")
UNIQUE_KEY: dict[Level, str] = {
    "PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID",
}


class QueryError(ValueError):
    """An identifier the SCP cannot process (unknown level, missing unique key for a retrieve)."""


def level_of(identifier: Dataset) -> Level:
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in LEVELS:
        raise QueryError(f"QueryRetrieveLevel {level!r} is not one of {', '.join(LEVELS)}")
    return level


def _s(value: object) -> str:
    return "" if value is None else str(value)


def _latest_instances() -> Select[int]:
    """Ids of the newest version of every SOP instance."""
    newest = (
        select(m.Instance.sop_instance_uid, func.max(m.Instance.version).label("v"))
        .group_by(m.Instance.sop_instance_uid)
        .subquery()
    )
    return select(m.Instance.id).join(
        newest,
        (newest.c.sop_instance_uid == m.Instance.sop_instance_uid) & (newest.c.v == m.Instance.version),
    )


def _uid_list(identifier: Dataset, keyword: str) -> list[str] | None:
    value = _s(identifier.get(keyword)).strip()
    if not value or "*" in value or "?" in value:
        return None
    return [v.strip() for v in value.split("\\") if v.strip()]


def _patient_record(p: m.Patient) -> dict[str, str]:
    return {
        "PatientID": p.patient_id, "PatientName": _s(p.patient_name), "IssuerOfPatientID": p.issuer,
        "PatientBirthDate": p.birth_date.strftime("%Y%m%d") if p.birth_date else "", "PatientSex": _s(p.sex),
    }


def _study_record(st: m.Study) -> dict[str, str]:
    return {
        "StudyInstanceUID": st.study_instance_uid,
        "StudyDate": st.study_date.strftime("%Y%m%d") if st.study_date else "",
        "StudyTime": _s(st.study_time), "AccessionNumber": _s(st.accession_number),
        "StudyDescription": _s(st.study_description), "ClinicalTrialTimePointID": _s(st.time_point_id),
    }


def _series_record(se: m.Series) -> dict[str, str]:
    return {
        "SeriesInstanceUID": se.series_instance_uid, "Modality": _s(se.modality),
        "SeriesNumber": _s(se.series_number), "SeriesDescription": _s(se.series_description),
        "ProtocolName": _s(se.protocol_name),
    }


def _image_record(i: m.Instance) -> dict[str, str]:
    return {
        "SOPInstanceUID": i.sop_instance_uid, "SOPClassUID": i.sop_class_uid,
        "InstanceNumber": _s(i.instance_number), "ContentDate": _s(i.content_date),
        "ContentTime": _s(i.content_time),
    }


def _matches_record(identifier: Dataset, record: dict[str, str]) -> bool:
    for elem in identifier:
        keyword = elem.keyword
        if keyword not in record or keyword == "QueryRetrieveLevel":
            continue
        query = "\\".join(map(str, elem.value)) if elem.VM > 1 else _s(elem.value)
        if keyword == "ModalitiesInStudy":
            wanted = {q for q in query.split("\\") if q}
            if wanted and not wanted & set(record[keyword].split("\\")):
                return False
        elif not matches(dictionary_VR(keyword), query, record[keyword]):
            return False
    return True


def _response(identifier: Dataset, record: dict[str, str], level: Level, retrieve_ae: str) -> Dataset:
    """The identifier's requested keys, filled from ``record`` (empty when we do not hold the value)."""
    ds = Dataset()
    for elem in identifier:
        tag = elem.tag
        if elem.keyword == "QueryRetrieveLevel" or tag.is_private or tag == 0x00080005:
            continue
        try:
            vr = dictionary_VR(tag)  # by tag: repeating groups (60xx overlays, 50xx curves) have no keyword
        except KeyError:  # a standard-looking tag no dictionary knows: nothing to answer with
            continue
        value = record.get(elem.keyword, "")
        if vr == "SQ":
            setattr(ds, elem.keyword, [])
        elif vr in ("IS", "US", "UL") and value == "":
            ds.add_new(tag, vr, None)
        else:
            ds.add_new(tag, vr, value.split("\\") if "\\" in value else value)
    ds.QueryRetrieveLevel = level
    ds.RetrieveAETitle = retrieve_ae
    if "SpecificCharacterSet" in identifier:
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def _entity_key(level: Level, p: m.Patient, st: m.Study, se: m.Series, inst: m.Instance) -> tuple[int, ...]:
    return {"PATIENT": (p.id,), "STUDY": (p.id, st.id), "SERIES": (p.id, st.id, se.id),
            "IMAGE": (p.id, st.id, se.id, inst.id)}[level]


def find(s: Session, identifier: Dataset, retrieve_ae: str) -> Iterator[Dataset]:
    """C-FIND: one response identifier per matching entity at the identifier's level.

    Hierarchy is applied leniently (as most archives do): higher-level keys that are given
    narrow the search, missing ones do not make the query fail.
    """
    level = level_of(identifier)
    q = (
        select(m.Patient, m.Study, m.Series, m.Instance)
        .join(m.Study, m.Study.patient_fk == m.Patient.id)
        .join(m.Series, m.Series.study_fk == m.Study.id)
        .join(m.Instance, m.Instance.series_fk == m.Series.id)
        .where(m.Instance.id.in_(_latest_instances()))
    )
    pid = _s(identifier.get("PatientID")).strip()
    if pid and "*" not in pid and "?" not in pid:
        q = q.where(m.Patient.patient_id == pid)
    for keyword, column in (("StudyInstanceUID", m.Study.study_instance_uid),
                            ("SeriesInstanceUID", m.Series.series_instance_uid),
                            ("SOPInstanceUID", m.Instance.sop_instance_uid)):
        if (uids := _uid_list(identifier, keyword)) is not None:
            q = q.where(column.in_(uids))
    rows = s.execute(q.order_by(m.Patient.id, m.Study.id, m.Series.id, m.Instance.instance_number)).all()

    records: dict[tuple[int, ...], dict[str, str]] = {}
    studies: dict[tuple[int, ...], set[int]] = {}
    series: dict[tuple[int, ...], set[int]] = {}
    instances: dict[tuple[int, ...], int] = {}
    modalities: dict[tuple[int, ...], set[str]] = {}
    for p, st, se, inst in rows:
        key = _entity_key(level, p, st, se, inst)
        if key not in records:
            record = _patient_record(p)
            if level != "PATIENT":
                record |= _study_record(st)
            if level in ("SERIES", "IMAGE"):
                record |= _series_record(se)
            if level == "IMAGE":
                record |= _image_record(inst)
            records[key] = record
        studies.setdefault(key, set()).add(st.id)
        series.setdefault(key, set()).add(se.id)
        instances[key] = instances.get(key, 0) + 1
        if se.modality:
            modalities.setdefault(key, set()).add(se.modality)
    for key, record in records.items():
        if level == "PATIENT":
            record["NumberOfPatientRelatedStudies"] = str(len(studies[key]))
            record["NumberOfPatientRelatedSeries"] = str(len(series[key]))
            record["NumberOfPatientRelatedInstances"] = str(instances[key])
        elif level == "STUDY":
            record["NumberOfStudyRelatedSeries"] = str(len(series[key]))
            record["NumberOfStudyRelatedInstances"] = str(instances[key])
            record["ModalitiesInStudy"] = "\\".join(sorted(modalities.get(key, set())))
        elif level == "SERIES":
            record["NumberOfSeriesRelatedInstances"] = str(instances[key])
        if _matches_record(identifier, record):
            yield _response(identifier, record, level, retrieve_ae)


def retrieve_files(s: Session, identifier: Dataset) -> list[m.Instance]:
    """C-GET / C-MOVE: the newest version of every instance the identifier's unique key selects."""
    level = level_of(identifier)
    key = UNIQUE_KEY[level]
    q = (
        select(m.Instance)
        .join(m.Series, m.Instance.series_fk == m.Series.id)
        .join(m.Study, m.Series.study_fk == m.Study.id)
        .join(m.Patient, m.Study.patient_fk == m.Patient.id)
        .where(m.Instance.id.in_(_latest_instances()))
    )
    if level == "PATIENT":
        pid = _s(identifier.get("PatientID")).strip()
        if not pid:
            raise QueryError("a PATIENT level retrieve needs PatientID")
        q = q.where(m.Patient.patient_id == pid)
    else:
        uids = _uid_list(identifier, key)
        if not uids:
            raise QueryError(f"a {level} level retrieve needs {key} (one UID or a list)")
        column = {"STUDY": m.Study.study_instance_uid, "SERIES": m.Series.series_instance_uid,
                  "IMAGE": m.Instance.sop_instance_uid}[level]
        q = q.where(column.in_(uids))
    return list(s.scalars(q.order_by(m.Study.id, m.Series.id, m.Instance.instance_number, m.Instance.id)))
