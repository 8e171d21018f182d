"""Reading a TID 1500 measurement report the way a test needs it: its measurement groups by tracking identifier."""

from __future__ import annotations

from pydicom.dataset import Dataset

MEASUREMENT_GROUP = "125007"  # DCM: Measurement Group
TRACKING_IDENTIFIER = "112039"  # DCM: Tracking Identifier


def measurement_groups(report: Dataset) -> dict[str, list[Dataset]]:
    """Every measurement group of ``report`` by tracking identifier: the group's content items."""
    found: dict[str, list[Dataset]] = {}

    def walk(items: list[Dataset]) -> None:
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeValue if "ConceptNameCodeSequence" in item else ""
            if name == MEASUREMENT_GROUP:
                children = list(item.get("ContentSequence", []))
                ident = next(str(c.TextValue) for c in children
                             if c.ConceptNameCodeSequence[0].CodeValue == TRACKING_IDENTIFIER)
                found[ident] = children
            elif "ContentSequence" in item:
                walk(list(item.ContentSequence))

    walk(list(report.ContentSequence))
    return found


def evaluations(items: list[Dataset]) -> list[tuple[str, str]]:
    """The (concept, value) codes of a group's qualitative evaluations."""
    return [(i.ConceptNameCodeSequence[0].CodeValue, i.ConceptCodeSequence[0].CodeValue)
            for i in items if i.ValueType == "CODE" and "ConceptCodeSequence" in i]


DERIVATION = "121401"  # DCM: Derivation


def numbers(items: list[Dataset]) -> dict[tuple[str, str, str], float]:
    """A group's numeric measurements: (concept, derivation or "", unit) → value."""
    found = {}
    for i in items:
        if i.ValueType != "NUM" or not i.get("MeasuredValueSequence"):
            continue
        derivation = next((c.ConceptCodeSequence[0].CodeValue for c in i.get("ContentSequence", [])
                           if c.ConceptNameCodeSequence[0].CodeValue == DERIVATION), "")
        value = i.MeasuredValueSequence[0]
        found[(i.ConceptNameCodeSequence[0].CodeValue, derivation,
               value.MeasurementUnitsCodeSequence[0].CodeValue)] = float(value.NumericValue)
    return found
