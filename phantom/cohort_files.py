"""``myonode phantom cohort``: every visit of a simulated study as DICOM, plus its spreadsheets and truth.

The cohort model (:mod:`phantom.cohort_model`) decides who is in the study, when each
visit happens, who drops out, and every planted effect; here each visit is scanned — the
subject's body drawn once from its own seed, placed anew on the table at every visit,
muscles' T2 signal and ADC multiplied by the visit's factors and limb compartments thinned by
the visit's atrophy — and the study team's files are
written as the importers read them: ``subjects.csv``, ``clinical.csv`` (tidy),
``ephys.csv`` (tidy), plus ``truth.json`` (planted effects and per-visit factors) and per
visit the scanner truth (``truth.json``, ``labels.nii.gz``).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, replace
from datetime import date, time, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from phantom.anatomy import AnatomyParams, Population
from phantom.cohort_model import Effects, SimulatedCohort, simulate_cohort
from phantom.contrast import MuscleState
from phantom.dicom import DicomOptions
from phantom.geometry import Layout, Size
from phantom.images import VisitMeta
from phantom.scanner import ScanSettings
from phantom.visit import scan_visit

FIRST_STUDY_DAY = date(2024, 9, 2)  # every visit of a 51-subject cohort lies in the past
CLINICAL = ("ALSFRS-R", "MRC", "MRC_sum", "dynamometry", "weight")
EPHYS = ("MUNIX", "MUSIX", "CMAP")


@dataclass(kw_only=True)
class CohortVisit:
    subject_id: str
    visit: str
    study_date: date
    folder: Path  # DICOM in folder/dicom, truth beside it
    artefact: tuple[str, str] | None = None  # (muscle, side) whose T2 signal an artefact raised in this visit

    @property
    def dicom_dir(self) -> Path:
        return self.folder / "dicom"


@dataclass(kw_only=True)
class CohortFiles:
    out: Path
    subjects_csv: Path
    clinical_csv: Path
    ephys_csv: Path
    truth_json: Path
    visits: list[CohortVisit]  # in study-date order, as the scanner would send them


def _subject_seed(seed: int, subject_id: str) -> int:
    """A stable per-subject seed (independent of cohort size and order)."""
    return seed * 1_000_003 + zlib.crc32(subject_id.encode())


ARTEFACT_T2_FACTOR = 1.8  # a bright artefact over one muscle of one station: its T2w signal × 1.8
ARTEFACT_MUSCLES = (("quadriceps", "left"), ("quadriceps", "right"), ("hamstrings", "left"),
                    ("gastrocnemius_soleus", "right"), ("deltoid", "left"), ("biceps_brachii", "right"))


def write_cohort(out: Path, patients: int = 29, controls: int = 22, seed: int = 1, size: Size = "full",
                 options: DicomOptions = DicomOptions(), snr_t2: float = 30.0,
                 effects: Effects | None = None, artefacts: int = 0, layout: Layout = "whole_body",
                 echoes_ms: tuple[float, ...] = (), dixon: bool = False, population: Population = "paper") -> CohortFiles:
    """Simulate and write a whole cohort under ``out`` (see the module docstring); ``layout``, ``echoes_ms`` and
    ``dixon`` choose the protocol (a legs-only cohort, a multi-echo T2, a Dixon: :class:`phantom.scanner.ScanSettings`);
    ``population`` whose bodies (:meth:`phantom.anatomy.AnatomyParams.random`: the paper's, or another site's).

    ``artefacts``: that many visits (drawn from ``seed``) get an artefact — one muscle's T2w signal
    raised ×``ARTEFACT_T2_FACTOR`` — that a reviewer should reject; each visit's ``truth.json``
    names it under ``"artefact"`` (and :attr:`CohortVisit.artefact`)."""
    cohort = simulate_cohort(seed, patients=patients, controls=controls, effects=effects)
    out.mkdir(parents=True, exist_ok=True)
    files = _write_tables(cohort, out)
    visits = (cohort.observations[["subject_id", "visit", "days"]].drop_duplicates()
              .merge(cohort.subjects, on="subject_id"))
    enrolment = {sid: FIRST_STUDY_DAY + timedelta(days=7 * i) for i, sid in enumerate(cohort.subjects["subject_id"])}
    written: list[CohortVisit] = []
    bodies: dict[str, AnatomyParams] = {}
    rng = np.random.default_rng(seed + 991)
    chosen = set(rng.choice(len(visits), size=min(artefacts, len(visits)), replace=False).tolist()) if artefacts else set()
    for number, row in enumerate(visits.itertuples()):
        sid = str(row.subject_id)
        sseed = _subject_seed(seed, sid)
        if sid not in bodies:
            bodies[sid] = AnatomyParams.random(np.random.default_rng(sseed), str(row.sex), population)
        study_date = enrolment[sid] + timedelta(days=int(row.days))
        visit_seed = sseed + 17 * (1 + int(row.days))
        key = (sid, str(row.visit))
        params = replace(bodies[sid].placed(np.random.default_rng(visit_seed)), atrophy=cohort.atrophy[key])
        factors = dict(cohort.factors[key])
        artefact = ARTEFACT_MUSCLES[int(rng.integers(len(ARTEFACT_MUSCLES)))] if number in chosen else None
        if artefact is not None:
            factors[artefact] = factors.get(artefact, 1.0) * ARTEFACT_T2_FACTOR
        state = MuscleState(t2_factor=factors, adc_factor=cohort.adc_factors[key])
        age = float(row.age) + int(row.days) / 365.25
        meta = VisitMeta(subject_id=sid, patient_name=f"PHANTOM^{sid}", birth_date=date(2026 - int(row.age), 6, 15),
                         sex="F" if row.sex == "F" else "M", age_years=age, weight_kg=75.0,
                         height_m=round(params.height_mm / 1000.0, 2), study_date=study_date,
                         study_time=time(8 + len(written) % 9, 0), visit=str(row.visit), seed=visit_seed,
                         time_point_id=str(row.visit).upper())
        folder = out / "visits" / f"{sid}_{row.visit}"
        scan_visit(meta, params, state, folder, ScanSettings(size=size, snr_t2=snr_t2, layout=layout,
                                                             echoes_ms=echoes_ms, dixon=dixon), options)
        if artefact is not None:
            truth_path = folder / "truth.json"
            truth = json.loads(truth_path.read_text())
            truth["artefact"] = {"muscle": artefact[0], "side": artefact[1], "t2_factor": ARTEFACT_T2_FACTOR,
                                 "reason": "artefact"}
            truth_path.write_text(json.dumps(truth, indent=1))
        written.append(CohortVisit(subject_id=sid, visit=str(row.visit), study_date=study_date, folder=folder,
                                   artefact=artefact))
    written.sort(key=lambda v: (v.study_date, v.subject_id))
    return CohortFiles(out=out, subjects_csv=files["subjects"], clinical_csv=files["clinical"], ephys_csv=files["ephys"], truth_json=files["truth"], visits=written)


def _write_tables(cohort: SimulatedCohort, out: Path) -> dict[str, Path]:
    paths = {name: out / f"{name}.csv" for name in ("subjects", "clinical", "ephys")}
    cohort.subjects.to_csv(paths["subjects"], index=False)
    obs = cohort.observations
    obs[obs["measure"].isin(CLINICAL)].to_csv(paths["clinical"], index=False)
    obs[obs["measure"].isin(EPHYS)].to_csv(paths["ephys"], index=False)
    def per_visit(table: dict) -> dict:
        return {f"{sid}:{visit}": {f"{k[0]}:{k[1]}": round(v, 6) for k, v in f.items()}
                for (sid, visit), f in table.items()}

    truth = {
        "planted": {name: {f"{k[0]}:{k[1]}": v for k, v in table.items()} for name, table in cohort.truth.items()},
        "t2_factor": per_visit(cohort.factors),
        "atrophy": per_visit(cohort.atrophy),
        "adc_factor": per_visit(cohort.adc_factors),
        "involvement": {sid: {f"{k[0]}:{k[1]}": round(v, 4) for k, v in w.items()}
                        for sid, w in cohort.involvement.items()},
        "progression_speed": {sid: round(g, 4) for sid, g in cohort.speed.items()},
        "relT2_observations_note": "the cohort model's relT2 rows are not written: the pipeline measures them",
    }
    paths["truth"] = out / "truth.json"
    paths["truth"].write_text(json.dumps(truth, indent=1, sort_keys=True))
    return paths


def visits_table(files: CohortFiles) -> pd.DataFrame:
    """The written visits as a table (subject, visit, study date, folder)."""
    return pd.DataFrame([(v.subject_id, v.visit, v.study_date.isoformat(), str(v.folder)) for v in files.visits],
                        columns=["subject_id", "visit", "study_date", "folder"])
