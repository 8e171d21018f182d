"""Where the synthetic scanner puts its stations, in DICOM patient coordinates (LPS, mm).

The subject lies supine, head first. The world frame: x to the patient's left, y posterior,
z superior; the vertex of the head is at z = 0 and the feet at z = −height. The couch centre
line is x = y = 0.

T2: coronal FSE stations (rows run head→feet, columns right→left, slices anterior→posterior),
tiled along z with a fixed overlap. DWI: axial stations, abutting, tiled along z. A legs-only protocol
(``layout="lower_limbs"``, the ``lower_limbs`` profile's) has two axial T2 stations instead — mid-thigh and
mid-calf, slices with gaps between them as neuromuscular protocols scan — and no DWI. A station
is described by a SimpleITK reference image (origin = centre of the first voxel, direction
columns = row direction, column direction, slice normal), so sampling a world volume into a
station is one ``sitk.Resample`` call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import SimpleITK as sitk

Size = Literal["full", "small"]
SIZES: tuple[str, ...] = ("full", "small")
Layout = Literal["whole_body", "lower_limbs"]
LAYOUTS: tuple[str, ...] = ("whole_body", "lower_limbs")

ROW_CORONAL = (1.0, 0.0, 0.0)  # image rows advance to the patient's left
COL_CORONAL = (0.0, 0.0, -1.0)  # image columns advance towards the feet
ROW_AXIAL = (1.0, 0.0, 0.0)
COL_AXIAL = (0.0, 1.0, 0.0)  # towards posterior


@dataclass(frozen=True, kw_only=True)
class Protocol:
    """Matrix and sampling of one whole-body sequence at one ``--size``."""

    stations: int
    matrix: int  # rows = columns
    pixel_mm: float
    slices: int
    slice_mm: float
    overlap_mm: float  # along z between neighbouring stations


PROTOCOLS: dict[tuple[str, str], Protocol] = {
    ("t2", "full"): Protocol(stations=6, matrix=512, pixel_mm=0.78125, slices=50, slice_mm=5.0, overlap_mm=40.0),
    ("t2", "small"): Protocol(stations=6, matrix=128, pixel_mm=3.125, slices=25, slice_mm=10.0, overlap_mm=40.0),
    ("dwi", "full"): Protocol(stations=8, matrix=192, pixel_mm=2.3, slices=50, slice_mm=5.0, overlap_mm=0.0),
    ("dwi", "small"): Protocol(stations=8, matrix=48, pixel_mm=9.2, slices=25, slice_mm=10.0, overlap_mm=0.0),
}

# The legs-only T2 (axial, both legs in one field): slices ``slice_mm`` apart, each LEG_SLICE_THICKNESS_MM thick.
LEG_PROTOCOLS: dict[str, Protocol] = {
    "full": Protocol(stations=2, matrix=384, pixel_mm=1.25, slices=20, slice_mm=10.0, overlap_mm=0.0),
    "small": Protocol(stations=2, matrix=160, pixel_mm=3.0, slices=10, slice_mm=20.0, overlap_mm=0.0),
}
LEG_SLICE_THICKNESS_MM: dict[str, float] = {"full": 6.0, "small": 10.0}
# Station centres (z, mm) of the legs-only programme, fixed like the whole-body one: mid-thigh and mid-calf of the
# reference body (1.75 m; phantom/anatomy.py: thigh −900 to −1255, calf −1295 to −1685).
LEG_CENTRES_Z = (-1080.0, -1480.0)

# The first station's top edge lies this far above the vertex (the operator's planning margin).
TOP_MARGIN_MM = 20.0
# Resolution of the truth (label) grid the anatomy is drawn on.
TRUTH_SPACING_MM: dict[str, float] = {"full": 2.0, "small": 4.0}


@dataclass(frozen=True, kw_only=True)
class Station:
    """One station of one sequence: its index (1 = head) and voxel grid."""

    kind: Literal["t2", "dwi"]
    index: int
    origin: tuple[float, float, float]  # LPS mm, centre of voxel (row 0, column 0, slice 0)
    spacing: tuple[float, float, float]  # (column step, row step, slice step) = (Δ along row dir, Δ along col dir, Δ slice)
    direction: tuple[float, ...]  # 3×3 row-major, columns = row dir, column dir, slice normal
    size: tuple[int, int, int]  # (columns, rows, slices)
    thickness_mm: float | None = None  # slice thickness when less than the slice step (slices with gaps)

    @property
    def row_direction(self) -> np.ndarray:
        return np.asarray(self.direction).reshape(3, 3)[:, 0]

    @property
    def column_direction(self) -> np.ndarray:
        return np.asarray(self.direction).reshape(3, 3)[:, 1]

    @property
    def normal(self) -> np.ndarray:
        return np.asarray(self.direction).reshape(3, 3)[:, 2]

    def slice_position(self, k: int) -> np.ndarray:
        """Image Position (Patient) of slice ``k`` (centre of its first voxel), mm."""
        return np.asarray(self.origin) + k * self.spacing[2] * self.normal

    def z_range(self) -> tuple[float, float]:
        """Lowest and highest z (mm) of voxel centres."""
        corners = [self.reference().TransformIndexToPhysicalPoint((i, j, k))
                   for i in (0, self.size[0] - 1) for j in (0, self.size[1] - 1) for k in (0, self.size[2] - 1)]
        zs = [c[2] for c in corners]
        return min(zs), max(zs)

    def reference(self) -> sitk.Image:
        """An empty image with this station's geometry (for ``sitk.Resample``)."""
        img = sitk.Image(list(self.size), sitk.sitkUInt8)
        img.SetOrigin(self.origin)
        img.SetSpacing(self.spacing)
        img.SetDirection(self.direction)
        return img


