"""DICOMweb under generated input (hypothesis): no query, path or upload a client can send gets a 5xx.

Query parameters are drawn from the attributes QIDO-RS matches, any keyword or tag, paging and includefield,
with values of any text (wildcards, backslashes, ranges, control characters, long runs); paths from any
UID-like or unlike text; STOW-RS bodies from any bytes under any boundary. Bounded: a fixed number of
examples against one running node."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.dimse.qr import IMAGE_KEYS, PATIENT_KEYS, SERIES_KEYS, STUDY_KEYS
from node.service import Node
from tests.node.test_web import PASSWORDS, accounts, url

AUTH = ("olivia", PASSWORDS["olivia"][0])
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

names = st.one_of(
    st.sampled_from([*PATIENT_KEYS, *STUDY_KEYS, *SERIES_KEYS, *IMAGE_KEYS, "limit", "offset", "includefield",
                     "fuzzymatching", "ReferencedSOPSequence", "PixelData", "00100010", "60003000", "7FE00010"]),
    st.text(min_size=1, max_size=12),
)
values = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["*", "**************!", "DOE*", "?", "\\", "a\\b", "-", "20260101-", "-20261231",
                     "20260101-20261231", "1.2.3\\1.2.4", "' OR 1=1 --", "%", "_", "[a]", "0", "-1", "1e999",
                     "x" * 3000]),
)
paths = st.one_of(st.text(min_size=1, max_size=70), st.sampled_from(["*", " ", "1.2.3", "..", "%00", "a" * 200]))
LEVELS = ["/studies", "/series", "/instances", "/studies/1.2.3/series", "/studies/1.2.3/instances",
          "/studies/1.2.3/series/1.2.4/instances"]


@pytest.fixture
def node(running_node) -> Node:
    node = running_node()
    accounts(node)
    return node


@FUZZ
@given(level=st.sampled_from(LEVELS), params=st.lists(st.tuples(names, values), max_size=4))
def test_no_qido_query_gets_a_server_error(node: Node, level: str, params: list[tuple[str, str]]) -> None:
    answer = httpx.get(f"{url(node)}/dicomweb{level}", params=params, auth=AUTH, timeout=30)
    assert answer.status_code < 500, (level, params, answer.text[:300])


@FUZZ
@given(study=paths, series=paths, instance=paths,
       tail=st.sampled_from(["", "/metadata", "/frames/1", "/frames/1,2", "/frames/x", "/bulkdata/7FE00010",
                             "/bulkdata/zz"]))
def test_no_wado_path_gets_a_server_error(node: Node, study: str, series: str, instance: str, tail: str) -> None:
    path = f"/dicomweb/studies/{quote(study, safe='')}/series/{quote(series, safe='')}" \
           f"/instances/{quote(instance, safe='')}{tail}"
    answer = httpx.get(url(node) + path, auth=AUTH, timeout=30)
    assert answer.status_code < 500, (path, answer.text[:300])


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(boundary=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=80),
       body=st.binary(max_size=4096), content_type=st.sampled_from(["multipart/related; type=\"application/dicom\"",
                                                                    "multipart/related", "application/dicom", ""]))
def test_no_stow_body_gets_a_server_error(node: Node, boundary: str, body: bytes, content_type: str) -> None:
    header = f"{content_type}; boundary={boundary}" if content_type else ""
    answer = httpx.post(f"{url(node)}/dicomweb/studies", content=body, auth=AUTH, timeout=30,
                        headers={"Content-Type": header})
    assert answer.status_code < 500, (header, body[:100], answer.text[:300])
