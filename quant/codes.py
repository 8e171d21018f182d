"""Every code myonode writes into its DICOM results, in one table.

SNOMED CT (SCT) and DICOM (DCM) codes are taken from pydicom's code dictionary by keyword,
so each exists there with the meaning written here (tests/quant/test_dicom_out.py checks
them again against the dictionary). Concepts with no such code are in myonode's private
coding scheme ``99MYONODE``, declared in the Coding Scheme Identification Sequence
(0008,0110) of every object that uses it. No SCT number is made up here.

- muscles (anatomic region, finding site): SCT for tongue, trapezius, sternocleidomastoid,
  deltoid; private for the rest (``MUSCLE_CODES``, reasons beside it)
- laterality (CID 244): SCT 7771000 Left, 24028007 Right
- segment category / type: SCT 85756007 Tissue (CID 7150) / SCT 127954009 Skeletal muscle
- algorithm family (CID 7162): DCM 123111 Deformable Models (the atlas registration)
- stitched series: DCM 113090 Image stitching (CID 7203), source purpose DCM 121322 (CID 7202)
- procedure reported: SCT 426252008 Magnetic resonance imaging of whole body
- measurements: private T2-weighted signal, bone marrow reference signal, relative T2 and
  summary; SCT 118565006 Volume; DCM 113041 Apparent Diffusion Coefficient; derivations
  SCT 373098007 Mean, 386136009 Standard Deviation (CID 7464)
- QC: private concept per modality, one private value per flag of ``quant.pipeline.QC_FLAGS``
- replaced series (Related Series purpose): private, CID 7210 has no such purpose
- units (UCUM): ``[arb'U]``, ``1``, ``ml``, ``mm2/s``
"""

from __future__ import annotations

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from storage.catalogue import MUSCLES, Modality

PRIVATE_SCHEME = "99MYONODE"
PRIVATE_SCHEME_NAME = "myonode muscle MRI codes"
PRIVATE_SCHEME_ORGANISATION = "myonode"


def _private(value: str, meaning: str) -> CodedConcept:
    if len(value) > 16:  # Code Value is SH
        raise ValueError(f"private code value {value!r} longer than 16 characters")
    return CodedConcept(value, PRIVATE_SCHEME, meaning)


def _std(code: Code) -> CodedConcept:
    return CodedConcept(code.value, code.scheme_designator, code.meaning)


# Muscle key → anatomic code: SCT where pydicom's dictionary has that very muscle, private otherwise.
# Private on purpose: "forearm" is a muscle compartment, not SCT Forearm (a region); "thoracic_paraspinal"
# is the paraspinal group (erector spinae and transversospinalis), not SCT Erector spinae alone; the SCT
# codes of the other muscles are not in pydicom's dictionary, so not verifiable here.
_SCT_MUSCLES: dict[str, Code] = {
    "tongue": codes.SCT.Tongue,
    "trapezius": codes.SCT.TrapeziusMuscle,
    "sternocleidomastoid": codes.SCT.SternocleidomastoidMuscle,
    "deltoid": codes.SCT.DeltoidMuscle,
}
_PRIVATE_MUSCLES: dict[str, str] = {
    "splenius_capitis": "M-SPLENIUS-CAP",
    "biceps_brachii": "M-BICEPS-BR",
    "forearm": "M-FOREARM",
    "thoracic_paraspinal": "M-PARASPIN-TH",
    "psoas": "M-PSOAS-MAJ",
    "gluteus_maximus": "M-GLUTEUS-MAX",
    "quadriceps": "M-QUADRICEPS",
    "hamstrings": "M-HAMSTRINGS",
    "tibialis_anterior": "M-TIBIALIS-ANT",
    "gastrocnemius_soleus": "M-GASTROC-SOL",
    "triceps": "M-TRICEPS",
    "first_dorsal_interosseous": "M-FDI",
    "thenar": "M-THENAR",
    "hypothenar": "M-HYPOTHENAR",
}
MUSCLE_CODES: dict[str, CodedConcept] = {
    m.key: _std(_SCT_MUSCLES[m.key]) if m.key in _SCT_MUSCLES else _private(_PRIVATE_MUSCLES[m.key], m.name)
    for m in MUSCLES
}

LATERALITY: dict[str, CodedConcept] = {"left": _std(codes.SCT.Left), "right": _std(codes.SCT.Right)}

