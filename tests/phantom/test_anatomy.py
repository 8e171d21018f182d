"""The phantom's body, station layout and scanner: what the pipeline's accuracy figures rest on."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from phantom.anatomy import LABELS, AnatomyParams, build, draw_canonical, muscle_label
from phantom.contrast import MuscleState, lookup_tables
from phantom.geometry import PROTOCOLS, stations, truth_grid
from phantom.scanner import ScanSettings, acquire
from storage.catalogue import MUSCLES


@pytest.fixture(scope="module")
def subject() -> tuple[AnatomyParams, sitk.Image]:
    rng = np.random.default_rng(11)
    params = AnatomyParams.random(rng, "M").placed(rng)
    return params, build(truth_grid("small"), params)


def test_every_catalogue_muscle_is_its_own_label_on_each_side(subject) -> None:
    """Each catalogue muscle × side exists as a labelled compartment, paired ones on both sides, and
    left-sided labels lie at +x (patient left in LPS)."""
    _, labels = subject
    arr = sitk.GetArrayViewFromImage(labels)
    present = set(np.unique(arr).tolist())
    spacing, origin = labels.GetSpacing()[0], labels.GetOrigin()[0]
    for m in MUSCLES:
        for side in m.sides:
            value = muscle_label(m.key, side)
            assert value in present, f"{m.key} {side} missing"
            if side != "none":
                x = origin + spacing * np.nonzero(arr == value)[2].mean()
                assert (x > 0) == (side == "left"), f"{m.key} {side} at x = {x:.0f} mm"
    assert {lab.value for lab in LABELS if lab.tissue == "marrow"} <= present


def test_bodies_differ_in_height_and_the_placement_moves_the_body() -> None:
    """Per-subject parameters change the anatomy (a taller subject's feet are lower); the table
    placement moves labels without changing the body's composition much."""
    grid = truth_grid("small")
    short = draw_canonical(grid, AnatomyParams(height_mm=1620.0))
    tall = draw_canonical(grid, AnatomyParams(height_mm=1900.0))

    def lowest_z(img: sitk.Image) -> float:
        arr = sitk.GetArrayViewFromImage(img)
        return img.GetOrigin()[2] + img.GetSpacing()[2] * np.nonzero(arr.any(axis=(1, 2)))[0].min()

    assert lowest_z(tall) < lowest_z(short) - 200
    params = AnatomyParams().placed(np.random.default_rng(3))
    canonical, placed = draw_canonical(grid, params), build(grid, params)
    a, b = sitk.GetArrayViewFromImage(canonical), sitk.GetArrayViewFromImage(placed)
    assert (a != b).mean() > 0.001  # moved
    quad = muscle_label("quadriceps", "left")
    assert abs((a == quad).sum() - (b == quad).sum()) < 0.1 * (a == quad).sum()  # same muscle, moved


def test_t2_stations_overlap_by_40_mm_and_dwi_stations_abut() -> None:
    """Coronal T2 stations step along −z with the protocol's 40 mm overlap; axial DWI stations tile z."""
    for size in ("full", "small"):
        t2 = stations("t2", size)
        p = PROTOCOLS[("t2", size)]
        assert len(t2) == 6
        for upper, lower in itertools.pairwise(t2):
            (lo_u, _), (_, hi_l) = upper.z_range(), lower.z_range()
            assert hi_l - lo_u + p.pixel_mm == pytest.approx(40.0)
        np.testing.assert_allclose(t2[0].row_direction, [1, 0, 0])
        np.testing.assert_allclose(t2[0].column_direction, [0, 0, -1])
        np.testing.assert_allclose(t2[0].normal, [0, 1, 0])
        dwi = stations("dwi", size)
        q = PROTOCOLS[("dwi", size)]
        assert len(dwi) == 8
        for upper, lower in itertools.pairwise(dwi):
            assert upper.z_range()[0] - lower.z_range()[1] == pytest.approx(q.slice_mm)


def test_station_truth_matches_the_image_and_the_coil_gain(subject) -> None:
    """A muscle's mean over its true label (interior voxels) in a station equals the recorded truth
    within noise and partial volume, and the truth carries that station's coil gain."""
    _, labels = subject
    acq = acquire(labels, MuscleState(t2_factor={("quadriceps", "left"): 1.5}), ScanSettings(size="small", snr_t2=200.0),
                  np.random.default_rng(5))
    t2_lut, _, _ = lookup_tables(MuscleState(t2_factor={("quadriceps", "left"): 1.5}))
    quad = muscle_label("quadriceps", "left")
    checked = 0
    for image, gain in zip(acq.t2, acq.gains["t2"]):
        st = image.station
        lab = sitk.GetArrayFromImage(sitk.Resample(labels, st.reference(), sitk.Transform(),
                                                   sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
        interior = lab == quad
        for axis in range(3):
            interior &= np.roll(lab == quad, 1, axis) & np.roll(lab == quad, -1, axis)
        if interior.sum() < 50:
            continue
        truth = acq.truth_signal["t2"][st.index][quad]
        assert image.data[interior].mean() == pytest.approx(truth, rel=0.03)
        # noise-free signal = tissue × gain × receive bias (0.85–1.1)
        assert 0.8 < truth / (t2_lut[quad] * gain) < 1.12
        checked += 1
    assert checked >= 1
    assert all(0.8 <= g <= 1.25 for g in acq.gains["t2"] + acq.gains["dwi"])


def test_dwi_follows_monoexponential_decay(subject) -> None:
    """b0 and b1000 of a muscle interior give back the planted muscle ADC (S = S0·exp(−b·ADC))."""
    _, labels = subject
    acq = acquire(labels, MuscleState(adc_factor={("quadriceps", "right"): 1.2}),
                  ScanSettings(size="small", snr_dwi=400.0), np.random.default_rng(2))
    quad = muscle_label("quadriceps", "right")
    ratios = []
    for b0, b1000 in zip(acq.dwi[0::2], acq.dwi[1::2]):
        lab = sitk.GetArrayFromImage(sitk.Resample(labels, b0.station.reference(), sitk.Transform(),
                                                   sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
        inside = lab == quad
        for axis in (1, 2):
            inside &= np.roll(lab == quad, 1, axis) & np.roll(lab == quad, -1, axis)
        if inside.sum() > 20:
            ratios.append(np.log(b0.data[inside].mean() / b1000.data[inside].mean()) / 1000.0)
    assert ratios and np.median(ratios) == pytest.approx(1.5e-3 * 1.2, rel=0.05)


def test_same_seed_same_images(subject) -> None:
    """The scanner is deterministic for a seed (byte-identical DICOM follows from this)."""
    _, labels = subject
    a = acquire(labels, MuscleState(), ScanSettings(size="small"), np.random.default_rng(9))
    b = acquire(labels, MuscleState(), ScanSettings(size="small"), np.random.default_rng(9))
    assert all(np.array_equal(x.data, y.data) for x, y in zip(a.t2 + a.dwi, b.t2 + b.dwi))
    assert a.gains == b.gains


def test_atrophy_thins_the_muscle_compartment() -> None:
    """A thickness scale of 0.6 on the left quadriceps shrinks its labelled cross-section (about
    (0.45 + 0.55·0.6)² ≈ 0.61 of its area) and leaves the right quadriceps alone."""
    body = AnatomyParams.random(np.random.default_rng(12), "M")
    grid = truth_grid("small")
    healthy = sitk.GetArrayFromImage(draw_canonical(grid, body))
    thin = sitk.GetArrayFromImage(draw_canonical(grid, replace(body, atrophy={("quadriceps", "left"): 0.6})))
    left, right = muscle_label("quadriceps", "left"), muscle_label("quadriceps", "right")
    assert (thin == left).sum() / (healthy == left).sum() == pytest.approx(0.61, abs=0.1)
    assert (thin == right).sum() == (healthy == right).sum()
