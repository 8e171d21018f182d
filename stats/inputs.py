"""The tidy CSV interface of the statistics: ``subjects.csv`` and ``observations.csv``.

Both are validated row by row; a problem raises :class:`InputError` naming the file, the
line (1 = header) and the column. Column sets, vocabularies and muscle keys come from the
catalogue and the visit settings.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from storage.catalogue import MEASURE_MUSCLES, MUSCLE_BY_KEY, mrc_sides

SUBJECT_COLUMNS = ["subject_id", "group", "sex", "age", "onset_site", "onset_side", "diagnosis"]
OBSERVATION_COLUMNS = ["subject_id", "visit", "days", "measure", "muscle", "side", "value"]
GROUPS = {"patient", "control"}
SEXES = {"M", "F"}
ONSET_SITES = {"bulbar", "upper_limb", "lower_limb"}
SIDES = {"left", "right", "none"}


class InputError(ValueError):
    """A bad row or column in an input file; the message names file, line and column."""


@dataclass(frozen=True, kw_only=True)
class Cohort:
    """Validated inputs: one row per subject, and long observations."""

    subjects: pd.DataFrame
    observations: pd.DataFrame
    visits: list[str]  # in schedule order, baseline first


def _rows(path: Path, columns: list[str], optional: tuple[str, ...] = ()) -> list[tuple[int, dict[str, str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in columns if c not in header]
            if missing:
                raise InputError(f"{path}: line 1: missing column(s) {', '.join(missing)}")
            extra = [c for c in header if c not in columns and c not in optional]
            if extra:
                raise InputError(f"{path}: line 1: unknown column(s) {', '.join(extra)}")
            return [(i + 2, {k: (v or "").strip() for k, v in row.items()}) for i, row in enumerate(reader)]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from exc


def _number(path: Path, line: int, column: str, text: str, *, allow_empty: bool = False) -> float:
    if text == "" and allow_empty:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{path}: line {line}, column {column}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"{path}: line {line}, column {column}: {text!r} is not a finite number")
    return value


def read_subjects(path: Path) -> pd.DataFrame:
    """subjects.csv; an optional ``patient_ids`` column lists DICOM Patient IDs (``;``-separated)."""
    records, seen = [], set()
    for line, row in _rows(path, SUBJECT_COLUMNS, optional=("patient_ids",)):
        where = f"{path}: line {line}"
        sid = row["subject_id"]
        if not sid:
            raise InputError(f"{where}, column subject_id: empty")
        if sid in seen:
            raise InputError(f"{where}, column subject_id: duplicate subject {sid!r}")
        seen.add(sid)
        for column, allowed in (("group", GROUPS), ("sex", SEXES)):
            if row[column] not in allowed:
                raise InputError(f"{where}, column {column}: {row[column]!r} is not one of {sorted(allowed)}")
        age = _number(path, line, "age", row["age"])
        if not 0 <= age < 130:
            raise InputError(f"{where}, column age: {age} is not an age in years")
        if row["group"] == "patient":
            if row["onset_site"] not in ONSET_SITES:
                raise InputError(f"{where}, column onset_site: {row['onset_site']!r} is not one of {sorted(ONSET_SITES)}")
            if row["onset_side"] not in ("left", "right", ""):
                raise InputError(f"{where}, column onset_side: {row['onset_side']!r} is not left, right or empty")
            if row["onset_site"] != "bulbar" and row["onset_side"] == "":
                raise InputError(f"{where}, column onset_side: limb onset needs a side")
        elif row["onset_site"] or row["onset_side"]:
            raise InputError(f"{where}, column onset_site: controls have no onset")
        ids = [p.strip() for p in row.get("patient_ids", "").split(";") if p.strip()] or [sid]
        records.append({**row, "age": age, "female": 1.0 if row["sex"] == "F" else 0.0,
                        "patient": 1.0 if row["group"] == "patient" else 0.0, "patient_ids": ids, "line": line})
    if not records:
        raise InputError(f"{path}: no subjects")
    return pd.DataFrame.from_records(records)


def read_observations(path: Path, subjects: pd.DataFrame, visits: list[str],
                      rows: list[tuple[int, dict[str, str]]] | None = None) -> pd.DataFrame:
    """observations.csv (or already-read ``rows`` of (line, row)), validated; a ``line`` column is kept."""
    known = set(subjects["subject_id"])
    records = []
    seen: dict[tuple[str, str, str, str, str], int] = {}
    for line, row in rows if rows is not None else _rows(path, OBSERVATION_COLUMNS):
        where = f"{path}: line {line}"
        if row["subject_id"] not in known:
            raise InputError(f"{where}, column subject_id: unknown subject {row['subject_id']!r}")
        if row["visit"] not in visits:
            raise InputError(f"{where}, column visit: {row['visit']!r} is not one of {visits}")
        days = _number(path, line, "days", row["days"])
        if days < 0:
            raise InputError(f"{where}, column days: {days:g} is before the subject's baseline")
        if row["visit"] == visits[0] and days != 0:
            raise InputError(f"{where}, column days: the baseline visit must be day 0, got {days:g}")
        measure = row["measure"]
        if measure not in MEASURE_MUSCLES:
            raise InputError(f"{where}, column measure: unknown measure {measure!r}")
        muscle = row["muscle"]
        if muscle not in MEASURE_MUSCLES[measure]:
            raise InputError(f"{where}, column muscle: {muscle!r} is not a {measure} muscle")
        side = row["side"]
        if side not in SIDES:
            raise InputError(f"{where}, column side: {side!r} is not left, right or none")
        if measure in ("relT2", "ADC", "FF") and side not in MUSCLE_BY_KEY[muscle].sides:
            raise InputError(f"{where}, column side: {muscle} takes side {'/'.join(MUSCLE_BY_KEY[muscle].sides)}")
        if measure == "MRC" and side not in mrc_sides(muscle):
            raise InputError(f"{where}, column side: MRC {muscle} takes side {'/'.join(mrc_sides(muscle))}")
        if muscle == "" and side != "none":
            raise InputError(f"{where}, column side: {measure} is not sided, use none")
        value = _number(path, line, "value", row["value"], allow_empty=True)
        key = (row["subject_id"], row["visit"], measure, muscle, side)
        if key in seen:
            raise InputError(f"{where}: duplicate of line {seen[key]} (same subject, visit, measure, muscle, side)")
        seen[key] = line
        records.append({**row, "days": days, "value": value, "line": line})
    frame = pd.DataFrame.from_records(records, columns=[*OBSERVATION_COLUMNS, "line"])
    frame["days"] = frame["days"].astype(float)
    frame["value"] = frame["value"].astype(float)
    return frame


def read_cohort(subjects_csv: Path, observations_csv: Path, visits: list[str]) -> Cohort:
    subjects = read_subjects(subjects_csv).drop(columns=["patient_ids", "line"])
    observations = read_observations(observations_csv, subjects, visits).drop(columns=["line"])
    return Cohort(subjects=subjects, observations=observations, visits=visits)


def wide_to_rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """A "one row per visit" spreadsheet → tidy rows (line numbers kept; empty cells skipped).

    Columns: ``subject_id, visit, days`` and one column per value named
    ``<measure>[_<muscle>][_<side>]``, e.g. ``ALSFRS-R``, ``MRC_deltoid_left``, ``MUNIX_tibialis_anterior_right``.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            raw = [(i + 2, row) for i, row in enumerate(reader)]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from exc
    for column in ("subject_id", "visit", "days"):
        if column not in header:
            raise InputError(f"{path}: line 1: missing column {column}")
    parsed = {c: parse_wide_column(path, c) for c in header if c not in ("subject_id", "visit", "days")}
    rows = []
    for line, row in raw:
        for column, (measure, muscle, side) in parsed.items():
            value = (row.get(column) or "").strip()
            if value:
                rows.append((line, {"subject_id": (row["subject_id"] or "").strip(), "visit": (row["visit"] or "").strip(),
                                    "days": (row["days"] or "").strip(), "measure": measure, "muscle": muscle,
                                    "side": side, "value": value}))
    return rows


def parse_wide_column(path: Path, column: str) -> tuple[str, str, str]:
    """``MRC_deltoid_left`` → ("MRC", "deltoid", "left"); unknown names raise naming the column."""
    for measure in sorted(MEASURE_MUSCLES, key=len, reverse=True):
        if column == measure:
            return measure, "", "none"
        if column.startswith(measure + "_"):
            rest = column[len(measure) + 1:]
            side = "none"
            for candidate in ("left", "right", "none"):
                if rest.endswith("_" + candidate):
                    rest, side = rest[: -len(candidate) - 1], candidate
                    break
            if rest in MEASURE_MUSCLES[measure]:
                return measure, rest, side
    raise InputError(f"{path}: line 1, column {column}: not <measure>[_<muscle>][_<side>] of a known measure")
