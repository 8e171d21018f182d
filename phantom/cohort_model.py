"""The phantom cohort's truth: who is in the study, their disease, and every value the study team records.

The planted effects are the paper's (:mod:`phantom.paper`; ``--effects FILE`` overrides them).
Each patient gets a latent state that drives everything measured about them:

- **involvement** ``w`` per muscle and side (mean 1 over the cohort): higher in the region of
  onset (``onset_region_weight`` × the other regions') and on the side of onset
  (``onset_side_weight`` × the other side's), times a lognormal individual factor
  (``involvement_cv``). Normalised over the cohort's actual mix of onset sites and sides, so
  the cohort mean of a muscle's planted effect is exactly the paper's.
- **progression speed** ``g`` (gamma, mean 1): scales the fall of ALSFRS-R and weight and new
  weakness; faster progressors drop out more often (16 of 29 gone by 12 months, like Fig. 2).

From these, per visit: the relative-T2 factor of every muscle (1 + Table 1 % × w) × (1 + Table 5
% change × w) × physiological variation (between subjects 10 %, between visits 2 %, controls
too); muscle atrophy (thickness loss with T2 increase, ``atrophy_per_t2``) and a slight ADC
rise (``adc_per_t2``); MRC grades whose weakness probability is Table 1's proportion × w
and grows with time × g × w (so baseline relative T2 predicts later weakness); dynamometry
and MUNIX with Table 3's patient means and baseline associations with the true relative T2
of the corresponding muscle, and Table 4's changes; MUSIX and CMAP with Table 2's baseline
differences and Table 4's changes; ephys on the least-affected side (right in controls).
``observations`` also holds relT2 and ADC rows (true value × 3 % / 5 % measurement noise)
for statistics tests that need no images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd

from phantom import paper
from phantom.atlas_subjects import REFERENCE_MARROW
from phantom.contrast import MARROW, TISSUE, healthy_muscle_signal
from storage.catalogue import (
    DYNAMOMETRY_MUSCLES,
    EPHYS_MUSCLES,
    MRC_MUSCLES,
    MUSCLES,
    ONSET_REGIONS,
    dynamometry_muscle,
    mrc_sides,
)

MuscleSide = tuple[str, str]
Pair = tuple[float, float]  # (4-month, 12-month) change
FOLLOW_UP_DAYS = 385.0  # the 12-month visit: time fraction 1
# MRC groups with no MR muscle take the involvement of the nearest measured one.
MRC_PROXY = {"wrist_flexors": "forearm", "wrist_extensors": "forearm", "finger_flexors": "forearm",
             "finger_extensors": "forearm", "neck_flexors": "sternocleidomastoid"}


@dataclass(frozen=True, kw_only=True)
class Effects:
    """Every planted effect (defaults: the paper's tables, :mod:`phantom.paper`)."""

    relT2_baseline_pct: dict[MuscleSide, float] = field(default_factory=lambda: dict(paper.TABLE1_RELT2_PCT))
    relT2_change_pct: dict[MuscleSide, Pair] = field(default_factory=lambda: dict(paper.TABLE5_RELT2_CHANGE_PCT))
    weak_proportion: dict[MuscleSide, float] = field(default_factory=lambda: dict(paper.TABLE1_WEAK_PROPORTION))
    clinical_change: dict[str, Pair] = field(default_factory=lambda: dict(paper.TABLE4_CLINICAL_CHANGE))
    dynamometry_change: dict[MuscleSide, Pair] = field(default_factory=lambda: dict(paper.TABLE4_DYNAMOMETRY_CHANGE))
    munix_baseline_pct: dict[str, float] = field(default_factory=lambda: dict(paper.TABLE2_PCT["MUNIX"]))
    musix_baseline_pct: dict[str, float] = field(default_factory=lambda: dict(paper.TABLE2_PCT["MUSIX"]))
    cmap_baseline_pct: dict[str, float] = field(default_factory=lambda: dict(paper.TABLE2_PCT["CMAP"]))
    munix_change: dict[str, Pair] = field(default_factory=lambda: dict(paper.TABLE4_EPHYS_CHANGE["MUNIX"]))
    musix_change: dict[str, Pair] = field(default_factory=lambda: dict(paper.TABLE4_EPHYS_CHANGE["MUSIX"]))
    cmap_change: dict[str, Pair] = field(default_factory=lambda: dict(paper.TABLE4_EPHYS_CHANGE["CMAP"]))
    onset_region_weight: float = 2.0  # involvement in the region of onset / elsewhere
    onset_side_weight: float = 1.5  # involvement on the side of onset / the other side
    involvement_cv: float = 0.4  # lognormal individual variation of involvement
    atrophy_per_t2: float = 0.15  # muscle thickness lost per unit rise of the T2 factor (limb compartments)
    adc_per_t2: float = 0.05  # ADC rise per unit rise of the T2 factor (the paper found little)


# Which keys each field takes: muscle:side of the MR catalogue, of the dynamometry muscles, ephys muscles.
_MR_SIDES = {(m.key, side) for m in MUSCLES for side in m.sides}
_KEYS: dict[str, set] = {
    "relT2_baseline_pct": _MR_SIDES, "relT2_change_pct": _MR_SIDES, "weak_proportion": _MR_SIDES,
    "dynamometry_change": {(k, s) for k in DYNAMOMETRY_MUSCLES for s in ("left", "right")},
    "clinical_change": {"ALSFRS-R", "weight"},
    **{f"{m}_{kind}": set(EPHYS_MUSCLES) for m in ("munix", "musix", "cmap") for kind in ("baseline_pct", "change")},
}


class EffectsError(ValueError):
    """An effects file that cannot be used (names the file and the key)."""


def load_effects(path: Path) -> Effects:
    """Effects from a JSON file: any subset of the :class:`Effects` fields. Muscle × side keys are
    written ``"tibialis_anterior:left"`` (``"tongue"`` for unpaired muscles), changes as
    ``[4-month, 12-month]`` lists, weights as numbers. Everything not in the file keeps the paper's value."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EffectsError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise EffectsError(f"{path}: expected a JSON object of effect tables")
    base = Effects()
    known = {f.name for f in fields(Effects)}
    out: dict[str, object] = {}
    for name, values in data.items():
        if name not in known:
            raise EffectsError(f"{path}: unknown key {name!r} (known: {', '.join(sorted(known))})")
        if name not in _KEYS:
            if not isinstance(values, (int, float)) or values <= 0:
                raise EffectsError(f"{path}: {name}: give a positive number (got {values!r})")
            out[name] = float(values)
            continue
        if not isinstance(values, dict):
            raise EffectsError(f"{path}: {name}: give an object of per-muscle values")
        merged = dict(getattr(base, name))
        pairs = name.endswith("change") or name == "relT2_change_pct"
        for key, value in values.items():
            target: object = key
            if name in ("relT2_baseline_pct", "relT2_change_pct", "weak_proportion", "dynamometry_change"):
                muscle, _, side = key.partition(":")
                target = (muscle, side or "none")
            if target not in _KEYS[name]:
                raise EffectsError(f"{path}: {name}: unknown key {key!r}")
            if pairs:
                if not (isinstance(value, list) and len(value) == 2):
                    raise EffectsError(f"{path}: {name}.{key}: give [4-month, 12-month] changes")
                merged[target] = (float(value[0]), float(value[1]))
            else:
                merged[target] = float(value)
        out[name] = merged
    return Effects(**{**base.__dict__, **out})


@dataclass(kw_only=True)
class SimulatedCohort:
    subjects: pd.DataFrame
    observations: pd.DataFrame
    truth: dict[str, dict[MuscleSide, float]] = field(default_factory=dict)  # planted tables
    # (subject_id, visit) → (muscle, side) → multiplicative T2 signal factor (1 = healthy)
    factors: dict[tuple[str, str], dict[MuscleSide, float]] = field(default_factory=dict)
    # (subject_id, visit) → (muscle, side) → muscle thickness scale (≤ 1) and ADC factor
    atrophy: dict[tuple[str, str], dict[MuscleSide, float]] = field(default_factory=dict)
    adc_factors: dict[tuple[str, str], dict[MuscleSide, float]] = field(default_factory=dict)
    involvement: dict[str, dict[MuscleSide, float]] = field(default_factory=dict)  # patients' w
    speed: dict[str, float] = field(default_factory=dict)  # patients' progression speed g


def healthy_relative_t2(key: str) -> float:
    """The phantom's healthy relative T2 of a muscle: its signal / its reference marrow's (T2w FSE)."""
    return healthy_muscle_signal(key) / MARROW[REFERENCE_MARROW[key]][0]


@dataclass(kw_only=True)
class _Patient:
    """The latent state of one subject (controls: no involvement, no progression)."""

    subject_id: str
    group: str
    site: str
    side: str
    speed: float
    involvement: dict[MuscleSide, float]  # w, mean 1 over patients
    physiology: dict[MuscleSide, float]  # stable between-subject variation of relative T2
    drop_m4: bool
    drop_m12: bool


def onset_weight(site: str, onset_side: str, muscle: str, side: str, eff: Effects) -> float:
    """Deterministic part of a muscle's involvement for a patient of this onset site and side."""
    weight = eff.onset_region_weight if muscle in ONSET_REGIONS.get(site, ()) else 1.0
    if site != "bulbar" and side != "none":
        weight *= eff.onset_side_weight if side == onset_side else 1.0
    return weight


def _subjects(rng: np.random.Generator, patients: int, controls: int) -> list[dict]:
    # Onset sites in the paper's proportions, interleaved so that any first n patients keep them.
    sites = [name for _, name in sorted(((k + 0.5) / n, name) for name, n in paper.ONSET_SITES.items()
                                        for k in range(n))]
    rows = []
    for i in range(patients):
        site = sites[i % len(sites)]
        rows.append({"subject_id": f"P{i + 1:03d}", "group": "patient", "sex": "F" if i % 4 == 1 else "M",
                     "age": round(float(np.clip(rng.normal(*paper.PATIENT_AGE), 25, 85)), 1), "onset_site": site,
                     "onset_side": "" if site == "bulbar" else ("left" if i % 2 else "right"), "diagnosis": "ALS"})
    for i in range(controls):
        rows.append({"subject_id": f"C{i + 1:03d}", "group": "control", "sex": "F" if i % 5 in (1, 3) else "M",
                     "age": round(float(np.clip(rng.normal(*paper.CONTROL_AGE), 25, 85)), 1), "onset_site": "",
                     "onset_side": "", "diagnosis": ""})
    return rows


def _latent(rng: np.random.Generator, subjects: list[dict], eff: Effects) -> list[_Patient]:
    keys = sorted(_MR_SIDES)
    patients = [s for s in subjects if s["group"] == "patient"]
    norm = {k: float(np.mean([onset_weight(p["onset_site"], p["onset_side"], *k, eff) for p in patients]))
            if patients else 1.0
            for k in keys}
    sigma = float(np.sqrt(np.log1p(eff.involvement_cv ** 2)))
    out = []
    for s in subjects:
        patient = s["group"] == "patient"
        speed = float(rng.gamma(4.0, 0.25)) if patient else 0.0
        w = {k: onset_weight(s["onset_site"], s["onset_side"], *k, eff) / norm[k]
             * float(np.exp(rng.normal(-sigma * sigma / 2, sigma))) if patient else 0.0 for k in keys}
        physiology = {k: float(rng.normal(0.0, 0.10)) for k in keys}
        drop_m4 = patient and rng.random() < 0.10 + 0.08 * speed
        drop_m12 = drop_m4 or (patient and rng.random() < 0.30 + 0.15 * speed)
        out.append(_Patient(subject_id=s["subject_id"], group=s["group"], site=s["onset_site"], side=s["onset_side"], speed=speed, involvement=w, physiology=physiology,
                            drop_m4=drop_m4, drop_m12=drop_m12))
    return out


def _change(pair: Pair | None, visit: str) -> float:
    if pair is None:
        return 0.0
    return {"m4": pair[0], "m12": pair[1]}.get(visit, 0.0)


def simulate_cohort(seed: int = 1, patients: int = 29, controls: int = 22,
                    effects: Effects | None = None) -> SimulatedCohort:
    """The cohort's subjects, visits, planted disease and every clinical/ephys value (module docstring)."""
    eff = effects or Effects()
    rng = np.random.default_rng(seed)
    subjects = _subjects(rng, patients, controls)
    latent = _latent(rng, subjects, eff)
    rows: list[tuple] = []
    factors: dict[tuple[str, str], dict[MuscleSide, float]] = {}
    atrophy: dict[tuple[str, str], dict[MuscleSide, float]] = {}
    adc: dict[tuple[str, str], dict[MuscleSide, float]] = {}

    def disease(p: _Patient, key: MuscleSide, visit: str) -> float:
        """The disease part of the T2 factor (1 in controls)."""
        if p.group != "patient":
            return 1.0
        w = p.involvement[key]
        base = max(0.3, 1 + eff.relT2_baseline_pct.get(key, 0.0) / 100 * w)
        return base * max(0.4, 1 + _change(eff.relT2_change_pct.get(key), visit) / 100 * w)

    # Table 3's associations are with the true baseline relative T2, centred on the patients' mean.
    baseline_rel = {p.subject_id: {k: healthy_relative_t2(k[0]) * disease(p, k, "baseline") * (1 + p.physiology[k])
                                   for k in _MR_SIDES} for p in latent}
    patient_ids = [p.subject_id for p in latent if p.group == "patient"]
    rel_mean = {k: float(np.mean([baseline_rel[s][k] for s in patient_ids])) if patient_ids else 0.0
                for k in _MR_SIDES}
    rel_var = {k: float(np.var([baseline_rel[s][k] for s in patient_ids])) if patient_ids else 0.0
               for k in _MR_SIDES}

    for p in latent:
        patient = p.group == "patient"
        alsfrs0 = float(np.clip(rng.normal(*paper.ALSFRS_BASELINE), 20, 48))
        weight0 = float(rng.normal(*(paper.PATIENT_WEIGHT if patient else paper.CONTROL_WEIGHT)))
        mrc_draws = {(g, side): rng.random(4) for g in MRC_MUSCLES for side in mrc_sides(g)}
        least = _least_affected_side(p) if patient else "right"
        strength = _strength_baseline(rng, p, baseline_rel[p.subject_id], rel_mean, rel_var)
        ephys = _ephys_baseline(rng, p, least, baseline_rel[p.subject_id], rel_mean, rel_var, eff)
        for visit, days in paper.SCHEDULE_DAYS[p.group]:
            if (visit == "m4" and p.drop_m4) or (visit == "m12" and p.drop_m12):
                continue
            frac = days / FOLLOW_UP_DAYS if patient else 0.0
            vf = factors.setdefault((p.subject_id, visit), {})
            va = atrophy.setdefault((p.subject_id, visit), {})
            vadc = adc.setdefault((p.subject_id, visit), {})
            row = (p.subject_id, visit, days)
            for m in MUSCLES:
                for side in m.sides:
                    k = (m.key, side)
                    d = disease(p, k, visit)
                    vf[k] = d * (1 + p.physiology[k]) * (1 + float(rng.normal(0.0, 0.02)))
                    if d != 1.0:
                        va[k] = float(np.clip(1 - eff.atrophy_per_t2 * (d - 1), 0.6, 1.0))
                    vadc[k] = 1 + eff.adc_per_t2 * (d - 1) + float(rng.normal(0.0, 0.03))
                    rel = healthy_relative_t2(m.key) * vf[k] * (1 + rng.normal(0, 0.03))
                    rows.append((*row, "relT2", m.key, side, round(float(rel), 6)))
                    if m.adc:
                        value = TISSUE["muscle"][2] * vadc[k] * (1 + rng.normal(0, 0.05))
                        rows.append((*row, "ADC", m.key, side, round(float(value), 9)))
            if patient:
                for measure, pair in eff.clinical_change.items():
                    start = alsfrs0 if measure == "ALSFRS-R" else weight0
                    value = start + _change(pair, visit) * p.speed + rng.normal(0, 0.8)
                    if measure == "ALSFRS-R":
                        value = float(np.clip(value, 0, 48))
                    rows.append((*row, measure, "", "none", round(float(value), 3)))
            else:
                rows.append((*row, "weight", "", "none", round(weight0 + rng.normal(0, 0.8), 3)))
            total = 0.0
            for (group, side), u in mrc_draws.items():
                score = _mrc_grade(p, group, side, frac, u, eff)
                total += score
                rows.append((*row, "MRC", group, side, float(score)))
            rows.append((*row, "MRC_sum", "", "none", total))
            for (mk, side), value in strength.items():
                change = _change(eff.dynamometry_change.get((mk, side)), visit) if patient else 0.0
                value = max(0.0, value + change + rng.normal(0, 0.05 * value + 0.1))
                rows.append((*row, "dynamometry", mk, side, round(float(value), 3)))
            for (measure, mk), value in ephys.items():
                ephys_pair: Pair | None = getattr(eff, f"{measure.lower()}_change").get(mk) if patient else None
                noise = {"MUNIX": 8.0, "MUSIX": 0.05 * value, "CMAP": 0.05 * value}[measure]
                value = max(0.0, value + _change(ephys_pair, visit) + rng.normal(0, noise))
                rows.append((*row, measure, mk, least, round(float(value), 3)))
    obs = pd.DataFrame(rows, columns=["subject_id", "visit", "days", "measure", "muscle", "side", "value"])
    truth = {
        "table1_pct_diff": {k: eff.relT2_baseline_pct.get(k, 0.0) for k in sorted(_MR_SIDES)},
        "table5_pct_change_m4": {k: _change(eff.relT2_change_pct.get(k), "m4") for k in sorted(_MR_SIDES)},
        "table5_pct_change_m12": {k: _change(eff.relT2_change_pct.get(k), "m12") for k in sorted(_MR_SIDES)},
    }
    involvement = {p.subject_id: p.involvement for p in latent if p.group == "patient"}
    speed = {p.subject_id: p.speed for p in latent if p.group == "patient"}
    return SimulatedCohort(subjects=pd.DataFrame(subjects), observations=obs, truth=truth, factors=factors, atrophy=atrophy, adc_factors=adc, involvement=involvement, speed=speed)


def _least_affected_side(p: _Patient) -> str:
    """The side whose limb muscles are less involved (where ephys is recorded)."""
    limbs = ONSET_REGIONS["upper_limb"] + ONSET_REGIONS["lower_limb"]
    load = {side: sum(p.involvement[(m, side)] for m in limbs) for side in ("left", "right")}
    return min(load, key=load.__getitem__)


def _mrc_grade(p: _Patient, group: str, side: str, frac: float, u: np.ndarray, eff: Effects) -> int:
    """MRC grade 0–5 at time fraction ``frac``; fixed uniforms ``u`` make weakness only progress."""
    mr = next((m.key for m in MUSCLES if m.mrc == group), MRC_PROXY.get(group))
    if mr is None:
        raise ValueError(f"MRC group {group!r} has no MR muscle and no entry in MRC_PROXY")
    sides = (side,) if side != "none" else ("left", "right")
    keys = [(mr, s) if (mr, s) in _MR_SIDES else (mr, "none") for s in sides]
    if p.group != "patient":
        return 5 - int(u[0] < 0.01)
    w = float(np.mean([p.involvement[k] for k in keys]))
    p0 = min(0.95, float(np.mean([eff.weak_proportion.get(k, paper.WEAK_PROPORTION_OTHER) for k in keys])) * w)
    weak0 = u[0] < p0
    weak = weak0 or u[1] < 1 - np.exp(-0.3 * frac * p.speed * w)
    return 5 - int(weak) - int(weak and u[2] < 0.25) - int(weak and u[3] < min(0.9, 0.2 * frac * p.speed * w))


def _strength_baseline(rng: np.random.Generator, p: _Patient, rel: dict[MuscleSide, float],
                       rel_mean: dict[MuscleSide, float], rel_var: dict[MuscleSide, float]
                       ) -> dict[tuple[str, str], float]:
    """Baseline dynamometry (lb): patients at Table 3's mean with its association to relative T2."""
    out = {}
    for mk in DYNAMOMETRY_MUSCLES:
        mr = next(m.key for m in MUSCLES if dynamometry_muscle(m.key) == mk)
        for side in ("left", "right"):
            mean, sd, coef = paper.TABLE3_DYNAMOMETRY[(mk, side)]
            if p.group != "patient":
                out[(mk, side)] = max(0.0, rng.normal(mean * paper.CONTROL_STRENGTH_RATIO, 0.7 * sd))
                continue
            resid = float(np.sqrt(max(sd * sd - coef * coef * rel_var[(mr, side)], (0.3 * sd) ** 2)))
            value = mean + coef * (rel[(mr, side)] - rel_mean[(mr, side)]) + rng.normal(0, resid)
            out[(mk, side)] = max(0.0, value)
    return out


def _ephys_baseline(rng: np.random.Generator, p: _Patient, side: str, rel: dict[MuscleSide, float],
                    rel_mean: dict[MuscleSide, float], rel_var: dict[MuscleSide, float], eff: Effects
                    ) -> dict[tuple[str, str], float]:
    """Baseline MUNIX, MUSIX and CMAP on ``side``: Table 2's patient–control differences; MUNIX with
    Table 3's patient mean and association with the corresponding muscle's relative T2."""
    patient = p.group == "patient"
    out = {}
    for mk in EPHYS_MUSCLES:
        mean, sd, coef = paper.TABLE3_MUNIX[mk]
        mr = next((m.key for m in MUSCLES if m.ephys == mk), None)
        if patient:
            assoc = coef * (rel[(mr, side)] - rel_mean[(mr, side)]) if mr else 0.0
            var = coef * coef * rel_var[(mr, side)] if mr else 0.0
            resid = float(np.sqrt(max(sd * sd - var, (0.3 * sd) ** 2)))
            mean_p = mean * (1 + eff.munix_baseline_pct.get(mk, 0.0) / 100) / (1 + paper.TABLE2_PCT["MUNIX"][mk] / 100)
            out[("MUNIX", mk)] = max(1.0, mean_p + assoc + rng.normal(0, resid))
        else:
            control = mean / (1 + paper.TABLE2_PCT["MUNIX"][mk] / 100)
            out[("MUNIX", mk)] = max(1.0, rng.normal(control, sd / (1 + paper.TABLE2_PCT["MUNIX"][mk] / 100)))
        for measure, healthy, pct in (("MUSIX", paper.CONTROL_MUSIX_UV, eff.musix_baseline_pct),
                                      ("CMAP", paper.CONTROL_CMAP_MV, eff.cmap_baseline_pct)):
            centre = healthy[mk] * (1 + pct.get(mk, 0.0) / 100 if patient else 1.0)
            out[(measure, mk)] = max(0.01, rng.normal(centre, paper.EPHYS_CV * centre))
    return out
