"""The values the index keeps of a received instance, read defensively from its header.

A scanner, a workstation or a hostile peer may send any bytes in any attribute; the instance is
acknowledged already (it is in the journal) and must be indexed all the same. So every value
the index reads is read here, one attribute at a time: a value that cannot be read, is not a
number where a number is due, does not fit its column (a 32-bit integer, a finite float) or is
longer than its column is kept empty (or cut to the column), and a :class:`FieldWarning` names
the attribute and what was wrong. Nothing here raises on the content of a data set.

Pure functions: :func:`instance_fields` (every instance) and :func:`series_fields` (the first
instance of a series: patient, study and series rows), with the caller logging the warnings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, TypeVar

from pydicom.dataset import Dataset

from node.intake.classify import b_values, classify_series, diffusions, is_derived, station_key
from node.settings import SeriesRule
from quant.diffusion import Diffusion
from storage.catalogue import SeriesKind

T = TypeVar("T")
INT32_MAX = 2**31 - 1


@dataclass(frozen=True, kw_only=True)
class FieldWarning:
    """An attribute whose value the index could not keep as sent, or took from a vendor's private place."""

    keyword: str
    problem: str

    def __str__(self) -> str:
        return f"{self.keyword}: {self.problem}"


@dataclass(frozen=True, kw_only=True)
class InstanceFields:
    """What the ``instances`` row holds beyond the UIDs, the file and who sent it."""

    instance_number: int | None
    content_date: str | None
    content_time: str | None
    station_key: str | None
    b_values: list[float]
    derived: bool
    warnings: tuple[FieldWarning, ...] = ()


@dataclass(frozen=True, kw_only=True)
class SeriesFields:
    """What the patient, study and series rows hold, from the first instance of a series."""

    patient_id: str
    issuer: str
    patient_name: str | None
    birth_date: date | None
    sex: str | None
    study_date: date | None
    study_time: str | None
    accession_number: str | None
    study_description: str | None
    time_point_id: str | None
    modality: str | None
    series_number: int | None
    series_description: str | None
    protocol_name: str | None
    frame_of_reference_uid: str | None
    kind: SeriesKind
    warnings: tuple[FieldWarning, ...] = ()


@dataclass
class _Reader:
    """Reads attributes of one data set, collecting what went wrong instead of raising."""

    ds: Dataset
    warnings: list[FieldWarning] = field(default_factory=list)

    def guarded(self, keyword: str, read: Callable[[], T], default: T) -> T:
        try:
            return read()
        except Exception as exc:  # any content of any attribute: kept empty, named, never fatal
            self.warnings.append(FieldWarning(keyword=keyword, problem=f"not readable ({exc.__class__.__name__}: "
                                                                       f"{str(exc)[:120]}); kept empty"))
            return default

    def raw(self, keyword: str) -> Any:
        return self.guarded(keyword, lambda: self.ds.get(keyword), None)

    def text(self, keyword: str, limit: int) -> str | None:
        value = self.raw(keyword)
        if value in (None, ""):
            return None
        text = self.guarded(keyword, lambda: str(value), "")
        text = text.replace("\x00", "").strip()  # NUL bytes: PostgreSQL refuses them in text
        if len(text) > limit:
            self.warnings.append(FieldWarning(keyword=keyword, problem=f"{len(text)} characters; kept the first "
                                                                       f"{limit}"))
            text = text[:limit]
        return text or None

    def integer(self, keyword: str) -> int | None:
        value = self.raw(keyword)
        if value in (None, ""):
            return None
        try:
            number = int(str(value).strip())
        except ValueError:
            self.warnings.append(FieldWarning(keyword=keyword, problem=f"{str(value)[:40]!r} is not a whole number; "
                                                                       "kept empty"))
            return None
        if abs(number) > INT32_MAX:
            self.warnings.append(FieldWarning(keyword=keyword, problem=f"{number} is out of range; kept empty"))
            return None
        return number

    def day(self, keyword: str) -> date | None:
        text = self.text(keyword, 64)
        if not text:
            return None
        try:
            return datetime.strptime(text[:8], "%Y%m%d").date()
        except ValueError:
            self.warnings.append(FieldWarning(keyword=keyword, problem=f"{text[:20]!r} is not a date (YYYYMMDD); "
                                                                       "kept empty"))
            return None


def instance_fields(ds: Dataset) -> InstanceFields:
    """The instance row's values from ``ds`` (never raises; see the module docstring)."""
    r = _Reader(ds)
    key = r.guarded("ImagePositionPatient/ImageOrientationPatient", lambda: station_key(ds), None)
    if key is not None and len(key) > 128:
        key = None  # a UID at the index's limit plus the position: too long to compare, so no station
        r.warnings.append(FieldWarning(keyword="SeriesInstanceUID", problem="too long for a station key"))
    values: list[float] = r.guarded("DiffusionBValue", lambda: b_values(ds), [])
    finite = [float(v) for v in values if math.isfinite(v)]
    if len(finite) != len(values):
        r.warnings.append(FieldWarning(keyword="DiffusionBValue", problem="a value that is not a finite number; "
                                                                          "left out"))
    return InstanceFields(
        instance_number=r.integer("InstanceNumber"),
        content_date=r.text("ContentDate", 8), content_time=r.text("ContentTime", 16),
        station_key=key, b_values=finite,
        derived=r.guarded("ImageType", lambda: is_derived(ds), False),
        warnings=tuple(r.warnings),
    )


def series_fields(ds: Dataset, rules: list[SeriesRule]) -> SeriesFields:
    """The patient, study and series rows' values from ``ds`` (never raises)."""
    r = _Reader(ds)
    return SeriesFields(
        patient_id=r.text("PatientID", 64) or "", issuer=r.text("IssuerOfPatientID", 64) or "",
        patient_name=r.text("PatientName", 324), birth_date=r.day("PatientBirthDate"), sex=r.text("PatientSex", 16),
        study_date=r.day("StudyDate"), study_time=r.text("StudyTime", 32),
        accession_number=r.text("AccessionNumber", 64), study_description=r.text("StudyDescription", 128),
        time_point_id=r.text("ClinicalTrialTimePointID", 64),
        modality=r.text("Modality", 16), series_number=r.integer("SeriesNumber"),
        series_description=r.text("SeriesDescription", 128), protocol_name=r.text("ProtocolName", 128),
        frame_of_reference_uid=r.text("FrameOfReferenceUID", 128),
        kind=SeriesKind(r.guarded("SeriesDescription/ImageOrientationPatient",
                                  lambda: classify_series(ds, rules), "other")),
        warnings=(*r.warnings, *_private_b_values(r, ds)),
    )


def _private_b_values(r: _Reader, ds: Dataset) -> list[FieldWarning]:
    """Said once per series (its first instance): where its b-values come from when it is not the standard place."""
    found: list[Diffusion] = r.guarded("DiffusionBValue", lambda: diffusions(ds), [])
    said = {d.warning for d in found}
    return [FieldWarning(keyword="DiffusionBValue", problem=text) for text in sorted(w for w in said if w)]
