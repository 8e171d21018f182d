"""The phantom's DICOM writer: valid (dciodvfy), Philips-like (scaling, private tags, derived images), read back.

Inputs are small synthetic station images (uniform random values with a fixed seed) on the
``size="small"`` station grids, so every check compares against known arrays.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, time
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from node.intake.classify import b_values, classify_series, is_derived, station_key
from node.settings import ProtocolSettings
from phantom.dicom import (
    PHILIPS_IMAGING,
    PHILIPS_MR_IMAGING,
    PHILIPS_MR_IMAGING_005,
    STORED_MAX,
    DicomOptions,
    write_visit,
)
from phantom.geometry import PROTOCOLS, Station, stations
from phantom.images import StationImage, VisitImages, VisitMeta
from quant.volumes import load_series

# dciodvfy warnings of the classic Philips-like files, each on purpose (Enhanced MR files have none):
ALLOWED_WARNINGS = {
    "Unrecognized defined term <M_SE> for value 3 of attribute <Image Type>":
        "Philips' Image Type value 3 of a spin-echo magnitude image (classic MR defines no terms for it)",
    "Unrecognized defined term <DIFFUSION> for value 3 of attribute <Image Type>":
        "Philips' Image Type of the scanner-made trace and ADC images, DERIVED\\PRIMARY\\DIFFUSION\\…",
    "(0x0028,0x1052) DS Rescale Intercept": "Philips writes Rescale Slope/Intercept/Type in classic MR images",
    "(0x0028,0x1053) DS Rescale Slope": "as above",
    "(0x0028,0x1054) LO Rescale Type": "as above",
    "Non-identity Modality LUT Module (RescaleSlope and RescaleIntercept) not expected":
        "as above; the slope and intercept differ per image by design (full 12-bit range, per-image display slope)",
    "(0x0018,0x9087) FD Diffusion b-value": "Philips writes the b-value in classic MR, where readers look first",
    "(0x0018,0x9075) CS Diffusion Directionality": "Philips writes the MR Diffusion attributes in classic MR",
    "this is a Standard Extended SOP Class": "the consequence of the five attributes above",
}

META = VisitMeta(subject_id="PH0001", patient_name="PHANTOM^PH0001", birth_date=date(1970, 1, 1), sex="M", age_years=56.0, weight_kg=80.0, height_m=1.78, study_date=date(2026, 3, 2), study_time=time(9, 0),
                 visit="baseline", seed=4, time_point_id="BASELINE")
CLASSIC, ENHANCED = DicomOptions(), DicomOptions(enhanced=True)
ONE_SERIES, ENHANCED_ONE_SERIES = DicomOptions(one_series=True), DicomOptions(enhanced=True, one_series=True)


def _array(station: Station, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    columns, rows, slices = station.size
    return rng.uniform(low, high, (slices, rows, columns)).astype(np.float32)


def _visit_images() -> VisitImages:
    """Six coronal T2 stations; eight axial DWI stations with b0, b1000 and the scanner's trace and ADC."""
    rng = np.random.default_rng(7)
    t2 = [StationImage(station=st, data=_array(st, rng, 40.0, 900.0 * (1 + 0.1 * st.index))) for st in stations("t2", "small")]
    t2[0].data[0, 0, :3] = (np.nan, 0.0, -5.0)  # written as 0
    dwi: list[StationImage] = []
    for st in stations("dwi", "small"):
        b1000 = _array(st, rng, 0.0, 300.0)
        dwi += [StationImage(station=st, data=_array(st, rng, 5.0, 1000.0), b_value=0.0),
                StationImage(station=st, data=b1000, b_value=1000.0),
                StationImage(station=st, data=b1000 * np.float32(1.01), b_value=1000.0, kind="trace"),
                StationImage(station=st, data=_array(st, rng, -50.0, 3500.0), kind="adc")]  # negatives clipped to 0
    return VisitImages(t2=t2, dwi=dwi)


@pytest.fixture(scope="module")
def images() -> VisitImages:
    return _visit_images()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, images: VisitImages) -> Callable[[DicomOptions], list[Path]]:
    """The visit written once per set of options."""
    cache: dict[DicomOptions, list[Path]] = {}

    def write(options: DicomOptions) -> list[Path]:
        if options not in cache:
            cache[options] = write_visit(images, META, tmp_path_factory.mktemp("dicom"), options)
        return cache[options]

    return write


