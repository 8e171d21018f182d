"""The phantom cohort's truth: subjects, visits, disease state and clinical values with the paper's effects.

Relative T2 per muscle: controls at a muscle-specific mean; patients higher by Table 1's
baseline difference and rising over visits by Table 5's 12-month change (a third of it at
4 months); subject random intercepts and measurement noise. Clinical and
electrophysiology values follow Tables 2 and 4 (ALSFRS-R −3.4 / −5.7, MUNIX TA −11 / −20 …).
Patients drop out like the paper's cohort (16 of 29 gone by 12 months). Ages and sexes as
the paper's. ``factors`` holds each visit's planted relative-T2 factor per muscle (baseline
effect × subject heterogeneity × change) — what the phantom scanner multiplies muscle T2
signal by — and the relT2 observations are those factors times a healthy level plus
measurement noise, for statistics tests that need no images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from storage.catalogue import DYNAMOMETRY_MUSCLES, EPHYS_MUSCLES, MRC_MUSCLES, MUSCLES, mrc_sides

# Table 1 (% patients > controls at baseline) and Table 5 (% change by 12 months), a subset; others 0.
BASELINE_PCT = {("tibialis_anterior", "left"): 71.4, ("quadriceps", "left"): 42.1, ("quadriceps", "right"): 37.9,
                ("gastrocnemius_soleus", "left"): 37.8, ("gastrocnemius_soleus", "right"): 37.6,
                ("hamstrings", "right"): 36.3, ("hamstrings", "left"): 33.7, ("tibialis_anterior", "right"): 30.4,
                ("biceps_brachii", "right"): 22.8, ("tongue", "none"): 11.4, ("deltoid", "right"): 15.0}
CHANGE_12M_PCT = {("tibialis_anterior", "right"): 28.5, ("tibialis_anterior", "left"): 20.9,
                  ("quadriceps", "right"): 18.8, ("quadriceps", "left"): 11.4, ("hamstrings", "right"): 17.4,
                  ("hamstrings", "left"): 14.4, ("gastrocnemius_soleus", "right"): 18.9,
                  ("gastrocnemius_soleus", "left"): 18.7}
CLINICAL_CHANGE = {"ALSFRS-R": (-3.4, -5.7), "weight": (-1.0, -2.5)}
MUNIX_CHANGE = {"tibialis_anterior": (-11.0, -20.0), "abductor_pollicis_brevis": (-23.0, -33.0),
                "biceps_brachii": (-19.0, -23.0)}
MUNIX_BASELINE_PCT = {"abductor_pollicis_brevis": -50.0, "tibialis_anterior": -39.0, "biceps_brachii": -36.0}


@dataclass(frozen=True)
class Effects:
    """Every planted effect (defaults: the paper's tables); ``--effects FILE`` overrides any of them."""

    relT2_baseline_pct: dict[tuple[str, str], float] = field(default_factory=lambda: dict(BASELINE_PCT))
    relT2_change_12m_pct: dict[tuple[str, str], float] = field(default_factory=lambda: dict(CHANGE_12M_PCT))
    clinical_change: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(CLINICAL_CHANGE))
    munix_change: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(MUNIX_CHANGE))
    munix_baseline_pct: dict[str, float] = field(default_factory=lambda: dict(MUNIX_BASELINE_PCT))


class EffectsError(ValueError):
    """An effects file that cannot be used (names the file and the key)."""


