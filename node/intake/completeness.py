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


def count_stations(facts: list[InstanceFacts]) -> tuple[int, int]:
    """(T2 stations, DWI stations with both a low and a high b-value)."""
    t2 = {f.station_key for f in facts if f.kind == "t2" and not f.derived and f.station_key}
    dwi: dict[str, set[bool]] = {}
    for f in facts:
        if f.kind == "dwi" and not f.derived and f.station_key:
            dwi.setdefault(f.station_key, set()).update(b >= LOW_B_MAX for b in f.b_values)
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