@dataclass(frozen=True, kw_only=True)
class Frame:
    """One 2-D image read back (a classic instance or one enhanced frame)."""

    sequence: str  # t2 | dwi, from the series description
    station: int  # Acquisition Number / Frame Acquisition Number
    kind: str  # original | trace | adc, from Image Type / Frame Type
    b_value: float | None
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]
    position: np.ndarray
    stored: np.ndarray
    floating: np.ndarray  # (SV·RS + RI)/(RS·SS)


def _kind(image_type: list[str]) -> str:
    values = set(image_type)
    return "adc" if "ADC" in values else "trace" if values & {"ISOTROPIC", "DIFFUSION_ISO"} else "original"


def _sequence(ds: Dataset) -> str:
    return "t2" if "T2" in ds.SeriesDescription else "dwi"


def _floating(stored: np.ndarray, slope: float, intercept: float, scale_slope: float) -> np.ndarray:
    """Philips' convention: FP = (SV·RS + RI)/(RS·SS)."""
    return (stored * slope + intercept) / (slope * scale_slope)


def _classic_frame(ds: Dataset) -> Frame:
    rs, ri = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    ss = float(ds.get_private_item(0x2005, 0x0E, PHILIPS_MR_IMAGING).value)
    return Frame(sequence=_sequence(ds), station=int(ds.AcquisitionNumber), kind=_kind(list(ds.ImageType)),
                 b_value=float(ds.DiffusionBValue) if "DiffusionBValue" in ds else None,
                 orientation=tuple(float(v) for v in ds.ImageOrientationPatient), pixel_spacing=tuple(float(v) for v in ds.PixelSpacing),
                 position=np.asarray([float(v) for v in ds.ImagePositionPatient]), stored=ds.pixel_array,
                 floating=_floating(ds.pixel_array, rs, ri, ss))


def per_frame_private(item: Dataset) -> Dataset:
    """The Philips private item (2005,140F) of a frame's functional groups."""
    return item.get_private_item(0x2005, 0x0F, PHILIPS_MR_IMAGING_005).value[0]


def _enhanced_frames(ds: Dataset) -> list[Frame]:
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = tuple(float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient)
    spacing = tuple(float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    kind = _kind(list(shared.MRImageFrameTypeSequence[0].FrameType))
    pixels = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    frames = []
    for item, stored in zip(ds.PerFrameFunctionalGroupsSequence, pixels):
        transform = item.PixelValueTransformationSequence[0]
        ss = float(per_frame_private(item).get_private_item(0x2005, 0x0E, PHILIPS_MR_IMAGING).value)
        diffusion = item.get("MRDiffusionSequence")
        frames.append(Frame(sequence=_sequence(ds), station=int(item.FrameContentSequence[0].FrameAcquisitionNumber), kind=kind,
                            b_value=float(diffusion[0].DiffusionBValue) if diffusion else None, orientation=iop, pixel_spacing=spacing,
                            position=np.asarray([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]),
                            stored=stored, floating=_floating(stored, float(transform.RescaleSlope),
                                              float(transform.RescaleIntercept), ss)))
    return frames


def read_frames(paths: list[Path]) -> list[Frame]:
    frames: list[Frame] = []
    for path in paths:
        ds = pydicom.dcmread(path)
        frames.extend(_enhanced_frames(ds) if "PerFrameFunctionalGroupsSequence" in ds else [_classic_frame(ds)])
    return frames


def expected_image(images: VisitImages, frame: Frame) -> StationImage:
    matches = [img for img in (images.t2 if frame.sequence == "t2" else images.dwi)
               if img.station.index == frame.station and img.kind == frame.kind and img.b_value == frame.b_value]
    assert len(matches) == 1, frame
    return matches[0]


def slice_index(station: Station, position: np.ndarray) -> int:
    """The slice k whose Image Position (Patient) is ``position`` (asserted exact to 1 µm)."""
    k = round(float((position - np.asarray(station.origin)) @ station.normal) / station.spacing[2])
    np.testing.assert_allclose(position, station.slice_position(k), atol=1e-3)
    return k


def clean(data: np.ndarray) -> np.ndarray:
    """What the writer stores: NaN as 0, negatives clipped to 0."""
    return np.clip(np.nan_to_num(data.astype(np.float64), nan=0.0), 0.0, None)


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) that dicom3tools' dciodvfy reports for ``path``."""
    tool = shutil.which("dciodvfy")
    assert tool, "dicom3tools (dciodvfy) is installed by `make debs`"
    lines = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False).stderr.splitlines()
    return [x for x in lines if x.startswith("Error")], [x for x in lines if x.startswith("Warning")]


