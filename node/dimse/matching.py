"""C-FIND attribute matching (DICOM PS3.4 C.2.2.2): what a query value asks for, decided once.

:func:`condition` reads a query value of a given VR into a :class:`Condition` — universal,
single value, list of UIDs, wildcard (``*`` and ``?``) or range (DA, TM, DT: ``a-b``, ``a-``,
``-b``) — refusing what cannot be matched (a value longer than ``MAX_QUERY_CHARS``, a list
longer than ``MAX_UIDS``, a number that is not one) with :class:`MatchingError`.
:mod:`node.dimse.qr` turns a condition into SQL: that is how the node matches. :func:`matches`
applies a condition to one stored string — the same rules in Python, the specification the SQL
is tested against (``tests/node/test_qr_sql.py``); PN compared case-insensitively, as most
archives do.

Wildcards never backtrack: :func:`wildcard_match` is the two-pointer glob algorithm
(O(len(pattern) × len(text)) at worst, no recursion, no regular expression), so a pattern
of many stars costs what a short one does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RANGE_VRS = {"DA", "TM", "DT"}
NO_WILDCARD_VRS = {"UI", "DA", "TM", "DT", "IS", "DS", "US", "UL", "SS", "SL", "FL", "FD"}
INTEGER_VRS = {"IS", "US", "UL", "SS", "SL"}
MAX_QUERY_CHARS = 1024  # one query value (a UID list of MAX_UIDS UIDs fits; no name or description is longer)
MAX_UIDS = 1000

Kind = Literal["universal", "single", "list", "wildcard", "range"]


class MatchingError(ValueError):
    """A query value that cannot be matched (names the attribute when raised by :func:`condition`)."""


@dataclass(frozen=True, kw_only=True)
class Condition:
    """One query key as PS3.4 reads it. ``values``: the UIDs of a list, the (low, high) of a range (either
    may be empty), the one value otherwise; ``ignore_case``: PN."""

    kind: Kind
    vr: str
    values: tuple[str, ...] = ()
    ignore_case: bool = False


def norm_time(value: str) -> str:
    """TM without separators (older ACR-NEMA style '09:30:00'), for lexical comparison."""
    return value.replace(":", "").strip()


def condition(vr: str, query: str | None, keyword: str = "value") -> Condition:
    """What the query value ``query`` of ``vr`` asks for; raises :class:`MatchingError` naming ``keyword``."""
    if query is None:
        return Condition(kind="universal", vr=vr)
    if len(query) > MAX_QUERY_CHARS:
        raise MatchingError(f"{keyword}: a query value of {len(query)} characters (at most {MAX_QUERY_CHARS})")
    if "\x00" in query:
        raise MatchingError(f"{keyword}: a query value holding a NUL character")
    query = query.strip()
    if query == "" or set(query) == {"*"}:  # '*', '**', …: anything, an empty value included
        return Condition(kind="universal", vr=vr)
    if vr == "UI":
        uids = tuple(q.strip() for q in query.split("\\") if q.strip())
        if len(uids) > MAX_UIDS:
            raise MatchingError(f"{keyword}: a list of {len(uids)} UIDs (at most {MAX_UIDS})")
        return Condition(kind="list", vr=vr, values=uids)
    if vr in RANGE_VRS and "-" in query:
        low, _, high = query.partition("-")
        low, high = (norm_time(low), norm_time(high)) if vr == "TM" else (low.strip(), high.strip())
        return Condition(kind="range", vr=vr, values=(low, high))
    if vr == "TM":
        return Condition(kind="single", vr=vr, values=(norm_time(query),))
    if vr not in NO_WILDCARD_VRS and ("*" in query or "?" in query):
        return Condition(kind="wildcard", vr=vr, values=(query,), ignore_case=vr == "PN")
    if vr in INTEGER_VRS:
        try:
            return Condition(kind="single", vr=vr, values=(str(int(query)),))
        except ValueError:
            raise MatchingError(f"{keyword}: {query[:40]!r} is not a whole number ({vr})") from None
    return Condition(kind="single", vr=vr, values=(query,), ignore_case=vr == "PN")


def wildcard_match(pattern: str, text: str, *, ignore_case: bool = False) -> bool:
    """``text`` matches ``pattern`` in full (``*``: any run, ``?``: one character), without backtracking.

    On a mismatch after a ``*`` only the last ``*`` is retried one character further: enough for
    a full match (each ``*`` may absorb anything the earlier ones did not), never exponential."""
    if ignore_case:  # lower(), as the SQL of node.dimse.qr folds (not casefold: ß stays one character)
        pattern, text = pattern.lower(), text.lower()
    p = t = 0
    star, mark = -1, 0
    while t < len(text):
        if p < len(pattern) and pattern[p] in ("?", text[t]) and pattern[p] != "*":
            p += 1
            t += 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark = p, t
            p += 1
        elif star >= 0:
            p = star + 1
            mark += 1
            t = mark
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def _in_range(low: str, high: str, value: str) -> bool:
    if not value:
        return False
    if low and value < low:
        return False
    # An upper bound matches everything that starts with it (e.g. TM '10' includes '1030').
    return not (high and value > high and not value.startswith(high))


def satisfies(c: Condition, actual: str | None) -> bool:
    """True when the stored value ``actual`` satisfies ``c``."""
    if c.kind == "universal":
        return True
    actual = (actual or "").strip()
    if c.kind == "list":
        return actual in c.values
    if c.kind == "range":
        low, high = c.values
        return _in_range(low, high, norm_time(actual) if c.vr == "TM" else actual)
    if c.kind == "wildcard":
        return wildcard_match(c.values[0], actual, ignore_case=c.ignore_case)
    if c.vr == "TM":
        return c.values[0] == norm_time(actual)
    if c.vr in INTEGER_VRS:
        try:
            return int(actual) == int(c.values[0])
        except ValueError:
            return False
    return c.values[0].lower() == actual.lower() if c.ignore_case else c.values[0] == actual


def matches(vr: str, query: str | None, actual: str | None) -> bool:
    """True when a stored value ``actual`` satisfies the C-FIND key ``query`` of value representation ``vr``
    (a query value that cannot be matched matches nothing)."""
    try:
        return satisfies(condition(vr, query), actual)
    except MatchingError:
        return False
