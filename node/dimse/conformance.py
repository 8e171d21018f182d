"""What the node accepts and offers on the network: SOP classes and transfer syntaxes, in one place.

The storage SOP classes are every one pynetdicom knows (the standard's, PS3.4 Annex B and
GG), plus the private ones a Philips scanner sends with an exam (taken from the Philips
UIDs listed in dcm4che's dictionary and dcmtk's ``dcuid.h``). The transfer syntaxes are
every one pydicom names. Storing never decodes, so accepting a syntax needs no codec;
giving an instance back in another syntax does (see :mod:`node.dimse.transcode`).

``[node] accept`` narrows the storage classes for a site that wants a strict node: a list
of SOP Class UIDs or keywords, resolved and checked here.
"""

from __future__ import annotations

from pydicom.uid import (
    UID,
    AllTransferSyntaxes,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import sop_class
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

# Private storage SOP classes of Philips systems (MR consoles send the first group with
# every exam; the others come from Philips workstations and X-ray/CT systems).
PHILIPS_PRIVATE_STORAGE: dict[str, str] = {
    "1.3.46.670589.11.0.0.12.1": "PrivatePhilipsMRSpectrumStorage",
    "1.3.46.670589.11.0.0.12.2": "PrivatePhilipsMRSeriesDataStorage",
    "1.3.46.670589.11.0.0.12.3": "PrivatePhilipsMRColorImageStorage",
    "1.3.46.670589.11.0.0.12.4": "PrivatePhilipsMRExamcardStorage",
    "1.3.46.670589.2.5.1.1": "PrivatePhilips3DPresentationStateStorage",
    "1.3.46.670589.2.3.1.1": "PrivatePhilipsSpecialisedXAStorage",
    "1.3.46.670589.2.4.1.1": "PrivatePhilipsCXImageStorage",
    "1.3.46.670589.2.8.1.1": "PrivatePhilipsVRMLStorage",
    "1.3.46.670589.2.11.1.1": "PrivatePhilipsVolumeSetStorage",
    "1.3.46.670589.5.0.1": "PrivatePhilipsVolumeStorageRetired",
    "1.3.46.670589.5.0.1.1": "PrivatePhilipsVolumeStorage",
    "1.3.46.670589.5.0.2": "PrivatePhilips3DObjectStorageRetired",
    "1.3.46.670589.5.0.2.1": "PrivatePhilips3DObjectStorage",
    "1.3.46.670589.5.0.3": "PrivatePhilipsSurfaceStorageRetired",
    "1.3.46.670589.5.0.3.1": "PrivatePhilipsSurfaceStorage",
    "1.3.46.670589.5.0.4": "PrivatePhilipsCompositeObjectStorage",
    "1.3.46.670589.5.0.7": "PrivatePhilipsMRCardioProfileStorage",
    "1.3.46.670589.5.0.8": "PrivatePhilipsMRCardioStorageRetired",
    "1.3.46.670589.5.0.8.1": "PrivatePhilipsMRCardioStorage",
    "1.3.46.670589.5.0.9": "PrivatePhilipsCTSyntheticImageStorage",
    "1.3.46.670589.5.0.10": "PrivatePhilipsMRSyntheticImageStorage",
    "1.3.46.670589.5.0.11": "PrivatePhilipsMRCardioAnalysisStorageRetired",
    "1.3.46.670589.5.0.11.1": "PrivatePhilipsMRCardioAnalysisStorage",
    "1.3.46.670589.5.0.12": "PrivatePhilipsCXSyntheticImageStorage",
    "1.3.46.670589.5.0.13": "PrivatePhilipsPerfusionStorage",
    "1.3.46.670589.5.0.14": "PrivatePhilipsPerfusionImageStorage",
    "1.3.46.670589.7.8.1618510091": "PrivatePhilipsXRayMFStorage",
    "1.3.46.670589.7.8.1618510092": "PrivatePhilipsLiveRunStorage",
    "1.3.46.670589.7.8.16185100129": "PrivatePhilipsRunStorage",
    "1.3.46.670589.7.8.16185100130": "PrivatePhilipsReconstructionStorage",
}

STANDARD_STORAGE: dict[str, str] = {str(uid): keyword for keyword, uid in sop_class._STORAGE_CLASSES.items()}
ALL_STORAGE: dict[str, str] = {**STANDARD_STORAGE, **PHILIPS_PRIVATE_STORAGE}

QR_SOP_CLASSES: tuple[UID, ...] = (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

# Uncompressed, native-pixel syntaxes: what any peer can read, and what the node decodes to.
NATIVE_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian,
)
# Compressions that lose nothing (PS3.5 8.2, 10): JPEG lossless processes 14 (and selection value 1, and the
# retired lossless processes 15, 28, 29), JPEG-LS lossless, JPEG 2000 (and Part 2, HTJ2K) lossless only, RLE.
LOSSLESS_COMPRESSED: frozenset[str] = frozenset({
    "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.58", "1.2.840.10008.1.2.4.65", "1.2.840.10008.1.2.4.66",
    "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.92",
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.5",
})


def is_lossy(syntax: str) -> bool:
    """Whether ``syntax`` is (or may be) a lossy compression: compressed and not one of LOSSLESS_COMPRESSED."""
    return UID(syntax).is_compressed and syntax not in LOSSLESS_COMPRESSED


# Every transfer syntax pydicom names, the native ones first.
TRANSFER_SYNTAXES: tuple[UID, ...] = (
    *NATIVE_SYNTAXES, *(ts for ts in AllTransferSyntaxes if ts not in NATIVE_SYNTAXES),
)


class UnknownSOPClassError(ValueError):
    """A name in ``[node] accept`` is neither a storage SOP Class UID nor a keyword the node knows."""


def resolve_sop_class(name: str) -> str:
    """A storage SOP Class UID from a UID or a keyword (``MRImageStorage``); raises naming it."""
    text = name.strip()
    if text in ALL_STORAGE:
        return text
    by_keyword = {keyword: uid for uid, keyword in ALL_STORAGE.items()}
    if text in by_keyword:
        return by_keyword[text]
    raise UnknownSOPClassError(f"{name!r} is not a storage SOP class UID or keyword known to the node")


def storage_sop_classes(accept: str | list[str]) -> list[UID]:
    """The storage SOP classes to accept for ``[node] accept`` ("all", or a list of UIDs/keywords)."""
    if accept == "all":
        return [UID(uid) for uid in ALL_STORAGE]
    return [UID(resolve_sop_class(name)) for name in accept]
