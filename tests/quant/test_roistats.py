"""ROI statistics and relative T2: erosion, per-station reference, voxel-count combination, gain invariance."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from phantom.anatomy import AnatomyParams, build, muscle_label
from phantom.contrast import MuscleState
from phantom.default_atlas import phantom_label_table
from phantom.geometry import truth_grid
from phantom.scanner import ScanSettings, acquire
from quant.atlas import Atlas
from quant.params import QuantParams
from quant.pipeline import REFERENCE_SUBSTITUTED, measure_t2
from quant.roistats import RoiStat, erode_labels, erosion_footprint, relative_t2, roi_stats, touches_edge
from quant.volumes import StationVolume


def test_erosion_removes_a_margin_and_at_least_one_voxel_per_axis() -> None:
    """A 10×10×5 box at 1×1×5 mm eroded by 2 mm keeps 6×6 in-plane and loses one slice on each side."""
    labels = np.zeros((9, 20, 20), np.uint8)
    labels[2:7, 5:15, 5:15] = 7
    out = erode_labels(labels, (1.0, 1.0, 5.0), 2.0)
    kept = np.argwhere(out == 7)
    assert kept[:, 0].min() == 3 and kept[:, 0].max() == 5  # slices: one voxel each side
    assert kept[:, 1].min() == 7 and kept[:, 1].max() == 12  # rows: 2 mm each side
    assert erosion_footprint((0.78125, 0.78125, 5.0), 3.0).shape == (3, 9, 9)


def test_roi_stats_mean_sd_and_nan_ignored() -> None:
    data = np.array([[[1.0, 2.0, 3.0, np.nan]]])
    labels = np.array([[[4, 4, 4, 4]]], np.uint8)
    stat = roi_stats(data, labels)[4]
    assert stat.n == 3 and stat.mean == pytest.approx(2.0) and stat.sd == pytest.approx(1.0)


def test_relative_t2_uses_one_reference_and_combines_by_voxel_count() -> None:
    """Station 1 has the preferred femur marrow and 100 muscle voxels, station 2 also has it with 300:
    relative T2 = (100·0.2 + 300·0.3)/400; a station without the preferred bone is left out rather than
    normalised to another bone."""
    marrow = {"marrow_femur": 24, "marrow_vertebra": 20}
    stats = {
        1: {50: RoiStat(n=100, mean=200.0, sd=10.0), 24: RoiStat(n=80, mean=1000.0, sd=20.0)},
        2: {50: RoiStat(n=300, mean=240.0, sd=10.0), 24: RoiStat(n=80, mean=800.0, sd=20.0)},
        3: {50: RoiStat(n=500, mean=300.0, sd=10.0), 20: RoiStat(n=80, mean=600.0, sd=20.0)},
    }
    res = relative_t2(stats, 50, marrow, "marrow_femur", min_voxels=20)
    assert res is not None
    assert res.value == pytest.approx((100 * 0.2 + 300 * 0.3) / 400)
    assert res.stations == [1, 2] and res.references == ["marrow_femur"] * 2
    # without the preferred bone anywhere: the marrow present in most of the muscle's stations
    res = relative_t2({3: stats[3]}, 50, marrow, "marrow_femur", min_voxels=20)
    assert res is not None and res.references == ["marrow_vertebra"] and res.value == pytest.approx(0.5)
    # a station override forces the reference of that station
    res = relative_t2(stats, 50, marrow, "marrow_femur", 20, station_override={3: "marrow_vertebra"})
    assert res is not None and res.stations == [1, 2, 3]


def test_touches_edge_ignores_the_stitching_axis_when_asked() -> None:
    labels = np.zeros((4, 6, 6), np.uint8)
    labels[1:3, 0:2, 2:4] = 9  # reaches row 0 only
    assert touches_edge(labels, 9, (0, 1, 2))
    assert not touches_edge(labels, 9, (0, 2))


@pytest.fixture(scope="module")
def small_visit() -> tuple[list[StationVolume], sitk.Image, Atlas]:
    rng = np.random.default_rng(21)
    params = AnatomyParams.random(rng, "M").placed(rng)
    labels = build(truth_grid("small"), params)
    acq = acquire(labels, MuscleState(), ScanSettings(size="small"), rng)
    volumes = []
    for si in acq.t2:
        img = sitk.GetImageFromArray(si.data)
        img.SetOrigin(si.station.origin)
        img.SetSpacing(si.station.spacing)
        img.SetDirection(si.station.direction)
        volumes.append(StationVolume(image=img, series_uid="1.2.3", station_key=f"st{si.station.index}", b_value=None, sop_uids=[], frame_numbers=[]))
    atlas = Atlas(id="truth", path=Path("."), template=sitk.Image(1, 1, 1, sitk.sitkFloat32), labels=labels, table=phantom_label_table())
    return volumes, labels, atlas


def test_relative_t2_does_not_change_with_a_station_gain(small_visit) -> None:
    """A coil-loading gain of ×1.25 on one station and ×0.75 on another changes no relative T2 (the
    reason bone-marrow normalisation exists)."""
    volumes, labels, atlas = small_visit
    settings = QuantParams(erosion_mm=3.0)
    before, _, _ = measure_t2(volumes, labels, atlas, settings)
    scaled = [StationVolume(image=v.image * (1.25 if i == 3 else 0.75 if i == 4 else 1.0), series_uid=v.series_uid, station_key=v.station_key,
                            b_value=None, sop_uids=[], frame_numbers=[]) for i, v in enumerate(volumes)]
    after, _, _ = measure_t2(scaled, labels, atlas, settings)
    assert len(before) >= 20
    for a, b in zip(before, after):
        assert (a.muscle, a.side) == (b.muscle, b.side)
        assert b.value == pytest.approx(a.value, rel=1e-6)
    quad = next(r for r in before if (r.muscle, r.side) == ("quadriceps", "left"))
    assert quad.references[0] == "marrow_femur"
    true_ml = (sitk.GetArrayViewFromImage(labels) == muscle_label("quadriceps", "left")).sum() * 4.0 ** 3 / 1000
    assert quad.volume_ml == pytest.approx(true_ml, rel=0.02)  # labels given: volume from the 2 mm label grid


def test_a_muscle_measured_against_another_marrow_than_its_default_is_flagged(small_visit) -> None:
    """With its atlas default (femur) the quadriceps carries no substitution flag; when the atlas names a
    bone its stations do not hold (humerus), another marrow is used and the row says so — its relative
    T2 is not comparable with visits measured against the default."""
    volumes, labels, atlas = small_visit
    rows, _, _ = measure_t2(volumes, labels, atlas, QuantParams())
    assert not any(REFERENCE_SUBSTITUTED in r.qc_flags for r in rows if r.muscle in ("quadriceps", "tibialis_anterior"))
    table = [replace(lab, reference="marrow_humerus") if lab.key == "quadriceps" else lab for lab in atlas.table]
    moved = Atlas(id="humerus", path=Path("."), template=atlas.template, labels=atlas.labels, table=table)
    rows, _, _ = measure_t2(volumes, labels, moved, QuantParams())
    quad = next(r for r in rows if (r.muscle, r.side) == ("quadriceps", "left"))
    assert REFERENCE_SUBSTITUTED in quad.qc_flags and "marrow_humerus" not in quad.references
    ta = next(r for r in rows if (r.muscle, r.side) == ("tibialis_anterior", "left"))
    assert REFERENCE_SUBSTITUTED not in ta.qc_flags
