"""A marrow label a few millimetres off its cavity is moved onto it; muscle labels are never touched."""

from __future__ import annotations

import numpy as np

from quant.partial import refine_marrow

MARROW, MUSCLE, CORTEX = 9, 3, 7


def test_a_marrow_label_off_its_cavity_moves_onto_the_bright_cavity_and_leaves_the_muscle_alone() -> None:
    yy, xx = np.mgrid[0:60, 0:60]
    cavity = (yy - 30) ** 2 + (xx - 30) ** 2 <= 36  # a bright disk, 6 px radius
    image = np.full((1, 60, 60), 300.0)  # muscle grey
    image[0][((yy - 30) ** 2 + (xx - 30) ** 2 <= 81) & ~cavity] = 50.0  # dark cortex ring
    image[0][cavity] = 1200.0  # fat marrow
    labels = np.zeros((1, 60, 60), np.uint16)
    labels[0][(yy - 34) ** 2 + (xx - 33) ** 2 <= 36] = MARROW  # registered 5 px off: half on cortex
    labels[0][(yy - 30) ** 2 + (xx - 30) ** 2 > 81] = MUSCLE
    labels[0][((yy - 30) ** 2 + (xx - 30) ** 2 <= 81) & (labels[0] == 0)] = CORTEX
    before = (labels[0] == MARROW) & cavity
    muscle_before = labels[0] == MUSCLE
    refine_marrow(labels, image, np.ones_like(labels, bool), {MARROW}, {MUSCLE}, radius_mm=8.0, spacing=(1.0, 1.0, 1.0))
    after = labels[0] == MARROW
    assert before.sum() < 0.8 * cavity.sum()
    assert (after & cavity).sum() == cavity.sum() and (after & ~cavity).sum() == 0
    assert np.array_equal(labels[0] == MUSCLE, muscle_before)


def test_a_marrow_label_holding_both_legs_keeps_both_cavities() -> None:
    """One unpaired label (both tibiae) registered a little off both cavities: each piece moves onto its own."""
    yy, xx = np.mgrid[0:60, 0:120]
    image = np.full((1, 60, 120), 300.0)
    labels = np.zeros((1, 60, 120), np.uint16)
    for cx in (30, 90):
        ring = (yy - 30) ** 2 + (xx - cx) ** 2 <= 81
        cavity = (yy - 30) ** 2 + (xx - cx) ** 2 <= 36
        image[0][ring & ~cavity] = 50.0
        image[0][cavity] = 1200.0
        labels[0][(yy - 33) ** 2 + (xx - cx - 2) ** 2 <= 25] = MARROW
    refine_marrow(labels, image, np.ones_like(labels, bool), {MARROW}, {MUSCLE}, radius_mm=8.0, spacing=(1.0, 1.0, 1.0))
    for cx in (30, 90):
        cavity = (yy - 30) ** 2 + (xx - cx) ** 2 <= 36
        assert (labels[0][cavity] == MARROW).all()
    assert ((labels[0] == MARROW) & (image[0] < 1000)).sum() == 0
