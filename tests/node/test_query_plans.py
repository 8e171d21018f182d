"""The hot queries use an index: no full read of the instances table in SQLite's query plans (#30).

A year of a busy site is some 660,000 instance rows; a query that scans them takes seconds. The index here
is small (a few visits, statistics refreshed as the node refreshes them) — the plan is what is checked,
and SQLite picks it from the schema and the statistics, not the row count."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.dialects import sqlite

from node.dimse.qr import find, newest_version, retrieve_files
from node.intake.overview import node_status, received_between
from node.work.corrections import find_corrections
from storage import models as m
from storage.database import make_engine, refresh_statistics, session_factory
from storage.filestore import FileStore
from storage.migrate import upgrade
from tests.support.index_builder import build_index, query


@pytest.fixture(scope="module")
def year(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, dict]]:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('plans') / 'index.db'}")
    upgrade(engine)
    facts = build_index(engine, 36)  # 12 patients: the twelfth is a DOE
    refresh_statistics(engine)
    yield engine, facts
    engine.dispose()


def plan_of(engine: Engine, statement) -> list[str]:
    sql = str(statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        return [row[3] for row in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}"))]


def executed_plans(engine: Engine, action: Callable[[], object]) -> list[tuple[str, list[str]]]:
    """Every SELECT ``action`` runs on ``engine``, with the plan SQLite made for it (its own parameters)."""
    seen: list[tuple[str, Any]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    with engine.connect() as conn:
        return [(sql, [row[3] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", parameters)])
                for sql, parameters in seen]


PARTIAL = ("ix_instances_conflict",)  # partial indexes: a scan of one reads only the rows it holds (conflicts)


def scans_instances(plan: list[str]) -> list[str]:
    """The steps that read the whole instances table (or a full index of it)."""
    return [step for step in plan if step.startswith("SCAN") and step.split(" ")[1] == "instances"
            and not any(index in step for index in PARTIAL)]


def hot_queries(facts: dict) -> dict[str, tuple[Dataset, int]]:
    return {
        "C-FIND STUDY PatientID": (query("STUDY", PatientID=facts["patient_id"], StudyInstanceUID=""), 10_001),
        "C-FIND STUDY PatientName DOE*": (query("STUDY", PatientName="DOE*", StudyInstanceUID=""), 10_001),
        "C-FIND IMAGE one series": (query("IMAGE", SeriesInstanceUID=facts["series_uid"], SOPInstanceUID=""),
                                    10_001),
        "QIDO studies?limit=25": (query("STUDY", StudyInstanceUID=""), 25),
        "QIDO series?StudyInstanceUID=": (query("SERIES", StudyInstanceUID=facts["study_uid"]), 10_001),
        "C-FIND IMAGE one SOP Instance UID": (query("IMAGE", SOPInstanceUID="2.25.3.0.1.7"), 10_001),
    }


def test_no_c_find_or_qido_reads_the_whole_instances_table(year) -> None:
    """Every statement a query runs — the match and the counts of what it answers — searches by an index."""
    engine, facts = year
    sessions = session_factory(engine)
    for name, (asked, limit) in hot_queries(facts).items():
        for counted in ("NumberOfStudyRelatedInstances", "NumberOfSeriesRelatedInstances", "ModalitiesInStudy"):
            setattr(asked, counted, None if counted.startswith("Number") else "")

        def run(asked: Dataset = asked, limit: int = limit) -> None:
            with sessions() as s:
                assert find(s, asked, "MYONODE", limit=limit)

        plans = executed_plans(engine, run)
        assert plans, name
        for sql, plan in plans:
            assert not scans_instances(plan), f"{name}: {sql}: {plan}"


def test_the_counts_the_dashboard_status_and_metrics_show_read_no_instance_rows(year) -> None:
    engine, _ = year
    statements = {
        "conflicts": select(func.count()).select_from(m.Instance).where(m.Instance.conflict),
        "SEGs sent back": select(m.Instance.id).where(m.Instance.sop_class_uid == "1.2.840.10008.5.1.4.1.1.66.4"),
        "newest version": select(m.Instance.id).where(m.Instance.sop_instance_uid == "2.25.3.0.1.7",
                                                      newest_version()),
    }
    for name, statement in statements.items():
        plan = plan_of(engine, statement)
        assert not scans_instances(plan), f"{name}: {plan}"


def test_myonode_status_and_the_corrections_finder_read_no_whole_instances_table(year, tmp_path: Path) -> None:
    engine, _ = year
    sessions = session_factory(engine)

    def status_and_corrections() -> None:
        with sessions() as s:
            node_status(s)
            received_between(s, datetime.now(UTC) - timedelta(days=7), datetime.now(UTC))
            find_corrections(s, FileStore(tmp_path))
            s.rollback()

    plans = executed_plans(engine, status_and_corrections)
    assert len(plans) >= 8
    for sql, plan in plans:
        assert not scans_instances(plan), f"{sql}: {plan}"


def test_status_and_retrieve_answer_from_the_series_rows_and_the_indexes(year, tmp_path: Path) -> None:
    """Functional: the counts come out right on the built index (the plans above say how they are read)."""
    engine, facts = year
    sessions = session_factory(engine)
    with sessions() as s:
        status = node_status(s)
        assert status.instances == facts["instances"] and status.conflicts == 0
        assert status.kinds[m.SeriesKind.T2] == (36 * 6, 36 * 300)
        files = retrieve_files(s, query("SERIES", SeriesInstanceUID=facts["series_uid"]))
        assert [f.instance_number for f in files] == list(range(1, 51))
        assert find_corrections(s, FileStore(tmp_path)) == []  # the SEGs have no files here: each refused
        assert s.scalar(select(func.count()).select_from(m.Correction)) == 36
        s.rollback()
