"""The study's catalogue, in one place for every package: muscles, groups, sides, measures, kinds.

MR muscles (relative T2 and, for the axial ones, ADC), the MRC muscle groups, the
electrophysiology muscles, the MR ↔ clinical correspondence, onset regions and muscles of
onset (DESIGN.md, "Domain facts"; the paper's Methods), and the enumerations of groups,
sex, onset sites, sides, diagnoses, series kinds, imaging measures and result kinds. Keys
are the ones the tidy CSV files, the measurements table and the DICOM writers use; nothing
else in the tree spells these lists again (storage.models stores these enums).

It lives in ``storage`` because that is the one package every other one reads (the schema's enums
come from it) and it imports nothing of ours; it is the domain's catalogue, not the store's.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

Region = Literal["head_neck", "upper_limb", "trunk", "lower_limb"]
Plane = Literal["axial", "coronal"]
SIDES = ("left", "right")



class Group(str, enum.Enum):
    """Study group of a subject."""

    PATIENT = "patient"
    CONTROL = "control"


class Sex(str, enum.Enum):
    """DICOM Patient's Sex values the study records."""

    MALE = "M"
    FEMALE = "F"


class OnsetSite(str, enum.Enum):
    """Region of symptom onset (bulbar, upper limb, lower limb)."""

    BULBAR = "bulbar"
    UPPER_LIMB = "upper_limb"
    LOWER_LIMB = "lower_limb"


class Side(str, enum.Enum):
    """Body side of a muscle or measurement; ``none`` for unpaired muscles."""

    LEFT = "left"
    RIGHT = "right"
    NONE = "none"


class Diagnosis(str, enum.Enum):
    """Diagnosis of a patient."""

    ALS = "ALS"
    PMA = "PMA"


class SeriesKind(str, enum.Enum):
    """What a received series is to the node: processing input (t2, dwi; a Dixon protocol's water and fat images),
    a result, or other (stored, served, never processed)."""

    T2 = "t2"
    DWI = "dwi"
    DIXON_WATER = "dixon_water"
    DIXON_FAT = "dixon_fat"
    RESULT = "result"
    OTHER = "other"


class Modality(str, enum.Enum):
    """The imaging measures: relative T2 (ratio), ADC (mm²/s) and, where the protocol has Dixon water and fat
    images, fat fraction (%); the same names as the observations' measures."""

    REL_T2 = "relT2"
    ADC = "ADC"
    FF = "FF"


class ObservationSource(str, enum.Enum):
    """Which spreadsheet a non-imaging observation came from."""

    CLINICAL = "clinical"
    EPHYS = "ephys"


class ScanProfile(str, enum.Enum):
    """Which part of the body a site's protocol scans, and so which muscles it can measure (:data:`PROFILE_MUSCLES`)."""

    WHOLE_BODY = "whole_body"  # the paper's: vertex to feet, coronal T2 stations and axial DWI
    LOWER_LIMBS = "lower_limbs"  # thighs and calves
    CALVES = "calves"  # the lower legs only


class ResultKind(str, enum.Enum):
    """The DICOM result objects myonode writes."""

    STITCHED_T2 = "stitched_t2"
    ADC_MAP = "adc_map"
    SEG = "seg"
    SR = "sr"  # unverified, or signed by a reviewer (Verification Flag VERIFIED)
    REPORT_PDF = "report_pdf"


class MeasurementSource(str, enum.Enum):
    """Where a measurement's ROI came from: the atlas propagation, or a segmentation a person corrected."""

    AUTOMATIC = "automatic"
    CORRECTED = "corrected"


