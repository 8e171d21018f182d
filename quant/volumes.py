"""Series → station volumes: one SimpleITK image per station (and per b-value for DWI).

Input is the instances of a series as stored: classic MR Image Storage (one file per
slice) or Enhanced MR Image Storage (frames of one instance). Every 2-D image (a classic
instance or one frame) is read with its own geometry, scaling, b-value (wherever the vendor
keeps it: :mod:`quant.diffusion`), echo time and image type; scanner-derived images (trace, ADC)
are left out; the rest are grouped into stations (same series, acquisition number, plane,
in-plane position, b-value and echo time), sorted along the slice normal and checked for a
regular, complete stack. Of a multi-echo series (one station at many echo times, as a Siemens
multi-echo spin echo exports it) the caller may keep the echo nearest a wanted echo time.

Geometry is DICOM patient coordinates (LPS, mm). A volume's SimpleITK direction columns
are the row direction, the column direction and the slice normal (row × column); its
origin is the Image Position (Patient) of the first slice along the normal; spacing is
(Δ along row direction, Δ along column direction, slice spacing) in mm. Voxel values are
the scanner's floating-point values (Philips FP), float32.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset

from quant.diffusion import Diffusion, diffusion_of, number, private_value

# The DICOM facts node.intake.classify also uses (node imports them from here).
PHILIPS_MR_CREATOR = "Philips MR Imaging DD 001"  # (2005,100E) MR scale slope
DERIVED_IMAGE_TYPES = frozenset({"ADC", "TRACEW", "TRACE", "ISOTROPIC", "EADC", "FA"})

SPACING_TOLERANCE = 0.10  # a slice step may deviate this much (relative) from the median step
ORIENTATION_TOLERANCE = 1e-4  # direction cosines
PIXEL_SPACING_TOLERANCE = 1e-4  # relative
ALIGNMENT_TOLERANCE = 0.05  # in-plane shift between slices of a stack, in pixels
STATION_GRID_MM = 10.0  # in-plane offsets are compared rounded to this (as node.intake.classify does)


class VolumeError(ValueError):
    """A series cannot be made into regular station volumes; the message names series and position."""


@dataclass(kw_only=True)
class StationVolume:
    """One station of one series at one b-value, as a 3-D image (float32, LPS, mm).

    ``sop_uids`` and ``frame_numbers`` give, per slice in volume order (index k of the
    image's third axis), the source instance and its 1-based frame number (None for a
    single-frame instance), for references from derived objects (SEG, SR).
    """

    image: sitk.Image
    series_uid: str
    station_key: str
    b_value: float | None  # s/mm²; None for non-diffusion images
    sop_uids: list[str]
    frame_numbers: list[int | None]
    echo_time_ms: float | None = None  # (Effective) Echo Time of its images, when they give one
    echoes_ms: tuple[float, ...] = ()  # every echo time the station had, when one was chosen among several
    diffusion: Diffusion | None = None  # where the b-value was read (its first image's)
    slice_thickness_mm: float | None = None  # Slice Thickness of its first image, when given


@dataclass(frozen=True, kw_only=True)
class _Slice:
    """One 2-D image (classic instance or one frame) with what is needed to place and scale it."""

    sop_uid: str
    frame_number: int | None
    series_uid: str
    acquisition: str
    stored: np.ndarray  # stored pixel values, (rows, columns)
    row: np.ndarray  # unit vector along a row (direction of increasing column index)
    col: np.ndarray  # unit vector along a column (direction of increasing row index)
    position: np.ndarray  # Image Position (Patient), mm: centre of the first pixel
    pixel_spacing: tuple[float, float]  # DICOM order: (between rows, between columns), mm
    slice_thickness: float | None
    slope: float
    intercept: float
    scale_slope: float | None  # Philips MR Scale Slope; None when absent
    diffusion: Diffusion | None
    echo_time: float | None  # ms
    derived: bool

    @property
    def b_value(self) -> float | None:
        return self.diffusion.b_value if self.diffusion is not None else None

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row, self.col)

    @property
    def name(self) -> str:
        return self.sop_uid if self.frame_number is None else f"{self.sop_uid} frame {self.frame_number}"


def is_derived_image_type(image_type: Sequence[str]) -> bool:
    """True for an Image Type / Frame Type the scanner computed (DERIVED, ADC, trace, isotropic…).

    The rule of ``node.intake.classify.is_derived``, applied to a value list so it also works per frame.
    """
    values = [str(v).upper() for v in image_type]
    return bool(values) and (values[0] == "DERIVED" or bool(DERIVED_IMAGE_TYPES & set(values)))


def _private_float(ds: Dataset, group: int, offset: int, creator: str) -> float | None:
    """The value of a private element (group, creator block, element offset), or None if absent."""
    return number(private_value(ds, group, offset, creator))


def _with_items(ds: Dataset) -> list[Dataset]:
    """``ds`` followed by the items of its sequences (one level), e.g. Philips' private per-frame (2005,140F)."""
    return [ds, *(item for elem in ds if elem.VR == "SQ" and elem.value for item in elem.value)]


