"""Where a diffusion-weighted image's b-value and gradient direction come from, whichever scanner wrote it.

Read in this order of trust; the first place that holds a b-value gives both values:

1. ``standard``  Diffusion b-value (0018,9087) and Diffusion Gradient Orientation (0018,9089), in the
   MR Diffusion Sequence of an enhanced frame's functional groups or at the top level of a classic
   instance (every vendor's enhanced objects; Philips and GE classic exports on recent software);
2. ``siemens_csa``  the Siemens CSA image header (0029,1010) ``B_value`` / ``DiffusionGradientDirection``,
   read with nibabel's ``nicom.csareader`` (classic Siemens exports up to VE; XA strips it);
3. ``siemens_private``  Siemens (0019,100C) B_value / (0019,100E) DiffusionGradientDirection;
4. ``ge_private``  GE (0043,1039) Slop_int_6: its first value, less the 10⁹ some software adds
   (``value mod 10⁹``; dcm2niix reads it so too), the direction from (0019,10BB..BD);
5. ``philips_private``  Philips (2001,1003) Diffusion B-Factor (no direction).

A private element is found by its private creator (``SIEMENS CSA HEADER``, ``SIEMENS MR HEADER``,
``GEMS_PARM_01``, ``Philips Imaging DD 001``), never by its number alone, so one vendor's element is
never read as another's. A value from a private place comes back with a warning that names it
(:attr:`Diffusion.warning`), logged once per series by the indexer.
"""

from __future__ import annotations

import enum
import math
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

SIEMENS_CSA_CREATOR = "SIEMENS CSA HEADER"
SIEMENS_MR_CREATOR = "SIEMENS MR HEADER"
GE_PARM_CREATOR = "GEMS_PARM_01"
GE_ACQUISITION_CREATOR = "GEMS_ACQU_01"  # (0019,10BB..BD): the gradient direction
PHILIPS_IMAGING_CREATOR = "Philips Imaging DD 001"
GE_B_VALUE_BIAS = 1_000_000_000  # added to (0043,1039)'s first value by some GE software


class DiffusionSource(str, enum.Enum):
    """Where a b-value was read (see the module docstring for the order)."""

    STANDARD = "standard"
    SIEMENS_CSA = "siemens_csa"
    SIEMENS_PRIVATE = "siemens_private"
    GE_PRIVATE = "ge_private"
    PHILIPS_PRIVATE = "philips_private"


PLACES = {
    DiffusionSource.STANDARD: "Diffusion b-value (0018,9087)",
    DiffusionSource.SIEMENS_CSA: "the Siemens CSA image header (0029,1010) B_value",
    DiffusionSource.SIEMENS_PRIVATE: "Siemens private (0019,100C) B_value",
    DiffusionSource.GE_PRIVATE: "GE private (0043,1039) first value (mod 10^9)",
    DiffusionSource.PHILIPS_PRIVATE: "Philips private (2001,1003) Diffusion B-Factor",
}


@dataclass(frozen=True, kw_only=True)
class Diffusion:
    """The diffusion weighting of one image (an instance or one enhanced frame)."""

    b_value: float  # s/mm²
    direction: tuple[float, float, float] | None  # unit gradient direction (patient LPS) if given
    source: DiffusionSource

    @property
    def warning(self) -> str | None:
        """What to say when the value is not the standard one (None when it is)."""
        if self.source is DiffusionSource.STANDARD:
            return None
        return f"b-value {self.b_value:g} s/mm² taken from {PLACES[self.source]}: the standard (0018,9087) is absent"


def number(value: Any) -> float | None:
    """A numeric attribute value as a finite float (first of several; raw little-endian FL/FD bytes, as an
    element of VR UN holds them, decoded); None when absent or not a number."""
    if value is None or value == "":
        return None
    if isinstance(value, bytes):
        formats = {4: "<f", 8: "<d"}
        if len(value) not in formats:
            return None
        value = struct.unpack(formats[len(value)], value)[0]
    elif isinstance(value, Sequence) and not isinstance(value, str):
        return number(value[0]) if len(value) else None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def _vector(value: Any) -> tuple[float, float, float] | None:
    if isinstance(value, bytes) and len(value) == 24:
        value = struct.unpack("<3d", value)
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(values) != 3 or not all(math.isfinite(v) for v in values) or not any(values):
        return None
    return values[0], values[1], values[2]


Creators = dict[tuple[int, str], int]


