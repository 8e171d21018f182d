"""Real exams nobody here made, sent as the scanner sends them: a Siemens XA60 calf exam (myoqmri's volunteer;
enhanced multi-frame, a 17-echo spin echo and a two-point Dixon) becomes a visit of the ``calves`` profile."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from node.intake.completeness import exam_gaps
from node.settings import SettingsError, load_settings
from node.work.exams import exam_facts
from node.work.jobs import HANDLERS
from storage import models as m
from storage.catalogue import MUSCLES, ScanProfile
from tests.node.test_exams import mark_processed, quiet, register, settle, visit_states, wait_visit_state
from tests.support.dcmtk import dcmtk
from tests.support.real_data import dixon_on, mese_files, myoqmri_example_data

MEAN = "373098007"  # SCT: Mean
DIXON = ("012_dixon_2echo_RR_opp", "014_dixon_2echo_RR_in", "016_dixon_2echo_RR_F", "018_dixon_2echo_RR_W")


def test_each_profile_gives_its_own_defaults_and_any_of_them_can_still_be_set(tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text('[protocol]\nprofile = "calves"\n')
    calves = load_settings(path, environ={}).protocol
    assert (calves.profile, calves.t2_stations, calves.dwi_stations) == (ScanProfile.CALVES, 1, 0)
    assert calves.muscles == ("tibialis_anterior", "gastrocnemius_soleus")
    assert {r.kind for r in calves.rules} == {"t2", "dwi", "dixon_water", "dixon_fat"}
    legs = load_settings(path, environ={"MYONODE_PROTOCOL__PROFILE": "lower_limbs",
                                         "MYONODE_PROTOCOL__DWI_STATIONS": "2"}).protocol
    assert (legs.profile, legs.t2_stations, legs.dwi_stations) == (ScanProfile.LOWER_LIMBS, 2, 2)
    (tmp_path / "empty.toml").write_text("")
    whole = load_settings(tmp_path / "empty.toml", environ={}).protocol
    assert (whole.profile, whole.t2_stations, whole.dwi_stations) == (ScanProfile.WHOLE_BODY, 6, 8)
    assert whole.muscles == tuple(muscle.key for muscle in MUSCLES)
    path.write_text('[protocol]\nprofile = "thighs"\n')
    with pytest.raises(SettingsError, match="profile"):
        load_settings(path, environ={})


def test_a_siemens_calf_exam_completes_a_visit_of_the_calves_profile(running_node, monkeypatch) -> None:
    monkeypatch.setitem(HANDLERS, "process_visit", mark_processed)
    node = quiet(running_node(protocol='profile = "calves"\nstable_age_s = 0.3\n'))
    files = [*mese_files(), *(next((myoqmri_example_data() / "Dixon_enhanced" / name).glob("*.dcm")) for name in DIXON)]
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    register(node, "CALF-001", str(first.PatientID))
    sent = dcmtk("storescu", "-aet", "STORESCU", "-aec", "MYONODE", "127.0.0.1", str(node.listener.port),
                 *map(str, files))
    assert sent.returncode == 0, sent.stdout + sent.stderr

    assert len(settle(node)) == 1  # one process_visit job
    wait_visit_state(node, "processed")
    assert visit_states(node) == [("baseline", "processed", False)]  # complete by the profile: not flagged

    with node.sessions() as s:
        kinds = {row.series_description: (row.kind, row.n_instances)
                 for row in s.scalars(select(m.Series).order_by(m.Series.series_number))}
        visit_id = s.scalars(select(m.Visit.id)).one()
        facts, _, _ = exam_facts(s, visit_id=visit_id)
    assert kinds["mese_product"] == (m.SeriesKind.T2, 17)  # every echo one enhanced instance of one series
    assert [kinds[name[4:]] for name in DIXON] == [  # in- and opposed-phase stored and served, not processed
        (m.SeriesKind.OTHER, 1), (m.SeriesKind.OTHER, 1), (m.SeriesKind.DIXON_FAT, 1), (m.SeriesKind.DIXON_WATER, 1)]
    gaps = exam_gaps(facts, node.settings.protocol)
    assert (len(gaps.t2_stations), gaps.complete, gaps.lines()) == (1, True, [])


@pytest.mark.slow
def test_a_siemens_calf_exam_is_measured_in_the_calves_and_its_rois_lie_in_muscle_with_either_atlas(
        running_node, tmp_path: Path) -> None:
    """The real calf exam processed by the node with the calves profile: relative T2 and Dixon fat fraction for left
    and right tibialis anterior and gastrocnemius/soleus, every other muscle not covered; the SEG and SR pass
    dciodvfy; the fat fraction in the SR lies within 5 percentage points of the Dixon's over the reported T2 ROI;
    and, judged by
    data the node did not make — the exam's own Dixon (fat 016, water 018), resampled onto the T2 slices through
    the shared frame of reference, and the vendor's fat-fraction map of the spin echo — each reported (eroded)
    ROI lies in muscle (Dixon fat fraction under 10 %; the vendor's map under 20 % on average with 85 % of the
    voxels under 30 %, where the T2-weighted signal is well above background), in its own leg (at least 90 % of
    it on its side of the gap between the legs); tibialis anterior lies lateral to the tibial marrow (found in
    the Dixon as the leg's inner fat), at most 2 cm behind it and in front of the leg's centre, and
    gastrocnemius/soleus behind it. All of it twice: with the default atlas, then with a site atlas (two contoured
    lower legs imported with ``myonode atlas import``) an operator pins in the console — the visit measured again with
    it, the console showing the atlas's leave-one-out accuracy table."""
    import time

    from node.web.accounts import add_user
    from quant.atlas_build import import_atlas
    from storage.database import transaction
    from tests.node.test_web_atlas import client_of, message
    from tests.support.calves import write_contoured_calves

    node = running_node(protocol='profile = "calves"\nstable_age_s = 1\n')
    files = [*mese_files(), *(next((myoqmri_example_data() / "Dixon_enhanced" / name).glob("*.dcm")) for name in DIXON)]
    register(node, "CALF-001", str(pydicom.dcmread(files[0], stop_before_pixels=True).PatientID))
    sent = dcmtk("storescu", "-aet", "STORESCU", "-aec", "MYONODE", "127.0.0.1", str(node.listener.port),
                 *map(str, files))
    assert sent.returncode == 0, sent.stdout + sent.stderr
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and visit_states(node) != [("baseline", "processed", False)]:
        time.sleep(1)
    assert visit_states(node) == [("baseline", "processed", False)]

    measured_and_checked(node, tmp_path / "default", None)

    # a site atlas: two contoured lower legs (the phantom's) imported, then pinned by an operator in the console
    import_atlas(write_contoured_calves(tmp_path / "contoured", (0, 1), slab_mm=None),
                 node.settings.atlas.site_dir / "site-calves", "site-calves", "two contoured lower legs")
    with transaction(node.sessions) as s:
        add_user(s, name="olivia", password="operator password", role=m.Role.OPERATOR)
    operator, csrf = client_of(node, "olivia", "operator password")
    assert message(operator.post("/settings/atlas/use", data={"csrf": csrf, "atlas_id": "site-calves"})) == (
        "the study is measured with site-calves; 1 visit(s) queued to be processed again")
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        with node.sessions() as s:
            atlases = set(s.scalars(select(m.Measurement.atlas_id)))
            jobs = s.scalars(select(m.Job).where(m.Job.kind == "process_visit")).all()
        assert not [j.error for j in jobs if j.state is m.JobState.FAILED], "re-processing with the site atlas failed"
        if atlases == {"site-calves"} and visit_states(node) == [("baseline", "processed", False)]:
            break
        time.sleep(1)
    measured_and_checked(node, tmp_path / "site", "site-calves")
    page = operator.get("/settings").text
    assert 'id="atlas-accuracy"' in page and "site-calves" in page and "1 measured with it" in page
    assert "Tibialis anterior left" in page and "Gastrocnemius/soleus right" in page


def measured_and_checked(node, tmp_path: Path, atlas_id: str | None) -> None:  # type: ignore[no-untyped-def]
    """The calves measured with one atlas (``atlas_id`` when given; see the test above), their results valid and their
    ROIs in muscle."""
    import shutil
    import subprocess

    import numpy as np
    import SimpleITK as sitk

    from node.work.results import newest_results
    from quant.pipeline import labels_on
    from quant.roistats import erode_labels
    from quant.volumes import station_volumes
    from storage.catalogue import not_covered
    from tests.support.sr import evaluations, measurement_groups, numbers

    tmp_path.mkdir(parents=True, exist_ok=True)
    with node.sessions() as s:
        visit_id = s.scalars(select(m.Visit.id)).one()
        measured = {(x.modality, x.muscle, x.side.value): x for x in s.scalars(select(m.Measurement))}
        (sr,) = newest_results(s, node.store, visit_id, m.ResultKind.SR)
        (seg,) = newest_results(s, node.store, visit_id, m.ResultKind.SEG)
    legs = {(k, side) for k in ("tibialis_anterior", "gastrocnemius_soleus") for side in ("left", "right")}
    atlases = {x.atlas_id for x in measured.values()}
    assert len(atlases) == 1 and (atlas_id is None or atlases == {atlas_id}), atlases
    assert set(measured) == {(modality, *leg) for modality in (m.Modality.REL_T2, m.Modality.FF) for leg in legs}
    rows = {(muscle, side): x for (modality, muscle, side), x in measured.items() if modality is m.Modality.REL_T2}
    for x in rows.values():  # muscle at TE 77 ms against fat marrow: about a quarter, and the reference plausible
        assert 0.1 < x.value < 0.5 and "reference_out_of_range" not in x.qc_flags, (x.muscle, x.side, x.value,
                                                                                  x.qc_flags)
    groups = measurement_groups(sr)
    for muscle, side in not_covered(node.settings.protocol.profile):
        assert ("COVERAGE", "NOT-COVERED") in evaluations(groups[f"{muscle}_{side}"])
    dciodvfy = shutil.which("dciodvfy")
    assert dciodvfy
    for ds in (sr, seg):
        path = tmp_path / f"{ds.Modality}.dcm"
        ds.save_as(path, enforce_file_format=True)
        errors = [line for line in subprocess.run([dciodvfy, str(path)], capture_output=True, text=True,
                                                  check=False).stderr.splitlines() if line.startswith("Error")]
        assert not errors, f"{ds.Modality}: {errors}"

    (t2,) = station_volumes([pydicom.dcmread(f) for f in mese_files()], echo_ms=80.0)
    labels = labels_on(sitk.ReadImage(str(node.settings.quant.qc_dir / f"visit-{visit_id}" / "subject_labels.nii.gz")),
                       t2.image)
    eroded = erode_labels(labels, t2.image.GetSpacing(), node.settings.quant.erosion_mm)

    fat, water = dixon_on("016_dixon_2echo_RR_F", t2.image), dixon_on("018_dixon_2echo_RR_W", t2.image)
    fraction = fat / np.maximum(fat + water, 1e-6)
    body = (fat + water) > 0.2 * np.percentile(fat + water, 99)
    columns = np.flatnonzero(body.any(axis=(0, 1)))
    gap = columns[np.argmax(np.diff(columns))] + 1 if np.diff(columns).max() > 1 else None
    profile = body.sum(axis=(0, 1)).astype(float)
    middle = slice(len(profile) // 3, 2 * len(profile) // 3)
    gap = middle.start + int(np.argmin(profile[middle])) if gap is None else gap
    x_of_column = np.asarray([t2.image.TransformIndexToPhysicalPoint((i, 0, 0))[0] for i in range(len(profile))])
    gap_x = float(x_of_column[gap])
    table = {(lab.key, lab.side): lab.value for lab in node_atlas_table(node)}
    centres = {}
    for (muscle, side) in legs:
        roi = eroded == table[(muscle, side)]
        assert roi.sum() >= 100, (muscle, side, int(roi.sum()))
        assert float(fraction[roi].mean()) < 0.10, (muscle, side, float(fraction[roi].mean()))
        reported = numbers(groups[f"{muscle}_{side}"])[("129100", MEAN, "%")]  # DCM fat fraction, mean, percent
        assert reported == pytest.approx(measured[(m.Modality.FF, muscle, side)].value)
        assert abs(reported - 100 * float(fraction[roi].mean())) < 5.0, (muscle, side, reported)
        ks, js, is_ = np.nonzero(roi)
        xs = x_of_column[is_]
        own = (xs > gap_x) if side == "left" else (xs < gap_x)
        assert own.mean() >= 0.90, (muscle, side, float(own.mean()))
        centres[(muscle, side)] = np.mean([t2.image.TransformIndexToPhysicalPoint((int(i), int(j), int(k)))
                                           for k, j, i in zip(ks[::7], js[::7], is_[::7], strict=True)], axis=0)
    for side in ("left", "right"):  # LPS: posterior is +y
        assert centres[("gastrocnemius_soleus", side)][1] > centres[("tibialis_anterior", side)][1] + 20.0

    from scipy import ndimage

    vendor = np.zeros(fraction.shape)  # the scanner's fat fraction (%) of the spin echo, a file per slice
    for path in sorted((myoqmri_example_data() / "004_mese_product" / "ff").glob("*.dcm")):
        ds = pydicom.dcmread(path, force=True)  # written without a preamble
        vendor[t2.image.TransformPhysicalPointToIndex([float(v) for v in ds.ImagePositionPatient])[2]] = ds.pixel_array
    t2w = sitk.GetArrayFromImage(t2.image)
    background = max(float(np.median(t2w[~body])), 1.0)
    y_of_row = np.asarray([t2.image.TransformIndexToPhysicalPoint((0, j, 0))[1] for j in range(t2w.shape[1])])
    for (muscle, side) in legs:
        roi = eroded == table[(muscle, side)]
        assert float(vendor[roi].mean()) < 20.0 and float((vendor[roi] < 30.0).mean()) >= 0.85, (muscle, side)
        assert float(t2w[roi].mean()) > 10 * background, (muscle, side)
    for side in ("left", "right"):
        on_side = (x_of_column > gap_x) if side == "left" else (x_of_column < gap_x)
        inner = np.stack([ndimage.binary_erosion(ndimage.binary_fill_holes(b), iterations=6) for b in body])
        candidates = (fraction > 0.8) & inner & on_side[None, None, :]
        parts, n = ndimage.label(candidates)
        assert n >= 1, side
        cavity = parts == int(np.argmax(ndimage.sum(candidates, parts, range(1, n + 1)))) + 1
        _, mj, mi = np.nonzero(cavity)
        _, tj, ti = np.nonzero(eroded == table[("tibialis_anterior", side)])
        _, lj, _ = np.nonzero(body & on_side[None, None, :])
        marrow_x, marrow_y = x_of_column[mi].mean(), y_of_row[mj].mean()
        ta_x, ta_y = x_of_column[ti].mean(), y_of_row[tj].mean()
        assert abs(ta_x - gap_x) > abs(marrow_x - gap_x), (side, ta_x, marrow_x)  # lateral
        assert ta_y - marrow_y < 20.0 and ta_y < y_of_row[lj].mean(), (side, ta_y, marrow_y)
    marrow = np.isin(eroded, [lab.value for lab in node_atlas_table(node) if lab.is_marrow])
    assert marrow.sum() >= 20 and float(fraction[marrow].mean()) > 0.7  # the reference lies in fat marrow


def node_atlas_table(node):  # type: ignore[no-untyped-def]
    from node.work.atlas_in_use import atlas_in_use, current_pin

    with node.sessions() as s:
        return atlas_in_use(node.settings.atlas, current_pin(s)).table
