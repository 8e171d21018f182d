"""The storage side of quantification: a visit's stored DICOM in, its measurements out.

Reading takes the newest stored version of every instance of the visit's T2, DWI and Dixon
series (Dixon water and fat pairs on the T2's Frame of Reference; one that cannot be used is named in the
provenance and left out — the Dixon images are optional, the T2 is not). Writing replaces the visit's previous measurements in one transaction, so a
re-run never leaves a mix of old and new rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pydicom
from pydicom.dataset import Dataset
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from quant.fat import DixonStation, dixon_stations
from quant.pipeline import MeasurementRow
from quant.volumes import StationVolume, VolumeError, station_volumes
from storage import models as m
from storage.filestore import FileStore


class VisitInputError(ValueError):
    """The visit's stored images cannot be quantified (the message names visit and series)."""


@dataclass(kw_only=True)
class VisitInput:
    visit_id: int
    t2: list[StationVolume]
    dwi: list[StationVolume]
    headers: list[Dataset]  # one header per T2 instance (pixel data dropped): patient, study, frame of reference
    dwi_header: Dataset | None = None  # one DWI header (source of the ADC map)
    dixon: list[DixonStation] = field(default_factory=list)  # water and fat per Dixon station, head first
    provenance: list[str] = field(default_factory=list)  # what was chosen from the inputs, said once


def _newest_instances(s: Session, visit_id: int, kind: m.SeriesKind) -> dict[str, list[m.Instance]]:
    """Series UID → newest version of each of its instances."""
    newest = (select(m.Instance.sop_instance_uid, func.max(m.Instance.version).label("v"))
              .join(m.Series).join(m.Study)
              .where(m.Study.visit_fk == visit_id, m.Series.kind == kind)
              .group_by(m.Instance.sop_instance_uid).subquery())
    rows = s.execute(
        select(m.Instance, m.Series.series_instance_uid)
        .join(m.Series)
        .join(newest, (newest.c.sop_instance_uid == m.Instance.sop_instance_uid) & (newest.c.v == m.Instance.version))
        .order_by(m.Series.series_instance_uid, m.Instance.id)
    ).all()
    out: dict[str, list[m.Instance]] = {}
    for inst, series_uid in rows:
        out.setdefault(series_uid, []).append(inst)
    return out


def _read(store: FileStore, visit_id: int, series_uid: str, instances: list[m.Instance]) -> list[Dataset]:
    datasets: list[Dataset] = []
    for inst in instances:
        path = store.absolute(inst.file_path)
        try:
            datasets.append(pydicom.dcmread(path))
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise VisitInputError(f"visit {visit_id}, series {series_uid}: cannot read {path}: {exc}") from exc
    return datasets


def _without_pixels(datasets: list[Dataset]) -> None:
    """The pixels are in the volumes now: keep the headers only."""
    for ds in datasets:
        if "PixelData" in ds:
            del ds.PixelData


