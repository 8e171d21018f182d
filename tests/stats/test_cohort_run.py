"""The whole statistics run on a simulated cohort with planted effects, through `myonode stats run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from phantom.cohort_model import simulate_cohort
from stats.inputs import Cohort
from stats.run import OUTPUTS, compute

VISITS = ["baseline", "m4", "m6", "m12"]
COLUMNS = {
    "table1": "measure,muscle,side,n_patients,n_controls,pct_diff,ci_low,ci_high,p,p_bh,sig_bh,n_weak,n_mrc,prop_weak,prop_ci_low,prop_ci_high",
    "table2": "measure,muscle,side,n_patients,n_controls,pct_diff,ci_low,ci_high,p,p_bh,sig_bh",
    "table1_adc": "measure,muscle,side,n_patients,n_controls,pct_diff,ci_low,ci_high,p,p_bh,sig_bh",
    "table3": "measure,muscle,side,n,coef,ci_low,ci_high,p,p_bh,sig_bh",
    "table4": "group,measure,muscle,side,visit,n_subjects,n_obs,coef,ci_low,ci_high,pct_change,pct_ci_low,pct_ci_high,p,p_bh,sig_bh,srm,var_ratio,converged",
    "predictors": "subset,visit,muscle,side,n,coef,ci_low,ci_high,p,p_bh,sig_bh",
    "mrc_wilcoxon": "muscle,side,visit,n,median_baseline,median_visit,p,p_bh,sig_bh",
}
COLUMNS["table5"] = COLUMNS["table5_adc"] = COLUMNS["table5_ff"] = COLUMNS["table4"]
COLUMNS["table1_ff"] = COLUMNS["table1_adc"]
WITHOUT_DIXON = ("table1_ff", "table5_ff")  # the paper's protocol has no Dixon: no fat fraction to tabulate


@pytest.fixture(scope="module")
def simulated():
    sim = simulate_cohort(seed=1)
    subjects = sim.subjects.assign(female=(sim.subjects["sex"] == "F").astype(float),
                                   patient=(sim.subjects["group"] == "patient").astype(float))
    return sim, compute(Cohort(subjects=subjects, observations=sim.observations, visits=VISITS))


def coverage(frame: pd.DataFrame, value: str, low: str, high: str, truth: dict) -> float:
    hits = [lo <= truth[(r["muscle"], r["side"])] <= hi for _, r in frame.iterrows()
            for lo, hi in [(r[low], r[high])] if (r["muscle"], r["side"]) in truth and pd.notna(lo)]
    return sum(hits) / len(hits)


def test_planted_baseline_differences_recovered(simulated) -> None:
    """Table 1: the 95% CIs of % difference cover the planted value for ≥ 85% of muscles (measured: see note)."""
    sim, result = simulated
    t1 = result.frames["table1"]
    rel = t1[t1["muscle"].isin([k for k, _ in sim.truth["table1_pct_diff"]])]
    assert len(rel) == 34
    assert coverage(rel, "pct_diff", "ci_low", "ci_high", sim.truth["table1_pct_diff"]) >= 0.85
    ta = rel[(rel["muscle"] == "tibialis_anterior") & (rel["side"] == "left")].iloc[0]
    assert ta["ci_low"] < 71.4 < ta["ci_high"] and ta["p"] < 0.001


def test_planted_12_month_changes_recovered(simulated) -> None:
    sim, result = simulated
    t5 = result.frames["table5"]
    m12 = t5[(t5["group"] == "patient") & (t5["visit"] == "m12")]
    assert coverage(m12, "pct_change", "pct_ci_low", "pct_ci_high", sim.truth["table5_pct_change_m12"]) >= 0.85
    controls = t5[t5["group"] == "control"]
    assert set(controls["visit"]) == {"m6"} and (controls["converged"] == "true").all()
    composites = set(t5[t5["group"] == "patient"]["muscle"]) & {"summary_mean", "region_of_onset", "muscle_of_onset"}
    assert composites == {"summary_mean", "region_of_onset", "muscle_of_onset"}


def test_clinical_and_ephys_changes(simulated) -> None:
    """ALSFRS-R falls at 12 months (planted −5.7 × progression ~1) and TA MUNIX (−20) within CI."""
    _, result = simulated
    t4 = result.frames["table4"]
    als = t4[(t4["group"] == "patient") & (t4["measure"] == "ALSFRS-R") & (t4["visit"] == "m12")].iloc[0]
    assert als["coef"] < -3 and als["p"] < 0.001 and als["srm"] < -0.8
    munix = t4[(t4["measure"] == "MUNIX") & (t4["muscle"] == "tibialis_anterior") & (t4["visit"] == "m12")].iloc[0]
    assert munix["ci_low"] < -20 < munix["ci_high"] and munix["side"] == "tested"


def test_cli_writes_every_table_with_the_specified_columns(tmp_path: Path) -> None:
    sim = simulate_cohort(seed=2, patients=12, controls=8)
    sim.subjects.to_csv(tmp_path / "subjects.csv", index=False)
    sim.observations.to_csv(tmp_path / "observations.csv", index=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYONODE_")}
    (tmp_path / "settings.toml").write_text("")
    out = subprocess.run([str(Path(sys.executable).parent / "myonode"), "stats", "run", "--out", str(tmp_path / "out"),
                          "--subjects", str(tmp_path / "subjects.csv"), "--observations",
                          str(tmp_path / "observations.csv"), "--config", str(tmp_path / "settings.toml")],
                         capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr
    for name in OUTPUTS:
        text = (tmp_path / "out" / f"{name}.csv").read_text(encoding="utf-8")
        if name in COLUMNS:
            assert text.splitlines()[0] == COLUMNS[name]
        if name in WITHOUT_DIXON:
            assert len(text.splitlines()) == 1, f"{name} has rows without fat-fraction measurements"
        else:
            assert len(text.splitlines()) > 1, f"{name} is empty"
    meta = json.loads((tmp_path / "out" / "run.json").read_text())
    assert len(meta["inputs_digest"]) == 64 and meta["subjects"] == 20 and "statsmodels" in meta["versions"]


def test_cli_bad_input_names_line_and_column(tmp_path: Path) -> None:
    sim = simulate_cohort(seed=3, patients=4, controls=3)
    sim.subjects.to_csv(tmp_path / "subjects.csv", index=False)
    obs = sim.observations.astype({"value": object})
    obs.loc[5, "value"] = "n/a"
    obs.to_csv(tmp_path / "observations.csv", index=False)
    (tmp_path / "settings.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYONODE_")}
    out = subprocess.run([str(Path(sys.executable).parent / "myonode"), "stats", "run", "--out", str(tmp_path / "out"),
                          "--subjects", str(tmp_path / "subjects.csv"), "--observations",
                          str(tmp_path / "observations.csv"), "--config", str(tmp_path / "settings.toml")],
                         capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 2 and "line 7, column value: 'n/a' is not a number" in out.stderr
    assert not (tmp_path / "out").exists()


def test_associations_include_munix_on_the_side_tested(simulated) -> None:
    """Table 3 pairs MUNIX with relative T2 of the side that was tested, and dynamometry by side."""
    _, result = simulated
    t3 = result.frames["table3"]
    munix = t3[t3["measure"] == "MUNIX"]
    assert set(munix["muscle"]) == {"biceps_brachii", "tibialis_anterior", "thenar", "hypothenar"}
    assert set(munix["side"]) <= {"left", "right"} and (munix["n"] >= 5).all()
    assert {"quadriceps", "tibialis_anterior", "first_dorsal_interosseous"} <= set(t3[t3["measure"] == "dynamometry"]["muscle"])


def test_fat_fractions_where_a_protocol_has_dixon_get_their_own_between_group_and_change_tables() -> None:
    """Fat fraction (%) of the leg muscles added to a simulated cohort, as Dixon sites would measure it: controls
    5 % ± 1, patients 40 % higher at baseline and rising 1.5 percentage points by 12 months. Table 1 (FF) finds the
    40 % difference, Table 5 (FF) the change in percentage points; relative T2 and ADC are untouched."""
    import numpy as np

    sim = simulate_cohort(seed=4, patients=24, controls=18)
    rng = np.random.default_rng(4)
    group = dict(zip(sim.subjects["subject_id"], sim.subjects["group"], strict=True))
    legs = ("quadriceps", "tibialis_anterior")
    visits = sim.observations[["subject_id", "visit", "days"]].drop_duplicates()
    rows = []
    for subject_id, visit, days in visits.itertuples(index=False):
        patient = group[subject_id] == "patient"
        for muscle in legs:
            for side in ("left", "right"):
                base = 5.0 * (1.4 if patient else 1.0)
                change = 1.5 * days / 365.0 if patient else 0.0
                rows.append((subject_id, visit, days, "FF", muscle, side, base + change + rng.normal(0, 0.5)))
    ff = pd.DataFrame(rows, columns=sim.observations.columns)
    subjects = sim.subjects.assign(female=(sim.subjects["sex"] == "F").astype(float),
                                   patient=(sim.subjects["group"] == "patient").astype(float))
    with_ff = compute(Cohort(subjects=subjects, observations=pd.concat([sim.observations, ff]), visits=VISITS))
    without = compute(Cohort(subjects=subjects, observations=sim.observations, visits=VISITS))
    t1 = with_ff.frames["table1_ff"]
    assert set(zip(t1["muscle"], t1["side"])) == {(m, s) for m in legs for s in ("left", "right")}
    assert ((t1["ci_low"] < 40) & (t1["ci_high"] > 40)).mean() >= 0.75 and (t1["p"] < 0.001).all()
    t5 = with_ff.frames["table5_ff"]
    m12 = t5[(t5["group"] == "patient") & (t5["visit"] == "m12")]
    assert len(m12) == 4 and ((m12["ci_low"] < 1.5) & (m12["ci_high"] > 1.5)).mean() >= 0.75
    assert m12["pct_change"].isna().all()  # a change in percentage points, not a percentage of a percentage
    for name in ("table1", "table1_adc", "table5"):
        pd.testing.assert_frame_equal(with_ff.frames[name], without.frames[name])

    from stats.report import ReportInputs, render_html

    run = {"visits": VISITS, "started": "2026-12-06T02:00:00+00:00", "inputs_digest": "0" * 64,
           "versions": {"myonode": "test"}}
    inputs = ReportInputs(run=run, cutoff="2026-12-06", status={}, incomplete=[])
    titled = "Table 1 (fat fraction) — Dixon fat fraction at baseline (%)"
    assert titled in render_html(with_ff, pd.concat([sim.observations, ff]), subjects, inputs)
    assert titled not in render_html(without, sim.observations, subjects, inputs)  # the paper's: no Dixon