def _philips_scale_slope(datasets: Iterable[Dataset]) -> float | None:
    """Philips MR Scale Slope (2005,100E) from the first of ``datasets`` carrying it."""
    for ds in datasets:
        value = _private_float(ds, 0x2005, 0x0E, PHILIPS_MR_CREATOR)
        if value is not None:
            return value
    return None


def functional_group(frame: Dataset | None, shared: Dataset | None, sequence: str) -> Dataset | None:
    """The item of a functional-group ``sequence`` for a frame: per-frame first, then shared."""
    for groups in (frame, shared):
        if groups is not None and groups.get(sequence):
            return groups[sequence][0]
    return None


def _required(ds: Dataset | None, keyword: str, where: str) -> Any:
    if ds is None or ds.get(keyword) is None:
        raise VolumeError(f"{where}: missing {keyword}")
    return ds[keyword].value


def _unit_vectors(iop: Sequence[float], where: str) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray([float(v) for v in iop])
    if values.shape != (6,):
        raise VolumeError(f"{where}: Image Orientation (Patient) must have 6 values, has {values.size}")
    return values[:3], values[3:]


def _acquisition_number(value: object) -> str:
    """Acquisition number as node.intake.classify writes it into the station key (0 and absent alike: "")."""
    return str(value or "")


def _classic_slice(ds: Dataset) -> _Slice:
    """The one 2-D image of a single-frame MR Image Storage instance."""
    where = f"series {ds.get('SeriesInstanceUID', '?')} instance {ds.get('SOPInstanceUID', '?')}"
    row, col = _unit_vectors(_required(ds, "ImageOrientationPatient", where), where)
    spacing = _required(ds, "PixelSpacing", where)
    image_type = ds.get("ImageType") or []
    return _Slice(
        sop_uid=str(ds.SOPInstanceUID),
        frame_number=None,
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        acquisition=_acquisition_number(ds.get("AcquisitionNumber")),
        stored=ds.pixel_array,
        row=row,
        col=col,
        position=np.asarray([float(v) for v in _required(ds, "ImagePositionPatient", where)]),
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        slice_thickness=number(ds.get("SliceThickness")),
        slope=number(ds.get("RescaleSlope")) or 1.0,
        intercept=number(ds.get("RescaleIntercept")) or 0.0,
        scale_slope=_philips_scale_slope([ds]),
        diffusion=diffusion_of(ds),
        echo_time=number(ds.get("EchoTime")),
        derived=is_derived_image_type(image_type),
    )


