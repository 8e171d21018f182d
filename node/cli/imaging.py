"""``myonode phantom …``, ``myonode atlas build`` and ``myonode process``: the imaging commands.

Registered on the main app by :mod:`node.cli`; each command is a thin layer over
``phantom/``, ``quant/`` and :mod:`node.work.processing`.
"""

from __future__ import annotations

import json
from datetime import date
from datetime import time as dtime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from node.cli.common import console, err_console, sessions_of, settings_of

if TYPE_CHECKING:
    from phantom.anatomy import Population
    from phantom.dicom import DicomOptions
    from phantom.geometry import Layout, Size

phantom_app = typer.Typer(help="The synthetic 3 T scanner: subjects, rescans, cohorts with known truth.",
                          no_args_is_help=True)
atlas_app = typer.Typer(help="Atlases for ROI propagation.", no_args_is_help=True)


SizeOption = Annotated[str, typer.Option("--size", help="full (the clinical protocol) or small (fast tests)")]
Enhanced = Annotated[bool, typer.Option("--enhanced", help="Enhanced MR Image Storage (multi-frame)")]
OneSeries = Annotated[bool, typer.Option("--one-series", help="all stations of a sequence in one series")]
Derived = Annotated[bool, typer.Option("--scanner-derived", help="also send the scanner's trace and ADC images")]
Vendor = Annotated[str, typer.Option("--vendor", help="classic DWI headers as philips (standard b-value), siemens "
                                                       "((0019,100C) only) or ge ((0043,1039) only) write them")]
Echoes = Annotated[str, typer.Option("--echoes", help="a multi-echo spin echo instead of the T2w FSE: its echo "
                                                       "times in ms, comma-separated, 80 among them")]
Dixon = Annotated[bool, typer.Option("--dixon", help="also a two-point Dixon (water and fat) on the T2 stations")]
PopulationOption = Annotated[str, typer.Option("--population", help="whose bodies: paper (the study's cohort) or site "
                                                                 "(another site's older patients: shorter, thinner "
                                                                 "limbs, arms further out)")]
LayoutOption = Annotated[str, typer.Option("--layout", help="whole_body (the paper's protocol) or lower_limbs (axial "
                                                            "T2 of thighs and calves, slices with gaps, no DWI)")]


