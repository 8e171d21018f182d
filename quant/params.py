"""The parameters of a measurement: what the pipeline is told, with the defaults in one place.

Plain frozen records, importable without SimpleITK: ``node.settings`` reads its ``[quant]``
defaults from here and validates the values a site sets; :mod:`quant.pipeline` and
:mod:`quant.regional` take them. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class RegionParams:
    """How a small part of the atlas (a hand) is refined locally (``[quant] region_*`` in settings.toml)."""

    margin_mm: float = 15.0  # around the whole-body result's labels of the region
    spacing_mm: float = 1.0  # fine grid of the local registration (or the stations' finest pixel, if coarser)
    grid_mm: float = 12.0  # B-spline control point spacing
    iterations: int = 300
    resolutions: int = 3


@dataclass(frozen=True, kw_only=True)
class QuantParams:
    """How a visit is measured (``[quant]`` in settings.toml)."""

    erosion_mm: float = 3.0  # ROI erosion against partial volume (bench/accuracy.py: 1.5 mm leaves a +3.6 % bias)
    min_voxels: int = 20  # fewer eroded voxels than this in a station: not measured there
    small_roi_voxels: int = 100  # fewer in total: flagged roi_too_small
    registration_mm: float = 4.0  # isotropic grid the stitched images are registered on
    label_mm: float = 2.0  # isotropic grid of the subject's label volume
    grid_mm: float = 40.0  # B-spline control point spacing
    iterations: int = 200
    reference: Mapping[int, str] = field(default_factory=dict)  # T2 station index (1 = head) → marrow key
    # plausible reference marrow mean as a fraction of the station's bright-fat level (99.5th percentile)
    reference_range: tuple[float, float] = (0.35, 1.25)
    refine_regions: bool = True  # register the atlas's regions (hands) again locally (quant.regional)
    regions: RegionParams = field(default_factory=RegionParams)
    # a multi-atlas: the entries most similar to the visit registered and fused (quant.fusion); below 2: its template
    fusion_entries: int = 5