def load_effects(path: Path) -> Effects:
    """Effects from a JSON file: any subset of the :class:`Effects` fields; muscle × side keys as
    ``"tibialis_anterior:left"``, (4-month, 12-month) changes as two-element lists. Everything not in
    the file keeps the paper's value."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EffectsError(f"{path}: {exc}") from exc
    base = Effects()
    out = {}
    known_muscles = {(m.key, side) for m in MUSCLES for side in m.sides}
    for name, values in data.items():
        if name not in Effects.__dataclass_fields__:
            raise EffectsError(f"{path}: unknown key {name!r} (known: {', '.join(Effects.__dataclass_fields__)})")
        merged = dict(getattr(base, name))
        for key, value in values.items():
            if name.startswith("relT2"):
                muscle, _, side = key.partition(":")
                if (muscle, side or "none") not in known_muscles:
                    raise EffectsError(f"{path}: {name}: unknown muscle:side {key!r}")
                merged[(muscle, side or "none")] = float(value)
            elif isinstance(value, list):
                if len(value) != 2:
                    raise EffectsError(f"{path}: {name}.{key}: give [4-month, 12-month] changes")
                merged[key] = (float(value[0]), float(value[1]))
            else:
                merged[key] = float(value)
        out[name] = merged
    return Effects(**{**base.__dict__, **out})


@dataclass
class SimulatedCohort:
    subjects: pd.DataFrame
    observations: pd.DataFrame
    truth: dict[str, dict[tuple[str, str], float]] = field(default_factory=dict)
    # (subject_id, visit) → (muscle, side) → multiplicative T2 signal factor (1 = healthy)
    factors: dict[tuple[str, str], dict[tuple[str, str], float]] = field(default_factory=dict)


def simulate_cohort(seed: int = 1, patients: int = 29, controls: int = 22,
                    effects: Effects | None = None) -> SimulatedCohort:
    eff = effects or Effects()
    rng = np.random.default_rng(seed)
    subjects = []
    sites = ["upper_limb"] * 14 + ["lower_limb"] * 11 + ["bulbar"] * 4
    for i in range(patients):
        site = sites[i % len(sites)]
        subjects.append({"subject_id": f"P{i + 1:03d}", "group": "patient", "sex": "F" if i % 4 == 1 else "M",
                         "age": round(float(np.clip(rng.normal(57, 14), 25, 85)), 1), "onset_site": site,
                         "onset_side": "" if site == "bulbar" else ("left" if i % 2 else "right"), "diagnosis": "ALS"})
    for i in range(controls):
        subjects.append({"subject_id": f"C{i + 1:03d}", "group": "control", "sex": "F" if i % 5 in (1, 3) else "M",
                         "age": round(float(np.clip(rng.normal(54, 16), 25, 85)), 1), "onset_site": "",
                         "onset_side": "", "diagnosis": ""})
    subj = pd.DataFrame(subjects)
    rows: list[tuple] = []
    factors: dict[tuple[str, str], dict[tuple[str, str], float]] = {}
    schedule = {"patient": [("baseline", 0), ("m4", 133), ("m12", 385)], "control": [("baseline", 0), ("m6", 203)]}
    mu = {m.key: 0.9 + 0.05 * (i % 7) for i, m in enumerate(MUSCLES)}
    for s in subjects:
        group = s["group"]
        progression = rng.gamma(4, 0.25) if group == "patient" else 0.0  # individual speed, mean 1
        drop_m4 = group == "patient" and rng.random() < 0.15 + 0.1 * progression
        drop_m12 = drop_m4 or (group == "patient" and rng.random() < 0.35 + 0.15 * progression)
        u = {(m.key, side): rng.normal(0, 0.10) for m in MUSCLES for side in m.sides}
        alsfrs0 = float(np.clip(rng.normal(40, 4.5), 20, 48))
        weight0 = float(rng.normal(78 if group == "patient" else 75, 15))
        for k, (visit, days) in enumerate(schedule[group]):
            if (visit == "m4" and drop_m4) or (visit == "m12" and drop_m12):
                continue
            frac = {"baseline": 0.0, "m4": 1 / 3, "m6": 0.0, "m12": 1.0}[visit]
            visit_factors = factors.setdefault((s["subject_id"], visit), {})
            for m in MUSCLES:
                for side in m.sides:
                    effect = 1 + (eff.relT2_baseline_pct.get((m.key, side), 0.0) / 100 if group == "patient" else 0)
                    change = eff.relT2_change_12m_pct.get((m.key, side), 0.0) / 100 * frac if group == "patient" else 0.0
                    visit_factors[(m.key, side)] = effect * (1 + u[(m.key, side)]) * (1 + change)
                    value = mu[m.key] * visit_factors[(m.key, side)] + rng.normal(0, 0.03)
                    rows.append((s["subject_id"], visit, days, "relT2", m.key, side, round(value, 6)))
                    if m.adc:
                        rows.append((s["subject_id"], visit, days, "ADC", m.key, side,
                                     round(float(rng.normal(1.5e-3, 0.1e-3)), 9)))
            if group == "patient":
                for measure, (c4, c12) in eff.clinical_change.items():
                    start = alsfrs0 if measure == "ALSFRS-R" else weight0
                    delta = {"baseline": 0.0, "m4": c4, "m12": c12}[visit] * progression
                    rows.append((s["subject_id"], visit, days, measure, "", "none",
                                 round(start + delta + rng.normal(0, 0.8), 3)))
            else:
                rows.append((s["subject_id"], visit, days, "weight", "", "none", round(weight0 + rng.normal(0, 0.8), 3)))
            mrc_total = 0
            for mk in MRC_MUSCLES:
                for side in mrc_sides(mk):
                    weak_p = 0.0 if group == "control" else min(0.9, 0.25 + 0.2 * frac * progression)
                    score = 5 - int(rng.random() < weak_p) - int(rng.random() < weak_p * frac)
                    mrc_total += score * (1 if side != "none" else 1)
                    rows.append((s["subject_id"], visit, days, "MRC", mk, side, float(score)))
            rows.append((s["subject_id"], visit, days, "MRC_sum", "", "none", float(mrc_total)))
            for mk in DYNAMOMETRY_MUSCLES:
                for side in ("left", "right"):
                    start = 20.0 if group == "control" else 15.0
                    rows.append((s["subject_id"], visit, days, "dynamometry", mk, side,
                                 round(start * (1 - 0.1 * frac * progression) + rng.normal(0, 1.5), 3)))
            side = "right" if group == "control" else ("left" if int(s["subject_id"][1:]) % 2 else "right")
            for mk in EPHYS_MUSCLES:
                base = 100.0 * (1 + (eff.munix_baseline_pct.get(mk, -30.0) / 100 if group == "patient" else 0))
                delta = {"baseline": 0.0, "m4": eff.munix_change.get(mk, (-5, -10))[0],
                         "m12": eff.munix_change.get(mk, (-5, -10))[1], "m6": 0.0}[visit] if group == "patient" else 0.0
                rows.append((s["subject_id"], visit, days, "MUNIX", mk, side, round(base + delta + rng.normal(0, 8), 3)))
                rows.append((s["subject_id"], visit, days, "MUSIX", mk, side, round(float(rng.normal(100, 15)), 3)))
                rows.append((s["subject_id"], visit, days, "CMAP", mk, side, round(float(rng.normal(8, 1.5)), 3)))
    obs = pd.DataFrame(rows, columns=["subject_id", "visit", "days", "measure", "muscle", "side", "value"])
    truth = {
        "table1_pct_diff": {(m.key, side): eff.relT2_baseline_pct.get((m.key, side), 0.0) for m in MUSCLES for side in m.sides},
        "table5_pct_change_m12": {(m.key, side): eff.relT2_change_12m_pct.get((m.key, side), 0.0)
                                  for m in MUSCLES for side in m.sides},
    }
    return SimulatedCohort(subj, obs, truth, factors)
