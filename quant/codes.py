"""Every code myonode writes into DICOM results, in one table.

SNOMED CT (SCT) and DICOM (DCM) codes are used only where pydicom's code dictionary has
them with that meaning (checked by tests/quant/test_codes.py); everything else is in
myonode's private coding scheme ``99MYONODE``, declared in the Coding Scheme
Identification Sequence of every object that uses it. No SCT number is made up here.
"""

from __future__ import annotations

from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from storage.catalogue import MUSCLES

PRIVATE_SCHEME = "99MYONODE"
PRIVATE_SCHEME_NAME = "myonode muscle MRI codes"


def _private(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, PRIVATE_SCHEME, meaning)


def _sct(code: object) -> CodedConcept:
    return CodedConcept(code.value, code.scheme_designator, code.meaning)  # type: ignore[attr-defined]


# Muscle key → anatomic code. SCT where pydicom knows the muscle; private otherwise.
MUSCLE_CODES: dict[str, CodedConcept] = {
    "tongue": _sct(codes.SCT.Tongue),
    "trapezius": _sct(codes.SCT.TrapeziusMuscle),
    "sternocleidomastoid": _sct(codes.SCT.SternocleidomastoidMuscle),
    "deltoid": _sct(codes.SCT.DeltoidMuscle),
    "thoracic_paraspinal": _sct(codes.SCT.ErectorSpinaeMuscle),  # the thoracic paraspinals are erector spinae
    **{m.key: _private(f"M-{m.key}", m.name) for m in MUSCLES
       if m.key not in ("tongue", "trapezius", "sternocleidomastoid", "deltoid", "thoracic_paraspinal")},
}

LATERALITY: dict[str, CodedConcept] = {"left": _sct(codes.SCT.Left), "right": _sct(codes.SCT.Right)}

SKELETAL_MUSCLE = _sct(codes.SCT.SkeletalMuscle)
TISSUE = _sct(codes.SCT.Tissue)  # CID 7150 Segmentation Property Categories
BONE_MARROW = _sct(codes.SCT.BoneMarrow)
WHOLE_BODY_MRI = _sct(codes.SCT.MagneticResonanceImagingOfWholeBody)
ADC = _sct(codes.DCM.ApparentDiffusionCoefficient)

# Measurements of a muscle (TID 1500 measurement groups)
MEAN_T2W_SIGNAL = _private("T2W-MEAN", "Mean T2-weighted signal")
REFERENCE_MEAN = _private("T2W-REF-MEAN", "Bone marrow reference mean T2-weighted signal")
RELATIVE_T2 = _private("REL-T2", "Relative T2 signal")
SUMMARY_RELATIVE_T2 = _private("REL-T2-SUMMARY", "Mean relative T2 signal over all muscles")
VOLUME = _sct(codes.SCT.Volume)
MEAN_ADC = ADC
QC_FLAG = _private("QC-FLAG", "Quality control flag")
QC_VALUES: dict[str, CodedConcept] = {
    "roi_too_small": _private("QC-ROI-SMALL", "ROI too small"),
    "touches_field_edge": _private("QC-FOV-EDGE", "ROI touches field of view edge"),
    "reference_out_of_range": _private("QC-REF-RANGE", "Bone marrow reference out of plausible range"),
}
# CID 7162 has no "atlas registration"; deformable registration of an atlas is a deformable model.
ALGORITHM_FAMILY = CodedConcept(codes.cid7162.DeformableModels.value, codes.cid7162.DeformableModels.scheme_designator,
                                codes.cid7162.DeformableModels.meaning)


def coding_scheme_identification() -> Dataset:
    """The Coding Scheme Identification Sequence item declaring the private scheme."""
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = PRIVATE_SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = "myonode"
    return item
