"""The console's atlas actions: an operator pins a site atlas for the study and asks for one to be built from the
reviewed visits (a job that says why it cannot be built); a viewer sees them and cannot act."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import unquote

import httpx
from sqlalchemy import select

from node.service import Node
from node.web.accounts import add_user
from node.work.atlas_in_use import current_pin
from storage import models as m
from storage.database import transaction
from tests.node.test_site_atlas import atlas_folder
from tests.support.console import csrf_of, post_login


def client_of(node: Node, name: str, password: str) -> tuple[httpx.Client, str]:
    assert node.web is not None
    client = httpx.Client(base_url=f"http://127.0.0.1:{node.web.port}", follow_redirects=False, timeout=30)
    assert post_login(client, name, password).status_code == 303
    return client, csrf_of(client.get("/jobs").text)


def message(response: httpx.Response) -> str:
    assert response.status_code == 303, response.text
    return unquote(response.headers["location"].partition("message=")[2])


def test_an_operator_pins_a_site_atlas_and_a_build_without_reviewed_visits_fails_saying_why(
        running_node: Callable[..., Node]) -> None:
    node = running_node()
    with transaction(node.sessions) as s:
        add_user(s, name="olivia", password="operator password", role=m.Role.OPERATOR)
        add_user(s, name="victor", password="viewer password", role=m.Role.VIEWER)
    operator, csrf = client_of(node, "olivia", "operator password")
    viewer, viewer_csrf = client_of(node, "victor", "viewer password")
    page = operator.get("/settings").text
    assert 'id="site-atlases-none"' in page and 'id="build-atlas"' in page
    assert 'id="build-atlas"' not in viewer.get("/settings").text

    atlas_folder(node.settings.atlas.site_dir / "site-x", "site-x")
    assert 'id="site-atlas-site-x"' in operator.get("/settings").text
    assert viewer.post("/settings/atlas/use", data={"csrf": viewer_csrf, "atlas_id": "site-x"}).status_code == 403
    assert "not done: no site atlas '../x'" in message(
        operator.post("/settings/atlas/use", data={"csrf": csrf, "atlas_id": "../x"}))
    said = message(operator.post("/settings/atlas/use", data={"csrf": csrf, "atlas_id": "site-x"}))
    assert said == "the study is measured with site-x; 0 visit(s) queued to be processed again"
    with node.sessions() as s:
        pin = current_pin(s)
        assert pin is not None and (pin.atlas_id, pin.pinned_by) == ("site-x", "olivia")
        assert s.scalars(select(m.AuditEvent.action).where(m.AuditEvent.actor == "olivia")).all()[-1] == "atlas use"
    page = operator.get("/settings").text
    assert "pinned for the study by olivia" in page and "in use" in page

    assert "not done: atlas id 'a b'" in message(
        operator.post("/settings/atlas/build", data={"csrf": csrf, "atlas_id": "a b"}))
    assert "exists already" in message(operator.post("/settings/atlas/build", data={"csrf": csrf,
                                                                                     "atlas_id": "site-x"}))
    said = message(operator.post("/settings/atlas/build", data={"csrf": csrf, "atlas_id": "site-y"}))
    assert said.startswith("building site atlas site-y from the reviewed visits (job ")
    deadline = time.monotonic() + 60
    job = None
    while time.monotonic() < deadline:
        with node.sessions() as s:
            job = s.scalars(select(m.Job).where(m.Job.kind == "build_site_atlas")).one()
            if job.state is m.JobState.FAILED:
                break
        time.sleep(0.2)
    assert job is not None and job.state is m.JobState.FAILED and job.attempts == 1
    assert "0 reviewed visit(s) measured with site-x can be used, at least 3 are needed" in (job.last_error or "")
    assert not (node.settings.atlas.site_dir / "site-y").exists()
