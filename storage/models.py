"""The SQL store: SQLAlchemy 2.0 typed ORM models of everything myonode keeps.

Received DICOM is indexed as patients → studies → series → instances. The research side
is subjects → visits, with measurements (from images) and observations (clinical and
electrophysiology, long form). Jobs, the outbox and stats runs make long work durable:
the queue only dispatches, the rows say what is to be done and what happened.

Times are stored as UTC (naive in the database, timezone-aware in Python) so SQLite and
PostgreSQL behave the same. Enumerations are VARCHAR with CHECK constraints, portable and
readable in plain SQL.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from storage.catalogue import (
    Diagnosis,
    Group,
    MeasurementSource,
    Modality,
    ObservationSource,
    OnsetSite,
    RejectReason,
    ResultKind,
    ReviewVerdict,
    ScanProfile,
    SeriesKind,
    Sex,
    Side,
)

UID = String(128)  # a valid UID has at most 64 characters; the field has longer ones (migration 0004)
AE = String(16)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite has no time zones)."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: store timezone-aware UTC times")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _enum(cls: type[enum.Enum], name: str) -> SAEnum:
    return SAEnum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=max(len(m.value) for m in cls),
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


class VisitState(str, enum.Enum):
    """Where a visit is in its life; the moves between them: :mod:`storage.visit_states`."""

    RECEIVING = "receiving"
    QUEUED = "queued"
    PROCESSING = "processing"
    PROCESSED = "processed"
    FAILED = "failed"


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class OutboxState(str, enum.Enum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class RunState(str, enum.Enum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Role(str, enum.Enum):
    """What a web console / DICOMweb account may do: ``viewer`` reads, ``operator`` also changes state."""

    VIEWER = "viewer"
    OPERATOR = "operator"

    def allows(self, needed: Role) -> bool:
        return needed is Role.VIEWER or self is Role.OPERATOR


# Deterministic constraint names, so Alembic migrations are the same on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[type, Any]] = {datetime: UTCDateTime()}


# --- received DICOM ------------------------------------------------------------------


class Patient(Base):
    """A DICOM patient as the scanner names it (Patient ID + Issuer)."""

    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("patient_id", "issuer"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str | None] = mapped_column(String(324))
    birth_date: Mapped[date | None] = mapped_column(Date)
    sex: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    patient_fk: Mapped[int] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"), index=True)
    visit_fk: Mapped[int | None] = mapped_column(ForeignKey("visits.id", ondelete="SET NULL"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    study_date: Mapped[date | None] = mapped_column(Date)
    study_time: Mapped[str | None] = mapped_column(String(32))
    accession_number: Mapped[str | None] = mapped_column(String(64))
    study_description: Mapped[str | None] = mapped_column(String(128))
    time_point_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="studies")
    visit: Mapped[Visit | None] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_fk: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    series_number: Mapped[int | None]
    series_description: Mapped[str | None] = mapped_column(String(128))
    protocol_name: Mapped[str | None] = mapped_column(String(128))
    frame_of_reference_uid: Mapped[str | None] = mapped_column(UID)
    kind: Mapped[SeriesKind] = mapped_column(_enum(SeriesKind, "series_kind"), default=SeriesKind.OTHER)
    n_instances: Mapped[int] = mapped_column(default=0)  # instance rows (versions included), kept by ingest
    bytes_stored: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")  # their files' sizes
    first_received_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(default=utcnow)

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    """One stored file. A re-sent SOP instance with different content is a new version."""

    __tablename__ = "instances"
    __table_args__ = (
        # the newest version of an instance and a re-send's versions: looked up by this unique index
        UniqueConstraint("sop_instance_uid", "version"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("size_bytes >= 0", name="size_nonnegative"),
        # a series' instances in instance-number order (C-FIND IMAGE, QIDO, retrieve), and the foreign key
        Index("ix_instances_series_fk_instance_number", "series_fk", "instance_number"),
        Index("ix_instances_sop_class_uid", "sop_class_uid"),  # SEGs sent back (corrections)
        Index("ix_instances_received_at", "received_at"),  # received today / this week
        Index("ix_instances_conflict", "series_fk", sqlite_where=text("conflict = 1"),
              postgresql_where=text("conflict")),  # later versions of an instance (counts)
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    series_fk: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"))
    sop_instance_uid: Mapped[str] = mapped_column(UID)
    version: Mapped[int] = mapped_column(default=1)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    transfer_syntax_uid: Mapped[str | None] = mapped_column(UID)
    instance_number: Mapped[int | None]
    content_date: Mapped[str | None] = mapped_column(String(8))
    content_time: Mapped[str | None] = mapped_column(String(16))
    # What exam completeness needs without re-reading files: which station stack the image
    # belongs to, its b-values (DWI), and whether the scanner derived it (trace/ADC maps).
    station_key: Mapped[str | None] = mapped_column(String(128))
    b_values: Mapped[list[float]] = mapped_column(JSON, default=list)
    derived: Mapped[bool] = mapped_column(Boolean, default=False)
    file_path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)  # of the file: the journal reconciles by it
    # of the data set without its file meta information (node.intake.ingest.content_sha256): a re-send by
    # another path (C-STORE, STOW-RS, import) is the same content; None for rows indexed before 0015
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    calling_ae: Mapped[str | None] = mapped_column(AE)
    peer_address: Mapped[str | None] = mapped_column(String(64))
    conflict: Mapped[bool] = mapped_column(Boolean, default=False)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)

    series: Mapped[Series] = relationship(back_populates="instances")


# --- the study: subjects, visits, results --------------------------------------------


class Subject(Base):
    """A research participant; DICOM patients are mapped to it by their Patient IDs."""

    __tablename__ = "subjects"
    __table_args__ = (
        CheckConstraint("baseline_age IS NULL OR (baseline_age >= 0 AND baseline_age < 130)", name="age_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_id: Mapped[str] = mapped_column(String(64), unique=True)
    group: Mapped[Group] = mapped_column(_enum(Group, "subject_group"))
    sex: Mapped[Sex | None] = mapped_column(_enum(Sex, "subject_sex"))
    birth_date: Mapped[date | None] = mapped_column(Date)
    baseline_age: Mapped[float | None] = mapped_column(Float)
    onset_site: Mapped[OnsetSite | None] = mapped_column(_enum(OnsetSite, "onset_site"))
    onset_side: Mapped[Side | None] = mapped_column(_enum(Side, "onset_side"))
    diagnosis: Mapped[Diagnosis | None] = mapped_column(_enum(Diagnosis, "diagnosis"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    patient_ids: Mapped[list[SubjectPatientId]] = relationship(
        back_populates="subject", cascade="all, delete-orphan"
    )
    visits: Mapped[list[Visit]] = relationship(back_populates="subject", cascade="all, delete-orphan")


class SubjectPatientId(Base):
    """A DICOM Patient ID that belongs to a subject (a subject may have several)."""

    __tablename__ = "subject_patient_ids"
    __table_args__ = (UniqueConstraint("patient_id", "issuer"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_fk: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"), index=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(64), default="")

    subject: Mapped[Subject] = relationship(back_populates="patient_ids")


class Visit(Base):
    __tablename__ = "visits"
    __table_args__ = (UniqueConstraint("subject_fk", "label"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    subject_fk: Mapped[int] = mapped_column(ForeignKey("subjects.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(32))
    visit_date: Mapped[date | None] = mapped_column(Date)
    state: Mapped[VisitState] = mapped_column(_enum(VisitState, "visit_state"), default=VisitState.RECEIVING)
    incomplete: Mapped[bool] = mapped_column(Boolean, default=False)
    # the [protocol] profile its measurements were made with (None: not processed since profiles existed)
    profile: Mapped[ScanProfile | None] = mapped_column(_enum(ScanProfile, "scan_profile"))
    # its measurements were made with an atlas drawn from synthetic (phantom) subjects, not real anatomy (None: not
    # processed since the flag existed)
    atlas_synthetic: Mapped[bool | None] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    subject: Mapped[Subject] = relationship(back_populates="visits")
    studies: Mapped[list[Study]] = relationship(back_populates="visit")
    measurements: Mapped[list[Measurement]] = relationship(back_populates="visit", cascade="all, delete-orphan")
    observations: Mapped[list[Observation]] = relationship(back_populates="visit", cascade="all, delete-orphan")


class Measurement(Base):
    """One muscle × side × modality value of one visit (relative T2 is a ratio, ADC in mm²/s), from the automatic
    ROI or from a corrected one (``source``); both are kept."""

    __tablename__ = "measurements"
    __table_args__ = (
        UniqueConstraint("visit_fk", "modality", "muscle", "side", "source"),
        CheckConstraint("voxel_count >= 0", name="voxels_nonnegative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    visit_fk: Mapped[int] = mapped_column(ForeignKey("visits.id", ondelete="CASCADE"), index=True)
    modality: Mapped[Modality] = mapped_column(_enum(Modality, "measurement_modality"))
    muscle: Mapped[str] = mapped_column(String(64))
    side: Mapped[Side] = mapped_column(_enum(Side, "measurement_side"))
    source: Mapped[MeasurementSource] = mapped_column(_enum(MeasurementSource, "measurement_source"),
                                                      default=MeasurementSource.AUTOMATIC,
                                                      server_default=MeasurementSource.AUTOMATIC.value)
    value: Mapped[float] = mapped_column(Float)
    mean_signal: Mapped[float | None] = mapped_column(Float)
    sd: Mapped[float | None] = mapped_column(Float)  # SD of the muscle signal (T2w a.u. or mm²/s)
    reference_value: Mapped[float | None] = mapped_column(Float)
    voxel_count: Mapped[int] = mapped_column(Integer)
    volume_ml: Mapped[float | None] = mapped_column(Float)
    stations: Mapped[list[int]] = mapped_column(JSON, default=list)
    references: Mapped[list[str]] = mapped_column(JSON, default=list)  # reference marrow per station
    qc_flags: Mapped[list[str]] = mapped_column(JSON, default=list)
    pipeline_version: Mapped[str] = mapped_column(String(32))
    atlas_id: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    visit: Mapped[Visit] = relationship(back_populates="measurements")


def in_effect(measurements: Iterable[Measurement]) -> list[Measurement]:
    """The measurements that count: a corrected one replaces the automatic one of its modality × muscle × side."""
    rows = list(measurements)
    corrected = {(x.modality, x.muscle, x.side) for x in rows if x.source is MeasurementSource.CORRECTED}
    return [x for x in rows if x.source is MeasurementSource.CORRECTED or (x.modality, x.muscle, x.side) not in corrected]


class Observation(Base):
    """A clinical or electrophysiology value of one visit, long form (muscle empty when global)."""

    __tablename__ = "observations"
    __table_args__ = (UniqueConstraint("visit_fk", "measure", "muscle", "side"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    visit_fk: Mapped[int] = mapped_column(ForeignKey("visits.id", ondelete="CASCADE"), index=True)
    source: Mapped[ObservationSource] = mapped_column(_enum(ObservationSource, "observation_source"))
    measure: Mapped[str] = mapped_column(String(32))
    muscle: Mapped[str] = mapped_column(String(64), default="")
    side: Mapped[Side] = mapped_column(_enum(Side, "observation_side"), default=Side.NONE)
    value: Mapped[float] = mapped_column(Float)
    source_file: Mapped[str | None] = mapped_column(Text)
    imported_at: Mapped[datetime] = mapped_column(default=utcnow)

    visit: Mapped[Visit] = relationship(back_populates="observations")


class ResultObject(Base):
    """A DICOM object myonode produced for a visit (and the one it replaces, if any)."""

    __tablename__ = "result_objects"

    id: Mapped[int] = mapped_column(primary_key=True)
    visit_fk: Mapped[int | None] = mapped_column(ForeignKey("visits.id", ondelete="SET NULL"), index=True)
    kind: Mapped[ResultKind] = mapped_column(_enum(ResultKind, "result_kind"))
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    series_instance_uid: Mapped[str] = mapped_column(UID)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    replaces_uid: Mapped[str | None] = mapped_column(UID)
    instance_fk: Mapped[int | None] = mapped_column(ForeignKey("instances.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    visit: Mapped[Visit | None] = relationship()
    instance: Mapped[Instance | None] = relationship()


class Review(Base):
    """A reviewer's decision: the whole visit (``muscle`` empty) accepted or rejected, or one muscle × side ROI
    rejected, with the reason. Re-processing that changes a value removes the decisions it invalidates."""

    __tablename__ = "reviews"
    __table_args__ = (
        CheckConstraint("(verdict = 'rejected') = (reason IS NOT NULL)", name="reason_iff_rejected"),
        CheckConstraint("(muscle IS NULL) = (side IS NULL)", name="muscle_with_side"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    visit_fk: Mapped[int] = mapped_column(ForeignKey("visits.id", ondelete="CASCADE"), index=True)
    muscle: Mapped[str | None] = mapped_column(String(64))
    side: Mapped[Side | None] = mapped_column(_enum(Side, "review_side"))
    verdict: Mapped[ReviewVerdict] = mapped_column(_enum(ReviewVerdict, "review_verdict"))
    reason: Mapped[RejectReason | None] = mapped_column(_enum(RejectReason, "reject_reason"))
    note: Mapped[str | None] = mapped_column(Text)
    reviewer: Mapped[str] = mapped_column(String(64))
    organisation: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)

    visit: Mapped[Visit] = relationship()


class CorrectionState(str, enum.Enum):
    PENDING = "pending"
    APPLIED = "applied"
    REFUSED = "refused"


class Correction(Base):
    """A segmentation sent back from a workstation (not made by myonode): the visit it corrects, which muscles,
    and whether it was applied — or why not (no known series referenced, a segment no muscle of the catalogue)."""

    __tablename__ = "corrections"

    id: Mapped[int] = mapped_column(primary_key=True)
    instance_fk: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), unique=True)
    visit_fk: Mapped[int | None] = mapped_column(ForeignKey("visits.id", ondelete="SET NULL"), index=True)
    state: Mapped[CorrectionState] = mapped_column(_enum(CorrectionState, "correction_state"),
                                                   default=CorrectionState.PENDING)
    manufacturer: Mapped[str | None] = mapped_column(String(64))
    muscles: Mapped[list[str]] = mapped_column(JSON, default=list)  # "<muscle> <side>" corrected
    reason: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    applied_at: Mapped[datetime | None]

    instance: Mapped[Instance] = relationship()
    visit: Mapped[Visit | None] = relationship()


# --- durable work --------------------------------------------------------------------


class AtlasPin(Base):
    """The atlas the study is measured with, chosen by a person (``myonode atlas use``): the newest row holds.
    Every visit is measured with it; visits measured with another wait for re-processing (never mixed in a table)."""

    __tablename__ = "atlas_pins"

    id: Mapped[int] = mapped_column(primary_key=True)
    atlas_id: Mapped[str] = mapped_column(String(128))
    path: Mapped[str] = mapped_column(String(1024))  # the atlas folder (absolute)
    synthetic: Mapped[bool] = mapped_column(Boolean)
    pinned_by: Mapped[str] = mapped_column(String(64))
    pinned_at: Mapped[datetime] = mapped_column(default=utcnow)
    visits_queued: Mapped[int] = mapped_column(Integer, default=0)  # re-processing jobs queued when it was pinned


class Job(Base):
    """A long job. The queue only dispatches; this row is the truth a restart resumes from."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_state_kind", "state", "kind"),
        CheckConstraint("attempts >= 0", name="attempts_nonnegative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(128))
    state: Mapped[JobState] = mapped_column(_enum(JobState, "job_state"), default=JobState.QUEUED)
    attempts: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=3)
    last_error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OutboxItem(Base):
    """A stored instance to send to a destination, retried with back-off until sent."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("destination", "instance_fk"),
        Index("ix_outbox_state_next_try", "state", "next_try_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    destination: Mapped[str] = mapped_column(String(64))
    instance_fk: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), index=True)
    state: Mapped[OutboxState] = mapped_column(_enum(OutboxState, "outbox_state"), default=OutboxState.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_try_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]

    instance: Mapped[Instance] = relationship()


class StatsRun(Base):
    """One cohort statistics / report run: when, over which inputs, where its files are."""

    __tablename__ = "stats_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    state: Mapped[RunState] = mapped_column(_enum(RunState, "run_state"), default=RunState.RUNNING)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    input_digest: Mapped[str] = mapped_column(String(64))
    output_dir: Mapped[str | None] = mapped_column(Text)
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text)


# --- people ----------------------------------------------------------------------------


class User(Base):
    """An account of the web console and DICOMweb (the password kept as an Argon2id hash)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(_enum(Role, "user_role"))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    # a session cookie names the generation it was made in; signing out, a new password or disabling the
    # account moves it on, which ends every session of the account at once
    session_generation: Mapped[int] = mapped_column(default=0, server_default="0")


class AuditEvent(Base):
    """Who did what, when, from where — every state-changing action of the console, DICOMweb and the CLI."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_at", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[str | None] = mapped_column(Text)
    remote: Mapped[str | None] = mapped_column(String(64))
