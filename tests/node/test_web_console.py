"""The console in a real browser (Debian's Chromium through Selenium): sign in, find a study by patient, retry a
failed job and see its state change, give an unknown patient to a subject — and the audit log says who did it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from sqlalchemy import select

from node.service import Node
from node.web.accounts import add_user
from node.work.jobs import PROCESS_VISIT, target_of_visit
from storage import models as m
from storage.database import transaction
from tests.support.browser import chromium, screenshot, sign_in, wait_for_text, wait_for_url
from tests.support.dcmtk import dcmtk
from tests.support.dicom_factory import write_series

pytestmark = pytest.mark.slow  # a browser and a node


def push(node: Node, folder: Path, patient_id: str) -> None:
    paths = write_series(folder, 2, patient_id=patient_id)
    out = dcmtk("storescu", "-aet", "STORESCU", "-aec", "MYONODE", "127.0.0.1", str(node.listener.port),
                *map(str, paths))
    assert out.returncode == 0, out.stdout


def test_an_operator_finds_a_study_retries_a_job_and_assigns_a_patient(running_node: Callable[..., Node],
                                                                        tmp_path: Path) -> None:
    node = running_node()
    with transaction(node.sessions) as s:
        add_user(s, name="operator1", password="operator password", role=m.Role.OPERATOR)
        s.add(m.Subject(subject_id="P007", group=m.Group.PATIENT, patient_ids=[m.SubjectPatientId(patient_id="MND-007")]))
    push(node, tmp_path / "known", "MND-007")
    push(node, tmp_path / "walk-in", "WALK-IN-9")
    node.settle()
    # a job that fails (its visit does not exist), then no consumer, so that a retried job stays queued
    job_id = node.jobs.submit(PROCESS_VISIT, target_of_visit(987654), max_attempts=1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with node.sessions() as s:
            if s.get(m.Job, job_id).state is m.JobState.FAILED:
                break
        time.sleep(0.1)
    node.jobs.stop_consumers()
    base = f"http://127.0.0.1:{node.web.port}"
    driver = chromium(tmp_path / "chromium")
    try:
        driver.get(f"{base}/jobs")
        assert "/login" in driver.current_url  # not signed in: sent to sign in first
        sign_in(driver, base, "operator1", "operator password")
        assert driver.find_element(By.ID, "today-instances").text == "4"
        driver.get(f"{base}/studies")
        driver.find_element(By.ID, "patient").send_keys("mnd-007")
        driver.find_element(By.ID, "search").click()
        wait_for_url(driver, "patient=")
        assert [a.text for a in driver.find_elements(By.CSS_SELECTOR, "#studies tr td:first-child a")] == ["MND-007"]

        driver.get(f"{base}/jobs")
        row = driver.find_element(By.ID, f"job-{job_id}")
        assert row.find_element(By.CLASS_NAME, "state").text == "failed"
        assert "987654" in row.find_element(By.CLASS_NAME, "error-text").text
        screenshot(driver, tmp_path / "console-jobs.png")
        row.find_element(By.CLASS_NAME, "retry").click()
        wait_for_text(driver, "message", f"job {job_id} queued again")
        row = driver.find_element(By.ID, f"job-{job_id}")
        assert row.find_element(By.CLASS_NAME, "state").text == "queued"

        driver.get(f"{base}/patients")
        walk_in = next(r for r in driver.find_elements(By.CSS_SELECTOR, "#patients tr") if "WALK-IN-9" in r.text)
        Select(walk_in.find_element(By.NAME, "subject_id")).select_by_visible_text("P007")
        walk_in.find_element(By.CLASS_NAME, "assign").click()
        wait_for_text(driver, "message", "now belongs to subject P007")
        assert "WALK-IN-9" not in driver.find_element(By.ID, "patients").text

        driver.get(f"{base}/audit")
        log = driver.find_element(By.ID, "audit").text
        assert "operator1 job retry job" in log and "operator1 patient assigned patient WALK-IN-9" in log
    finally:
        driver.quit()
    with node.sessions() as s:
        assert s.get(m.Job, job_id).state is m.JobState.QUEUED
        owner = s.scalars(select(m.Subject.subject_id).join(m.SubjectPatientId)
                          .where(m.SubjectPatientId.patient_id == "WALK-IN-9")).one()
    assert owner == "P007"