def private_creators(ds: Dataset) -> Creators:
    """(group, private creator) → its block number, from one pass over the data set's tags (pydicom's own lookup
    scans the group anew for every element asked for: hundreds of microseconds an instance, on the indexer's path)."""
    found: Creators = {}
    for tag in ds.keys():  # noqa: SIM118 -- iterating a pydicom Dataset yields its elements, not their tags
        if tag.group % 2 == 1 and 0x10 <= tag.element <= 0xFF:
            value = ds[tag].value
            if isinstance(value, bytes):
                value = value.decode("latin-1", "replace")
            if isinstance(value, str):
                found.setdefault((tag.group, value.strip("\x00 ")), tag.element)
    return found


def private_value(ds: Dataset, group: int, offset: int, creator: str, creators: Creators | None = None) -> Any:
    """The value of a private element (group, the block of ``creator``, element offset), or None if absent."""
    block = (creators if creators is not None else private_creators(ds)).get((group, creator))
    if block is None:
        return None
    element = ds.get((group << 16) | (block << 8) | offset)
    return None if element is None else element.value


def _standard(item: Dataset | None) -> Diffusion | None:
    if item is None:
        return None
    b_value = number(item.get("DiffusionBValue"))
    if b_value is None:
        return None
    direction = _vector(item.get("DiffusionGradientOrientation"))  # at the top level of some classic exports
    for gradient in item.get("DiffusionGradientDirectionSequence") or []:
        direction = _vector(gradient.get("DiffusionGradientOrientation"))
    return Diffusion(b_value=b_value, direction=direction, source=DiffusionSource.STANDARD)


def _siemens_csa(ds: Dataset, creators: Creators) -> Diffusion | None:
    if private_value(ds, 0x0029, 0x10, SIEMENS_CSA_CREATOR, creators) is None:
        return None
    with warnings.catch_warnings():  # nibabel.nicom warns on import about its DICOM *readers*; csareader is not one
        warnings.simplefilter("ignore", UserWarning)
        from nibabel.nicom import csareader  # the maintained reader of Siemens' CSA format

    try:
        csa = csareader.get_csa_header(ds, "image")
        b_value = number(csareader.get_b_value(csa)) if csa else None
        direction = _vector(csareader.get_g_vector(csa)) if csa else None
    except (csareader.CSAReadError, KeyError, ValueError, TypeError, IndexError, struct.error):
        return None  # an unreadable CSA header: the next place is tried
    if b_value is None:
        return None
    return Diffusion(b_value=b_value, direction=direction, source=DiffusionSource.SIEMENS_CSA)


def _siemens_private(ds: Dataset, creators: Creators) -> Diffusion | None:
    b_value = number(private_value(ds, 0x0019, 0x0C, SIEMENS_MR_CREATOR, creators))
    if b_value is None:
        return None
    direction = _vector(private_value(ds, 0x0019, 0x0E, SIEMENS_MR_CREATOR, creators))
    return Diffusion(b_value=b_value, direction=direction, source=DiffusionSource.SIEMENS_PRIVATE)


def _ge_private(ds: Dataset, creators: Creators) -> Diffusion | None:
    value = private_value(ds, 0x0043, 0x39, GE_PARM_CREATOR, creators)
    if isinstance(value, bytes):  # an IS sent as UN: the text itself
        value = value.decode("ascii", "replace").strip("\x00 ").split("\\")
    first = number(value)
    if first is None:
        return None
    components = [number(private_value(ds, 0x0019, offset, GE_ACQUISITION_CREATOR, creators))
                  for offset in (0xBB, 0xBC, 0xBD)]
    direction = _vector(components) if all(c is not None for c in components) else None
    return Diffusion(b_value=float(int(first) % GE_B_VALUE_BIAS), direction=direction,
                     source=DiffusionSource.GE_PRIVATE)


def _philips_private(ds: Dataset, creators: Creators) -> Diffusion | None:
    b_value = number(private_value(ds, 0x2001, 0x03, PHILIPS_IMAGING_CREATOR, creators))
    if b_value is None:
        return None
    return Diffusion(b_value=b_value, direction=None, source=DiffusionSource.PHILIPS_PRIVATE)


def diffusion_of(ds: Dataset, frame_item: Dataset | None = None) -> Diffusion | None:
    """The diffusion weighting of ``ds`` (or of one of its enhanced frames: ``frame_item`` is that frame's MR
    Diffusion Sequence item, per-frame or shared), from the most trusted place that holds it; None for an
    image that is not diffusion-weighted by any of them."""
    for standard in (frame_item, ds):
        found = _standard(standard)
        if found is not None:
            return found
    creators = private_creators(ds)
    for private in (_siemens_csa, _siemens_private, _ge_private, _philips_private):
        found = private(ds, creators)
        if found is not None:
            return found
    return None