def _enhanced_slices(ds: Dataset) -> list[_Slice]:
    """The frames of an Enhanced MR Image Storage instance, from its per-frame and shared functional groups."""
    frames = ds.get("PerFrameFunctionalGroupsSequence") or []
    shared = ds.SharedFunctionalGroupsSequence[0] if ds.get("SharedFunctionalGroupsSequence") else None
    pixels = ds.pixel_array.reshape(len(frames), int(ds.Rows), int(ds.Columns))
    out = []
    for index, frame in enumerate(frames):
        frame_number = index + 1
        where = f"series {ds.get('SeriesInstanceUID', '?')} instance {ds.SOPInstanceUID} frame {frame_number}"
        orientation = functional_group(frame, shared, "PlaneOrientationSequence")
        iop = _required(orientation, "ImageOrientationPatient", where)
        row, col = _unit_vectors(iop, where)
        position = _required(functional_group(frame, shared, "PlanePositionSequence"), "ImagePositionPatient", where)
        measures = functional_group(frame, shared, "PixelMeasuresSequence")
        spacing = _required(measures, "PixelSpacing", where)
        scaling = functional_group(frame, shared, "PixelValueTransformationSequence") or ds
        echo = functional_group(frame, shared, "MREchoSequence")
        frame_type = functional_group(frame, shared, "MRImageFrameTypeSequence")
        content = functional_group(frame, shared, "FrameContentSequence")
        acquisition = content.get("FrameAcquisitionNumber") if content is not None else None
        out.append(_Slice(
            sop_uid=str(ds.SOPInstanceUID),
            frame_number=frame_number,
            series_uid=str(ds.get("SeriesInstanceUID", "")),
            acquisition=_acquisition_number(acquisition if acquisition is not None else ds.get("AcquisitionNumber")),
            stored=pixels[index],
            row=row,
            col=col,
            position=np.asarray([float(v) for v in position]),
            pixel_spacing=(float(spacing[0]), float(spacing[1])),
            slice_thickness=number(measures.get("SliceThickness")) if measures is not None else None,
            slope=number(scaling.get("RescaleSlope")) or 1.0,
            intercept=number(scaling.get("RescaleIntercept")) or 0.0,
            scale_slope=_philips_scale_slope(
                [*_with_items(frame), *(_with_items(shared) if shared is not None else []), ds]),
            diffusion=diffusion_of(ds, functional_group(frame, shared, "MRDiffusionSequence")),
            echo_time=number(echo.get("EffectiveEchoTime")) if echo is not None else number(ds.get("EchoTime")),
            derived=is_derived_image_type(
                (frame_type.get("FrameType") if frame_type is not None else None) or ds.get("ImageType") or []),
        ))
    return out


def _slices(ds: Dataset) -> list[_Slice]:
    return _enhanced_slices(ds) if "PerFrameFunctionalGroupsSequence" in ds else [_classic_slice(ds)]


def _plane(normal: np.ndarray) -> str:
    """coronal / axial / sagittal: the LPS axis the slice normal is closest to (as node.intake.classify)."""
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]


def _station_key(s: _Slice) -> str:
    """The station a 2-D image belongs to, in node.intake.classify.station_key's format and rounding.

    ``series|acquisition|plane|u|v``, u and v the in-plane offsets of the image position
    along the row and column directions rounded to 1 cm; for enhanced frames the Frame
    Acquisition Number replaces the instance's Acquisition Number.
    """
    u = round(float(s.position @ s.row) / STATION_GRID_MM)
    v = round(float(s.position @ s.col) / STATION_GRID_MM)
    return f"{s.series_uid}|{s.acquisition}|{_plane(s.normal)}|{u}|{v}"


def _real_values(s: _Slice) -> np.ndarray:
    """Philips floating value FP = (SV·RS + RI) / (RS·SS); without a private scale slope SV·RS + RI."""
    value = s.stored.astype(np.float64) * s.slope + s.intercept
    if s.scale_slope is not None:
        value /= s.slope * s.scale_slope
    return value.astype(np.float32)