def _direction(row: tuple[float, float, float], col: tuple[float, float, float]) -> tuple[float, ...]:
    normal = np.cross(row, col)
    return tuple(float(v) for v in np.column_stack([row, col, normal]).ravel())


def leg_stations(size: Size = "full") -> list[Station]:
    """The legs-only protocol's axial T2 stations, thigh then calf (:data:`LEG_CENTRES_Z`)."""
    p = LEG_PROTOCOLS[size]
    fov = p.matrix * p.pixel_mm
    direction = _direction(ROW_AXIAL, COL_AXIAL)  # normal +z: slice 0 is the most inferior
    out = []
    for i, centre in enumerate(LEG_CENTRES_Z):
        origin = (-fov / 2 + p.pixel_mm / 2, -fov / 2 + p.pixel_mm / 2, centre - (p.slices - 1) * p.slice_mm / 2)
        out.append(Station(kind="t2", index=i + 1, origin=origin, spacing=(p.pixel_mm, p.pixel_mm, p.slice_mm),
                           direction=direction, size=(p.matrix, p.matrix, p.slices),
                           thickness_mm=LEG_SLICE_THICKNESS_MM[size]))
    return out


def stations(kind: Literal["t2", "dwi"], size: Size = "full", layout: Layout = "whole_body") -> list[Station]:
    """The station layout of one sequence, head first; independent of the subject (as on the scanner,
    where the operator plans a fixed table programme). The legs-only layout has no DWI."""
    if layout == "lower_limbs":
        return leg_stations(size) if kind == "t2" else []
    p = PROTOCOLS[(kind, size)]
    fov = p.matrix * p.pixel_mm
    out: list[Station] = []
    if kind == "t2":
        extent_z = fov  # coronal: rows run along −z
        direction = _direction(ROW_CORONAL, COL_CORONAL)
        for i in range(p.stations):
            top = TOP_MARGIN_MM - i * (extent_z - p.overlap_mm)
            origin = (-fov / 2 + p.pixel_mm / 2,
                      -(p.slices * p.slice_mm) / 2 + p.slice_mm / 2,
                      top - p.pixel_mm / 2)
            out.append(Station(kind="t2", index=i + 1, origin=origin, spacing=(p.pixel_mm, p.pixel_mm, p.slice_mm), direction=direction,
                               size=(p.matrix, p.matrix, p.slices)))
    else:
        extent_z = p.slices * p.slice_mm
        direction = _direction(ROW_AXIAL, COL_AXIAL)
        for i in range(p.stations):
            top = TOP_MARGIN_MM - i * (extent_z - p.overlap_mm)
            origin = (-fov / 2 + p.pixel_mm / 2, -fov / 2 + p.pixel_mm / 2, top - extent_z + p.slice_mm / 2)
            out.append(Station(kind="dwi", index=i + 1, origin=origin, spacing=(p.pixel_mm, p.pixel_mm, p.slice_mm), direction=direction,
                               size=(p.matrix, p.matrix, p.slices)))
    return out


def truth_grid(size: Size = "full") -> sitk.Image:
    """The world grid the anatomy is drawn on: axis-aligned, covering every station of both sequences."""
    s = TRUTH_SPACING_MM[size]
    all_st = stations("t2", size) + stations("dwi", size)
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for st in all_st:
        ref = st.reference()
        for i in (0, st.size[0] - 1):
            for j in (0, st.size[1] - 1):
                for k in (0, st.size[2] - 1):
                    p = np.asarray(ref.TransformIndexToPhysicalPoint((i, j, k)))
                    lo = np.minimum(lo, p)
                    hi = np.maximum(hi, p)
    shape = np.ceil((hi - lo) / s).astype(int) + 1
    img = sitk.Image([int(v) for v in shape], sitk.sitkUInt8)
    img.SetOrigin(tuple(float(v) for v in lo))
    img.SetSpacing((s, s, s))
    return img
