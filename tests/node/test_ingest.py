"""The re-send rule (a pure decision): duplicate, keep first, replace, or a new flagged version."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.filebase import DicomBytesIO

from node.intake.ingest import StoredVersion, content_sha256, plan, same_content


def versions(*shas: str) -> list[StoredVersion]:
    return [StoredVersion(id=10 + i, version=i + 1, sha256=sha, file_path=f"f{i}") for i, sha in enumerate(shas)]


@pytest.mark.parametrize("policy", ["keep_first", "replace", "keep_both"])
def test_a_first_instance_is_stored_as_version_1(policy) -> None:
    decided = plan([], "a", policy)
    assert (decided.action, decided.version, decided.conflict) == ("stored", 1, False)


@pytest.mark.parametrize("policy", ["keep_first", "replace", "keep_both"])
def test_identical_content_is_a_duplicate_whatever_the_policy(policy) -> None:
    decided = plan(versions("a", "b"), "a", policy)
    assert (decided.action, decided.version, decided.existing_id) == ("duplicate", None, 11)


def test_keep_first_stores_nothing_and_points_at_the_first() -> None:
    decided = plan(versions("a", "b"), "c", "keep_first")
    assert (decided.action, decided.version, decided.existing_id) == ("kept_first", None, 10)


def test_replace_stores_the_next_version_and_names_every_older_one() -> None:
    decided = plan(versions("a", "b"), "c", "replace")
    assert (decided.action, decided.version, decided.conflict) == ("replaced", 3, False)
    assert [v.id for v in decided.replaced] == [10, 11]


def test_keep_both_stores_the_next_version_flagged() -> None:
    decided = plan(versions("a"), "c", "keep_both")
    assert (decided.action, decided.version, decided.conflict, decided.replaced) == ("new_version", 2, True, ())


def test_the_same_data_set_written_by_another_application_is_the_same_content_and_a_changed_one_is_not() -> None:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    original = Path(path).read_bytes()
    ds = dcmread(path)
    ds.file_meta.ImplementationClassUID, ds.file_meta.ImplementationVersionName = "1.2.3.4", "OTHER_APP"
    buffer = DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    rewritten = buffer.getvalue()
    assert rewritten != original and content_sha256(rewritten) == content_sha256(original)
    assert content_sha256(rewritten[128 + 4:]) == content_sha256(original)  # sent without the preamble
    assert same_content(original, rewritten)
    ds.PatientName = "Other^Patient"
    changed = DicomBytesIO()
    ds.save_as(changed, enforce_file_format=True)
    assert content_sha256(changed.getvalue()) != content_sha256(original)
    assert not same_content(original, changed.getvalue())