def _check_consistent(slices: Sequence[_Slice], what: str) -> None:
    """Same orientation, pixel spacing and matrix for every slice of a volume."""
    first = slices[0]
    for s in slices[1:]:
        if max(np.abs(s.row - first.row).max(), np.abs(s.col - first.col).max()) > ORIENTATION_TOLERANCE:
            raise VolumeError(f"{what}: {s.name} has orientation {[*s.row.tolist(), *s.col.tolist()]}, "
                              f"{first.name} has {[*first.row.tolist(), *first.col.tolist()]}")
        if not np.allclose(s.pixel_spacing, first.pixel_spacing, rtol=PIXEL_SPACING_TOLERANCE, atol=0.0):
            raise VolumeError(f"{what}: {s.name} has pixel spacing {s.pixel_spacing} mm, "
                              f"{first.name} has {first.pixel_spacing} mm")
        if s.stored.shape != first.stored.shape:
            raise VolumeError(f"{what}: {s.name} has rows×columns {s.stored.shape}, "
                              f"{first.name} has {first.stored.shape}")


def _check_aligned(slices: Sequence[_Slice], what: str) -> None:
    """Every slice's position lies on the line through the first along the slice normal."""
    first = slices[0]
    shifts = np.asarray([s.position - first.position for s in slices])
    in_plane = np.abs(np.column_stack([shifts @ first.row, shifts @ first.col]))
    worst = int(np.argmax(in_plane.max(axis=1)))
    if in_plane[worst].max() > ALIGNMENT_TOLERANCE * min(first.pixel_spacing):
        raise VolumeError(f"{what}: {slices[worst].name} at {slices[worst].position.tolist()} mm is shifted "
                          f"in-plane by {in_plane[worst].tolist()} mm from {first.name}")


def _slice_spacing(slices: Sequence[_Slice], offsets: np.ndarray, what: str) -> float:
    """The median step (mm) between consecutive sorted slices; raise on gaps, duplicates or irregular steps."""
    if len(offsets) < 2:
        return slices[0].slice_thickness or 1.0
    steps = np.diff(offsets)
    median = float(np.median(steps))
    if median <= 0.0:
        raise VolumeError(f"{what}: most slices share one position ({slices[0].position.tolist()} mm)")
    bad = np.flatnonzero(np.abs(steps - median) > SPACING_TOLERANCE * median)
    if bad.size:
        i = int(bad[0])
        a, b = slices[i], slices[i + 1]
        if steps[i] <= SPACING_TOLERANCE * median:
            problem = f"duplicated slice position {b.position.tolist()} mm ({a.name} and {b.name})"
        elif steps[i] > median:
            problem = (f"gap (missing slice?) of {steps[i]:.3f} mm between {a.position.tolist()} mm and "
                       f"{b.position.tolist()} mm")
        else:
            problem = f"irregular slice step of {steps[i]:.3f} mm at {b.position.tolist()} mm"
        raise VolumeError(f"{what}: {problem}; slices are {median:.3f} mm apart along the normal "
                          f"(offsets {offsets[i]:.3f} → {offsets[i + 1]:.3f} mm)")
    return median


def _volume(key: str, slices: Sequence[_Slice]) -> StationVolume:
    """One station volume from its 2-D images in any order: sorted by position along the normal and checked."""
    first = slices[0]
    what = f"series {first.series_uid} station '{key.partition('|')[2]}' b-value {first.b_value}" + (
        f" echo time {first.echo_time:g} ms" if first.echo_time is not None else "")
    _check_consistent(slices, what)
    offsets = np.asarray([float(s.position @ first.normal) for s in slices])
    order = np.argsort(offsets, kind="stable")
    ordered = [slices[i] for i in order]
    _check_aligned(ordered, what)
    step = _slice_spacing(ordered, offsets[order], what)
    image = sitk.GetImageFromArray(np.stack([_real_values(s) for s in ordered]))
    image.SetOrigin(tuple(float(v) for v in ordered[0].position))
    image.SetSpacing((first.pixel_spacing[1], first.pixel_spacing[0], step))
    image.SetDirection(tuple(float(v) for v in np.column_stack([first.row, first.col, first.normal]).ravel()))
    return StationVolume(image=image, series_uid=first.series_uid, station_key=key, b_value=first.b_value,
                         sop_uids=[s.sop_uid for s in ordered], frame_numbers=[s.frame_number for s in ordered],
                         echo_time_ms=first.echo_time, diffusion=first.diffusion,
                         slice_thickness_mm=first.slice_thickness)


