"""Query/Retrieve over the index: C-FIND (and QIDO-RS) matched in SQL at the query's own level, and the
instance files a C-GET or C-MOVE identifier selects.

A query runs against the rows of its level — patients, studies, series or instances, joined to
the levels above — never by loading instances to match them in Python. Each key of the
identifier becomes a WHERE condition as :mod:`node.dimse.matching` reads it: single value, list
of UIDs, range (DA on date columns, TM without separators), wildcard (an escaped ``LIKE``; PN
compared case-insensitively, other strings case-sensitively — ``GLOB`` on SQLite, whose ``LIKE``
ignores case), so the database matches in linear time with its indexes. ``limit``/``offset`` are
SQL's, in a stable order (the level's id). The counts (Number of … Related Series/Instances,
Modalities in Study) come from the series rows, which ingest keeps counted, by aggregates over
the rows answered only. Re-sent instances kept as several versions are served as their newest
(no newer version of the same SOP Instance UID: the unique index answers it).

Every query is bounded: at most ``max_results`` matches (more: :class:`TooManyMatches`) and
``timeout_s`` of database time (longer: :class:`QueryTooCostly`; SQLite is interrupted by a
progress handler, PostgreSQL by ``statement_timeout``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from sqlalchemy import ColumnElement, and_, exists, false, func, or_, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from node.dimse.matching import Condition, MatchingError, condition
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
# in the order of _patient_counts' (studies, series, instances)
PATIENT_COUNTS = ("NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances")
UNIQUE_KEY: dict[Level, str] = {
    "PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID",
}
DEFAULT_MAX_RESULTS = 10_000
DEFAULT_TIMEOUT_S = 5.0
CHUNK = 500  # ids per IN list of the count queries


class QueryError(ValueError):
    """An identifier the SCP cannot process (unknown level, a value that does not fit its VR, a missing
    unique key for a retrieve): the client's to fix."""


class TooManyMatches(QueryError):
    """More matches than a query may return."""


class QueryTooCostly(QueryError):
    """A query that took longer than its bound."""


@dataclass(frozen=True)
class _Attribute:
    level: Level
    column: InstrumentedAttribute[Any]
    vr: str


ATTRIBUTES: dict[str, _Attribute] = {
    "PatientID": _Attribute("PATIENT", m.Patient.patient_id, "LO"),
    "PatientName": _Attribute("PATIENT", m.Patient.patient_name, "PN"),
    "PatientBirthDate": _Attribute("PATIENT", m.Patient.birth_date, "DA"),
    "PatientSex": _Attribute("PATIENT", m.Patient.sex, "CS"),
    "IssuerOfPatientID": _Attribute("PATIENT", m.Patient.issuer, "LO"),
    "StudyInstanceUID": _Attribute("STUDY", m.Study.study_instance_uid, "UI"),
    "StudyDate": _Attribute("STUDY", m.Study.study_date, "DA"),
    "StudyTime": _Attribute("STUDY", m.Study.study_time, "TM"),
    "AccessionNumber": _Attribute("STUDY", m.Study.accession_number, "SH"),
    "StudyDescription": _Attribute("STUDY", m.Study.study_description, "LO"),
    "ClinicalTrialTimePointID": _Attribute("STUDY", m.Study.time_point_id, "LO"),
    "SeriesInstanceUID": _Attribute("SERIES", m.Series.series_instance_uid, "UI"),
    "Modality": _Attribute("SERIES", m.Series.modality, "CS"),
    "SeriesNumber": _Attribute("SERIES", m.Series.series_number, "IS"),
    "SeriesDescription": _Attribute("SERIES", m.Series.series_description, "LO"),
    "ProtocolName": _Attribute("SERIES", m.Series.protocol_name, "LO"),
    "SOPInstanceUID": _Attribute("IMAGE", m.Instance.sop_instance_uid, "UI"),
    "SOPClassUID": _Attribute("IMAGE", m.Instance.sop_class_uid, "UI"),
    "InstanceNumber": _Attribute("IMAGE", m.Instance.instance_number, "IS"),
    "ContentDate": _Attribute("IMAGE", m.Instance.content_date, "DA"),
    "ContentTime": _Attribute("IMAGE", m.Instance.content_time, "TM"),
}
DATE_COLUMNS = {"PatientBirthDate", "StudyDate"}  # DA kept as SQL dates; ContentDate is kept as sent (YYYYMMDD)
RETURN_ONLY = {"ModalitiesInStudy", *PATIENT_COUNTS, "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
               "NumberOfSeriesRelatedInstances"}


