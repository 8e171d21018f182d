"""C-FIND attribute matching (DICOM PS3.4 C.2.2.2): pure functions on query and stored strings.

Supported: universal matching (empty value), single value matching, wildcard matching
(``*`` and ``?``; PN compared case-insensitively, as most archives do), range matching for
DA, TM and DT (``a-b``, ``a-``, ``-b``), and list of UID matching (``uid1\\uid2``).
"""

from __future__ import annotations

import re
from functools import lru_cache

RANGE_VRS = {"DA", "TM", "DT"}
NO_WILDCARD_VRS = {"UI", "DA", "TM", "DT", "IS", "DS", "US", "UL", "SS", "SL", "FL", "FD"}


@lru_cache(maxsize=512)
def _wildcard(pattern: str, *, ignore_case: bool) -> re.Pattern[str]:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _norm_time(value: str) -> str:
    """TM without separators (older ACR-NEMA style '09:30:00'), padded for lexical comparison."""
    return value.replace(":", "").strip()


def _in_range(query: str, actual: str, vr: str) -> bool:
    low, _, high = query.partition("-")
    value = _norm_time(actual) if vr == "TM" else actual.strip()
    low, high = (_norm_time(low), _norm_time(high)) if vr == "TM" else (low.strip(), high.strip())
    if not value:
        return False
    if low and value < low:
        return False
    # An upper bound matches everything that starts with it (e.g. TM '10' includes '1030').
    return not (high and value > high and not value.startswith(high))


def matches(vr: str, query: str | None, actual: str | None) -> bool:
    """True when a stored value ``actual`` satisfies the C-FIND key ``query`` of value representation ``vr``."""
    if query is None:
        return True
    query = query.strip()
    if query == "" or query == "*":
        return True
    actual = (actual or "").strip()
    if vr == "UI":
        return actual in {q.strip() for q in query.split("\\")}
    if vr in RANGE_VRS and "-" in query:
        return _in_range(query, actual, vr)
    if vr == "TM":
        return _norm_time(query) == _norm_time(actual)
    if vr not in NO_WILDCARD_VRS and ("*" in query or "?" in query):
        return _wildcard(query, ignore_case=vr == "PN").fullmatch(actual) is not None
    if vr == "PN":
        return query.upper() == actual.upper()
    if vr in {"IS", "US", "UL", "SS", "SL"}:
        try:
            return int(query) == int(actual)
        except ValueError:
            return False
    return query == actual
