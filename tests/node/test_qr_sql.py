"""C-FIND matching in SQL, on SQLite and on the real PostgreSQL: the same answers as the matching rules in
Python (tests/node/test_matching.py), stable paging, bounded matches and time, counts without instances."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from sqlalchemy import Engine, text

from node.dimse.qr import QueryError, QueryTooCostly, TooManyMatches, bounded, find
from storage import models as m
from storage.database import session_factory
from storage.migrate import upgrade
from tests.node.test_matching import CASES

NOW = datetime(2026, 3, 1, tzinfo=UTC)
# the attribute each VR of the matching table is tried on, and the level it is a key of
ON = {"LO": ("StudyDescription", "STUDY"), "PN": ("PatientName", "STUDY"), "UI": ("StudyInstanceUID", "STUDY"),
      "DA": ("StudyDate", "STUDY"), "TM": ("StudyTime", "STUDY"), "IS": ("SeriesNumber", "SERIES")}


@pytest.fixture
def sessions(engine: Engine):
    upgrade(engine)
    return session_factory(engine)


def _study(s, n: int, **values: object) -> m.Study:
    patient = m.Patient(patient_id=f"CASE-{n:03d}", issuer="", patient_name=values.pop("patient_name", None))
    study = m.Study(patient=patient, study_instance_uid=str(values.pop("study_instance_uid", f"2.25.{n}")),
                    **values)
    s.add(study)
    return study


def _series(s, study: m.Study, n: int, *, instances: int = 1, series_number: int | None = None,
            modality: str = "MR") -> m.Series:
    series = m.Series(study=study, series_instance_uid=f"2.25.9{n}", modality=modality, series_number=series_number,
                      n_instances=instances, first_received_at=NOW, last_received_at=NOW)
    s.add(series)
    return series


def test_every_matching_rule_gives_the_same_answer_in_sql_as_in_python(sessions) -> None:
    with sessions.begin() as s:
        for n, (vr, _, actual, _) in enumerate(CASES):
            keyword, _level = ON[vr]
            study_values: dict[str, object] = {}
            series_number = None
            if keyword == "StudyDate":
                study_values["study_date"] = datetime.strptime(actual, "%Y%m%d").date() if actual else None
            elif keyword == "SeriesNumber":
                series_number = int(actual) if actual else None
            else:
                column = {"StudyDescription": "study_description", "PatientName": "patient_name",
                          "StudyInstanceUID": "study_instance_uid", "StudyTime": "study_time"}[keyword]
                study_values[column] = actual
            study = _study(s, n, **study_values)
            _series(s, study, n, series_number=series_number)
    with sessions() as s:
        for n, (vr, query, actual, expected) in enumerate(CASES):
            keyword, level = ON[vr]
            identifier = Dataset()
            identifier.QueryRetrieveLevel = level
            identifier.PatientID = f"CASE-{n:03d}"
            setattr(identifier, keyword, query)
            found = find(s, identifier, "MYONODE")
            assert bool(found) is expected, (vr, query, actual)


def test_the_counts_come_from_the_series_rows_and_a_second_version_counts_once(sessions) -> None:
    with sessions.begin() as s:
        study = _study(s, 1)
        first = _series(s, study, 1, instances=3)
        _series(s, study, 2, instances=2, modality="SR")
        s.flush()
        for i, conflict in enumerate((False, False, True)):  # the third row is a second version of the first
            s.add(m.Instance(series_fk=first.id, sop_instance_uid="2.25.77" if i != 1 else "2.25.78",
                             version=2 if conflict else 1, sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                             file_path=f"f{i}", size_bytes=1, sha256=f"{i:064d}", conflict=conflict, received_at=NOW))
    with sessions() as s:
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.NumberOfStudyRelatedSeries = None
        q.NumberOfStudyRelatedInstances = None
        q.ModalitiesInStudy = ""
        (r,) = find(s, q, "MYONODE")
        assert (int(r.NumberOfStudyRelatedSeries), int(r.NumberOfStudyRelatedInstances)) == (2, 4)
        assert list(r.ModalitiesInStudy) == ["MR", "SR"]
        q.ModalitiesInStudy = "CT"
        assert find(s, q, "MYONODE") == []
        image = Dataset()
        image.QueryRetrieveLevel = "IMAGE"
        image.SOPInstanceUID = ""
        assert sorted(str(d.SOPInstanceUID) for d in find(s, image, "MYONODE")) == ["2.25.77", "2.25.78"]


def test_paging_is_stable_and_too_many_matches_is_refused_with_a_reason(sessions) -> None:
    with sessions.begin() as s:
        for n in range(30):
            _series(s, _study(s, n, patient_name=f"DOE^{n}"), n)
    with sessions() as s:
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.PatientName = "doe*"
        q.StudyInstanceUID = ""
        everything = [str(d.StudyInstanceUID) for d in find(s, q, "MYONODE")]
        assert len(everything) == 30
        pages = [str(d.StudyInstanceUID) for offset in range(0, 30, 7)
                 for d in find(s, q, "MYONODE", limit=7, offset=offset)]
        assert pages == everything
        with pytest.raises(TooManyMatches, match="more than 29 matches"):
            find(s, q, "MYONODE", max_results=29)
        assert len(find(s, q, "MYONODE", limit=25, max_results=29)) == 25  # a page within the bound is fine


def test_a_value_that_does_not_fit_its_vr_is_a_query_error_naming_the_attribute(sessions) -> None:
    """As a C-FIND identifier arrives from the network: raw values, read only when matched."""
    with sessions() as s:
        for keyword, vr, value in (("StudyDate", "DA", b"last week "), ("SeriesNumber", "IS", b"' OR 1=1 --"),
                                   ("PatientName", "PN", b"x" * 5000), ("StudyInstanceUID", "UI", b"1.2\\" * 1200)):
            q = Dataset()
            q.QueryRetrieveLevel = "SERIES"
            tag = Tag(keyword)
            q._dict[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)
            with pytest.raises(QueryError, match=keyword):
                find(s, q, "MYONODE")


def test_a_query_that_runs_longer_than_its_bound_is_stopped(sessions, engine: Engine) -> None:
    slow = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000000) SELECT count(*) FROM n"
            if engine.dialect.name == "sqlite" else "SELECT pg_sleep(5)")
    with sessions() as s, pytest.raises(QueryTooCostly, match=r"more than 0\.05 s"), bounded(s, 0.05):
        s.execute(text(slow))
    with sessions() as s, bounded(s, 5):  # the bound ends with its block: the session goes on
        assert s.execute(text("SELECT 1")).scalar() == 1
