"""The phantom cohort: the paper's design and effects, spreadsheets the importers read, --effects overrides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from phantom.cohort_files import write_cohort
from phantom.cohort_model import EffectsError, SimulatedCohort, load_effects, simulate_cohort
from stats.inputs import read_observations, read_subjects


def test_design_and_planted_effects_follow_the_paper() -> None:
    """29 patients (7 women; 14 upper-limb, 11 lower-limb, 4 bulbar onset), 22 controls; the mean planted
    T2 factor of left tibialis anterior at baseline is the paper's +71 % over a large cohort."""
    c = simulate_cohort(1)
    patients = c.subjects[c.subjects["group"] == "patient"]
    assert len(patients) == 29 and (c.subjects["group"] == "control").sum() == 22
    assert patients["onset_site"].value_counts().to_dict() == {"upper_limb": 14, "lower_limb": 11, "bulbar": 4}
    assert (patients["sex"] == "F").sum() == 7
    big = simulate_cohort(2, patients=400, controls=10)
    ta = [f[("tibialis_anterior", "left")] for (sid, visit), f in big.factors.items()
          if sid.startswith("P") and visit == "baseline"]
    assert np.mean(ta) == pytest.approx(1.714, rel=0.03)
    m12 = {v for (sid, v) in c.factors if sid.startswith("P")}
    assert {"baseline", "m4", "m12"} <= m12  # patients are followed up; some drop out before m12
    assert sum(1 for (sid, v) in c.factors if sid.startswith("P") and v == "m12") < 29


def test_effects_file_overrides_and_rejects_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "effects.json"
    path.write_text(json.dumps({"relT2_baseline_pct": {"tibialis_anterior:left": 100.0}}))
    effects = load_effects(path)
    assert effects.relT2_baseline_pct[("tibialis_anterior", "left")] == 100.0
    assert effects.relT2_baseline_pct[("quadriceps", "left")] == 42.1  # the paper's, kept
    path.write_text(json.dumps({"relT2_baseline": {}}))
    with pytest.raises(EffectsError, match="unknown key 'relT2_baseline'"):
        load_effects(path)
    path.write_text(json.dumps({"relT2_baseline_pct": {"biceps:left": 3}}))
    with pytest.raises(EffectsError, match="biceps:left"):
        load_effects(path)


@pytest.mark.slow
def test_written_cohort_imports_and_has_truth_per_visit(tmp_path: Path) -> None:
    """subjects.csv, clinical.csv and ephys.csv pass the importers' validation; every visit has its
    DICOM folder, truth.json and true labels; the one visit asked to carry an artefact has one muscle's
    T2 signal raised ×1.8 over the model's, and its truth names it."""
    files = write_cohort(tmp_path, patients=1, controls=1, seed=5, size="small", artefacts=1)
    with_artefact = [v for v in files.visits if v.artefact is not None]
    assert len(with_artefact) == 1
    visit = with_artefact[0]
    muscle, side = visit.artefact
    visit_truth = json.loads((visit.folder / "truth.json").read_text())
    assert visit_truth["artefact"] == {"muscle": muscle, "side": side, "t2_factor": 1.8, "reason": "artefact"}
    model = simulate_cohort(5, patients=1, controls=1).factors[(visit.subject_id, visit.visit)]
    assert visit_truth["t2_factor"][f"{muscle}:{side}"] == pytest.approx(model.get((muscle, side), 1.0) * 1.8,
                                                                           abs=1e-5)
    subjects = read_subjects(files.subjects_csv)
    assert set(subjects["subject_id"]) == {"P001", "C001"}
    for csv in (files.clinical_csv, files.ephys_csv):
        assert len(read_observations(csv, subjects, ["baseline", "m4", "m6", "m12"])) > 10
    assert files.visits and all((v.folder / "truth.json").is_file() and (v.folder / "labels.nii.gz").is_file()
                                and any(v.dicom_dir.iterdir()) for v in files.visits)
    truth = json.loads(files.truth_json.read_text())
    assert truth["planted"]["table1_pct_diff"]["tibialis_anterior:left"] == 71.4


@pytest.fixture(scope="module")
def big() -> SimulatedCohort:
    """A cohort large enough that the model's planted structure shows through its noise."""
    return simulate_cohort(4, patients=300, controls=20)