def representatives(paths: list[Path]) -> dict[str, Path]:
    """Files of station 1 (or of the one series per sequence): one per Image Type and b-value when classic,
    every instance when enhanced."""
    out: dict[str, Path] = {}
    for path in paths:
        if not path.parent.name.endswith(("_st1", "_COR", "_AX")):
            continue
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        single = "NumberOfFrames" not in ds
        image = f"{'/'.join(ds.ImageType)}|{ds.get('DiffusionBValue', '')}" if single else path.name
        out.setdefault(f"{path.parent.name}|{image}", path)
    return out


@pytest.mark.parametrize("options", [CLASSIC, ENHANCED, ENHANCED_ONE_SERIES], ids=["classic", "enhanced",
                                                                                   "enhanced-one-series"])
def test_dciodvfy_reports_no_errors(written: Callable[[DicomOptions], list[Path]], options: DicomOptions) -> None:
    """T2, DWI b0/b1000 and the scanner's trace and ADC images are valid MR Image / Enhanced MR Image objects;
    the only warnings are the Philips habits listed (with reasons) in ALLOWED_WARNINGS."""
    files = representatives(written(options))
    expected = 5 if not options.enhanced else 4  # T2; b0, b1000, trace, ADC (enhanced: acquired, trace, ADC)
    assert len(files) == expected, sorted(files)
    for what, path in files.items():
        errors, warnings = dciodvfy(path)
        assert not errors, f"{what}: {errors}"
        unexpected = [w for w in warnings if not any(k in w for k in ALLOWED_WARNINGS)]
        assert not unexpected, f"{what}: {unexpected}"
        assert not (options.enhanced and warnings), f"{what}: {warnings}"


@pytest.mark.parametrize("options", [CLASSIC, ENHANCED], ids=["classic", "enhanced"])
def test_floating_values_reproduce_the_images_within_half_a_stored_step(
        written: Callable[[DicomOptions], list[Path]], images: VisitImages, options: DicomOptions) -> None:
    """Every slice of every station image comes back exactly once, and FP = (SV·RS + RI)/(RS·SS) equals the input
    (NaN and negatives as 0) to within 0.5/SS = (max − min)/8190 of its image; each image uses all 12 bits."""
    frames = read_frames(written(options))
    by_image: dict[int, list[Frame]] = {}
    for frame in frames:
        by_image.setdefault(id(expected_image(images, frame)), []).append(frame)
    assert len(by_image) == len(images.t2) + len(images.dwi)
    for image in [*images.t2, *images.dwi]:
        values = clean(image.data)
        bound = (values.max() - values.min()) / (2 * STORED_MAX) * (1 + 1e-6)
        read = by_image[id(image)]
        ks = sorted(slice_index(image.station, f.position) for f in read)
        assert ks == list(range(image.station.size[2]))
        for f in read:
            error = np.abs(f.floating - values[slice_index(image.station, f.position)]).max()
            assert error <= bound, (image.station.index, image.kind, image.b_value, error, bound)
        stored = np.stack([f.stored for f in read])
        assert stored.min() == 0 and stored.max() == STORED_MAX


def test_highdicom_reads_an_enhanced_t2_station_as_its_volume(written: Callable[[DicomOptions], list[Path]],
                                                              images: VisitImages) -> None:
    """highdicom (imread → get_volume) finds the station's voxel grid; its modality values divided by RS·SS are the
    station image."""
    image = images.t2[2]
    path = next(p for p in written(ENHANCED) if f"st{image.station.index}" in p.parent.name and "T2" in p.parent.name)
    instance = hd.imread(path)
    st = image.station
    truth = hd.Volume.from_components(clean(image.data), spacing=(st.spacing[2], st.spacing[1], st.spacing[0]),
                                      coordinate_system="PATIENT", position=st.origin,
                                      direction=np.column_stack([st.normal, st.column_direction, st.row_direction]))
    volume = instance.get_volume(apply_modality_transform=True).match_geometry(truth)
    frame = instance.PerFrameFunctionalGroupsSequence[0]
    rs = float(frame.PixelValueTransformationSequence[0].RescaleSlope)
    ss = float(per_frame_private(frame).get_private_item(0x2005, 0x0E, PHILIPS_MR_IMAGING).value)
    np.testing.assert_allclose(volume.affine, truth.affine, atol=1e-4)
    np.testing.assert_allclose(volume.array / (rs * ss), truth.array, atol=0.5 / ss * (1 + 1e-6))


