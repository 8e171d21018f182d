"""The phantom cohort: the paper's design and effects, spreadsheets the importers read, --effects overrides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from phantom.cohort import write_cohort
from phantom.cohort_model import EffectsError, load_effects, simulate_cohort
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


def test_written_cohort_imports_and_has_truth_per_visit(tmp_path: Path) -> None:
    """subjects.csv, clinical.csv and ephys.csv pass the importers' validation; every visit has its
    DICOM folder, truth.json and true labels."""
    files = write_cohort(tmp_path, patients=1, controls=1, seed=5, size="small")
    subjects = read_subjects(files.subjects_csv)
    assert set(subjects["subject_id"]) == {"P001", "C001"}
    for csv in (files.clinical_csv, files.ephys_csv):
        assert len(read_observations(csv, subjects, ["baseline", "m4", "m6", "m12"])) > 10
    assert files.visits and all((v.folder / "truth.json").is_file() and (v.folder / "labels.nii.gz").is_file()
                                and any(v.dicom_dir.iterdir()) for v in files.visits)
    truth = json.loads(files.truth_json.read_text())
    assert truth["planted"]["table1_pct_diff"]["tibialis_anterior:left"] == 71.4