def level_of(identifier: Dataset) -> Level:
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in LEVELS:
        raise QueryError(f"QueryRetrieveLevel {level!r} is not one of {', '.join(LEVELS)}")
    return level


def _s(value: object) -> str:
    return "" if value is None else str(value)


def _query_value(identifier: Dataset, keyword: str) -> str | None:
    """The identifier's value of ``keyword`` as one string (several values joined by ``\\``); None if absent."""
    if keyword not in identifier:
        return None
    try:
        elem = identifier[keyword]
        if elem.value is None:
            return None
        return "\\".join(map(str, elem.value)) if elem.VM > 1 else str(elem.value)
    except Exception as exc:  # a value pydicom cannot even read: the client's to fix
        raise QueryError(f"{keyword}: not a readable value ({exc.__class__.__name__})") from exc


def newest_version() -> ColumnElement[bool]:
    """The instance row is its SOP instance's newest version (no row of the same UID with a higher one)."""
    newer = aliased(m.Instance)
    return ~exists().where(newer.sop_instance_uid == m.Instance.sop_instance_uid, newer.version > m.Instance.version)


# --- conditions in SQL ---------------------------------------------------------------------


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like_pattern(pattern: str) -> str:
    return "".join("%" if c == "*" else "_" if c == "?" else _escape_like(c) for c in pattern)


def _glob_pattern(pattern: str) -> str:
    """SQLite GLOB (case-sensitive): ``*`` and ``?`` as they are, the characters GLOB treats specially bracketed."""
    return "".join(c if c in "*?" else f"[{c}]" if c in "[]" else c for c in pattern)


def _date(keyword: str, text: str) -> date:
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise QueryError(f"{keyword}: {text[:40]!r} is not a date (YYYYMMDD)") from None


def sql_condition(keyword: str, column: Any, c: Condition, dialect: str) -> ColumnElement[bool] | None:
    """``c`` on ``column`` as a WHERE clause (None: matches everything); ``dialect``: the database's name."""
    if c.kind == "universal":
        return None
    if c.kind == "list":
        return column.in_(c.values)
    if keyword in DATE_COLUMNS:
        if c.kind == "range":
            low, high = c.values
            bounds = [column >= _date(keyword, low)] if low else []
            bounds += [column <= _date(keyword, high)] if high else []
            return and_(column.is_not(None), *bounds)
        return column == _date(keyword, c.values[0])
    value: Any = func.replace(column, ":", "") if c.vr == "TM" else column
    if c.kind == "range":
        low, high = c.values
        clauses = [value != "", column.is_not(None)]
        if low:
            clauses.append(value >= low)
        if high:  # an upper bound includes what starts with it (TM '10' includes '1030')
            clauses.append(or_(value <= high, value.like(_escape_like(high) + "%", escape="\\")))
        return and_(*clauses)
    if c.kind == "wildcard":
        pattern = c.values[0]
        if c.ignore_case:
            return _lower(column, dialect).like(_like_pattern(pattern.lower()), escape="\\")
        if dialect == "sqlite":
            return column.op("GLOB")(_glob_pattern(pattern))
        return column.like(_like_pattern(pattern), escape="\\")
    if c.vr in ("IS", "US", "UL", "SS", "SL"):
        number = int(c.values[0])
        return column == number if abs(number) < 2**31 else false()
    if c.ignore_case:
        return _lower(column, dialect) == c.values[0].lower()
    return value == c.values[0]


def _lower(column: Any, dialect: str) -> Any:
    """``column`` in lower case as Python and PostgreSQL fold it (SQLite: the function storage.database adds)."""
    return func.unicode_lower(column) if dialect == "sqlite" else func.lower(column)


