"""The tidy CSV interface: a bad row names file, line and column; nothing is guessed."""

from __future__ import annotations

from pathlib import Path

import pytest

from stats.inputs import InputError, read_cohort

VISITS = ["baseline", "m4", "m6", "m12"]
SUBJECTS = ("subject_id,group,sex,age,onset_site,onset_side,diagnosis\n"
            "P001,patient,M,57,lower_limb,left,ALS\nC001,control,F,54,,,\n")
HEADER = "subject_id,visit,days,measure,muscle,side,value\n"
GOOD = "P001,baseline,0,relT2,tibialis_anterior,left,1.42\nP001,m4,130,ALSFRS-R,,none,37\n"


def load(tmp_path: Path, observations: str, subjects: str = SUBJECTS):
    (tmp_path / "s.csv").write_text(subjects)
    (tmp_path / "o.csv").write_text(observations)
    return read_cohort(tmp_path / "s.csv", tmp_path / "o.csv", VISITS)


def test_good_files_load(tmp_path: Path) -> None:
    cohort = load(tmp_path, HEADER + GOOD)
    assert len(cohort.observations) == 2 and cohort.subjects["female"].tolist() == [0.0, 1.0]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("P001,baseline,0,relT2,tibialis_posterior,left,1.1", r"line 4, column muscle: 'tibialis_posterior' is not a relT2 muscle"),
        ("P001,baseline,0,T1,tongue,none,1.1", r"line 4, column measure: unknown measure 'T1'"),
        ("P001,baseline,0,relT2,tibialis_anterior,left,1.5", r"line 4: duplicate of line 2"),
        ("P001,m4,130,relT2,tongue,none,high", r"line 4, column value: 'high' is not a number"),
        ("P001,m4,-20,relT2,tongue,none,1.0", r"line 4, column days: -20 is before the subject's baseline"),
        ("P001,m9,300,relT2,tongue,none,1.0", r"line 4, column visit: 'm9' is not one of"),
        ("P002,m4,130,relT2,tongue,none,1.0", r"line 4, column subject_id: unknown subject 'P002'"),
        ("P001,m4,130,relT2,tongue,left,1.0", r"line 4, column side: tongue takes side none"),
        ("P001,m4,130,ALSFRS-R,,left,40", r"line 4, column side: ALSFRS-R is not sided"),
    ],
)
def test_bad_observation_rows(tmp_path: Path, row: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        load(tmp_path, HEADER + GOOD + row + "\n")
    assert str(tmp_path / "o.csv") in str(info.value)


@pytest.mark.parametrize(
    ("subjects", "message"),
    [
        (SUBJECTS + "P001,patient,M,60,bulbar,,ALS\n", r"line 4, column subject_id: duplicate subject 'P001'"),
        (SUBJECTS.replace("57", "fifty"), r"line 2, column age: 'fifty' is not a number"),
        (SUBJECTS.replace("lower_limb,left", "lower_limb,"), r"line 2, column onset_side: limb onset needs a side"),
        (SUBJECTS.replace("patient,M", "patient,X"), r"line 2, column sex"),
        (SUBJECTS.replace("diagnosis", "diagnosis,extra"), r"line 1: unknown column\(s\) extra"),
    ],
)
def test_bad_subject_rows(tmp_path: Path, subjects: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load(tmp_path, HEADER + GOOD, subjects)
