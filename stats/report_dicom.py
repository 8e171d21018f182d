"""The cohort report's PDF as a DICOM Encapsulated PDF instance, so PACS can store and show it.

Built with pydicom (highdicom has no Encapsulated Document IOD). The cohort is not one
patient, so the instance belongs to a fixed pseudo-patient ("MYONODE-COHORT") and one study
per node, a new series per report run.
"""

from __future__ import annotations

from datetime import datetime

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from pynetdicom.sop_class import EncapsulatedPDFStorage

COHORT_PATIENT_ID = "MYONODE-COHORT"


def cohort_study_uid(ae_title: str) -> str:
    """The node's cohort-report study: stable across runs, distinct per node."""
    return generate_uid(entropy_srcs=["myonode cohort report study", ae_title])


def encapsulated_pdf(pdf: bytes, title: str, ae_title: str, when: datetime, run_number: int) -> Dataset:
    """Encapsulated PDF Storage (PS3.3 A.45.1) with Patient, Study, Series, Equipment and document modules."""
    if not pdf.startswith(b"%PDF"):
        raise ValueError("not a PDF document")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Cohort^Report"
    ds.PatientID = COHORT_PATIENT_ID
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = cohort_study_uid(ae_title)
    ds.StudyDate, ds.StudyTime = "20000101", "000000"
    ds.StudyID = "COHORT"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "myonode cohort reports"
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = run_number
    ds.SeriesDescription = title[:64]
    ds.Manufacturer = "myonode"
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    ds.ContentDate = when.strftime("%Y%m%d")
    ds.ContentTime = when.strftime("%H%M%S")
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = title[:64]
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    return ds