def _one_of(option: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` when it is one of ``choices``; else the command ends saying what ``option`` takes (exit 2)."""
    if value not in choices:
        listed = f"{', '.join(choices[:-1])} or {choices[-1]}"
        err_console.print(f"error: {option} must be {listed} (got {value!r})")
        raise typer.Exit(2)
    return value


def _check_population(population: str) -> Population:
    return cast("Population", _one_of("--population", population, ("paper", "site")))


def _check_layout(layout: str) -> Layout:
    return cast("Layout", _one_of("--layout", layout, ("whole_body", "lower_limbs")))


def _echoes(text: str) -> tuple[float, ...]:
    if not text.strip():
        return ()
    try:
        echoes = tuple(float(v) for v in text.split(","))
    except ValueError:
        err_console.print(f"error: --echoes takes echo times in ms separated by commas (got {text!r})")
        raise typer.Exit(2) from None
    from phantom.scanner import ScanSettings

    try:
        ScanSettings(echoes_ms=echoes)
    except ValueError as exc:
        err_console.print(f"error: --echoes: {exc}")
        raise typer.Exit(2) from None
    return echoes


def _options(enhanced: bool, one_series: bool, vendor: str) -> DicomOptions:
    from phantom.dicom import DicomOptions

    _one_of("--vendor", vendor, ("philips", "siemens", "ge"))
    if enhanced and vendor != "philips":
        err_console.print("error: --vendor siemens/ge writes classic headers; enhanced objects carry the standard "
                          "b-value whoever writes them")
        raise typer.Exit(2)
    return DicomOptions(enhanced=enhanced, one_series=one_series, vendor=vendor)  # type: ignore[arg-type]


def _check_size(size: str) -> Size:
    return cast("Size", _one_of("--size", size, ("full", "small")))


@phantom_app.command("subject")
def phantom_subject(
    out: Annotated[Path, typer.Option(help="output folder (DICOM in out/dicom, truth beside it)")],
    seed: Annotated[int, typer.Option(help="subject seed: body, placement, gains and noise")] = 1,
    size: SizeOption = "full",
    patient_id: Annotated[str, typer.Option(help="Patient ID")] = "PH0001",
    sex: Annotated[str, typer.Option(help="M or F")] = "M",
    study_date: Annotated[str, typer.Option(help="YYYY-MM-DD")] = "2026-03-02",
    visit: Annotated[str, typer.Option(help="visit label (Clinical Trial Time Point ID)")] = "baseline",
    snr: Annotated[float, typer.Option(help="T2 muscle SNR at gain 1")] = 30.0,
    enhanced: Enhanced = False,
    one_series: OneSeries = False,
    scanner_derived: Derived = False,
    vendor: Vendor = "philips",
    echoes: Echoes = "",
    dixon: Dixon = False,
    layout: LayoutOption = "whole_body",
    population: PopulationOption = "paper",
) -> None:
    """One healthy subject, one visit: T2 and DWI DICOM (and Dixon, with --dixon) plus truth.json and true labels."""
    import numpy as np

    from phantom.anatomy import AnatomyParams
    from phantom.contrast import MuscleState
    from phantom.scanner import ScanSettings
    from phantom.visit import scan_visit

    rng = np.random.default_rng(seed)
    params = AnatomyParams.random(rng, sex, _check_population(population)).placed(rng)
    meta = _meta(patient_id, sex, date.fromisoformat(study_date), visit, seed, params.height_mm)
    settings = ScanSettings(size=_check_size(size), snr_t2=snr, scanner_derived=scanner_derived,
                            echoes_ms=_echoes(echoes), dixon=dixon, layout=_check_layout(layout))
    result = scan_visit(meta, params, MuscleState(), out, settings, _options(enhanced, one_series, vendor))
    console.print(f"{len(result.files)} files in {out / 'dicom'}; truth {result.truth_path}; "
                  f"{sum(result.seconds.values()):.1f} s", highlight=False)


@phantom_app.command("cohort")
def phantom_cohort(
    out: Annotated[Path, typer.Option(help="output folder")],
    patients: Annotated[int, typer.Option(help="patients (the paper: 29)")] = 29,
    controls: Annotated[int, typer.Option(help="healthy controls (the paper: 22)")] = 22,
    seed: Annotated[int, typer.Option(help="cohort seed")] = 1,
    size: SizeOption = "full",
    enhanced: Enhanced = False,
    one_series: OneSeries = False,
    vendor: Vendor = "philips",
    effects: Annotated[Path | None, typer.Option(help="JSON file overriding planted effects (phantom/cohort_model.py)")] = None,
    layout: LayoutOption = "whole_body",
    echoes: Echoes = "",
    dixon: Dixon = False,
    population: PopulationOption = "paper",
) -> None:
    """A cohort with known truth: every visit's DICOM, subjects/clinical/ephys CSVs, truth.json."""
    from phantom.cohort_files import visits_table, write_cohort
    from phantom.cohort_model import EffectsError, load_effects

    try:
        planted = load_effects(effects) if effects else None
    except EffectsError as exc:
        err_console.print(f"error: {exc}", markup=False)
        raise typer.Exit(2) from None

    with console.status(f"scanning {patients} patients and {controls} controls …"):
        files = write_cohort(out, patients, controls, seed, _check_size(size),
                             _options(enhanced, one_series, vendor), effects=planted, layout=_check_layout(layout),
                             echoes_ms=_echoes(echoes), dixon=dixon, population=_check_population(population))
    visits_table(files).to_csv(out / "visits.csv", index=False)
    console.print(f"{len(files.visits)} visits under {out / 'visits'}; {files.subjects_csv.name}, "
                  f"{files.clinical_csv.name}, {files.ephys_csv.name}, truth.json, visits.csv in {out}",
                  highlight=False)


@phantom_app.command("rescan")
def phantom_rescan(
    out: Annotated[Path, typer.Option(help="output folder: out/scan and out/rescan")],
    seed: Annotated[int, typer.Option(help="subject seed")] = 1,
    size: SizeOption = "full",
    patient_id: Annotated[str, typer.Option(help="Patient ID")] = "PH0001",
    echoes: Echoes = "",
    dixon: Dixon = False,
    layout: LayoutOption = "whole_body",
    population: PopulationOption = "paper",
) -> None:
    """A scan–rescan pair: same subject and disease state, new position on the table, new coil gains, new noise."""
    from phantom.rescan import scan_rescan

    scan, rescan = scan_rescan(out, seed, _check_size(size), patient_id, echoes_ms=_echoes(echoes), dixon=dixon,
                               layout=_check_layout(layout), population=_check_population(population))
    console.print(f"scan {scan.truth_path.parent}, rescan {rescan.truth_path.parent}", highlight=False)


@phantom_app.command("render")
def phantom_render(
    dicom: Annotated[Path, typer.Argument(help="folder of one visit's DICOM (searched recursively)")],
    out: Annotated[Path, typer.Option(help="PNG to write")] = Path("phantom.png"),
    thigh_z: Annotated[float | None, typer.Option(help="z (mm) of the axial slice; default mid-thigh")] = None,
) -> None:
    """Render the mid-coronal plane of the stitched T2 and one axial thigh slice to a PNG, to look at the anatomy."""
    from quant.qc import overview
    from quant.volumes import load_series

    files = sorted(p for p in dicom.rglob("*") if p.is_file() and not p.name.startswith("."))
    import pydicom
    t2 = [p for p in files if "T2" in str(pydicom.dcmread(p, stop_before_pixels=True).get("SeriesDescription", ""))]
    if not t2:
        err_console.print(f"error: no T2 series (SeriesDescription containing T2) under {dicom}")
        raise typer.Exit(2)
    overview([v.image for v in load_series(t2)], out, thigh_z)
    console.print(f"wrote {out}", highlight=False)


@atlas_app.command("build")
def atlas_build(
    out: Annotated[Path, typer.Option(help="atlas folder to write")],
    subjects: Annotated[int, typer.Option(help="phantom subjects fused into the atlas")] = 3,
    from_visits: Annotated[bool, typer.Option("--from-visits", help="build from this node's reviewed visits "
                                                                     "instead of phantom subjects")] = False,
    atlas_id: Annotated[str | None, typer.Option("--id", help="the atlas id every result will name (--from-visits; "
                                                              "default site-<YYYYMMDD>)")] = None,
    minimum: Annotated[int, typer.Option("--min", help="--from-visits: at least this many reviewed visits")] = 3,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="settings.toml")] = None,
) -> None:
    """Build an atlas: by default the synthetic one from phantom subjects whose seeds no cohort uses; with
    --from-visits a site atlas from the visits reviewers accepted (corrected ROIs included, rejected ROIs never
    vote), with its leave-one-out accuracy in atlas.json. Then `myonode atlas use OUT` to measure the study with it."""
    if not from_visits:
        from phantom.default_atlas import build_phantom_atlas

        with console.status(f"registering {subjects} phantom subjects …"):
            path = build_phantom_atlas(out, subjects)
        console.print(f"atlas written to {path}", highlight=False)
        return
    from node.demo.fallback_atlas import with_default_atlas
    from node.work.site_atlas import SiteAtlasError, build_from_visits
    from quant.atlas import read_manifest
    from storage.filestore import FileStore

    settings = with_default_atlas(settings_of(config))
    try:
        with console.status("reading the reviewed visits …") as status:
            path, left_out = build_from_visits(
                settings, sessions_of(settings), FileStore(settings.storage.root), out,
                atlas_id or f"site-{date.today():%Y%m%d}", minimum=minimum,
                progress=lambda step: status.update(step))
    except SiteAtlasError as exc:
        err_console.print(f"error: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    for why in left_out:
        console.print(f"left out: {why}", highlight=False, markup=False)
    manifest = read_manifest(path)
    acc = manifest.accuracy or {}
    worst = acc.get("dice_worst_muscle") or {}
    console.print(f"atlas {manifest.id} written to {path}: {len(manifest.entries)} visits; leave-one-out Dice median "
                  f"{acc.get('dice_median')}, worst muscle {worst.get('name')} {worst.get('dice_median')}, relative "
                  f"T2 difference median {acc.get('rel_t2_diff_pct_median')} %", highlight=False, markup=False)


@atlas_app.command("use")
def atlas_use(
    folder: Annotated[Path, typer.Argument(help="the atlas folder (atlas.json) to measure the study with")],
    by: Annotated[str, typer.Option(help="who decided (kept with the pin)")] = "cli",
    config: Annotated[Path | None, typer.Option("--config", "-c", help="settings.toml")] = None,
) -> None:
    """Measure the study with this atlas from now on: every visit measured with another is queued to be processed
    again (each keeps its old values until its new ones are committed; the statistics never mix the two)."""
    from node.service import open_jobs
    from node.work.atlas_in_use import pin_atlas
    from node.work.jobs import PROCESS_VISIT, target_of_visit
    from quant.atlas import AtlasError
    from storage.database import transaction

    engine, jobs = open_jobs(settings_of(config))
    created: list[int] = []
    try:
        with transaction(jobs.ctx.sessions) as s:
            pinned = pin_atlas(s, folder, by, lambda s, visit_id: created.append(
                jobs.create(s, PROCESS_VISIT, target_of_visit(visit_id)).id))
    except AtlasError as exc:
        err_console.print(f"error: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    for job_id in created:
        jobs.dispatch(job_id)
    console.print(f"the study is measured with {pinned.atlas_id}{' (synthetic)' if pinned.synthetic else ''}; "
                  f"{len(pinned.queued)} visit(s) queued to be processed again", highlight=False)


@atlas_app.command("import")
def atlas_import(
    folder: Annotated[Path, typer.Argument(help="contoured scans: NAME_t2.nii.gz + NAME_labels.nii.gz pairs and "
                                                "labels.csv (value,key,side,tissue,name,reference)")],
    out: Annotated[Path, typer.Option(help="atlas folder to write")],
    atlas_id: Annotated[str, typer.Option("--id", help="the atlas id every result will name")],
    description: Annotated[str, typer.Option(help="what the atlas is made of")] = "",
) -> None:
    """An atlas from the site's own contoured scans (checked; several subjects are registered to the one with the
    largest field of view and fused by majority vote, with their leave-one-out accuracy). Then `myonode atlas use`
    the folder written."""
    from quant.atlas import AtlasError
    from quant.atlas_build import import_atlas

    try:
        with console.status(f"importing the contoured scans of {folder} …"):
            path = import_atlas(folder, out, atlas_id, description or f"contoured scans imported from {folder.name}")
    except AtlasError as exc:
        err_console.print(f"error: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(2) from None
    console.print(f"atlas {atlas_id} written to {path}", highlight=False)


def process(
    target: Annotated[str, typer.Argument(help="visit id, or a Study Instance UID (its visit is processed)")],
    force: Annotated[bool, typer.Option("--force", help="process again even when already processed")] = False,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="settings.toml")] = None,
) -> None:
    """Quantify one visit now, with a progress display: measurements, QC pictures, DICOM results."""
    from sqlalchemy import select

    from node.demo.fallback_atlas import with_default_atlas
    from node.work.processing import process_visit
    from storage import models as m
    from storage.filestore import FileStore

    settings = with_default_atlas(settings_of(config))
    sessions = sessions_of(settings)
    with sessions() as s:
        if target.isdigit():
            visit = s.get(m.Visit, int(target))
        else:
            study = s.scalar(select(m.Study).where(m.Study.study_instance_uid == target))
            visit = study.visit if study is not None else None
        if visit is None:
            err_console.print(f"error: no visit {target!r} (give a visit id or a Study Instance UID of a matched study)")
            raise typer.Exit(2)
        visit_id, state = visit.id, visit.state
    if state is m.VisitState.PROCESSED and not force:
        console.print(f"visit {visit_id} is already processed; --force to process it again")
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(f"visit {visit_id}: loading", total=None)
        outcome = process_visit(settings, sessions, FileStore(settings.storage.root), visit_id,
                                progress=lambda step: bar.update(task, description=f"visit {visit_id}: {step}"))
    for w in outcome.warnings:
        console.print(f"[yellow]warning[/]: {w}", highlight=False)
    console.print(f"visit {visit_id}: {outcome.measurements} measurements, QC in {outcome.qc_dir}, "
                  f"{len(outcome.results)} DICOM results; " + json.dumps({k: round(v, 1) for k, v in outcome.timings.items()}),
                  highlight=False)


def _meta(patient_id: str, sex: str, study_date: date, visit: str, seed: int, height_mm: float,
          age: float = 55.0, weight: float = 75.0):
    from phantom.images import VisitMeta

    return VisitMeta(subject_id=patient_id, patient_name=f"PHANTOM^{patient_id}",
                     birth_date=date(study_date.year - int(age), 6, 15), sex="F" if sex == "F" else "M",
                     age_years=age, weight_kg=weight, height_m=round(height_mm / 1000.0, 2), study_date=study_date,
                     study_time=dtime(9, 0), visit=visit, seed=seed, time_point_id=visit.upper())