def test_geometry_gives_back_the_stations_and_they_tile_z(written: Callable[[DicomOptions], list[Path]]) -> None:
    """Image Orientation/Position and Pixel Spacing reproduce each station's grid; coronal T2 stations overlap by
    40 mm along z, axial DWI stations abut."""
    frames = read_frames(written(CLASSIC))
    for sequence, overlap in (("t2", 40.0), ("dwi", 0.0)):
        assert PROTOCOLS[(sequence, "small")].overlap_mm == overlap
        layout = stations(sequence, "small")  # type: ignore[arg-type]
        extents = []
        for st in layout:
            mine = [f for f in frames if f.sequence == sequence and f.station == st.index]
            for f in mine:
                np.testing.assert_allclose(f.orientation, [*st.row_direction, *st.column_direction], atol=1e-9)
                assert f.pixel_spacing == pytest.approx((st.spacing[1], st.spacing[0]))
                slice_index(st, f.position)
            rows, row_step = st.size[1], mine[0].pixel_spacing[0]
            column = np.asarray(mine[0].orientation[3:])
            z = [z for f in mine for z in (f.position[2], (f.position + (rows - 1) * row_step * column)[2])]
            half = (row_step if sequence == "t2" else st.spacing[2]) / 2  # a voxel's half extent along z
            extents.append((min(z) - half, max(z) + half))
        overlaps = [below[1] - above[0] for above, below in itertools.pairwise(extents)]
        np.testing.assert_allclose(overlaps, overlap, atol=1e-6)


def test_philips_tags_and_node_classification(written: Callable[[DicomOptions], list[Path]]) -> None:
    """b-value in (0018,9087) and in Philips (2001,1003) under its private creator, MR Scale Slope under its own;
    node.intake.classify calls the T2 series t2 and the DWI series dwi, reads the b-values and flags trace/ADC derived."""
    rules = ProtocolSettings().rules
    seen: set[tuple[str, str, tuple[float, ...], bool]] = set()
    for path in written(CLASSIC):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.Manufacturer == "Philips" and ds.ManufacturerModelName == "Ingenia"
        assert float(ds.MagneticFieldStrength) == 3.0
        assert ds[0x20050010].value == PHILIPS_MR_IMAGING and ds[0x2005100E].VR == "FL"
        if "DiffusionBValue" in ds:
            assert ds[0x20010010].value == PHILIPS_IMAGING and ds[0x20011003].VR == "FL"
            assert ds[0x20011003].value == ds.DiffusionBValue
            assert ds.DiffusionDirectionality == ("NONE" if ds.DiffusionBValue == 0 else "ISOTROPIC")
        seen.add((ds.SeriesDescription.split(" st")[0], classify_series(ds, rules), tuple(b_values(ds)),
                  is_derived(ds)))
    assert seen == {("WB_T2W_TSE_COR", "t2", (), False), ("WB_DWIBS_AX", "dwi", (0.0,), False),
                    ("WB_DWIBS_AX", "dwi", (1000.0,), False), ("WB_DWIBS_AX", "dwi", (1000.0,), True),
                    ("WB_DWIBS_AX", "dwi", (), True)}
    enhanced = set()
    for path in written(ENHANCED):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for item in ds.PerFrameFunctionalGroupsSequence:
            private = per_frame_private(item)
            assert private[0x20050010].value == PHILIPS_MR_IMAGING and private[0x2005100E].VR == "FL"
            if "MRDiffusionSequence" in item:
                assert private.get_private_item(0x2001, 0x03, PHILIPS_IMAGING).value == \
                    item.MRDiffusionSequence[0].DiffusionBValue
        enhanced.add((ds.SeriesDescription.split(" st")[0], classify_series(ds, rules), tuple(b_values(ds)),
                      is_derived(ds)))
    assert enhanced == {("WB_T2W_TSE_COR", "t2", (), False), ("WB_DWIBS_AX", "dwi", (0.0, 1000.0), False),
                        ("WB_DWIBS_AX", "dwi", (1000.0,), True), ("WB_DWIBS_AX", "dwi", (), True)}