def same_grid(a: sitk.Image, b: sitk.Image, *, position_mm: float, spacing_mm: float) -> bool:
    """True when two images share one voxel grid: the same size, origins within ``position_mm``, spacings within
    ``spacing_mm`` and directions within 1e-4."""
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=position_mm)
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=spacing_mm)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4))


def centre_z(image: sitk.Image) -> float:
    """z (mm, LPS: positive = superior) of an image's centre."""
    size = np.asarray(image.GetSize(), dtype=float)
    return float(image.TransformContinuousIndexToPhysicalPoint(tuple((size - 1) / 2))[2])


def head_first(volumes: Iterable[StationVolume]) -> list[StationVolume]:
    """Stations ordered head to feet (station index 1 = the most superior)."""
    return sorted(volumes, key=lambda v: -centre_z(v.image))


def station_volumes(datasets: Iterable[Dataset], *, echo_ms: float | None = None,
                    derived: bool = False) -> list[StationVolume]:
    """Station volumes of the acquired (non-derived) images in ``datasets``, one per station, b-value and echo
    time — or, with ``echo_ms``, one per station and b-value: of several echoes the one nearest ``echo_ms``
    (the shorter of two as near). ``derived``: the scanner's derived images too (a Dixon water or fat image is
    DERIVED; the pipeline never reads them, the tests and benchmarks judge its ROIs with them).

    Ordered by series, then head to feet, then b-value, then echo time. Raises :class:`VolumeError` on
    inconsistent orientation / pixel spacing / matrix within a station, or on a gap, a
    duplicated position or an irregular step in a station's slices.
    """
    groups: dict[tuple[str, float | None, float | None], list[_Slice]] = {}
    for ds in datasets:
        for s in _slices(ds):
            if derived or not s.derived:
                groups.setdefault((_station_key(s), s.b_value, s.echo_time), []).append(s)
    if echo_ms is not None:
        nearest: dict[tuple[str, float | None], float | None] = {}
        for key, b_value, echo in groups:
            kept = nearest.get((key, b_value), echo)
            if echo is not None and (kept is None or (abs(echo - echo_ms), echo) < (abs(kept - echo_ms), kept)):
                kept = echo
            nearest[(key, b_value)] = kept
        echoes = {(k, b): tuple(sorted(e for k2, b2, e in groups if (k2, b2) == (k, b) and e is not None))
                  for k, b in nearest}
        groups = {g: slices for g, slices in groups.items() if nearest[(g[0], g[1])] == g[2]}
    volumes = []
    for (key, b_value, _), slices in groups.items():
        volume = _volume(key, slices)
        if echo_ms is not None and len(echoes[(key, b_value)]) > 1:
            volume.echoes_ms = echoes[(key, b_value)]
        volumes.append(volume)
    return sorted(volumes, key=lambda v: (v.series_uid, -centre_z(v.image), v.b_value if v.b_value is not None else -1.0,
                                          v.echo_time_ms if v.echo_time_ms is not None else -1.0))


def load_series(paths: Iterable[str | Path]) -> list[StationVolume]:
    """Station volumes of the DICOM files at ``paths`` (see :func:`station_volumes`)."""
    return station_volumes(pydicom.dcmread(path) for path in paths)