class ReviewVerdict(str, enum.Enum):
    """A reviewer's decision on a visit or on one muscle × side ROI of it."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"


class RejectReason(str, enum.Enum):
    """Why a reviewer rejected an ROI or a visit (the short list the console offers)."""

    MISREGISTERED = "misregistered"
    ARTEFACT = "artefact"
    NOT_COVERED = "not_covered"
    OTHER = "other"


@dataclass(frozen=True, kw_only=True)
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
    Muscle(key="tongue", name="Tongue", paired=False, region="head_neck", plane="axial"),
    Muscle(key="splenius_capitis", name="Splenius capitis", paired=False, region="head_neck", plane="axial", mrc="neck_extensors"),
    Muscle(key="trapezius", name="Trapezius", paired=True, region="head_neck", plane="axial"),
    Muscle(key="sternocleidomastoid", name="Sternocleidomastoid", paired=True, region="head_neck", plane="axial"),
    Muscle(key="deltoid", name="Deltoid", paired=True, region="upper_limb", plane="axial", mrc="deltoid"),
    Muscle(key="biceps_brachii", name="Biceps brachii", paired=True, region="upper_limb", plane="axial", mrc="biceps", ephys="biceps_brachii"),
    Muscle(key="forearm", name="Forearm compartment (brachioradialis)", paired=True, region="upper_limb", plane="axial"),
    Muscle(key="thoracic_paraspinal", name="Thoracic paraspinals", paired=True, region="trunk", plane="axial"),
    Muscle(key="psoas", name="Psoas major", paired=True, region="trunk", plane="axial", mrc="hip_flexors"),
    Muscle(key="gluteus_maximus", name="Gluteus maximus", paired=True, region="lower_limb", plane="axial", mrc="hip_extensors"),
    Muscle(key="quadriceps", name="Quadriceps", paired=True, region="lower_limb", plane="axial", mrc="quadriceps"),
    Muscle(key="hamstrings", name="Hamstrings", paired=True, region="lower_limb", plane="axial", mrc="hamstrings"),
    Muscle(key="tibialis_anterior", name="Tibialis anterior", paired=True, region="lower_limb", plane="axial", mrc="ankle_dorsiflexors",
           ephys="tibialis_anterior"),
    Muscle(key="gastrocnemius_soleus", name="Gastrocnemius/soleus", paired=True, region="lower_limb", plane="axial",
           mrc="ankle_plantar_flexors"),
    Muscle(key="triceps", name="Triceps", paired=True, region="upper_limb", plane="coronal", mrc="triceps"),
    Muscle(key="first_dorsal_interosseous", name="First dorsal interosseous", paired=True, region="upper_limb", plane="coronal",
           mrc="first_dorsal_interosseous"),
    Muscle(key="thenar", name="Thenar eminence", paired=True, region="upper_limb", plane="coronal", mrc="abductor_pollicis_brevis",
           ephys="abductor_pollicis_brevis"),
    Muscle(key="hypothenar", name="Hypothenar eminence", paired=True, region="upper_limb", plane="coronal", mrc="abductor_digiti_minimi",
           ephys="abductor_digiti_minimi"),
)
MUSCLE_BY_KEY: dict[str, Muscle] = {m.key: m for m in MUSCLES}

# The muscles each profile's field of view holds; every other muscle of a visit so scanned is "not covered":
# no value, never one from labels extrapolated beyond the images.
# A leg protocol's T2 stations, head first, and the muscles each holds (how the atlas is registered to them:
# quant.partial); the whole-body protocol registers the whole atlas to all its stations stitched.
PROFILE_STATIONS: dict[ScanProfile, tuple[tuple[str, ...], ...]] = {
    ScanProfile.LOWER_LIMBS: (("quadriceps", "hamstrings"), ("tibialis_anterior", "gastrocnemius_soleus")),
    ScanProfile.CALVES: (("tibialis_anterior", "gastrocnemius_soleus"),),
}
PROFILE_MUSCLES: dict[ScanProfile, tuple[str, ...]] = {
    ScanProfile.WHOLE_BODY: tuple(m.key for m in MUSCLES),
    **{profile: tuple(key for station in stations for key in station) for profile, stations in PROFILE_STATIONS.items()},
}


def not_covered(profile: ScanProfile | None) -> list[tuple[str, str]]:
    """The (muscle, side) of the catalogue a visit scanned with ``profile`` cannot be measured in (None: a visit
    measured before profiles existed, i.e. whole-body)."""
    covered = set(PROFILE_MUSCLES[profile or ScanProfile.WHOLE_BODY])
    return [(m.key, side) for m in MUSCLES if m.key not in covered for side in m.sides]

MRC_MUSCLES: tuple[str, ...] = (
    "deltoid", "biceps", "triceps", "wrist_flexors", "wrist_extensors", "finger_flexors", "finger_extensors",
    "abductor_pollicis_brevis", "first_dorsal_interosseous", "abductor_digiti_minimi", "hip_flexors",
    "hip_extensors", "hamstrings", "quadriceps", "ankle_dorsiflexors", "ankle_plantar_flexors", "neck_flexors",
    "neck_extensors",
)
MRC_UNPAIRED = {"neck_flexors", "neck_extensors"}

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
    "FF": tuple(m.key for m in MUSCLES),
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