def test_onset_site_and_side_drive_involvement(big: SimulatedCohort) -> None:
    """Muscles of the onset region are about ``onset_region_weight`` (2×) more involved than in patients
    with onset elsewhere, and on the onset side about ``onset_side_weight`` (1.5×) more than on the other
    side; over all patients each muscle's involvement averages 1 so Table 1's means stay the paper's."""
    subjects = big.subjects.set_index("subject_id")

    def mean_w(site: str, muscle: str, *, same_side: bool) -> float:
        vals = [w[(muscle, side if same_side else ("left" if side == "right" else "right"))]
                for sid, w in big.involvement.items()
                if subjects.loc[sid, "onset_site"] == site for side in [subjects.loc[sid, "onset_side"]]]
        return float(np.mean(vals))

    fdi_ul, fdi_ll = mean_w("upper_limb", "first_dorsal_interosseous", same_side=True), mean_w("lower_limb", "first_dorsal_interosseous", same_side=True)
    assert fdi_ul / fdi_ll == pytest.approx(2.0, rel=0.2)
    ta_same, ta_other = mean_w("lower_limb", "tibialis_anterior", same_side=True), mean_w("lower_limb", "tibialis_anterior", same_side=False)
    assert ta_same / ta_other == pytest.approx(1.5, rel=0.2)
    overall = np.mean([w[("quadriceps", "left")] for w in big.involvement.values()])
    assert overall == pytest.approx(1.0, rel=0.08)


def test_weakness_only_progresses_and_faster_progressors_leave_earlier(big: SimulatedCohort) -> None:
    """MRC grades never improve from one visit to the next, ALSFRS-R falls by about the paper's 5.7
    points at 12 months, and the patients missing at 12 months progress faster than those seen."""
    obs = big.observations
    order = {"baseline": 0, "m4": 1, "m12": 2}
    mrc = obs[(obs["measure"] == "MRC") & obs["subject_id"].str.startswith("P")].copy()
    mrc["order"] = mrc["visit"].map(order)
    steps = mrc.sort_values("order").groupby(["subject_id", "muscle", "side"])["value"].diff().dropna()
    assert len(steps) > 1000 and (steps <= 0).all() and (steps < 0).any()
    alsfrs = obs[obs["measure"] == "ALSFRS-R"].pivot_table(index="subject_id", columns="visit", values="value")
    assert (alsfrs["m12"] - alsfrs["baseline"]).mean() == pytest.approx(-5.7, abs=0.8)
    seen = set(alsfrs["m12"].dropna().index)
    gone = [g for sid, g in big.speed.items() if sid not in seen]
    stayed = [g for sid, g in big.speed.items() if sid in seen]
    assert 0.35 < len(gone) / len(big.speed) < 0.75  # the paper: 16 of 29 gone by 12 months
    assert np.mean(gone) > np.mean(stayed)


def test_atrophy_and_adc_follow_the_t2_change(big: SimulatedCohort) -> None:
    """Involved patient muscles are thinned (thickness scale falls as the T2 factor rises) and their ADC
    rises slightly; controls are neither thinned nor changed beyond noise."""
    t2, thick = [], []
    for key, atrophy in big.atrophy.items():
        for k, scale in atrophy.items():
            t2.append(big.factors[key][k])
            thick.append(scale)
    assert all(0.6 <= s <= 1.0 for s in thick) and np.corrcoef(t2, thick)[0, 1] < -0.5
    assert not any(big.atrophy[k] for k in big.atrophy if k[0].startswith("C"))
    adc_p = [f[("tibialis_anterior", "left")] for (sid, v), f in big.adc_factors.items() if sid.startswith("P")]
    adc_c = [f[("tibialis_anterior", "left")] for (sid, v), f in big.adc_factors.items() if sid.startswith("C")]
    assert np.mean(adc_p) > np.mean(adc_c) and np.mean(adc_c) == pytest.approx(1.0, abs=0.02)


def test_effects_file_takes_change_pairs_and_weights(tmp_path: Path) -> None:
    """Changes are [4-month, 12-month] pairs and weights positive numbers; anything else names the key."""
    path = tmp_path / "effects.json"
    path.write_text(json.dumps({"relT2_change_pct": {"tibialis_anterior:right": [5.0, 40.0]},
                                "onset_side_weight": 3.0}))
    effects = load_effects(path)
    assert effects.relT2_change_pct[("tibialis_anterior", "right")] == (5.0, 40.0) and effects.onset_side_weight == 3.0
    path.write_text(json.dumps({"relT2_change_pct": {"tibialis_anterior:right": 40.0}}))
    with pytest.raises(EffectsError, match=r"relT2_change_pct\.tibialis_anterior:right"):
        load_effects(path)
    path.write_text(json.dumps({"involvement_cv": -1}))
    with pytest.raises(EffectsError, match="involvement_cv"):
        load_effects(path)