def _conditions(identifier: Dataset, level: Level, dialect: str) -> list[ColumnElement[bool]]:
    """The WHERE clauses of the identifier's keys at ``level`` and the levels above it (keys of lower
    levels are not matched: PS3.4 hierarchical query)."""
    depth = LEVELS.index(level)
    clauses: list[ColumnElement[bool]] = []
    for keyword, attribute in ATTRIBUTES.items():
        if LEVELS.index(attribute.level) > depth:
            continue
        query = _query_value(identifier, keyword)
        if query is None:
            continue
        try:
            c = condition(attribute.vr, query, keyword)
        except MatchingError as exc:
            raise QueryError(str(exc)) from None
        clause = sql_condition(keyword, attribute.column, c, dialect)
        if clause is not None:
            clauses.append(clause)
    modalities = _query_value(identifier, "ModalitiesInStudy") if level == "STUDY" else None
    wanted = [q.strip() for q in (modalities or "").split("\\") if q.strip() and q.strip() != "*"]
    if wanted:  # a study with a series of any of them (a STUDY key: matched at that level only)
        clauses.append(exists().where(m.Series.study_fk == m.Study.id, m.Series.modality.in_(wanted)))
    return clauses


# --- the statement of each level -----------------------------------------------------------

_PATIENT_COLUMNS = (m.Patient.id.label("patient_pk"), m.Patient.patient_id, m.Patient.patient_name,
                    m.Patient.issuer, m.Patient.birth_date, m.Patient.sex)
_STUDY_COLUMNS = (m.Study.id.label("study_pk"), m.Study.study_instance_uid, m.Study.study_date, m.Study.study_time,
                  m.Study.accession_number, m.Study.study_description, m.Study.time_point_id)
_SERIES_COLUMNS = (m.Series.id.label("series_pk"), m.Series.series_instance_uid, m.Series.modality,
                   m.Series.series_number, m.Series.series_description, m.Series.protocol_name, m.Series.n_instances)
_IMAGE_COLUMNS = (m.Instance.id.label("instance_pk"), m.Instance.sop_instance_uid, m.Instance.sop_class_uid,
                  m.Instance.instance_number, m.Instance.content_date, m.Instance.content_time)


def _statement(level: Level) -> Any:
    """The level's rows joined to the levels above, in the level's stable order (a Select)."""
    if level == "PATIENT":
        held = exists().where(m.Study.patient_fk == m.Patient.id, m.Series.study_fk == m.Study.id,
                              m.Series.n_instances > 0)
        return select(*_PATIENT_COLUMNS).where(held).order_by(m.Patient.id)
    if level == "STUDY":
        held = exists().where(m.Series.study_fk == m.Study.id, m.Series.n_instances > 0)
        return (select(*_PATIENT_COLUMNS, *_STUDY_COLUMNS).join(m.Patient, m.Study.patient_fk == m.Patient.id)
                .where(held).order_by(m.Study.id))
    if level == "SERIES":
        return (select(*_PATIENT_COLUMNS, *_STUDY_COLUMNS, *_SERIES_COLUMNS)
                .join(m.Study, m.Series.study_fk == m.Study.id).join(m.Patient, m.Study.patient_fk == m.Patient.id)
                .where(m.Series.n_instances > 0).order_by(m.Series.id))
    return (select(*_PATIENT_COLUMNS, *_STUDY_COLUMNS, *_SERIES_COLUMNS, *_IMAGE_COLUMNS)
            .join(m.Series, m.Instance.series_fk == m.Series.id).join(m.Study, m.Series.study_fk == m.Study.id)
            .join(m.Patient, m.Study.patient_fk == m.Patient.id)
            .where(newest_version()).order_by(m.Instance.series_fk, m.Instance.instance_number, m.Instance.id))


def _day(value: date | None) -> str:
    return value.strftime("%Y%m%d") if value else ""