@pytest.mark.slow
def test_one_series_keeps_stations_apart(written: Callable[[DicomOptions], list[Path]]) -> None:
    """All stations of a sequence in one series: Acquisition Number differs per station (classic) and
    node.intake.classify.station_key separates 6 T2 and 8 DWI stations; quant reads 6 T2 and 8 × 2 DWI volumes
    from both the classic and the enhanced (stations as stacks) form."""
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in written(ONE_SERIES)]
    for sequence, n in (("t2", 6), ("dwi", 8)):
        mine = [ds for ds in datasets if _sequence(ds) == sequence]
        assert len({ds.SeriesInstanceUID for ds in mine}) == 1
        assert len({ds.AcquisitionNumber for ds in mine}) == n
        assert len({station_key(ds) for ds in mine}) == n
    for options in (ONE_SERIES, ENHANCED_ONE_SERIES):
        volumes = load_series(written(options))
        assert sum(v.b_value is None for v in volumes) == 6
        assert sorted(v.b_value for v in volumes if v.b_value is not None) == [0.0] * 8 + [1000.0] * 8
    stacks = {item.FrameContentSequence[0].StackID
              for p in written(ENHANCED_ONE_SERIES)[:1]
              for item in pydicom.dcmread(p, stop_before_pixels=True).PerFrameFunctionalGroupsSequence}
    assert stacks == {str(i) for i in range(1, 7)}


def test_study_time_point_and_acquisition_times(written: Callable[[DicomOptions], list[Path]],
                                                images: VisitImages, tmp_path: Path) -> None:
    """Clinical Trial Time Point ID is written when the visit has one (and the option is on); acquisition times
    advance station by station, T2 before DWI, on the study date."""
    first = pydicom.dcmread(written(CLASSIC)[0], stop_before_pixels=True)
    assert first.ClinicalTrialTimePointID == "BASELINE" and first.ClinicalTrialSubjectID == META.subject_id
    off = write_visit(VisitImages(t2=images.t2[:1], dwi=[]), META, tmp_path / "off", DicomOptions(time_point_id=False))
    assert "ClinicalTrialTimePointID" not in pydicom.dcmread(off[0], stop_before_pixels=True)
    times = {}
    for path in written(CLASSIC):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.AcquisitionDate == "20260302" and ds.StudyTime <= ds.AcquisitionTime <= ds.ContentTime
        times[(_sequence(ds) == "dwi", int(ds.AcquisitionNumber))] = ds.AcquisitionTime
    ordered = [times[key] for key in sorted(times)]
    assert ordered == sorted(ordered) and len(set(ordered)) == len(ordered) == 14


@pytest.mark.slow
@pytest.mark.parametrize("options", [CLASSIC, ENHANCED], ids=["classic", "enhanced"])
def test_same_inputs_give_byte_identical_files(tmp_path: Path, images: VisitImages, options: DicomOptions) -> None:
    """Every UID and time follows from the visit (seed, study date and time): two writes are byte-identical."""
    a = write_visit(images, META, tmp_path / "a", options)
    b = write_visit(images, META, tmp_path / "b", options)
    assert [p.relative_to(tmp_path / "a") for p in a] == [p.relative_to(tmp_path / "b") for p in b]
    assert [hashlib.sha256(p.read_bytes()).digest() for p in a] == [hashlib.sha256(p.read_bytes()).digest() for p in b]


