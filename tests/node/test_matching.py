"""C-FIND matching rules (PS3.4 C.2.2.2) on plain strings."""

from __future__ import annotations

import pytest

from node.dimse.matching import matches, wildcard_match

# (VR, query value, stored value, matches?) — also the cases tests/node/test_qr_sql.py runs in SQL
CASES = [
    ("LO", "", "anything", True),  # universal matching
    ("LO", None, "anything", True),
    ("LO", "MND-001", "MND-001", True),  # single value
    ("LO", "MND-001", "MND-0011", False),
    ("LO", "MND-*", "MND-0011", True),  # wildcards
    ("LO", "MND-00?", "MND-001", True),
    ("LO", "MND-00?", "MND-0011", False),
    ("LO", "mnd-*", "MND-001", False),  # case-sensitive except PN
    ("PN", "doe^*", "Doe^Jane", True),
    ("PN", "DOE^JANE", "Doe^Jane", True),
    ("UI", "1.2.3\\1.2.4", "1.2.4", True),  # list of UIDs
    ("UI", "1.2.3\\1.2.4", "1.2.40", False),
    ("UI", "1.2.*", "1.2.3", False),  # no wildcards on UIDs
    ("DA", "20260101-20260331", "20260301", True),  # ranges
    ("DA", "20260101-20260331", "20260401", False),
    ("DA", "20260301-", "20260401", True),
    ("DA", "-20260301", "20260401", False),
    ("DA", "20260301", "20260301", True),
    ("DA", "20260101-20260331", "", False),
    ("TM", "0900-1000", "093000.25", True),
    ("TM", "0900-1000", "100030", True),  # upper bound includes its own precision
    ("TM", "0900-1000", "101500", False),
    ("TM", "09:30:00", "093000", True),
    ("IS", "301", "301", True),
    ("IS", "301", "0301", True),
    ("IS", "301", "", False),
    ("PN", "MÜLLER^HANS", "Müller^Hans", True),  # case folded beyond ASCII, in SQL too
    ("PN", "müll*", "MÜLLER^Jörg", True),
    ("PN", "ødegård*", "Ødegård^Åse", True),
    ("LO", "**", "", True),  # only stars: universal, an empty value included
    ("LO", "50%_off*", "50%_off sale", True),  # characters SQL patterns treat specially are literal here
    ("LO", "50%_off*", "50xyoff sale", False),
    ("LO", "a[b]*", "a[b]c", True),
    ("LO", "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", "a" * 60, False),  # many stars: linear, no backtracking
]


@pytest.mark.parametrize(("vr", "query", "actual", "expected"), CASES)
def test_matching(vr: str, query: str | None, actual: str, expected: bool) -> None:
    assert matches(vr, query, actual) is expected


def test_a_pattern_of_many_stars_is_matched_without_backtracking() -> None:
    """The pattern that froze the node through Python's regex (#27): 18 stars and a character that never comes."""
    assert wildcard_match("*" * 18 + "!", "x" * 10_000) is False
    assert wildcard_match("*a" * 200 + "*b", "a" * 5_000) is False
    assert wildcard_match("*a" * 200 + "*b", "a" * 5_000 + "b") is True
