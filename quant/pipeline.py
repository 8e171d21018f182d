"""The quantification of one visit, from station volumes to one result per muscle × side × modality.

Steps (DESIGN.md, "Data flow"): stitch the T2 stations (for registration and display only),
register the atlas template to the stitched subject (elastix affine + B-spline) and carry
the atlas labels onto a subject label grid — for a multi-atlas, its entries refined to the subject and their labels
fused there (:mod:`quant.fusion`); refine the atlas's small regions (the hands)
by a local registration on a 1 mm grid (:mod:`quant.regional`); map the labels into every T2 station's own
grid, erode them, and measure on the native station voxels — relative T2 against the
marrow reference of the same station; register the stitched DWI b0 to the stitched T2
(affine, mutual information), carry the labels into every DWI station, compute ADC per
station from its b-value pair, and measure ADC per axial muscle; where the protocol has Dixon water and fat images,
measure each muscle's fat fraction on them through the shared Frame of Reference (:mod:`quant.fat`). No I/O here: the caller
(:mod:`quant.visit_io`) loads the volumes and stores the results.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from quant.adc import by_station, estimate_noise_floor, station_adc
from quant.atlas import Atlas, AtlasLabel
from quant.fat import DixonStation, muscle_fat_fractions
from quant.fusion import fuse_entries, is_usable
from quant.params import QuantParams
from quant.partial import partial_labels
from quant.regional import refine_region
from quant.register import Transform, register, registration_maps, warp_labels
from quant.roistats import RoiStat, erode_labels, pooled_mean, relative_t2, roi_stats, touches_edge
from quant.stitch import stitch
from quant.volumes import StationVolume, centre_z, head_first
from storage.catalogue import MUSCLE_BY_KEY, Modality

PIPELINE_VERSION = "1.0"
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

# QC flags (also the codes of the SR's qualitative evaluations)
ROI_TOO_SMALL = "roi_too_small"
TOUCHES_FIELD_EDGE = "touches_field_edge"
REFERENCE_OUT_OF_RANGE = "reference_out_of_range"
# the muscle's atlas reference was not measurable in its station(s), another marrow was used:
# its relative T2 is not comparable with visits measured against the default
REFERENCE_SUBSTITUTED = "reference_substituted"
QC_FLAGS = (ROI_TOO_SMALL, TOUCHES_FIELD_EDGE, REFERENCE_OUT_OF_RANGE, REFERENCE_SUBSTITUTED)


@dataclass(kw_only=True)
class MeasurementRow:
    muscle: str
    side: str
    modality: Modality  # relative T2 (ratio) | ADC (mm²/s) | fat fraction (%)
    value: float
    mean_signal: float
    sd: float
    reference_value: float | None
    voxel_count: int
    volume_ml: float | None
    stations: list[int]
    qc_flags: list[str]
    references: list[str] = field(default_factory=list)  # reference marrow key per station


@dataclass(kw_only=True)
class VisitQuant:
    rows: list[MeasurementRow]
    stitched_t2: sitk.Image  # registration grid (display: :func:`stitch_display`)
    subject_labels: sitk.Image  # atlas labels on the subject (label grid, LPS, identity direction)
    adc_stations: list[sitk.Image]
    b0_stations: list[sitk.Image]  # DWI low-b image per station, head first (QC pictures)
    t2_station_labels: list[sitk.Image]
    dwi_station_labels: list[sitk.Image]
    transforms: dict[str, Transform]
    timings: dict[str, float]
    warnings: list[str]
    # a multi-atlas's entries that voted, most similar first, with their similarity to the subject (quant.fusion)
    fused_entries: dict[str, float] = field(default_factory=dict)


def covered_muscles(atlas: Atlas, covered: Collection[str] | None) -> list[AtlasLabel]:
    """The atlas muscles a visit is measured in: those whose catalogue key the protocol's field of view holds
    (``covered``; None: all). The others are not covered (:func:`storage.catalogue.not_covered`): never measured
    from labels the atlas extrapolates beyond the images."""
    return [m for m in atlas.muscles() if covered is None or m.key in covered]


def union_grid(images: list[sitk.Image], spacing_mm: float) -> sitk.Image:
    """An axis-aligned grid (identity direction) of ``spacing_mm`` covering every image."""
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for img in images:
        size = img.GetSize()
        for corner in np.ndindex(2, 2, 2):
            p = np.asarray(img.TransformIndexToPhysicalPoint(tuple(int(c * (n - 1)) for c, n in zip(corner, size))))
            lo, hi = np.minimum(lo, p), np.maximum(hi, p)
    shape = [int(v) for v in np.ceil((hi - lo) / spacing_mm) + 1]
    grid = sitk.Image(shape, sitk.sitkUInt8)
    grid.SetOrigin(tuple(float(v) for v in lo))
    grid.SetSpacing((spacing_mm,) * 3)
    grid.SetDirection(IDENTITY)
    return grid


def bright_level(img: sitk.Image) -> float:
    """The station's bright-fat level: 99.5th percentile of its voxels (a robust scale for normalising)."""
    arr = sitk.GetArrayViewFromImage(img)
    sample = arr[:: max(1, arr.shape[0] // 16)].ravel()
    level = float(np.percentile(sample, 99.5))
    return level if level > 0 else 1.0


def normalising_scales(volumes: list[sitk.Image]) -> list[float]:
    """Per station, the factor that brings its bright-fat level to 1000, so stitched images have no gain
    steps (for registration and display only: measurements use the native, unscaled station data).

    A station that holds (almost) no body — its bright level within 8× its noise floor, e.g. the
    station below the feet of a short subject — takes the median scale of the others instead of
    having its noise blown up.
    """
    levels = [bright_level(img) for img in volumes]
    floors = [estimate_noise_floor(sitk.GetArrayViewFromImage(img)) for img in volumes]
    body = [lvl > 8.0 * max(fl, 1e-6) for lvl, fl in zip(levels, floors)]
    scales = [1000.0 / lvl for lvl, ok in zip(levels, body) if ok]
    fallback = float(np.median(scales)) if scales else 1.0
    return [1000.0 / lvl if ok else fallback for lvl, ok in zip(levels, body)]


def normalised(volumes: list[sitk.Image], scales: list[float] | None = None) -> list[sitk.Image]:
    """Stations times their normalising scales (:func:`normalising_scales` unless given)."""
    scales = scales if scales is not None else normalising_scales(volumes)
    return [sitk.Cast(img * scale, sitk.sitkFloat32) for img, scale in zip(volumes, scales)]


def stitch_on(volumes: list[sitk.Image], grid: sitk.Image, scales: list[float] | None = None) -> sitk.Image:
    st = stitch(normalised(volumes, scales), spacing=grid.GetSpacing(), direction=grid.GetDirection())
    return sitk.Resample(st.image, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def registration_image(t2_images: list[sitk.Image], spacing_mm: float) -> tuple[sitk.Image, list[float]]:
    """The T2 stations normalised and stitched on a grid of ``spacing_mm``: what the atlas is registered to (and
    what a site atlas is built from); with the stations' normalising scales."""
    scales = normalising_scales(t2_images)
    return stitch_on(t2_images, union_grid(t2_images, spacing_mm), scales), scales


def labels_on(labels: sitk.Image, station: sitk.Image) -> np.ndarray:
    """Subject labels sampled on a station's own grid (nearest neighbour), as (slice, row, column)."""
    return sitk.GetArrayFromImage(sitk.Resample(labels, station, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                                sitk.sitkUInt8))


def dwi_pairs(dwi: list[StationVolume]) -> list[tuple[StationVolume, StationVolume]]:
    """(low-b, high-b) volume pairs per DWI station, head first; stations with one b-value are left out."""
    pairs = []
    for vols in by_station(dwi).values():
        vols = sorted(vols, key=lambda v: v.b_value or 0.0)
        if len(vols) >= 2:
            pairs.append((vols[0], vols[-1]))
    return sorted(pairs, key=lambda p: -centre_z(p[0].image))


def label_volumes_ml(labels: sitk.Image) -> np.ndarray:
    """Volume (ml) of every label value 0–255 in a label image."""
    counts = np.bincount(sitk.GetArrayViewFromImage(labels).ravel(), minlength=256)
    return counts * float(np.prod(labels.GetSpacing())) / 1000.0


def quantify(t2: list[StationVolume], dwi: list[StationVolume], atlas: Atlas, settings: QuantParams,
             progress: Callable[[str], None] | None = None, covered: Collection[str] | None = None,
             station_muscles: Sequence[Collection[str]] | None = None,
             dixon: Sequence[DixonStation] = ()) -> VisitQuant:
    """Measure one visit: relative T2 for every atlas muscle the protocol covers (``covered``, see
    :func:`covered_muscles`), ADC for the axial ones (DESIGN.md), and fat fraction where the visit has Dixon
    images (``dixon``, on the T2's Frame of Reference). ``station_muscles`` (a leg protocol: the
    muscles of each T2 station, head first) registers the atlas station by station and leg by leg
    (:mod:`quant.partial`) instead of the whole atlas to the stitched stations — when the visit has that many
    T2 stations (a whole-body scan measured for a leg protocol is registered whole, with a warning)."""
    say = progress or (lambda _step: None)
    timings: dict[str, float] = {}
    warnings: list[str] = []
    clock = time.perf_counter()

    def lap(step: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[step] = timings.get(step, 0.0) + now - clock
        clock = now

    t2_images = [v.image for v in t2]
    say("stitch")
    stitched, scales = registration_image(t2_images, settings.registration_mm)
    lap("stitch")
    label_grid = union_grid(t2_images, settings.label_mm)
    say("register atlas")
    transforms: dict[str, Transform] = {}
    fused_entries: dict[str, float] = {}
    if station_muscles is not None and len(station_muscles) != len(t2):
        warnings.append(f"the protocol names {len(station_muscles)} T2 station(s), the visit has {len(t2)}: the atlas "
                        "is registered to the stations stitched, as for a whole-body exam")
        station_muscles = None
    if station_muscles is not None:
        partial = partial_labels(head_first(t2), station_muscles, atlas, label_grid, grid_mm=settings.grid_mm,
                                 iterations=settings.iterations)
        subject_labels, warnings = partial.labels, [*warnings, *partial.warnings]
        transforms.update({f"atlas_to_t2_{name}": tf for name, tf in partial.transforms.items()})
        lap("register")
    else:
        maps = registration_maps(deformable=True, grid_mm=settings.grid_mm, iterations=settings.iterations)
        atlas_tf = register(stitched, atlas.template, maps)
        lap("register")
        if is_usable(atlas, settings):
            say("fuse atlas entries")
            fused = fuse_entries(stitched, atlas, atlas_tf, label_grid, settings, say)
            subject_labels = fused.labels
            fused_entries = {name: fused.similarity[name] for name in fused.entries}
            transforms.update({f"atlas_entry_to_t2 {name}": tf for name, tf in fused.transforms.items()})
            lap("fuse")
        else:
            subject_labels = warp_labels(atlas.labels, atlas_tf, label_grid)
            lap("propagate")
        transforms["atlas_to_t2"] = atlas_tf
    if station_muscles is None and settings.refine_regions and atlas.regions:
        say("refine regions")
        for region in atlas.regions:
            try:
                refined = refine_region(t2_images, scales, subject_labels, transforms["atlas_to_t2"], region,
                                        settings.regions)
            except RuntimeError as exc:  # elastix gave up (e.g. the part mostly outside the field of view)
                warnings.append(f"region {region.name}: local registration failed, whole-body labels kept: "
                                f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}")
                continue
            if refined is None:
                warnings.append(f"region {region.name}: none of its labels on the subject; not refined")
                continue
            subject_labels = refined.labels
            transforms[f"atlas_to_t2_{region.name}"] = refined.transform
        lap("refine")

    say("measure T2")
    volumes_ml = label_volumes_ml(subject_labels)
    rows, t2_labels, t2_warnings = measure_t2(t2, subject_labels, atlas, settings, volumes_ml, covered)
    measured = covered_muscles(atlas, covered)
    warnings += t2_warnings
    lap("measure_t2")
    if dixon:
        say("measure fat fraction")
        with_t2 = {(r.muscle, r.side) for r in rows}  # a muscle with no T2 ROI has none on the Dixon either
        ff_rows, ff_warnings = measure_fat(dixon, head_first(t2), t2_labels,
                                           [m for m in measured if (m.key, m.side) in with_t2], settings, volumes_ml)
        rows, warnings = [*rows, *ff_rows], [*warnings, *ff_warnings]
        lap("measure_ff")

    adc_images: list[sitk.Image] = []
    b0_stations: list[sitk.Image] = []
    dwi_labels: list[sitk.Image] = []
    pairs = dwi_pairs(dwi)
    if pairs:
        say("register DWI")
        b0_images = [lo.image for lo, _ in pairs]
        dwi_grid = union_grid(b0_images, settings.registration_mm)
        stitched_b0 = stitch_on(b0_images, dwi_grid)
        dwi_tf = register(stitched_b0, stitched, registration_maps(deformable=False, iterations=settings.iterations))
        transforms["t2_to_dwi"] = dwi_tf
        lap("register_dwi")
        say("measure ADC")
        adc_stats: dict[int, dict[int, RoiStat]] = {}
        for index, (lo, hi) in enumerate(pairs, start=1):
            adc = station_adc([lo, hi])
            adc_images.append(adc)
            b0_stations.append(lo.image)
            lab_img = warp_labels(subject_labels, dwi_tf, lo.image)
            dwi_labels.append(lab_img)
            lab = sitk.GetArrayViewFromImage(lab_img)
            eroded = erode_labels(lab, lo.image.GetSpacing(), settings.erosion_mm)
            adc_stats[index] = roi_stats(sitk.GetArrayViewFromImage(adc), eroded)
        for m in measured:
            if not MUSCLE_BY_KEY[m.key].adc:
                continue
            res = pooled_mean(adc_stats, m.value, settings.min_voxels)
            if res is None:
                warnings.append(f"{m.name}: not measurable on DWI")
                continue
            flags = [ROI_TOO_SMALL] if res.n < settings.small_roi_voxels else []
            rows.append(MeasurementRow(muscle=m.key, side=m.side, modality=Modality.ADC, value=res.value, mean_signal=res.mean_signal, sd=res.sd, reference_value=None, voxel_count=res.n,
                                       volume_ml=float(volumes_ml[m.value]), stations=res.stations, qc_flags=flags))
        lap("measure_adc")
    elif dwi:
        warnings.append("DWI: no station has both a low and a high b-value; ADC not measured")
    return VisitQuant(rows=rows, stitched_t2=stitched, subject_labels=subject_labels, adc_stations=adc_images, b0_stations=b0_stations, t2_station_labels=t2_labels, dwi_station_labels=dwi_labels, transforms=transforms,
                      timings=timings, warnings=warnings, fused_entries=fused_entries)


def measure_t2(t2: list[StationVolume], subject_labels: sitk.Image, atlas: Atlas,
               settings: QuantParams, volumes_ml: np.ndarray | None = None, covered: Collection[str] | None = None
               ) -> tuple[list[MeasurementRow], list[sitk.Image], list[str]]:
    """Relative T2 of every atlas muscle the protocol covers on the native T2 stations, given the subject's labels.

    Labels are mapped into each station's grid (nearest neighbour) and eroded; each muscle is
    divided by its reference marrow in the same station and stations are combined by voxel
    count (:func:`quant.roistats.relative_t2`). Volumes come from the subject label grid
    (``volumes_ml`` when the caller has them, see :func:`label_volumes_ml`). Returns the rows, the
    label image of each station (head first) and warnings for muscles measurable nowhere.
    """
    if volumes_ml is None:
        volumes_ml = label_volumes_ml(subject_labels)
    marrow = {lab.key: lab.value for lab in atlas.marrows()}
    muscles = covered_muscles(atlas, covered)
    stats: dict[int, dict[int, RoiStat]] = {}
    edge: set[int] = set()
    ref_ok: dict[tuple[int, str], bool] = {}
    station_labels = []
    ordered = head_first(t2)
    for index, vol in enumerate(ordered, start=1):
        lab = labels_on(subject_labels, vol.image)
        station_labels.append(_as_image(lab, vol.image))
        eroded = erode_labels(lab, vol.image.GetSpacing(), settings.erosion_mm)
        stats[index] = roi_stats(sitk.GetArrayViewFromImage(vol.image), eroded, medians_for=marrow.values())
        level = bright_level(vol.image)
        for key, value in marrow.items():
            if value in stats[index]:
                frac = stats[index][value].reference_level / level
                ref_ok[(index, key)] = settings.reference_range[0] <= frac <= settings.reference_range[1]
        stitching_axis = _stitching_axis(vol.image)
        axes = [a for a in (0, 1, 2) if a != stitching_axis or index in (1, len(ordered))]
        edge |= {m.value for m in muscles if touches_edge(lab, m.value, axes)}

    rows: list[MeasurementRow] = []
    warnings: list[str] = []
    for m in muscles:
        res = relative_t2(stats, m.value, marrow, m.reference, settings.min_voxels, settings.reference)
        if res is None:
            warnings.append(f"{m.name}: not measurable on T2 (fewer than {settings.min_voxels} voxels "
                            f"after {settings.erosion_mm} mm erosion in every station)")
            continue
        flags = []
        if res.n < settings.small_roi_voxels:
            flags.append(ROI_TOO_SMALL)
        if m.value in edge:
            flags.append(TOUCHES_FIELD_EDGE)
        if any(not ref_ok.get((s, r), True) for s, r in zip(res.stations, res.references)):
            flags.append(REFERENCE_OUT_OF_RANGE)
        if m.reference and any(r != m.reference and s not in settings.reference
                               for s, r in zip(res.stations, res.references)):
            flags.append(REFERENCE_SUBSTITUTED)
        rows.append(MeasurementRow(muscle=m.key, side=m.side, modality=Modality.REL_T2, value=res.value, mean_signal=res.mean_signal, sd=res.sd, reference_value=res.reference_mean,
                                   voxel_count=res.n, volume_ml=float(volumes_ml[m.value]), stations=res.stations, qc_flags=flags, references=res.references))
    return rows, station_labels, warnings


def measure_fat(dixon: Sequence[DixonStation], t2: list[StationVolume], station_labels: Sequence[sitk.Image],
                muscles: Sequence[AtlasLabel], settings: QuantParams, volumes_ml: np.ndarray | None = None
                ) -> tuple[list[MeasurementRow], list[str]]:
    """Fat fraction (%) of ``muscles`` on the Dixon stations over the ROIs their relative T2 is measured on
    (:mod:`quant.fat`): ``t2`` head first and ``station_labels`` as :func:`measure_t2` returns them (eroded here as
    there). The rows and a warning for each muscle measurable on no Dixon station. ``volumes_ml`` (of the subject
    label grid) gives the rows' volumes; without it they have none."""
    rois = [erode_labels(sitk.GetArrayViewFromImage(lab), vol.image.GetSpacing(), settings.erosion_mm)
            for vol, lab in zip(t2, station_labels, strict=True)]
    found = muscle_fat_fractions(dixon, t2, rois, [m.value for m in muscles], min_voxels=settings.min_voxels)
    rows, warnings = [], []
    for m in muscles:
        res = found.get(m.value)
        if res is None:
            warnings.append(f"{m.name}: not measurable on the Dixon images (fewer than {settings.min_voxels} voxels "
                            "of its T2 ROI in every Dixon station)")
            continue
        rows.append(MeasurementRow(muscle=m.key, side=m.side, modality=Modality.FF, value=res.value,
                                   mean_signal=res.value, sd=res.sd, reference_value=None, voxel_count=res.n,
                                   volume_ml=float(volumes_ml[m.value]) if volumes_ml is not None else None,
                                   stations=res.stations,
                                   qc_flags=[ROI_TOO_SMALL] if res.n < settings.small_roi_voxels else []))
    return rows, warnings


def _stitching_axis(img: sitk.Image) -> int:
    """The numpy axis (0 slice, 1 row, 2 column) that runs along z, between stations."""
    d = np.abs(np.asarray(img.GetDirection()).reshape(3, 3))
    itk_axis = int(np.argmax(d[2]))  # 0 column, 1 row, 2 slice
    return 2 - itk_axis


def _as_image(arr: np.ndarray, like: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(like)
    return img


def summary_mean(rows: list[MeasurementRow]) -> float | None:
    """The paper's summary measure: mean relative T2 over all measured muscles (both sides)."""
    values = [r.value for r in rows if r.modality is Modality.REL_T2]
    return float(np.mean(values)) if values else None