def _record(level: Level, row: Any) -> dict[str, str]:
    record = {"PatientID": row.patient_id, "PatientName": _s(row.patient_name), "IssuerOfPatientID": row.issuer,
              "PatientBirthDate": _day(row.birth_date), "PatientSex": _s(row.sex)}
    if level != "PATIENT":
        record |= {"StudyInstanceUID": row.study_instance_uid, "StudyDate": _day(row.study_date),
                   "StudyTime": _s(row.study_time), "AccessionNumber": _s(row.accession_number),
                   "StudyDescription": _s(row.study_description), "ClinicalTrialTimePointID": _s(row.time_point_id)}
    if level in ("SERIES", "IMAGE"):
        record |= {"SeriesInstanceUID": row.series_instance_uid, "Modality": _s(row.modality),
                   "SeriesNumber": _s(row.series_number), "SeriesDescription": _s(row.series_description),
                   "ProtocolName": _s(row.protocol_name)}
    if level == "IMAGE":
        record |= {"SOPInstanceUID": row.sop_instance_uid, "SOPClassUID": row.sop_class_uid,
                   "InstanceNumber": _s(row.instance_number), "ContentDate": _s(row.content_date),
                   "ContentTime": _s(row.content_time)}
    return record


# --- counts of the rows answered -----------------------------------------------------------


def _chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    for i in range(0, len(ids), CHUNK):
        yield list(ids[i:i + CHUNK])


def _conflicts(s: Session, group: Any, ids: Sequence[int]) -> dict[int, int]:
    """Rows that are a second (or later) version of an instance (``conflict``), counted per ``group`` (a patient,
    study or series key column) for the ``ids`` of that column."""
    out: dict[int, int] = {}
    for chunk in _chunks(ids):
        q = (select(group, func.count()).select_from(m.Instance).join(m.Series, m.Instance.series_fk == m.Series.id)
             .join(m.Study, m.Series.study_fk == m.Study.id).where(m.Instance.conflict, group.in_(chunk))
             .group_by(group))
        out.update({k: int(n) for k, n in s.execute(q)})
    return out


def _patient_counts(s: Session, ids: Sequence[int]) -> dict[int, tuple[int, int, int]]:
    out: dict[int, tuple[int, int, int]] = {}
    conflicts = _conflicts(s, m.Study.patient_fk, ids)
    for chunk in _chunks(ids):
        q = (select(m.Study.patient_fk, func.count(func.distinct(m.Study.id)), func.count(m.Series.id),
                    func.coalesce(func.sum(m.Series.n_instances), 0))
             .join(m.Series, m.Series.study_fk == m.Study.id)
             .where(m.Study.patient_fk.in_(chunk), m.Series.n_instances > 0).group_by(m.Study.patient_fk))
        for pk, studies, series, instances in s.execute(q):
            out[pk] = (int(studies), int(series), int(instances) - conflicts.get(pk, 0))
    return out


def _study_counts(s: Session, ids: Sequence[int]) -> dict[int, tuple[int, int, str]]:
    out: dict[int, tuple[int, int, str]] = {}
    conflicts = _conflicts(s, m.Series.study_fk, ids)
    modalities: dict[int, set[str]] = {}
    for chunk in _chunks(ids):
        for pk, modality in s.execute(select(m.Series.study_fk, m.Series.modality).distinct()
                                      .where(m.Series.study_fk.in_(chunk), m.Series.n_instances > 0)):
            if modality:
                modalities.setdefault(pk, set()).add(modality)
        q = (select(m.Series.study_fk, func.count(m.Series.id), func.coalesce(func.sum(m.Series.n_instances), 0))
             .where(m.Series.study_fk.in_(chunk), m.Series.n_instances > 0).group_by(m.Series.study_fk))
        for pk, series, instances in s.execute(q):
            out[pk] = (int(series), int(instances) - conflicts.get(pk, 0), "\\".join(sorted(modalities.get(pk, ()))))
    return out


def _add_counts(s: Session, level: Level, identifier: Dataset, rows: list[Any],
                records: list[dict[str, str]]) -> None:
    """The count keys the identifier asks for, from the series rows of the entities answered."""
    if level == "PATIENT" and any(k in identifier for k in PATIENT_COUNTS):
        counts = _patient_counts(s, [r.patient_pk for r in rows])
        for row, record in zip(rows, records):
            record |= {key: str(n) for key, n in zip(PATIENT_COUNTS, counts.get(row.patient_pk, (0, 0, 0)))}
    elif level == "STUDY" and any(k in identifier for k in ("NumberOfStudyRelatedSeries",
                                                            "NumberOfStudyRelatedInstances", "ModalitiesInStudy")):
        study_counts = _study_counts(s, [r.study_pk for r in rows])
        for row, record in zip(rows, records):
            series, instances, modalities = study_counts.get(row.study_pk, (0, 0, ""))
            record |= {"NumberOfStudyRelatedSeries": str(series), "NumberOfStudyRelatedInstances": str(instances),
                       "ModalitiesInStudy": modalities}
    elif level == "SERIES" and "NumberOfSeriesRelatedInstances" in identifier:
        conflicts = _conflicts(s, m.Instance.series_fk, [r.series_pk for r in rows])
        for row, record in zip(rows, records):
            record["NumberOfSeriesRelatedInstances"] = str(row.n_instances - conflicts.get(row.series_pk, 0))


