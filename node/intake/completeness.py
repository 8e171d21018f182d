"""When is a visit's whole-body exam complete? Pure decision on what the index says arrived.

Complete = the expected number of T2 stations, and of DWI stations that each hold a low
(b < 100 s/mm²) and a high (b ≥ 100 s/mm²) b-value image, have arrived, and nothing has
arrived for ``stable_age_s``. An exam that is still incomplete ``incomplete_deadline_s``
after its first instance is processed with what arrived (and flagged), once stable.
Scanner-derived images (trace, ADC) do not count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from node.settings import ProtocolSettings

LOW_B_MAX = 100.0


@dataclass(frozen=True, kw_only=True)
class InstanceFacts:
    """One received instance, as far as completeness is concerned."""

    kind: str  # "t2", "dwi", "result", "other"
    station_key: str | None
    b_values: tuple[float, ...]
    derived: bool


@dataclass(frozen=True, kw_only=True)
class ExamDecision:
    t2_stations: int
    dwi_stations: int
    stable: bool
    complete: bool
    overdue: bool

    @property
    def ready(self) -> bool:
        """Process now: complete and stable, or overdue and stable."""
        return self.stable and (self.complete or self.overdue)

    @property
    def incomplete(self) -> bool:
        return not self.complete

    def describe(self, protocol: ProtocolSettings) -> str:
        return (f"T2 stations {self.t2_stations}/{protocol.t2_stations}, "
                f"DWI stations {self.dwi_stations}/{protocol.dwi_stations}, "
                f"{'stable' if self.stable else 'still receiving'}"
                f"{', past the deadline' if self.overdue and not self.complete else ''}")


def _stations(facts: list[InstanceFacts]) -> tuple[list[str], dict[str, set[bool]]]:
    """T2 station keys, and per DWI station which of low (False) / high (True) b-values arrived."""
    t2 = sorted({f.station_key for f in facts if f.kind == "t2" and not f.derived and f.station_key})
    dwi: dict[str, set[bool]] = {}
    for f in facts:
        if f.kind == "dwi" and not f.derived and f.station_key:
            dwi.setdefault(f.station_key, set()).update(b >= LOW_B_MAX for b in f.b_values)
    return t2, dwi


def count_stations(facts: list[InstanceFacts]) -> tuple[int, int]:
    """(T2 stations, DWI stations with both a low and a high b-value)."""
    t2, dwi = _stations(facts)
    return len(t2), sum(1 for highs in dwi.values() if highs == {True, False})


def decide(
    facts: list[InstanceFacts], protocol: ProtocolSettings, now: datetime,
    first_received: datetime, last_received: datetime,
) -> ExamDecision:
    t2, dwi = count_stations(facts)
    return ExamDecision(
        t2_stations=t2,
        dwi_stations=dwi,
        stable=(now - last_received).total_seconds() >= protocol.stable_age_s,
        complete=t2 >= protocol.t2_stations and dwi >= protocol.dwi_stations,
        overdue=(now - first_received).total_seconds() >= protocol.incomplete_deadline_s,
    )


@dataclass(frozen=True, kw_only=True)
class ExamGaps:
    """What a visit's exam still lacks, for people (the console's study page)."""

    t2_stations: tuple[str, ...]  # station keys that arrived
    dwi_stations: tuple[str, ...]  # DWI stations with both a low and a high b-value
    dwi_without_low_b: tuple[str, ...]
    dwi_without_high_b: tuple[str, ...]
    t2_missing: int  # stations still expected beyond those that arrived
    dwi_missing: int

    @property
    def complete(self) -> bool:
        return self.t2_missing == 0 and self.dwi_missing == 0

    def lines(self) -> list[str]:
        """Plain sentences: what is missing (empty when nothing is)."""
        out = []
        if self.t2_missing:
            out.append(f"{self.t2_missing} more T2 station(s)")
        if self.dwi_missing:
            out.append(f"{self.dwi_missing} more DWI station(s) with both b-values")
        out += [f"DWI station {key}: no low b-value (b < {LOW_B_MAX:g}) image" for key in self.dwi_without_low_b]
        out += [f"DWI station {key}: no high b-value (b ≥ {LOW_B_MAX:g}) image" for key in self.dwi_without_high_b]
        return out


def exam_gaps(facts: list[InstanceFacts], protocol: ProtocolSettings) -> ExamGaps:
    """Which stations and b-values have arrived and what is still expected (same counting as :func:`decide`)."""
    t2, dwi = _stations(facts)
    full = sorted(k for k, highs in dwi.items() if highs == {True, False})
    return ExamGaps(
        t2_stations=tuple(t2), dwi_stations=tuple(full),
        dwi_without_low_b=tuple(sorted(k for k, highs in dwi.items() if False not in highs)),
        dwi_without_high_b=tuple(sorted(k for k, highs in dwi.items() if True not in highs)),
        t2_missing=max(0, protocol.t2_stations - len(t2)), dwi_missing=max(0, protocol.dwi_stations - len(full)),
    )
