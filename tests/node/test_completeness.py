"""Exam completeness and station counting (pure), and b-value / station facts read from DICOM."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydicom.uid import generate_uid

from node.intake.classify import b_values, is_derived, station_key
from node.intake.completeness import InstanceFacts, count_stations, decide
from node.settings import ProtocolSettings
from tests.support.dicom_factory import AXIAL, CORONAL, mr_image

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PROTOCOL = ProtocolSettings(t2_stations=2, dwi_stations=2, stable_age_s=60, incomplete_deadline_s=3600)


def t2(station: int) -> InstanceFacts:
    return InstanceFacts(kind="t2", station_key=f"t2-{station}", b_values=(), derived=False)


def dwi(station: int, b: float, *, derived: bool = False) -> InstanceFacts:
    return InstanceFacts(kind="dwi", station_key=f"dwi-{station}", b_values=(b,), derived=derived)


def test_counts_stations_and_needs_both_b_values() -> None:
    facts = [t2(1), t2(1), t2(2), dwi(1, 0), dwi(1, 1000), dwi(2, 0)]
    assert count_stations(facts) == (2, 1)
    assert count_stations([*facts, dwi(2, 1000)]) == (2, 2)


def test_scanner_derived_images_do_not_count() -> None:
    """A station whose only high-b image is the scanner's trace/ADC map is not complete."""
    assert count_stations([dwi(1, 0), dwi(1, 1000, derived=True)]) == (0, 0)


def test_complete_only_when_stable() -> None:
    facts = [t2(1), t2(2), dwi(1, 0), dwi(1, 1000), dwi(2, 0), dwi(2, 1000)]
    receiving = decide(facts, PROTOCOL, T0 + timedelta(seconds=30), T0, T0 + timedelta(seconds=10))
    assert receiving.complete and not receiving.stable and not receiving.ready
    stable = decide(facts, PROTOCOL, T0 + timedelta(seconds=80), T0, T0 + timedelta(seconds=10))
    assert stable.ready and not stable.incomplete


def test_incomplete_exam_waits_for_deadline() -> None:
    facts = [t2(1), dwi(1, 0), dwi(1, 1000)]
    early = decide(facts, PROTOCOL, T0 + timedelta(minutes=30), T0, T0 + timedelta(minutes=1))
    assert early.stable and not early.ready
    late = decide(facts, PROTOCOL, T0 + timedelta(hours=2), T0, T0 + timedelta(minutes=1))
    assert late.ready and late.incomplete and late.overdue
    assert "T2 stations 1/2" in late.describe(PROTOCOL)


def test_b_values_standard_and_philips_private() -> None:
    study, series = generate_uid(), generate_uid()
    assert b_values(mr_image(study_uid=study, series_uid=series, b_value=1000)) == [1000.0]
    assert b_values(mr_image(study_uid=study, series_uid=series, b_value=0, philips_private_b=True)) == [0.0]
    assert b_values(mr_image(study_uid=study, series_uid=series)) == []


def test_derived_image_types() -> None:
    study, series = generate_uid(), generate_uid()
    assert is_derived(mr_image(study_uid=study, series_uid=series, image_type=["DERIVED", "PRIMARY", "ADC"]))
    assert is_derived(mr_image(study_uid=study, series_uid=series, image_type=["ORIGINAL", "PRIMARY", "TRACEW"]))
    assert not is_derived(mr_image(study_uid=study, series_uid=series))


def test_station_key_separates_coronal_stations_in_one_series() -> None:
    """Coronal stations step along z: slices of one station share a key, stations differ."""
    study, series = generate_uid(), generate_uid()
    keys = {
        (station, slice_): station_key(mr_image(study_uid=study, series_uid=series, orientation=CORONAL,
                                                position=(-200.0, 5.0 * slice_, 100.0 - 350.0 * station)))
        for station in range(3) for slice_ in range(4)
    }
    assert len(set(keys.values())) == 3
    assert keys[(0, 0)] == keys[(0, 3)] and keys[(0, 0)] != keys[(1, 0)]


def test_station_key_uses_acquisition_number_for_axial_stations_in_one_series() -> None:
    study, series = generate_uid(), generate_uid()
    a = station_key(mr_image(study_uid=study, series_uid=series, orientation=AXIAL, position=(-200, -200, 0),
                             acquisition_number=1))
    b = station_key(mr_image(study_uid=study, series_uid=series, orientation=AXIAL, position=(-200, -200, -250),
                             acquisition_number=2))
    c = station_key(mr_image(study_uid=study, series_uid=series, orientation=AXIAL, position=(-200, -200, -5),
                             acquisition_number=1))
    assert a != b and a == c


def test_enhanced_mr_facts() -> None:
    """Enhanced MR: orientation from the shared groups, b-values and position from the per-frame groups."""
    from node.intake.classify import orientation
    from tests.support.dicom_factory import enhanced_mr

    ds = enhanced_mr(study_uid=generate_uid(), series_uid=generate_uid())
    assert orientation(ds) == "axial" and b_values(ds) == [0.0, 1000.0] and station_key(ds) is not None
