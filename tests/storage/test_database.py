"""The SQL store on SQLite and on the real PostgreSQL: migrations, schema, ORM round trips, constraints."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from storage import models as m
from storage.database import session_factory, transaction
from storage.migrate import current_revision, head_revision, upgrade

T0 = datetime(2026, 3, 1, 9, 30, 15, 250000, tzinfo=UTC)


@pytest.fixture
def migrated(engine: Engine) -> Engine:
    upgrade(engine)
    return engine


def test_upgrade_empty_database_to_head(engine: Engine) -> None:
    """An empty database upgrades to the newest revision and holds every model table."""
    assert current_revision(engine) is None
    assert upgrade(engine) == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert set(m.Base.metadata.tables) <= tables
    # Idempotent: a second upgrade (as on every node start) changes nothing.
    assert upgrade(engine) == head_revision()


def test_migrations_match_models(migrated: Engine) -> None:
    """The migrated schema is exactly what the ORM models declare (no forgotten migration)."""
    with migrated.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), m.Base.metadata)
    assert diff == []


def _one_of_everything(session) -> dict[str, object]:
    patient = m.Patient(patient_id="MND-001", issuer="SITE", patient_name="Doe^Jane", birth_date=date(1960, 5, 2), sex="F")
    subject = m.Subject(
        subject_id="P001", group=m.Group.PATIENT, sex=m.Sex.FEMALE, baseline_age=57.5,
        onset_site=m.OnsetSite.UPPER_LIMB, onset_side=m.Side.LEFT, diagnosis=m.Diagnosis.ALS,
        patient_ids=[m.SubjectPatientId(patient_id="MND-001", issuer="SITE")],
    )
    visit = m.Visit(subject=subject, label="baseline", visit_date=date(2026, 3, 1), state=m.VisitState.PROCESSED)
    study = m.Study(patient=patient, visit=visit, study_instance_uid="1.2.826.0.1.1", study_date=date(2026, 3, 1),
                    study_time="093015", time_point_id="BASELINE")
    series = m.Series(study=study, series_instance_uid="1.2.826.0.1.1.1", modality="MR", series_number=301,
                      series_description="WB T2 TSE", kind=m.SeriesKind.T2, n_instances=1,
                      first_received_at=T0, last_received_at=T0)
    instance = m.Instance(series=series, sop_instance_uid="1.2.826.0.1.1.1.1", sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                          transfer_syntax_uid="1.2.840.10008.1.2.1", instance_number=1,
                          file_path="dicom/1.2.826.0.1.1/1.2.826.0.1.1.1/1.2.826.0.1.1.1.1.dcm",
                          size_bytes=5_000_000_000, sha256="ab" * 32, calling_ae="PHILIPS", peer_address="10.0.0.5",
                          received_at=T0)
    measurement = m.Measurement(visit=visit, modality=m.Modality.REL_T2, muscle="tibialis_anterior", side=m.Side.LEFT,
                                value=1.71, mean_signal=342.0, reference_value=200.0, voxel_count=12345,
                                volume_ml=37.4, stations=[5, 6], qc_flags=["touches_edge"], pipeline_version="0.1.0",
                                atlas_id="default-2026")
    observation = m.Observation(visit=visit, source=m.ObservationSource.CLINICAL, measure="MRC",
                                muscle="ankle_dorsiflexors", side=m.Side.LEFT, value=4.0, source_file="clinical.csv")
    result = m.ResultObject(visit=visit, instance=instance, kind=m.ResultKind.SR, sop_instance_uid="1.2.826.0.1.9",
                            series_instance_uid="1.2.826.0.1.8", sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34",
                            replaces_uid="1.2.826.0.1.7")
    job = m.Job(kind="process_visit", target="visit:1", state=m.JobState.RUNNING, attempts=1,
                lease_owner="host:123", lease_expires_at=T0 + timedelta(minutes=10), started_at=T0)
    outbox = m.OutboxItem(destination="pacs", instance=instance, attempts=2, next_try_at=T0, last_error="refused")
    run = m.StatsRun(input_digest="cd" * 32, output_dir="var/reports/2026-03-02", state=m.RunState.DONE,
                     finished_at=T0)
    user = m.User(name="physicist", password_hash="$argon2id$v=19$m=65536,t=3,p=4$x$y", role=m.Role.OPERATOR)
    event = m.AuditEvent(actor="physicist", action="job retry", target="job 1", remote="127.0.0.1")
    review = m.Review(visit=visit, muscle="tibialis_anterior", side=m.Side.LEFT, verdict=m.ReviewVerdict.REJECTED,
                      reason=m.RejectReason.MISREGISTERED, reviewer="physicist")
    correction = m.Correction(instance=instance, visit=visit, state=m.CorrectionState.APPLIED, manufacturer="Kitware",
                              muscles=["quadriceps left"], applied_at=T0)
    pin = m.AtlasPin(atlas_id="site-2026", path="/srv/myonode/atlases/site-2026", synthetic=False,
                     pinned_by="physicist", visits_queued=12)
    session.add_all([patient, subject, study, series, instance, measurement, observation, result, job, outbox, run,
                     user, event, review, correction, pin])
    return {"visit": visit}


def test_orm_round_trips_every_table(migrated: Engine) -> None:
    """Every table stores a row and gives the same values back, enums, JSON and UTC times included."""
    factory = session_factory(migrated)
    with transaction(factory) as s:
        _one_of_everything(s)
    with factory() as s:
        for table in m.Base.metadata.sorted_tables:
            assert s.execute(select(table)).all(), f"{table.name} is empty"
        subject = s.scalars(select(m.Subject)).one()
        assert (subject.group, subject.sex, subject.onset_site, subject.onset_side) == (
            m.Group.PATIENT, m.Sex.FEMALE, m.OnsetSite.UPPER_LIMB, m.Side.LEFT)
        assert [p.patient_id for p in subject.patient_ids] == ["MND-001"]
        visit = s.scalars(select(m.Visit)).one()
        assert visit.subject is subject and visit.studies[0].study_instance_uid == "1.2.826.0.1.1"
        meas = s.scalars(select(m.Measurement)).one()
        assert (meas.value, meas.stations, meas.qc_flags) == (1.71, [5, 6], ["touches_edge"])
        inst = s.scalars(select(m.Instance)).one()
        assert inst.size_bytes == 5_000_000_000 and inst.version == 1 and not inst.conflict
        assert inst.received_at == T0 and inst.received_at.tzinfo is not None
        job = s.scalars(select(m.Job)).one()
        assert job.lease_expires_at == T0 + timedelta(minutes=10)
        assert s.scalars(select(m.OutboxItem)).one().instance is inst
        assert s.scalars(select(m.StatsRun)).one().state is m.RunState.DONE
        assert s.scalars(select(m.Observation)).one().muscle == "ankle_dorsiflexors"
        result = s.scalars(select(m.ResultObject)).one()
        assert result.kind is m.ResultKind.SR and result.visit is visit and result.instance is inst


def test_duplicate_sop_instance_version_is_refused(migrated: Engine) -> None:
    """The index cannot hold the same SOP instance version twice."""
    factory = session_factory(migrated)
    with transaction(factory) as s:
        _one_of_everything(s)
    with pytest.raises(IntegrityError), transaction(factory) as s:
        series = s.scalars(select(m.Series)).one()
        s.add(m.Instance(series=series, sop_instance_uid="1.2.826.0.1.1.1.1", sop_class_uid="1.2",
                         file_path="x", size_bytes=1, sha256="0" * 64))


def test_foreign_keys_enforced(migrated: Engine) -> None:
    """A row pointing at a missing parent is refused (SQLite: PRAGMA foreign_keys is on)."""
    with pytest.raises(IntegrityError), migrated.begin() as conn:
        conn.execute(text(
            "INSERT INTO visits (subject_fk, label, state, incomplete, updated_at) "
            "VALUES (999, 'baseline', 'receiving', false, CURRENT_TIMESTAMP)"))


def test_check_constraints_enforced_in_sql(migrated: Engine) -> None:
    """Enum columns refuse values outside the vocabulary even from raw SQL."""
    with pytest.raises(IntegrityError), migrated.begin() as conn:
        conn.execute(text(
            "INSERT INTO subjects (subject_id, \"group\", created_at) VALUES ('X1', 'alien', CURRENT_TIMESTAMP)"))


def test_failed_transaction_leaves_nothing(migrated: Engine) -> None:
    """An error in the middle of a transaction rolls back the rows written before it."""
    factory = session_factory(migrated)
    with pytest.raises(IntegrityError), transaction(factory) as s:
        s.add(m.Subject(subject_id="C001", group=m.Group.CONTROL))
        s.flush()
        s.add(m.Subject(subject_id="C001", group=m.Group.CONTROL))
    with factory() as s:
        assert s.scalars(select(m.Subject)).all() == []


def test_naive_datetime_refused(migrated: Engine) -> None:
    """Times must be timezone-aware, so nothing is stored in an ambiguous local time."""
    factory = session_factory(migrated)
    with pytest.raises(StatementError, match="naive datetime"), transaction(factory) as s:
        s.add(m.StatsRun(input_digest="0", started_at=datetime(2026, 1, 1)))


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path) -> None:
    """The embedded database is in WAL mode, foreign keys on, full sync (durable commits)."""
    from storage.database import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'sub' / 'x.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2
    engine.dispose()


def test_a_visit_left_complete_by_an_older_node_is_queued_and_complete_is_refused(engine: Engine) -> None:
    """Migration 0010: 'complete' (a state no node ever set) becomes 'queued'; the database then refuses it."""
    upgrade(engine, "0009")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO subjects (subject_id, \"group\", created_at) VALUES ('MND-001', 'patient', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO visits (subject_fk, label, state, incomplete, updated_at) "
                          "SELECT id, 'baseline', 'complete', false, CURRENT_TIMESTAMP FROM subjects"))
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT state FROM visits")).scalar_one() == "queued"
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("UPDATE visits SET state = 'complete'"))


def test_dixon_series_and_fat_fractions_are_stored_after_0012_and_dropped_by_its_downgrade(engine: Engine) -> None:
    """Migration 0012 widens the series kinds (dixon_water, dixon_fat) and the measures (FF) without touching the
    rows already there; its downgrade turns Dixon series into 'other' and drops fat fractions."""
    from alembic import command

    from storage.migrate import alembic_config

    upgrade(engine, "0011")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO patients (patient_id, issuer, created_at) VALUES ('MND-001', '', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO studies (patient_fk, study_instance_uid, created_at) SELECT id, '1.2.3', CURRENT_TIMESTAMP "
                          "FROM patients"))
        conn.execute(text("INSERT INTO series (study_fk, series_instance_uid, kind, n_instances, first_received_at, "
                          "last_received_at) SELECT id, '1.2.3.1', 't2', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP "
                          "FROM studies"))
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO series (study_fk, series_instance_uid, kind, n_instances, first_received_at, "
                          "last_received_at) SELECT id, '1.2.3.2', 'dixon_water', 1, CURRENT_TIMESTAMP, "
                          "CURRENT_TIMESTAMP FROM studies"))
        kinds = dict(conn.execute(text("SELECT series_instance_uid, kind FROM series")).all())
    assert kinds == {"1.2.3.1": "t2", "1.2.3.2": "dixon_water"}
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("UPDATE series SET kind = 'dixon' WHERE series_instance_uid = '1.2.3.2'"))
    command.downgrade(alembic_config(engine), "0011")
    with engine.connect() as conn:
        assert dict(conn.execute(text("SELECT series_instance_uid, kind FROM series")).all()) == {
            "1.2.3.1": "t2", "1.2.3.2": "other"}
