"""The muscle catalogue: the study's domain vocabulary, in one place for every package.

MR muscles (relative T2 and, for the axial ones, ADC), the MRC muscle groups, the
electrophysiology muscles, the MR ↔ clinical correspondence, onset regions and muscles of
onset (DESIGN.md, "Domain facts"; the paper's Methods). Keys are the ones the tidy CSV
files, the measurements table and the DICOM writers use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Region = Literal["head_neck", "upper_limb", "trunk", "lower_limb"]
Plane = Literal["axial", "coronal"]
OnsetSite = Literal["bulbar", "upper_limb", "lower_limb"]
SIDES = ("left", "right")


@dataclass(frozen=True)
class Muscle:
    """One MR muscle (or muscle group) of the protocol."""

    key: str
    name: str
    paired: bool
    region: Region
    plane: Plane  # the plane the paper measured it in
    mrc: str | None = None  # corresponding MRC muscle group, if any
    ephys: str | None = None  # corresponding electrophysiology muscle, if any

    @property
    def adc(self) -> bool:
        """ADC is measured for the axial muscles only."""
        return self.plane == "axial"

    @property
    def sides(self) -> tuple[str, ...]:
        return SIDES if self.paired else ("none",)


MUSCLES: tuple[Muscle, ...] = (
    Muscle("tongue", "Tongue", False, "head_neck", "axial"),
    Muscle("splenius_capitis", "Splenius capitis", False, "head_neck", "axial", mrc="neck_extensors"),
    Muscle("trapezius", "Trapezius", True, "head_neck", "axial"),
    Muscle("sternocleidomastoid", "Sternocleidomastoid", True, "head_neck", "axial"),
    Muscle("deltoid", "Deltoid", True, "upper_limb", "axial", mrc="deltoid"),
    Muscle("biceps_brachii", "Biceps brachii", True, "upper_limb", "axial", mrc="biceps", ephys="biceps_brachii"),
    Muscle("forearm", "Forearm compartment (brachioradialis)", True, "upper_limb", "axial"),
    Muscle("thoracic_paraspinal", "Thoracic paraspinals", True, "trunk", "axial"),
    Muscle("psoas", "Psoas major", True, "trunk", "axial", mrc="hip_flexors"),
    Muscle("gluteus_maximus", "Gluteus maximus", True, "lower_limb", "axial", mrc="hip_extensors"),
    Muscle("quadriceps", "Quadriceps", True, "lower_limb", "axial", mrc="quadriceps"),
    Muscle("hamstrings", "Hamstrings", True, "lower_limb", "axial", mrc="hamstrings"),
    Muscle("tibialis_anterior", "Tibialis anterior", True, "lower_limb", "axial", mrc="ankle_dorsiflexors",
           ephys="tibialis_anterior"),
    Muscle("gastrocnemius_soleus", "Gastrocnemius/soleus", True, "lower_limb", "axial",
           mrc="ankle_plantar_flexors"),
    Muscle("triceps", "Triceps", True, "upper_limb", "coronal", mrc="triceps"),
    Muscle("first_dorsal_interosseous", "First dorsal interosseous", True, "upper_limb", "coronal",
           mrc="first_dorsal_interosseous"),
    Muscle("thenar", "Thenar eminence", True, "upper_limb", "coronal", mrc="abductor_pollicis_brevis",
           ephys="abductor_pollicis_brevis"),
    Muscle("hypothenar", "Hypothenar eminence", True, "upper_limb", "coronal", mrc="abductor_digiti_minimi",
           ephys="abductor_digiti_minimi"),
)
MUSCLE_BY_KEY: dict[str, Muscle] = {m.key: m for m in MUSCLES}

MRC_MUSCLES: tuple[str, ...] = (
    "deltoid", "biceps", "triceps", "wrist_flexors", "wrist_extensors", "finger_flexors", "finger_extensors",
    "abductor_pollicis_brevis", "first_dorsal_interosseous", "abductor_digiti_minimi", "hip_flexors",
    "hip_extensors", "hamstrings", "quadriceps", "ankle_dorsiflexors", "ankle_plantar_flexors", "neck_flexors",
    "neck_extensors",
)
MRC_UNPAIRED = {"neck_flexors", "neck_extensors"}
MRC_MAX_SUM = 170  # 16 paired groups × 2 sides × 5 + 2 neck groups × 5

EPHYS_MUSCLES: tuple[str, ...] = (
    "biceps_brachii", "abductor_pollicis_brevis", "abductor_digiti_minimi", "tibialis_anterior",
    "abductor_hallucis", "extensor_digitorum_brevis",
)
DYNAMOMETRY_MUSCLES: tuple[str, ...] = (
    "first_dorsal_interosseous", "abductor_pollicis_brevis", "abductor_digiti_minimi", "quadriceps",
    "tibialis_anterior",
)

# Measures of the tidy observations file, and which "muscle" keys each one may carry.
GLOBAL_MEASURES = ("ALSFRS-R", "MRC_sum", "weight")
MEASURE_MUSCLES: dict[str, tuple[str, ...]] = {
    "relT2": tuple(m.key for m in MUSCLES),
    "ADC": tuple(m.key for m in MUSCLES if m.adc),
    "MRC": MRC_MUSCLES,
    "dynamometry": DYNAMOMETRY_MUSCLES,
    "MUNIX": EPHYS_MUSCLES,
    "MUSIX": EPHYS_MUSCLES,
    "CMAP": EPHYS_MUSCLES,
    **{g: ("",) for g in GLOBAL_MEASURES},
}

# Onset regions (on the onset side, except bulbar which takes both sides) and muscles of onset.
ONSET_REGIONS: dict[str, tuple[str, ...]] = {
    "bulbar": ("tongue", "trapezius", "sternocleidomastoid"),
    "upper_limb": ("deltoid", "biceps_brachii", "triceps", "forearm", "first_dorsal_interosseous", "thenar",
                   "hypothenar"),
    "lower_limb": ("psoas", "gluteus_maximus", "quadriceps", "hamstrings", "tibialis_anterior",
                   "gastrocnemius_soleus"),
}
ONSET_MUSCLE: dict[str, str] = {
    "bulbar": "tongue", "upper_limb": "first_dorsal_interosseous", "lower_limb": "tibialis_anterior",
}
COMPOSITES = ("summary_mean", "region_of_onset", "muscle_of_onset")


def dynamometry_muscle(mr_key: str) -> str | None:
    """The dynamometry muscle measured for an MR muscle (same key, or its clinical counterpart)."""
    muscle = MUSCLE_BY_KEY[mr_key]
    for candidate in (mr_key, muscle.mrc, muscle.ephys):
        if candidate in DYNAMOMETRY_MUSCLES:
            return candidate
    return None


def mrc_sides(mrc_key: str) -> tuple[str, ...]:
    return ("none",) if mrc_key in MRC_UNPAIRED else SIDES