TISSUE = _std(codes.SCT.Tissue)
SKELETAL_MUSCLE = _std(codes.SCT.SkeletalMuscle)
ALGORITHM_FAMILY = _std(codes.cid7162.DeformableModels)
IMAGE_STITCHING = _std(codes.cid7203.ImageStitching)
SOURCE_IMAGE_PURPOSE = _std(codes.cid7202.SourceImageForImageProcessingOperation)
REPLACED_SERIES = _private("REPLACED-SERIES", "Result series replaced by this series")
WHOLE_BODY_MRI = _std(codes.SCT.MagneticResonanceImagingOfWholeBody)
REPORT_TITLE = _std(codes.cid7021.ImagingMeasurementReport)
DEVICE_OBSERVER = _std(codes.DCM.Device)

# Measurements of a muscle × side (TID 1500 measurement groups) and their derivations
T2W_SIGNAL = _private("T2W-SIGNAL", "T2-weighted signal intensity")
REFERENCE_SIGNAL = _private("T2W-REF-SIGNAL", "Bone marrow reference T2-weighted signal intensity")
RELATIVE_T2 = _private("REL-T2", "Relative T2 signal")
SUMMARY_RELATIVE_T2 = _private("REL-T2-SUMMARY", "Mean relative T2 signal over all muscles")
VOLUME = _std(codes.SCT.Volume)
ADC = _std(codes.DCM.ApparentDiffusionCoefficient)
FAT_FRACTION = _std(codes.DCM.FatFraction)  # DCM 129100, measured as the signal fat fraction F / (W + F) of Dixon
MEAN = _std(codes.SCT.Mean)
STANDARD_DEVIATION = _std(codes.SCT.StandardDeviation)

# Units (UCUM)
ARBITRARY_UNIT = CodedConcept("[arb'U]", "UCUM", "arbitrary unit")
RATIO = CodedConcept("1", "UCUM", "no units")
MILLILITRE = CodedConcept("ml", "UCUM", "milliliter")
MM2_PER_S = CodedConcept("mm2/s", "UCUM", "square millimeter per second")
PERCENT = _std(codes.UCUM.Percent)

# Quality control: one concept per modality measured, one value per flag of quant.pipeline.QC_FLAGS
QC_FLAG = {Modality.REL_T2: _private("QC-FLAG-T2", "Relative T2 quality control flag"),
           Modality.ADC: _private("QC-FLAG-ADC", "ADC quality control flag"),
           Modality.FF: _private("QC-FLAG-FF", "Fat fraction quality control flag")}
QC_VALUES: dict[str, CodedConcept] = {
    "roi_too_small": _private("QC-ROI-SMALL", "ROI too small"),
    "touches_field_edge": _private("QC-FOV-EDGE", "ROI touches the field of view edge"),
    "reference_out_of_range": _private("QC-REF-RANGE", "Bone marrow reference out of plausible range"),
    "reference_substituted": _private("QC-REF-SUBST", "Bone marrow reference other than the atlas default"),
}
# A muscle of the catalogue outside the protocol's field of view ([protocol] profile): its group says so, no value.
COVERAGE = _private("COVERAGE", "Coverage by the scanned field of view")
NOT_COVERED = _private("NOT-COVERED", "Not covered by the protocol: not measured")
# The atlas the ROIs were propagated from was drawn from synthetic (phantom) subjects, not real anatomy.
ATLAS_ANATOMY = _private("ATLAS-ANATOMY", "Anatomy of the atlas the regions were propagated from")
SYNTHETIC_ATLAS = _private("SYNTHETIC-ATLAS", "Synthetic atlas (phantom subjects, not real anatomy)")


def coding_scheme_identification() -> CodingSchemeIdentificationItem:
    """The Coding Scheme Identification Sequence item declaring the private scheme."""
    return CodingSchemeIdentificationItem(designator=PRIVATE_SCHEME, name=PRIVATE_SCHEME_NAME,
                                          responsible_organization=PRIVATE_SCHEME_ORGANISATION)


def all_codes() -> list[CodedConcept]:
    """Every concept of this table (for checks against the code dictionary)."""
    singles = [LATERALITY["left"], LATERALITY["right"], TISSUE, SKELETAL_MUSCLE, ALGORITHM_FAMILY, IMAGE_STITCHING,
               SOURCE_IMAGE_PURPOSE, REPLACED_SERIES, WHOLE_BODY_MRI, REPORT_TITLE, DEVICE_OBSERVER, T2W_SIGNAL,
               REFERENCE_SIGNAL, RELATIVE_T2, SUMMARY_RELATIVE_T2, VOLUME, ADC, FAT_FRACTION, MEAN, STANDARD_DEVIATION]
    return [*MUSCLE_CODES.values(), *singles, *QC_FLAG.values(), *QC_VALUES.values(), COVERAGE, NOT_COVERED,
            ATLAS_ANATOMY, SYNTHETIC_ATLAS]