def load_visit(s: Session, store: FileStore, visit_id: int, *, t2_te_ms: float | None = None) -> VisitInput:
    """Station volumes of the visit's T2, DWI and Dixon series, read from the file store; of a multi-echo T2 series
    the echo nearest ``t2_te_ms`` (``[protocol] t2_te_ms``), named in :attr:`VisitInput.provenance`, as is any
    Dixon series left out (another Frame of Reference than the T2's, unreadable geometry, no image, no partner)."""
    if s.get(m.Visit, visit_id) is None:
        raise VisitInputError(f"visit {visit_id} does not exist")
    volumes: dict[m.SeriesKind, list[StationVolume]] = {m.SeriesKind.T2: [], m.SeriesKind.DWI: []}
    headers: list[Dataset] = []
    dwi_header: Dataset | None = None
    provenance: list[str] = []
    for kind in volumes:
        for series_uid, instances in _newest_instances(s, visit_id, kind).items():
            datasets = _read(store, visit_id, series_uid, instances)
            try:
                found = station_volumes(datasets, echo_ms=t2_te_ms if kind is m.SeriesKind.T2 else None)
                volumes[kind].extend(found)
                provenance.extend(_echo_choice(series_uid, found))
            except VolumeError as exc:
                raise VisitInputError(f"visit {visit_id}: {exc}") from exc
            _without_pixels(datasets)
            if kind is m.SeriesKind.T2:  # the instances measured (of a multi-echo series, the chosen echo's)
                used = {uid for volume in found for uid in volume.sop_uids}
                headers.extend(ds for ds in datasets if str(ds.SOPInstanceUID) in used)
            elif datasets and dwi_header is None:
                dwi_header = datasets[0]
    if not volumes[m.SeriesKind.T2]:
        raise VisitInputError(f"visit {visit_id}: no T2 series stored")
    frames = {str(ds.get("FrameOfReferenceUID", "")) for ds in headers} - {""}
    dixon: dict[m.SeriesKind, list[StationVolume]] = {m.SeriesKind.DIXON_WATER: [], m.SeriesKind.DIXON_FAT: []}
    for kind in dixon:
        for series_uid, instances in _newest_instances(s, visit_id, kind).items():
            datasets = _read(store, visit_id, series_uid, instances)
            theirs = {str(ds.get("FrameOfReferenceUID", "")) for ds in datasets}
            if not theirs <= frames:
                provenance.append(f"Dixon series {series_uid}: Frame of Reference {', '.join(sorted(theirs))} is not "
                                  "the T2's; its images cannot carry the T2 labels, not used")
                continue
            try:
                dixon[kind].extend(station_volumes(datasets, derived=True))  # scanners mark Dixon images DERIVED
            except VolumeError as exc:
                provenance.append(f"Dixon series {series_uid} not used: {exc}")
    pairs, notes = dixon_stations(dixon[m.SeriesKind.DIXON_WATER], dixon[m.SeriesKind.DIXON_FAT])
    provenance += notes
    if pairs:
        provenance.append(f"fat fraction measured on {len(pairs)} Dixon station(s): water "
                          f"{', '.join(p.water.series_uid for p in pairs)}, fat {', '.join(p.fat.series_uid for p in pairs)}")
    return VisitInput(visit_id=visit_id, t2=volumes[m.SeriesKind.T2], dwi=volumes[m.SeriesKind.DWI], headers=headers,
                      dwi_header=dwi_header, provenance=provenance, dixon=pairs)


def _echo_choice(series_uid: str, kept: list[StationVolume]) -> list[str]:
    """What to say when a T2 series had several echoes: which one is the T2-weighted image."""
    chosen = sorted({(v.echo_time_ms, v.echoes_ms) for v in kept if v.echoes_ms and v.echo_time_ms is not None})
    return [f"series {series_uid}: {len(echoes)} echoes ({echoes[0]:g}–{echoes[-1]:g} ms); the T2-weighted image "
            f"is echo {echoes.index(used) + 1}, at {used:g} ms" for used, echoes in chosen]


def measurement_record(visit_id: int, r: MeasurementRow, *, source: m.MeasurementSource, pipeline_version: str,
                       atlas_id: str) -> m.Measurement:
    """The database row of the pipeline's measurement ``r`` (the one conversion; :func:`measurement_row` back)."""
    return m.Measurement(
        visit_fk=visit_id, modality=r.modality, muscle=r.muscle, side=m.Side(r.side), source=source, value=r.value,
        mean_signal=r.mean_signal, sd=r.sd, reference_value=r.reference_value, voxel_count=r.voxel_count,
        volume_ml=r.volume_ml, stations=list(r.stations), references=list(r.references), qc_flags=list(r.qc_flags),
        pipeline_version=pipeline_version, atlas_id=atlas_id)


def measurement_row(x: m.Measurement) -> MeasurementRow:
    """The pipeline's measurement of the database row ``x`` (a statistic the row does not hold is NaN)."""
    return MeasurementRow(muscle=x.muscle, side=x.side.value, modality=x.modality, value=x.value,
                          mean_signal=x.mean_signal if x.mean_signal is not None else float("nan"),
                          sd=x.sd if x.sd is not None else float("nan"), reference_value=x.reference_value,
                          voxel_count=x.voxel_count, volume_ml=x.volume_ml, stations=list(x.stations),
                          qc_flags=list(x.qc_flags), references=list(x.references))


def write_measurements(s: Session, visit_id: int, rows: list[MeasurementRow], pipeline_version: str,
                       atlas_id: str) -> int:
    """Replace the visit's automatic measurements with ``rows`` (in the caller's transaction); returns the count.
    Corrected ones (from a person's segmentation) stay."""
    s.execute(delete(m.Measurement).where(m.Measurement.visit_fk == visit_id,
                                          m.Measurement.source == m.MeasurementSource.AUTOMATIC))
    s.add_all(measurement_record(visit_id, r, source=m.MeasurementSource.AUTOMATIC,
                                 pipeline_version=pipeline_version, atlas_id=atlas_id) for r in rows)
    s.flush()
    return len(rows)