@pytest.mark.parametrize(("vendor", "source"), [("siemens", "siemens_private"), ("ge", "ge_private")])
def test_siemens_and_ge_style_dwi_headers_give_the_same_b_values_and_values_as_philips(
        written: Callable[[DicomOptions], list[Path]], tmp_path: Path, vendor: str, source: str) -> None:
    """The phantom writes a classic visit as Siemens (b-value only in (0019,100C)) or GE (only in (0043,1039),
    plus 10^9) would: the node reads the same b-values (named as private), the same floating values without a
    Philips MR Scale Slope, and dcm2niix reads the same b-values; dciodvfy finds no error."""
    from quant.diffusion import diffusion_of
    from tests.support.dcm2niix import dcm2niix

    philips = written(CLASSIC)
    other = written(DicomOptions(vendor=vendor))  # type: ignore[arg-type]
    assert [p.relative_to(p.parents[1]) for p in philips] == [p.relative_to(p.parents[1]) for p in other]
    dwi = [p for p in other if "DWIBS" in p.parent.name and p.parent.name.endswith("st1")]
    for path in dwi:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert "DiffusionBValue" not in ds and 0x20011003 not in ds and 0x2005100E not in ds
        weighting = diffusion_of(ds)
        if weighting is not None:
            assert weighting.source.value == source
        errors, _ = dciodvfy(path)
        assert not errors, f"{path.name}: {errors}"
    for ours, theirs in ((load_series([p for p in philips if p.parent.name == folder]),
                          load_series([p for p in other if p.parent.name == folder]))
                         for folder in sorted({p.parent.name for p in philips if p.parent.name.endswith("st1")})):
        assert [(v.station_key.split("|", 1)[1], v.b_value) for v in ours] == \
            [(v.station_key.split("|", 1)[1], v.b_value) for v in theirs]
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(sitk_array(b), sitk_array(a), rtol=1e-9, atol=1e-9)
    if vendor == "ge":  # dcm2niix takes a GE b-value only with its gradient direction, which a trace-weighted
        return          # image has none (the GE path is checked against dcm2niix in tests/quant/test_vendor_input.py)
    acquired = [p for p in dwi if "ORIGINAL" in pydicom.dcmread(p, stop_before_pixels=True).ImageType]
    folder = tmp_path / "dwi"
    folder.mkdir()
    for path in acquired:
        (folder / path.name).write_bytes(path.read_bytes())
    ours = sorted({d.b_value for p in acquired if (d := diffusion_of(pydicom.dcmread(p, stop_before_pixels=True)))})
    assert ours == [0.0, 1000.0]
    assert [sorted(set(c.b_values)) for c in dcm2niix(folder, tmp_path / "nifti") if c.b_values] == [ours]


def sitk_array(volume) -> np.ndarray:  # type: ignore[no-untyped-def]
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(volume.image)


def _echo_and_dixon_images() -> VisitImages:
    """Station 1 only: a three-echo spin echo (40, 80, 120 ms) and a Dixon's water and fat images."""
    rng = np.random.default_rng(11)
    st = stations("t2", "small")[0]
    echoes = [StationImage(station=st, data=_array(st, rng, 40.0, 900.0 / (1 + n)), echo_time_ms=te)
              for n, te in enumerate((40.0, 80.0, 120.0))]
    dixon = [StationImage(station=st, data=_array(st, rng, 0.0, 600.0), kind="water"),
             StationImage(station=st, data=_array(st, rng, 0.0, 300.0), kind="fat")]
    return VisitImages(t2=echoes, dwi=[], dixon=dixon)


@pytest.mark.parametrize("options", [CLASSIC, ENHANCED], ids=["classic", "enhanced"])
def test_a_multi_echo_t2_and_a_dixon_are_written_as_the_node_reads_them(tmp_path: Path, options: DicomOptions) -> None:
    """Every echo comes back with its echo time (enhanced: one instance per echo, as Siemens writes a multi-echo
    spin echo) and the echo nearest 80 ms is the 80 ms image; the Dixon water and fat series are classified as
    such by the node's default rules and read back as written; dciodvfy finds no error."""
    from quant.volumes import station_volumes

    images = _echo_and_dixon_images()
    paths = write_visit(images, META, tmp_path, options)
    rules = ProtocolSettings().rules
    by_kind: dict[str, list[Dataset]] = {}
    for path in paths:
        ds = pydicom.dcmread(path)
        by_kind.setdefault(classify_series(ds, rules), []).append(ds)
        errors, _ = dciodvfy(path)
        assert not errors, f"{path.parent.name}/{path.name}: {errors}"
    assert sorted(by_kind) == ["dixon_fat", "dixon_water", "t2"]
    if options.enhanced:
        assert len(by_kind["t2"]) == 3  # one instance per echo
    every = station_volumes(by_kind["t2"])
    assert [v.echo_time_ms for v in every] == [40.0, 80.0, 120.0]
    (chosen,) = station_volumes(by_kind["t2"], echo_ms=75.0)
    assert (chosen.echo_time_ms, chosen.echoes_ms) == (80.0, (40.0, 80.0, 120.0))
    step = lambda data: (data.max() - data.min()) / 4095  # noqa: E731 - half a stored step, either side
    np.testing.assert_allclose(sitk_array(chosen), clean(images.t2[1].data), atol=float(step(images.t2[1].data)))
    for kind, written_image in (("dixon_water", images.dixon[0]), ("dixon_fat", images.dixon[1])):
        assert station_volumes(by_kind[kind]) == []  # DERIVED: never read as acquired images
        (volume,) = station_volumes(by_kind[kind], derived=True)
        np.testing.assert_allclose(sitk_array(volume), clean(written_image.data), atol=float(step(written_image.data)))
