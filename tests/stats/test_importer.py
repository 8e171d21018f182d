"""`myonode import subjects|clinical|ephys`: validated, all-or-nothing, idempotent, tidy or wide."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from storage import models as m
from storage.database import make_engine, session_factory

SUBJECTS = ("subject_id,group,sex,age,onset_site,onset_side,diagnosis,patient_ids\n"
            "P001,patient,M,57,lower_limb,left,ALS,MND-001;MND-001B\nC001,control,F,54,,,,\n")
TIDY = ("subject_id,visit,days,measure,muscle,side,value\n"
        "P001,baseline,0,ALSFRS-R,,none,41\nP001,m4,131,ALSFRS-R,,none,38\nP001,baseline,0,MRC,deltoid,left,5\n")
WIDE = ("subject_id,visit,days,ALSFRS-R,weight,MRC_deltoid_left,dynamometry_quadriceps_right\n"
        "P001,baseline,0,41,80.5,5,22.5\nP001,m12,380,35,77,4,\nC001,baseline,0,,70,5,30\n")


def myonode(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYONODE_")}
    settings = tmp_path / "settings.toml"
    if not settings.exists():
        settings.write_text('[storage]\ndatabase_url = "sqlite:///db.sqlite"\nroot = "store"\n')
    return subprocess.run([str(Path(sys.executable).parent / "myonode"), *args, "--config", str(settings)],
                          capture_output=True, text=True, env=env, check=False)


def counts(tmp_path: Path) -> tuple[int, int, int, int]:
    with session_factory(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in
                     (m.Subject, m.SubjectPatientId, m.Visit, m.Observation))  # type: ignore[return-value]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "subjects.csv").write_text(SUBJECTS)
    (tmp_path / "clinical.csv").write_text(TIDY)
    (tmp_path / "wide.csv").write_text(WIDE)
    return tmp_path


def test_import_subjects_then_clinical_idempotent(files: Path) -> None:
    out = myonode(files, "import", "subjects", str(files / "subjects.csv"))
    assert out.returncode == 0 and "2 added" in out.stdout, out.stderr
    assert counts(files) == (2, 3, 0, 0)  # P001 has two Patient IDs, C001 defaults to its subject id
    out = myonode(files, "import", "clinical", str(files / "clinical.csv"))
    assert out.returncode == 0 and "3 added" in out.stdout, out.stderr
    again = myonode(files, "import", "clinical", str(files / "clinical.csv"))
    assert "0 added, 0 updated, 3 unchanged" in again.stdout
    assert counts(files) == (2, 3, 2, 3)
    assert "2 unchanged" in myonode(files, "import", "subjects", str(files / "subjects.csv")).stdout


def test_wide_layout(files: Path) -> None:
    myonode(files, "import", "subjects", str(files / "subjects.csv"))
    out = myonode(files, "import", "clinical", str(files / "wide.csv"))
    assert out.returncode == 0 and "10 added" in out.stdout, out.stderr
    with session_factory(make_engine(f"sqlite:///{files / 'db.sqlite'}"))() as s:
        row = s.scalars(select(m.Observation).where(m.Observation.measure == "dynamometry")).first()
        assert (row.muscle, row.side, row.value) == ("quadriceps", m.Side.RIGHT, 22.5)


def test_bad_row_imports_nothing(files: Path) -> None:
    myonode(files, "import", "subjects", str(files / "subjects.csv"))
    (files / "bad.csv").write_text(TIDY + "P001,m12,380,MRC,deltoid,left,weak\n")
    out = myonode(files, "import", "clinical", str(files / "bad.csv"))
    assert out.returncode == 2
    assert "line 5, column value: 'weak' is not a number" in out.stderr and "nothing was imported" in out.stderr
    assert counts(files)[2:] == (0, 0)


@pytest.mark.slow
def test_wrong_source_and_unknown_column_refused(files: Path) -> None:
    myonode(files, "import", "subjects", str(files / "subjects.csv"))
    (files / "ephys.csv").write_text("subject_id,visit,days,measure,muscle,side,value\n"
                                     "P001,baseline,0,ALSFRS-R,,none,40\n")
    out = myonode(files, "import", "ephys", str(files / "ephys.csv"))
    assert out.returncode == 2 and "line 2, column measure: 'ALSFRS-R' is not ephys data" in out.stderr
    (files / "wide_bad.csv").write_text("subject_id,visit,days,MRC_elbow_left\nP001,baseline,0,5\n")
    out = myonode(files, "import", "clinical", str(files / "wide_bad.csv"))
    assert out.returncode == 2 and "column MRC_elbow_left: not <measure>" in out.stderr
    (files / "subjects2.csv").write_text(SUBJECTS + "P002,patient,F,60,bulbar,,ALS,MND-001\n")
    out = myonode(files, "import", "subjects", str(files / "subjects2.csv"))
    assert out.returncode == 2 and "Patient ID 'MND-001' already belongs to subject 'P001'" in out.stderr
    assert counts(files)[0] == 2
