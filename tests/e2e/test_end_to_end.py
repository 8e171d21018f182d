"""The demo's path at the smallest size, with real peers: dcmtk pushes, the node processes, Orthanc receives.

Two phantom subjects' baseline visits (a patient and a control, small size) go in with
``storescu`` as the scanner would send them; the node decides they are complete, processes
them (measurements, QC, SEG/SR/ADC map/stitched T2), serves the results by Q/R and forwards
them to an Orthanc on loopback, which can also retrieve them with C-MOVE; the cohort report
is built; the SR's values are the database's; a second push of the same files changes nothing.
Then a person uses the web console in a real browser (Chromium): signs in, finds a study by
patient, opens its visit and sees the QC mosaics, the measurements and the DICOM results.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import highdicom as hd
import httpx
import pydicom
import pytest
import SimpleITK as sitk
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select
from sqlalchemy import func, select

from node.demo.orthanc import start_orthanc
from node.demo.ports import free_port
from node.demo.scenario import find_results, prepare_demo_folder, push_visit
from node.service import Node, start_node
from node.settings import Settings
from node.web.accounts import add_user
from node.work.reports import run_report
from phantom.cohort_files import write_cohort
from stats.importer import import_observations, import_subjects
from storage import models as m
from storage.database import transaction
from tests.support.browser import (
    FIRST_IMAGE_SHOWN,
    chromium,
    console_messages,
    loaded_images,
    screenshot,
    sign_in,
    wait_for_text,
    wait_for_url,
)
from tests.support.waiting import wait_for

# the whole story in one test (scanner to PACS, browser, signing, corrections, site atlas, OHIF): more than the
# suite's 10 minutes per test when it shares two cores with the rest of the suite
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def test_two_subjects_from_scanner_to_pacs_and_report(tmp_path: Path) -> None:
    port = free_port()
    orthanc = start_orthanc(tmp_path / "orthanc", {"MYONODE": ("MYONODE", "127.0.0.1", port)})
    settings = prepare_demo_folder(tmp_path / "node", port=port, stable_age_s=2,
                                   pacs=(orthanc.ae_title, orthanc.dicom_port))
    cohort = write_cohort(tmp_path / "phantom", patients=1, controls=1, seed=3, size="small")
    baselines = [v for v in cohort.visits if v.visit == "baseline"]
    assert len(baselines) == 2
    node = start_node(settings)
    try:
        node.settle()
        with transaction(node.sessions) as s:
            import_subjects(s, cohort.subjects_csv)
        for visit in baselines:
            push_visit(visit.dicom_dir, settings.node.ae_title, port)
        labels = [w.label for w in settings.visits.windows]
        node.settle()
        with transaction(node.sessions) as s:
            import_observations(s, cohort.clinical_csv, "clinical", labels)
            import_observations(s, cohort.ephys_csv, "ephys", labels)

        imaged = select(m.Visit.state).where(m.Visit.id.in_(select(m.Study.visit_fk)))  # the import adds later visits

        def processed() -> bool:
            node.settle()
            with node.sessions() as s:
                states = s.scalars(imaged).all()
                pending = s.scalar(select(func.count()).select_from(m.OutboxItem)
                                   .where(m.OutboxItem.state != m.OutboxState.SENT))
            assert m.VisitState.FAILED not in states, "a visit failed processing"
            return len(states) == 2 and all(st is m.VisitState.PROCESSED for st in states) and pending == 0

        wait_for(processed, 600, "both visits processed and their results forwarded")

        node.settle()

        with node.sessions() as s:
            kinds = s.execute(select(m.ResultObject.kind, func.count()).group_by(m.ResultObject.kind)).all()
            measurements = s.scalars(select(m.Measurement)).all()
            n_instances = s.scalar(select(func.count()).select_from(m.Instance))
            n_jobs = s.scalar(select(func.count()).select_from(m.Job))
            sr_paths = [node.store.absolute(path) for path in s.scalars(
                select(m.Instance.file_path).join(m.ResultObject).where(m.ResultObject.kind == m.ResultKind.SR))]
        kinds = dict(kinds)
        assert kinds[m.ResultKind.SEG] == kinds[m.ResultKind.SR] == kinds[m.ResultKind.ADC_MAP] == 2
        assert kinds[m.ResultKind.STITCHED_T2] > 2

        # Q/R: findscu finds both SRs (series level) and both studies list SR among their modalities
        assert find_results(settings.node.ae_title, port) == 2
        study = subprocess.run(["findscu", "-S", "-aec", settings.node.ae_title, "-k", "QueryRetrieveLevel=STUDY",
                                "-k", "ModalitiesInStudy=SR", "-k", "StudyInstanceUID", "127.0.0.1", str(port)],
                               capture_output=True, text=True, timeout=60, check=False)
        assert (study.stdout + study.stderr).count("Find Response:") == 2

        # Orthanc received every result; it retrieves a deleted SEG back from the node by C-MOVE
        segs = orthanc.rest("/tools/find", {"Level": "Instance", "Query": {"Modality": "SEG"}})
        assert len(segs) == 2
        assert len(orthanc.rest("/tools/find", {"Level": "Instance", "Query": {"Modality": "SR"}})) == 2
        orthanc.rest(f"/instances/{segs[0]}", method="DELETE")
        query = orthanc.rest("/modalities/MYONODE/query", {"Level": "Series", "Query": {"Modality": "SEG"}})
        orthanc.rest(f"/queries/{query['ID']}/retrieve", {"TargetAet": orthanc.ae_title, "Synchronous": True})
        assert len(orthanc.rest("/tools/find", {"Level": "Instance", "Query": {"Modality": "SEG"}})) == 2

        # the SR's relative T2 values are the database's
        by_key = {(r.visit_fk, r.muscle, r.side): r.value for r in measurements if r.modality is m.Modality.REL_T2}
        checked = 0
        for path in sr_paths:
            sr = hd.sr.srread(path)
            node.settle()
            with node.sessions() as s:
                visit_id = s.scalar(select(m.Study.visit_fk).where(m.Study.study_instance_uid == sr.StudyInstanceUID))
            for group in sr.content.get_volumetric_roi_measurement_groups():
                muscle, side = group.tracking_identifier.rsplit("_", 1)
                rel = next(x for x in group.get_measurements() if x.name.meaning == "Relative T2 signal")
                assert rel.value == pytest.approx(by_key[(visit_id, muscle, side)], rel=1e-9)
                checked += 1
        assert checked >= 30

        # accuracy at small size against the phantom's truth (4 mm truth grid, 3.1 × 10 mm T2 voxels):
        # leg muscles Dice ≥ 0.75 and relative T2 within 5 % of the noise-free station ratio (full size: bench/accuracy.py)
        node.settle()
        with node.sessions() as s:
            visit_of = dict(s.execute(select(m.Subject.subject_id, m.Visit.id).join(m.Visit)
                                      .where(m.Visit.label == "baseline")).all())
        legs = ("quadriceps", "hamstrings", "tibialis_anterior", "gastrocnemius_soleus")
        for visit in baselines:
            vid = visit_of[visit.subject_id]
            truth = json.loads((visit.folder / "truth.json").read_text())
            value = {(lab["key"], lab["side"]): lab["value"] for lab in truth["labels"]}
            true_labels = sitk.ReadImage(str(visit.folder / "labels.nii.gz"))
            propagated = sitk.Resample(sitk.ReadImage(str(settings.quant.qc_dir / f"visit-{vid}" / "subject_labels.nii.gz")),
                                       true_labels, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
            a, b = sitk.GetArrayViewFromImage(propagated), sitk.GetArrayViewFromImage(true_labels)
            for r in measurements:
                if r.visit_fk != vid or r.modality is not m.Modality.REL_T2 or r.muscle not in legs:
                    continue
                v = value[(r.muscle, r.side.value)]
                dice = 2 * ((a == v) & (b == v)).sum() / ((a == v).sum() + (b == v).sum())
                assert dice >= 0.75, (r.muscle, r.side, dice)
                signal = truth["station_signal"]["t2"]
                ratios = [signal[str(st)][str(v)] / signal[str(st)][str(value[(ref, "none")])]
                          for st, ref in zip(r.stations, r.references)]
                assert r.value == pytest.approx(sum(ratios) / len(ratios), rel=0.05), (r.muscle, r.side)
        # the whole-body transform and each hand's regional refinement are kept for transformix
        transforms = json.loads((settings.quant.qc_dir / f"visit-{vid}" / "transforms.json").read_text())
        assert {"atlas_to_t2", "atlas_to_t2_hand_left", "atlas_to_t2_hand_right", "t2_to_dwi"} <= set(transforms)

        # the report
        run = run_report(settings, force=True)
        assert run is not None and run.state is m.RunState.DONE
        folder = Path(run.output_dir)
        for name in ("table1.csv", "table2.csv", "table3.csv", "table4.csv", "table5.csv", "report.html",
                     "report.pdf", "run.json"):
            assert (folder / name).is_file(), name
        assert len(list((folder / "qc").glob("*.png"))) >= 2

        # a second push of the same files changes nothing
        push_visit(baselines[0].dicom_dir, settings.node.ae_title, port)
        time.sleep(settings.protocol.stable_age_s + 3)
        node.settle()
        with node.sessions() as s:
            assert s.scalar(select(func.count()).select_from(m.Instance)) == n_instances
            assert s.scalar(select(func.count()).select_from(m.Job)) == n_jobs
            assert all(st is m.VisitState.PROCESSED for st in s.scalars(imaged))

        visit_id = console_in_a_browser(node, tmp_path, baselines[0].subject_id)
        signed_and_counted(node, settings, visit_id, tmp_path)
        corrected_by_a_workstation(node, settings, visit_id, port, tmp_path)
        learned_by_a_site_atlas(node, settings, visit_id, tmp_path)
        driver = chromium(tmp_path / "chromium-ohif", webgl=True)
        try:
            viewed_in_ohif(node, visit_id, driver, tmp_path)
            edited_in_ohif(node, visit_id, driver, tmp_path)
        finally:
            driver.quit()
    finally:
        node.stop()
        orthanc.stop()


def console_in_a_browser(node: Node, tmp_path: Path, subject_id: str) -> int:
    """Sign in, find the subject's study by Patient ID, open its visit: the QC mosaics load, the measurements show;
    reject one ROI and accept the visit. Returns the visit's id. (Retry, assignment, access rules:
    tests/node/test_web_console.py and test_web.py.)"""
    assert node.web is not None
    base = f"http://127.0.0.1:{node.web.port}"
    with transaction(node.sessions) as s:
        add_user(s, name="physicist", password="a long operator password", role=m.Role.OPERATOR)
        patient_id = s.scalars(select(m.SubjectPatientId.patient_id).join(m.Subject)
                               .where(m.Subject.subject_id == subject_id)).first()
    driver = chromium(tmp_path / "chromium")
    try:
        sign_in(driver, base, "physicist", "a long operator password")
        assert "Dashboard" in driver.title
        screenshot(driver, tmp_path / "console-dashboard.png")
        driver.get(f"{base}/studies")
        driver.find_element(By.ID, "patient").send_keys(patient_id)
        driver.find_element(By.ID, "search").click()
        wait_for_url(driver, "patient=")
        rows = driver.find_elements(By.CSS_SELECTOR, "#studies tr td:first-child a")
        assert [r.text for r in rows] == [patient_id]
        rows[0].click()
        wait_for_text(driver, "completeness", "Complete")
        driver.find_element(By.PARTIAL_LINK_TEXT, "baseline").click()
        wait_for_text(driver, "visit-state", "processed")
        assert loaded_images(driver, "#qc") >= 2  # the T2 and DWI mosaics (and the thumbnail)
        measurements = driver.find_elements(By.CSS_SELECTOR, "#measurements tr")[1:]
        assert len(measurements) >= 30 and any("relT2" in r.text for r in measurements)
        assert len(driver.find_elements(By.CSS_SELECTOR, "#results tr")) >= 4  # SEG, SR, ADC map, stitched T2
        screenshot(driver, tmp_path / "console-visit.png")
        # review: one ROI rejected as misregistered, then the visit accepted (and signed)
        Select(driver.find_element(By.ID, "roi")).select_by_value("tibialis_anterior/left")
        Select(driver.find_element(By.ID, "roi-reason")).select_by_value("misregistered")
        driver.find_element(By.ID, "roi-note").send_keys("label leaks into the tibia")
        driver.find_element(By.ID, "reject-roi-button").click()
        wait_for_text(driver, "message", "tibialis_anterior left rejected (misregistered)")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#measurements tr.rejected")) == 2  # its relT2 and ADC
        driver.find_element(By.ID, "accept-visit").click()
        wait_for_text(driver, "message", "visit accepted")
        assert "Visit accepted by physicist" in driver.find_element(By.ID, "review-state").text
        driver.get(f"{base}/reports")
        driver.find_element(By.LINK_TEXT, "report.html").click()
        wait_for_url(driver, "/report.html")
        assert "Processing status" in driver.page_source and "Figure 3" in driver.page_source
    finally:
        driver.quit()
    with node.sessions() as s:
        visit_id = s.scalars(select(m.Review.visit_fk)).first()
    assert visit_id is not None
    return int(visit_id)


def ohif_console(driver: WebDriver, seen: list[str]) -> None:
    """What OHIF wrote to the console since the last look, added to ``seen``; its error boundary (the viewer
    blanked by an error) fails the test at once."""
    seen.extend(console_messages(driver))
    assert not any("Error Boundary" in line for line in seen), [x for x in seen if "Error" in x]


def viewed_in_ohif(node: Node, visit_id: int, driver: WebDriver, tmp_path: Path) -> None:
    """The visit opened in the OHIF viewer (``/viewer``, npm's @ohif/app) from its console page: OHIF loads the
    study from myonode's DICOMweb, shows the stitched T2 with the SEG's segments, the measurements are listed
    beside it; the SR opened on its own does not break the viewer; the ADC map's Float Pixel Data is served as
    frames."""
    assert node.web is not None
    base = f"http://127.0.0.1:{node.web.port}"
    with node.sessions() as s:
        results = {kind: (study, series, sop) for kind, study, series, sop in s.execute(
            select(m.ResultObject.kind, m.Study.study_instance_uid, m.ResultObject.series_instance_uid,
                   m.ResultObject.sop_instance_uid)
            .join(m.Visit, m.Visit.id == m.ResultObject.visit_fk).join(m.Study, m.Study.visit_fk == m.Visit.id)
            .where(m.ResultObject.visit_fk == visit_id).order_by(m.ResultObject.id))}  # the newest of each kind
    study, adc_series, adc_sop = results[m.ResultKind.ADC_MAP]
    frames = httpx.get(f"{base}/dicomweb/studies/{study}/series/{adc_series}/instances/{adc_sop}/frames/1",
                       auth=("physicist", "a long operator password"), timeout=60,
                       headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"})
    assert frames.status_code == 200 and "transfer-syntax=1.2.840.10008.1.2.1" in frames.text[:400]

    sign_in(driver, base, "physicist", "a long operator password")
    driver.get(f"{base}/visits/{visit_id}")
    driver.find_element(By.ID, "open-viewer").click()
    wait_for_url(driver, f"/visits/{visit_id}/viewer")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#viewer-measurements tr")) > 30  # beside the viewer
    driver.switch_to.frame(driver.find_element(By.ID, "viewer"))
    seen: list[str] = []

    def segmentation_shown() -> bool:
        ohif_console(driver, seen)
        return any("SEG parse complete" in line for line in seen) and "WB T2 stitched (myonode)" in \
            str(driver.execute_script("return document.body.innerText"))

    wait_for(segmentation_shown, 180, "OHIF showing the stitched T2 with the SEG")
    screenshot(driver, tmp_path / "viewer-visit.png")
    # the SR alone: its groups carry no image coordinates (TID 1411); the viewer stays up
    driver.switch_to.default_content()
    _, sr_series, _ = results[m.ResultKind.SR]
    driver.get(f"{base}/viewer/viewer?StudyInstanceUIDs={study}&initialSeriesInstanceUID={sr_series}")
    seen.clear()

    def sr_loaded() -> bool:
        ohif_console(driver, seen)
        return any("rehydratable" in line for line in seen)

    wait_for(sr_loaded, 180, "OHIF loading the SR")
    time.sleep(3)  # the viewport mounts the SR after reading it: an error would come now
    assert not any("Error Boundary" in line for line in seen + console_messages(driver))
    assert "Something went wrong" not in str(driver.execute_script("return document.body.innerText"))


# Run in OHIF's page: one pixel added to the right of every pixel of a segment (its labelmap as OHIF holds it),
# after every image the segmentation references is in the viewer's cache (saving needs them), then OHIF's own
# "Store Segmentation" command.
EDIT_AND_STORE = """
const done = arguments[arguments.length - 1];
const label = arguments[0];
const seg = window.services.segmentationService.getSegmentations()[0];
const labelmap = seg.representationData.Labelmap;
const index = Object.values(seg.segments).find(s => s && s.label === label).segmentIndex;
Promise.all(labelmap.referencedImageIds.map(id => window.cornerstone.imageLoader.loadAndCacheImage(id))).then(() => {
  let changed = 0;
  for (const id of labelmap.imageIds) {
    const image = window.cornerstone.cache.getImage(id);
    const data = image.voxelManager ? image.voxelManager.getScalarData() : image.getPixelData();
    for (let i = data.length - 2; i >= 0; i--) {
      if (data[i] === index && data[i + 1] === 0 && (i + 1) % image.columns) { data[i + 1] = index; changed++; }
    }
  }
  window.cornerstoneTools.segmentation.triggerSegmentationEvents.triggerSegmentationDataModified(seg.segmentationId);
  window.commandsManager.runCommand('storeSegmentation', {segmentationId: seg.segmentationId});
  done(changed);
}, error => done('not cached: ' + error));
"""


def edited_in_ohif(node: Node, visit_id: int, driver: WebDriver, tmp_path: Path) -> None:
    """An operator corrects a muscle in OHIF's segmentation mode and saves it with OHIF's own Store command: the SEG
    OHIF writes comes by STOW-RS from the console session and becomes a correction of that muscle only, applied
    and re-measured as a SEG sent by C-STORE is. (The edit itself is made on OHIF's labelmap by script, as a brush
    stroke would leave it.)"""
    assert node.web is not None
    base = f"http://127.0.0.1:{node.web.port}"
    with node.sessions() as s:
        study, seg_series = s.execute(
            select(m.Study.study_instance_uid, m.ResultObject.series_instance_uid)
            .join(m.Visit, m.Visit.id == m.ResultObject.visit_fk).join(m.Study, m.Study.visit_fk == m.Visit.id)
            .where(m.ResultObject.visit_fk == visit_id, m.ResultObject.kind == m.ResultKind.SEG)
            .order_by(m.ResultObject.id.desc())).first()
        before = {c.id for c in s.scalars(select(m.Correction))}
    driver.get(f"{base}/viewer/segmentation?StudyInstanceUIDs={study}")
    seen: list[str] = []

    def study_shown() -> bool:
        return bool(driver.execute_script(
            "return !!(window.services && window.services.displaySetService.getActiveDisplaySets()"
            ".some(d => d.SeriesInstanceUID === arguments[0]))", seg_series))

    wait_for(study_shown, 180, "OHIF listing the visit's SEG")
    # As an operator would, the first image is on screen before another series is chosen. (Sooner, a stack viewport
    # torn down before its first image arrived threw from its 40 ms scroll timer and tripped OHIF's error boundary:
    # cornerstonejs/cornerstone3D#2884, mended in the installed viewer by deploy/ohif/patch.py.)
    wait_for(lambda: bool(driver.execute_script(FIRST_IMAGE_SHOWN)), 180, "OHIF's first image on screen")
    driver.execute_script("""
      const ds = window.services.displaySetService.getActiveDisplaySets()
        .find(d => d.SeriesInstanceUID === arguments[0]);
      const viewportId = window.services.viewportGridService.getActiveViewportId();
      window.commandsManager.runCommand('setDisplaySetsForViewports',
        {viewportsToUpdate: [{viewportId, displaySetInstanceUIDs: [ds.displaySetInstanceUID]}]});""", seg_series)

    def segmentation_loaded() -> bool:
        ohif_console(driver, seen)
        return bool(driver.execute_script(
            "return window.services.segmentationService.getSegmentations().length === 1"))

    wait_for(segmentation_loaded, 180, "the SEG as an editable labelmap")
    driver.set_script_timeout(180)
    changed = driver.execute_async_script(EDIT_AND_STORE, "Hamstrings right")
    assert isinstance(changed, int) and changed > 0, changed
    save_button = "return [...document.querySelectorAll('button')].find(b => b.textContent.trim() === 'Save')"
    wait_for(lambda: driver.execute_script(save_button) is not None, 60, "OHIF's Store Segmentation dialog")
    screenshot(driver, tmp_path / "viewer-store-segmentation.png")
    driver.execute_script(save_button.replace("return ", "") + ".click()")

    def applied() -> bool:
        with node.sessions() as s:
            new = [c for c in s.scalars(select(m.Correction)) if c.id not in before]
        return bool(new) and new[0].state is not m.CorrectionState.PENDING

    wait_for(applied, 300, "the SEG saved in OHIF handled as a correction")
    with node.sessions() as s:
        (correction,) = [c for c in s.scalars(select(m.Correction)) if c.id not in before]
        assert correction.state is m.CorrectionState.APPLIED and correction.visit_fk == visit_id, correction.reason
        assert correction.muscles == ["hamstrings right"]  # OHIF wrote every segment; only the edited one differs
        assert correction.instance.sop_class_uid == "1.2.840.10008.5.1.4.1.1.66.4"  # a binary SEG, as configured
        corrected = s.scalars(select(m.Measurement).where(
            m.Measurement.visit_fk == visit_id, m.Measurement.muscle == "hamstrings",
            m.Measurement.source == m.MeasurementSource.CORRECTED)).all()
        assert [x.side.value for x in corrected] == ["right"]


def signed_and_counted(node: Node, settings: Settings, visit_id: int, tmp_path: Path) -> None:
    """The accepted visit's verified SR is valid and names its reviewer and predecessor; the next report leaves
    the rejected ROI out and says so."""
    def signed() -> bool:
        with node.sessions() as s:
            states = s.scalars(select(m.Job.state).where(m.Job.kind == "sign_visit")).all()
        assert m.JobState.FAILED not in states, "the sign job failed"
        return states == [m.JobState.DONE]

    wait_for(signed, 300, "the verified SR")
    node.settle()
    with node.sessions() as s:
        srs = s.execute(select(m.ResultObject, m.Instance.file_path).join(m.Instance)
                        .where(m.ResultObject.visit_fk == visit_id, m.ResultObject.kind == m.ResultKind.SR)
                        .order_by(m.ResultObject.id)).all()
    assert len(srs) == 2  # the unverified one stays stored (and queryable)
    (unverified, _), (verified, path) = srs
    assert verified.replaces_uid == unverified.sop_instance_uid
    sr = hd.sr.srread(node.store.absolute(path))
    assert sr.VerificationFlag == "VERIFIED" and str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "physicist"
    assert sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0] \
        .ReferencedSOPInstanceUID == unverified.sop_instance_uid
    assert "tibialis_anterior_left" not in {g.tracking_identifier
                                            for g in sr.content.get_volumetric_roi_measurement_groups()}
    dciodvfy = subprocess.run(["dciodvfy", str(node.store.absolute(path))], capture_output=True, text=True, check=False)
    assert not [line for line in (dciodvfy.stdout + dciodvfy.stderr).splitlines() if line.startswith("Error")]
    reader = subprocess.run([str(Path(sys.executable).parent / "tid1500reader"), "--inputDICOM",
                             str(node.store.absolute(path)), "--outputMetadata", str(tmp_path / "verified.json")],
                            capture_output=True, text=True, check=False)
    assert reader.returncode == 0, reader.stderr
    run = run_report(settings, force=True)
    assert run is not None and run.state is m.RunState.DONE
    meta = json.loads((Path(run.output_dir) / "run.json").read_text())
    assert meta["review"] == {"use": "reviewed", "visits_reviewed": 1, "visits_accepted": 1, "visits_rejected": 0,
                              "rois_rejected": 1, "rois_rejected_by_reason": {"misregistered": 1},
                              "rois_corrected": 0}
    html = (Path(run.output_dir) / "report.html").read_text()
    assert "reviewed measurements" in html and "1 muscle ROI(s) rejected (misregistered 1)" in html


def corrected_by_a_workstation(node: Node, settings: Settings, visit_id: int, port: int, tmp_path: Path) -> None:
    """The visit's SEG with the left quadriceps moved by three columns, saved as a workstation would (another
    manufacturer, highdicom) and sent back by C-STORE: that muscle's relative T2 is re-measured on the native
    stations with the corrected labels, kept beside the automatic value; nothing else changes. A SEG that
    references no known series is stored and refused, with the reason."""
    import numpy as np

    from node.work.atlas_in_use import atlas_in_use
    from quant.corrected_labels import corrected_labels, derived_grid, seg_label_array, segment_targets
    from quant.pipeline import measure_t2
    from quant.visit_io import load_visit

    node.settle()
    with node.sessions() as s:
        seg_path = s.scalars(select(m.Instance.file_path)
                             .join(m.ResultObject, m.ResultObject.instance_fk == m.Instance.id)
                             .where(m.ResultObject.visit_fk == visit_id, m.ResultObject.kind == m.ResultKind.SEG)
                             .order_by(m.ResultObject.id.desc())).first()
        derived_paths = list(s.scalars(select(m.Instance.file_path).join(m.ResultObject, m.ResultObject.instance_fk ==
                                                                         m.Instance.id)
                                       .where(m.ResultObject.visit_fk == visit_id,
                                              m.ResultObject.kind == m.ResultKind.STITCHED_T2)))
        before = {(x.modality.value, x.muscle, x.side.value, x.source.value): x.value
                  for x in s.scalars(select(m.Measurement).where(m.Measurement.visit_fk == visit_id))}
    derived = [pydicom.dcmread(node.store.absolute(p)) for p in derived_paths]
    ours = hd.seg.segread(node.store.absolute(seg_path))
    assert derived and ours.ReferencedSeriesSequence[0].SeriesInstanceUID == derived[0].SeriesInstanceUID
    uids = [str(d.SOPInstanceUID) for d in derived]
    masks = ours.get_pixels_by_source_instance(source_sop_instance_uids=uids, assert_missing_frames_are_empty=True)
    ids = [str(i.TrackingID) for i in ours.SegmentSequence]
    k = ids.index("quadriceps_left")
    masks[..., k] = np.roll(masks[..., k], 3, axis=2)
    workstation = hd.seg.Segmentation(
        source_images=derived, pixel_array=masks.astype(np.uint8), segmentation_type="BINARY",
        segment_descriptions=[hd.seg.SegmentDescription.from_dataset(item) for item in ours.SegmentSequence],
        series_instance_uid=hd.UID(), series_number=901, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="Kitware", manufacturer_model_name="3D Slicer", software_versions="5.6.2",
        device_serial_number="WS-1")
    workstation_path = tmp_path / "corrected-seg.dcm"
    workstation.save_as(workstation_path)
    stray = pydicom.dcmread(workstation_path)
    stray.SOPInstanceUID = stray.file_meta.MediaStorageSOPInstanceUID = hd.UID()
    stray.ReferencedSeriesSequence[0].SeriesInstanceUID = hd.UID()
    stray_path = tmp_path / "stray-seg.dcm"
    stray.save_as(stray_path)
    out = subprocess.run(["storescu", "-R", "-aet", "STORESCU", "-aec", settings.node.ae_title, "127.0.0.1", str(port),
                          str(workstation_path), str(stray_path)], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr

    def handled() -> bool:
        with node.sessions() as s:
            states = s.scalars(select(m.Correction.state)).all()
        return len(states) == 2 and m.CorrectionState.PENDING not in states

    wait_for(handled, 300, "both corrections handled")
    with node.sessions() as s:
        done = {c.instance.sop_instance_uid: c for c in s.scalars(select(m.Correction))}
        applied, refused = done[str(workstation.SOPInstanceUID)], done[str(stray.SOPInstanceUID)]
        assert applied.state is m.CorrectionState.APPLIED and applied.visit_fk == visit_id, applied.reason
        assert refused.state is m.CorrectionState.REFUSED and "no stitched T2 series" in (refused.reason or "")
        after = {(x.modality.value, x.muscle, x.side.value, x.source.value): x.value
                 for x in s.scalars(select(m.Measurement).where(m.Measurement.visit_fk == visit_id))}
        stations = load_visit(s, node.store, visit_id).t2
    corrected_keys = {key for key in after if key[3] == "corrected"}
    assert corrected_keys == {("relT2", "quadriceps", "left", "corrected")}
    assert {k: v for k, v in after.items() if k[3] == "automatic"} == before  # nothing else changed
    # what the corrected labels give on the native stations
    atlas = atlas_in_use(settings.atlas)
    targets, unknown = segment_targets(workstation, atlas.table)
    assert unknown == []
    targets = {n: t for n, t in targets.items() if (t.key, t.side) == ("quadriceps", "left")}  # the one moved
    labels = corrected_labels(sitk.ReadImage(str(settings.quant.qc_dir / f"visit-{visit_id}" / "subject_labels.nii.gz")),
                              derived_grid(derived), seg_label_array(workstation, derived, targets),
                              [t.value for t in targets.values()])
    rows, _, _ = measure_t2(stations, labels, atlas, settings.quant.params())
    expected = next(r.value for r in rows if (r.muscle, r.side) == ("quadriceps", "left"))
    assert after[("relT2", "quadriceps", "left", "corrected")] == pytest.approx(expected, rel=1e-12)
    assert after[("relT2", "quadriceps", "left", "corrected")] != before[("relT2", "quadriceps", "left", "automatic")]
    run = run_report(settings, force=True)
    assert run is not None and run.state is m.RunState.DONE
    assert json.loads((Path(run.output_dir) / "run.json").read_text())["review"]["rois_corrected"] == 1


def learned_by_a_site_atlas(node: Node, settings: Settings, reviewed_id: int, tmp_path: Path) -> None:
    """The other visit accepted too, ``myonode atlas build --from-visits`` makes a site atlas of both — the corrected
    quadriceps as the workstation sent it, the rejected tibialis anterior not voting — with its leave-one-out
    accuracy; ``myonode atlas use`` pins it: both visits are queued, the report waits while they keep their old
    values, then both are measured with the site atlas — its two entries registered to each and fused — (the SR names
    it), the tables may run again and the console's
    Settings page shows the atlas, its progress and its accuracy table."""
    import httpx

    from node.work.review import decide_visit
    from quant.atlas import read_manifest
    from stats.cohort import atlas_mix
    from tests.support.console import post_login

    myonode = str(Path(sys.executable).parent / "myonode")
    assert settings.source is not None
    config = str(settings.source)
    with transaction(node.sessions) as s:
        other_id = s.scalars(select(m.Visit.id).where(m.Visit.id.in_(select(m.Study.visit_fk)),
                                                      m.Visit.id != reviewed_id)).one()
        decide_visit(s, visit_id=other_id, verdict=m.ReviewVerdict.ACCEPTED, reason=None, note=None,
                     reviewer="physicist", organisation=None)
        before = {(x.visit_fk, x.modality.value, x.muscle, x.side.value): (x.value, x.atlas_id)
                  for x in s.scalars(select(m.Measurement).where(m.Measurement.source == m.MeasurementSource.AUTOMATIC))}
    old_atlas = {atlas for _, atlas in before.values()}
    assert len(old_atlas) == 1
    folder = tmp_path / "site-atlas"
    built = subprocess.run([myonode, "atlas", "build", "--from-visits", "--min", "2", "--id", "site-e2e", "--out",
                            str(folder), "-c", config], capture_output=True, text=True, timeout=900, check=False)
    assert built.returncode == 0, built.stderr + built.stdout
    assert "atlas site-e2e written" in built.stdout and "leave-one-out Dice median" in built.stdout
    manifest = read_manifest(folder)
    assert (manifest.id, manifest.synthetic, len(manifest.entries)) == ("site-e2e", False, 2)
    entries = {e["source"]["visit_id"]: e for e in manifest.meta["entries"]}
    ta_left = next(lab.value for lab in manifest.table if (lab.key, lab.side) == ("tibialis_anterior", "left"))
    assert entries[reviewed_id]["source"]["labels"] == "reviewed_labels.nii.gz"  # the workstation's quadriceps
    assert entries[reviewed_id]["source"]["corrections"] == 1 and ta_left in entries[reviewed_id]["unusable"]
    assert entries[other_id]["source"]["labels"] == "subject_labels.nii.gz" and entries[other_id]["unusable"] == []
    accuracy = manifest.accuracy
    assert accuracy is not None and accuracy["subjects"] == 2 and accuracy["dice_median"] > 0.6
    legs = [r for r in accuracy["labels"] if r["key"] in ("quadriceps", "hamstrings")]
    assert len(legs) == 4 and all(r["dice_median"] > 0.7 for r in legs)

    used = subprocess.run([myonode, "atlas", "use", str(folder), "--by", "physicist", "-c", config],
                          capture_output=True, text=True, timeout=120, check=False)
    assert used.returncode == 0, used.stderr
    assert "measured with site-e2e; 2 visit(s) queued" in used.stdout
    waiting = run_report(settings, force=True)  # a small visit takes tens of seconds: neither is done yet
    assert waiting is not None and waiting.state is m.RunState.FAILED
    assert "the study is measured with site-e2e" in (waiting.error or "") and "still wait" in (waiting.error or "")
    with node.sessions() as s:
        kept = {(x.visit_fk, x.modality.value, x.muscle, x.side.value): (x.value, x.atlas_id)
                for x in s.scalars(select(m.Measurement).where(m.Measurement.source == m.MeasurementSource.AUTOMATIC))}
    old_still = {k: v for k, v in kept.items() if v[1] in old_atlas}
    assert old_still and all(before[k] == v for k, v in old_still.items())  # a visit that waits keeps its values

    def remeasured() -> bool:
        with node.sessions() as s:
            jobs = s.scalars(select(m.Job.state).where(m.Job.kind == "process_visit")).all()
            atlases = set(s.scalars(select(m.Measurement.atlas_id)
                                    .where(m.Measurement.source == m.MeasurementSource.AUTOMATIC)))
            states = set(s.scalars(select(m.Visit.state).where(m.Visit.id.in_((reviewed_id, other_id)))))
        assert m.JobState.FAILED not in jobs, "a re-processing job failed"
        return atlases == {"site-e2e"} and states == {m.VisitState.PROCESSED}

    wait_for(remeasured, 600, "both visits measured with the site atlas")
    node.settle()
    for visit_id in (reviewed_id, other_id):  # each visit measured with both entries registered to it and fused
        provenance = json.loads((settings.quant.qc_dir / f"visit-{visit_id}" / "provenance.json").read_text())
        assert sorted(provenance["atlas_entries_fused"]) == sorted(e["name"] for e in entries.values())
    with node.sessions() as s:
        sr_path = s.scalars(select(m.Instance.file_path).join(m.ResultObject)
                            .where(m.ResultObject.visit_fk == other_id, m.ResultObject.kind == m.ResultKind.SR)
                            .order_by(m.ResultObject.id.desc())).first()
    assert sr_path is not None
    assert b"atlas_id=site-e2e" in node.store.absolute(sr_path).read_bytes()  # the SR's algorithm parameters
    with node.sessions() as s:  # the tables may run again (what the report checks first; it ran above)
        assert atlas_mix(s, None, "site-e2e") is None

    assert node.web is not None
    with httpx.Client(base_url=f"http://127.0.0.1:{node.web.port}", timeout=30) as client:
        assert post_login(client, "physicist", "a long operator password").status_code in (200, 303)
        page = client.get("/settings").text
    assert "site-e2e" in page and 'id="atlas-accuracy"' in page and "pinned for the study by physicist" in page
    assert "2 measured with it" in page and "wait to be processed again" not in page