# --- the answer ----------------------------------------------------------------------------


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


@contextmanager
def bounded(s: Session, timeout_s: float | None) -> Iterator[None]:
    """Statements of ``s`` in this block end after ``timeout_s`` of work with :class:`QueryTooCostly`."""
    if not timeout_s:
        yield
        return
    connection = s.connection()
    dialect = connection.dialect.name
    raw: Any = connection.connection.dbapi_connection
    if dialect == "sqlite":
        deadline = time.monotonic() + timeout_s
        raw.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    elif dialect == "postgresql":
        connection.exec_driver_sql(f"SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}")
    try:
        yield
    except OperationalError as exc:
        text = str(exc.orig).lower()
        if "interrupted" in text or "statement timeout" in text:
            raise QueryTooCostly(f"query took more than {timeout_s:g} s: narrow it") from None
        raise
    finally:
        if dialect == "sqlite":
            raw.set_progress_handler(None, 0)


def find_statement(identifier: Dataset, dialect: str, *, limit: int, offset: int = 0) -> Any:
    """The SELECT of :func:`find` for ``identifier`` on a database of ``dialect``."""
    level = level_of(identifier)
    return _statement(level).where(*_conditions(identifier, level, dialect)).offset(offset or None).limit(limit)


def find(s: Session, identifier: Dataset, retrieve_ae: str, *, limit: int | None = None, offset: int = 0,
         max_results: int = DEFAULT_MAX_RESULTS, timeout_s: float | None = DEFAULT_TIMEOUT_S) -> list[Dataset]:
    """C-FIND (and QIDO-RS): one response identifier per entity at the identifier's level that matches, in the
    level's stable order, ``offset`` skipped and at most ``limit`` given.

    Raises :class:`QueryError` for an identifier that cannot be matched, :class:`TooManyMatches` when more
    than ``max_results`` would be answered, :class:`QueryTooCostly` after ``timeout_s``."""
    level = level_of(identifier)
    wanted = max_results if limit is None else min(limit, max_results)
    q = find_statement(identifier, s.get_bind().dialect.name, limit=wanted + 1 if limit is None else wanted,
                       offset=offset)
    with bounded(s, timeout_s):
        rows = list(s.execute(q))
        if len(rows) > wanted:
            raise TooManyMatches(f"more than {max_results} matches: narrow the query")
        records = [_record(level, row) for row in rows]
        _add_counts(s, level, identifier, rows, records)
    return [_response(identifier, record, level, retrieve_ae) for record in records]


def _uid_list(identifier: Dataset, keyword: str) -> list[str] | None:
    value = (_query_value(identifier, keyword) or "").strip()
    if not value or "*" in value or "?" in value:
        return None
    try:
        c = condition("UI", value, keyword)
    except MatchingError as exc:
        raise QueryError(str(exc)) from None
    return list(c.values)


def retrieve_files(s: Session, identifier: Dataset) -> list[m.Instance]:
    """C-GET / C-MOVE: the newest version of every instance the identifier's unique key selects."""
    level = level_of(identifier)
    key = UNIQUE_KEY[level]
    q = (
        select(m.Instance)
        .join(m.Series, m.Instance.series_fk == m.Series.id)
        .join(m.Study, m.Series.study_fk == m.Study.id)
        .join(m.Patient, m.Study.patient_fk == m.Patient.id)
        .where(newest_version())
    )
    if level == "PATIENT":
        pid = _s(_query_value(identifier, "PatientID")).strip()
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
