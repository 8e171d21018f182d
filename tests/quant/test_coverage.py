"""A protocol's field of view decides which muscles are measured: the others are not covered, never valued."""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from phantom.default_atlas import phantom_label_table
from quant.atlas import Atlas
from quant.pipeline import covered_muscles
from storage.catalogue import MUSCLES, PROFILE_MUSCLES, ScanProfile, not_covered


def _atlas() -> Atlas:
    image = sitk.Image(1, 1, 1, sitk.sitkFloat32)
    return Atlas(id="table-only", path=Path("."), template=image, labels=sitk.Image(1, 1, 1, sitk.sitkUInt16),
                 table=phantom_label_table())


def test_a_calf_protocol_measures_the_leg_muscles_and_leaves_every_other_one_not_covered() -> None:
    measured = covered_muscles(_atlas(), PROFILE_MUSCLES[ScanProfile.CALVES])
    assert sorted({(m.key, m.side) for m in measured}) == [
        ("gastrocnemius_soleus", "left"), ("gastrocnemius_soleus", "right"),
        ("tibialis_anterior", "left"), ("tibialis_anterior", "right")]
    uncovered = not_covered(ScanProfile.CALVES)
    every = {(m.key, side) for m in MUSCLES for side in m.sides}
    assert set(uncovered) | {(m.key, m.side) for m in measured} == every
    assert not set(uncovered) & {(m.key, m.side) for m in measured}


def test_the_whole_body_protocol_covers_every_muscle_as_before_profiles() -> None:
    assert not_covered(ScanProfile.WHOLE_BODY) == not_covered(None) == []
    assert covered_muscles(_atlas(), PROFILE_MUSCLES[ScanProfile.WHOLE_BODY]) == _atlas().muscles()
    assert covered_muscles(_atlas(), None) == _atlas().muscles()
