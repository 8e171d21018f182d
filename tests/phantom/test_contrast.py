"""The phantom's tissue model for the sequences beyond the paper's: a multi-echo spin echo and a two-point Dixon."""

from __future__ import annotations

import numpy as np
import pytest

from phantom.anatomy import LABELS
from phantom.contrast import (
    FAT_FRACTION,
    MuscleState,
    dixon_lookup_tables,
    echo_lookup_table,
    fat_fraction_table,
    lookup_tables,
)
from phantom.scanner import ScanSettings

TA_LEFT = next(lab for lab in LABELS if (lab.key, lab.side) == ("tibialis_anterior", "left"))
FAT = next(lab for lab in LABELS if lab.tissue == "fat")


def test_the_80_ms_echo_is_the_papers_t2_weighted_image_and_every_tissue_decays_with_its_own_t2() -> None:
    state = MuscleState(t2_factor={("tibialis_anterior", "left"): 1.3})
    assert np.array_equal(echo_lookup_table(state, 80.0), lookup_tables(state)[0])
    early, late = echo_lookup_table(state, 40.0), echo_lookup_table(state, 120.0)
    healthy = echo_lookup_table(MuscleState(), 40.0), echo_lookup_table(MuscleState(), 120.0)
    # mono-exponential: the T2 from two echoes is 80 ms / ln(S40 / S120)
    t2 = 80.0 / np.log(early[TA_LEFT.value] / late[TA_LEFT.value])
    t2_healthy = 80.0 / np.log(healthy[0][TA_LEFT.value] / healthy[1][TA_LEFT.value])
    assert t2_healthy == pytest.approx(35.0, rel=1e-4)
    assert t2 == pytest.approx(80.0 / (80.0 / 35.0 - np.log(1.3)), rel=1e-4) and t2 > t2_healthy  # oedema: longer
    assert 80.0 / np.log(early[FAT.value] / late[FAT.value]) == pytest.approx(130.0, rel=1e-4)


def test_dixon_water_and_fat_add_up_to_the_proton_density_split_by_the_tissue_fat_fraction() -> None:
    state = MuscleState(t2_factor={("tibialis_anterior", "left"): 1.5})
    water, fat = dixon_lookup_tables(state)
    ff = fat_fraction_table(state)
    for lab in (TA_LEFT, FAT):
        total = water[lab.value] + fat[lab.value]
        assert fat[lab.value] / total == pytest.approx(ff[lab.value], rel=1e-5)
    assert ff[FAT.value] == FAT_FRACTION["fat"]
    assert ff[TA_LEFT.value] == pytest.approx(FAT_FRACTION["muscle"] + 0.2 * 0.5)  # fatty replacement with disease
    assert fat_fraction_table(MuscleState())[TA_LEFT.value] == FAT_FRACTION["muscle"]


def test_a_multi_echo_protocol_must_include_the_80_ms_echo_and_distinct_positive_times() -> None:
    assert ScanSettings(echoes_ms=(20.0, 80.0)).echoes_ms == (20.0, 80.0)
    with pytest.raises(ValueError, match="include 80 ms"):
        ScanSettings(echoes_ms=(20.0, 60.0))
    with pytest.raises(ValueError, match="distinct and positive"):
        ScanSettings(echoes_ms=(80.0, 80.0))
