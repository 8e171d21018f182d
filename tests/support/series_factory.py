"""MR series with chosen geometry, scaling, b-values and image types, for the quant tests.

Classic series are lists of single-frame MR Image Storage data sets (built on
``dicom_factory.mr_image``); enhanced series are one Enhanced MR Image Storage data set
with per-frame functional groups. Pixel values are given as stored values (uint16).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import EnhancedMRImageStorage, generate_uid

from tests.support.dicom_factory import mr_image

CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # normal = row × column = +y (posterior)
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # normal = +z (superior)
STUDY_UID = generate_uid(entropy_srcs=["quant-tests"])


def normal(orientation: Sequence[float]) -> np.ndarray:
    return np.cross(orientation[:3], orientation[3:])


def stack(first: Sequence[float], orientation: Sequence[float], count: int, step: float) -> list[tuple[float, ...]]:
    """Image positions (mm) of ``count`` slices ``step`` mm apart along the slice normal."""
    return [tuple(float(v) for v in np.asarray(first) + k * step * normal(orientation)) for k in range(count)]


def _set_pixels(ds: Dataset, stored: np.ndarray) -> None:
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.BitsStored, ds.HighBit = 16, 15
    ds.PixelData = np.ascontiguousarray(stored, dtype=np.uint16).tobytes()


def _add_philips_scale_slope(ds: Dataset, scale_slope: float) -> None:
    ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True).add_new(0x0E, "FL", scale_slope)


def classic_series(stored: np.ndarray, positions: Sequence[Sequence[float]], *, series_uid: str | None = None,
                   orientation: Sequence[float] = CORONAL, pixel_spacing: tuple[float, float] = (1.5, 2.0),
                   rescale: tuple[float, float] | None = None, philips_scale_slope: float | None = None,
                   b_value: float | None = None, private_b: bool = False, acquisition_number: int | None = None,
                   image_type: list[str] | None = None, instance_numbers: Sequence[int] | None = None) -> list[Dataset]:
    """One single-frame instance per slice of ``stored`` (slices, rows, columns) at ``positions``.

    ``pixel_spacing`` is DICOM order (between rows, between columns); ``rescale`` is
    (slope, intercept); ``private_b`` puts the b-value only in Philips (2001,1003).
    """
    series_uid = series_uid or generate_uid()
    numbers = instance_numbers or range(1, len(stored) + 1)
    out = []
    for pixels, position, number in zip(stored, positions, numbers, strict=True):
        ds = mr_image(study_uid=STUDY_UID, series_uid=series_uid, orientation=list(orientation),
                      position=tuple(position), instance_number=number, b_value=b_value,
                      philips_private_b=private_b, acquisition_number=acquisition_number, image_type=image_type)
        ds.PixelSpacing = list(pixel_spacing)
        _set_pixels(ds, pixels)
        if rescale is not None:
            ds.RescaleSlope, ds.RescaleIntercept = rescale
        if philips_scale_slope is not None:
            _add_philips_scale_slope(ds, philips_scale_slope)
        out.append(ds)
    return out


def _item(**attributes: object) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _frame(position: Sequence[float], rescale: tuple[float, float] | None, scale_slope: float | None,
           b_value: float | None, frame_type: list[str] | None, acquisition: int | None) -> Dataset:
    """One per-frame functional groups item; the Philips scale slope sits in the private (2005,140F) item."""
    frame = _item(PlanePositionSequence=DicomSequence([_item(ImagePositionPatient=list(position))]))
    if rescale is not None:
        frame.PixelValueTransformationSequence = DicomSequence(
            [_item(RescaleSlope=rescale[0], RescaleIntercept=rescale[1], RescaleType="US")])
    if b_value is not None:
        frame.MRDiffusionSequence = DicomSequence(
            [_item(DiffusionBValue=b_value, DiffusionDirectionality="ISOTROPIC" if b_value else "NONE")])
    if frame_type is not None:
        frame.MRImageFrameTypeSequence = DicomSequence([_item(FrameType=frame_type)])
    if acquisition is not None:
        frame.FrameContentSequence = DicomSequence([_item(FrameAcquisitionNumber=acquisition)])
    if scale_slope is not None:
        private = Dataset()
        _add_philips_scale_slope(private, scale_slope)
        block = frame.private_block(0x2005, "Philips MR Imaging DD 005", create=True)
        block.add_new(0x0F, "SQ", DicomSequence([private]))
    return frame


def enhanced_series(stored: np.ndarray, positions: Sequence[Sequence[float]], *, series_uid: str | None = None,
                    orientation: Sequence[float] = AXIAL, pixel_spacing: tuple[float, float] = (1.5, 2.0),
                    rescale: Sequence[tuple[float, float]] | None = None,
                    philips_scale_slope: Sequence[float] | None = None, b_values: Sequence[float] | None = None,
                    frame_types: Sequence[list[str]] | None = None,
                    acquisition_numbers: Sequence[int] | None = None) -> Dataset:
    """One Enhanced MR instance, frame i of ``stored`` at ``positions[i]`` with the i-th of each per-frame list."""
    count = len(stored)

    def per_frame(values: Sequence | None) -> Sequence:
        return values if values is not None else [None] * count

    ds = mr_image(study_uid=STUDY_UID, series_uid=series_uid or generate_uid(), description="WB DWI enhanced")
    for keyword in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "SliceThickness"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedMRImageStorage
    ds.ImageType = ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"]
    ds.NumberOfFrames = count
    ds.SharedFunctionalGroupsSequence = DicomSequence([_item(
        PlaneOrientationSequence=DicomSequence([_item(ImageOrientationPatient=list(orientation))]),
        PixelMeasuresSequence=DicomSequence([_item(PixelSpacing=list(pixel_spacing), SliceThickness=5.0)]),
    )])
    ds.PerFrameFunctionalGroupsSequence = DicomSequence([
        _frame(*args) for args in zip(positions, per_frame(rescale), per_frame(philips_scale_slope),
                                      per_frame(b_values), per_frame(frame_types), per_frame(acquisition_numbers),
                                      strict=True)])
    _set_pixels(ds, stored)
    return ds
