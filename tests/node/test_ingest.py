"""The re-send rule (a pure decision): duplicate, keep first, replace, or a new flagged version."""

from __future__ import annotations

import pytest

from node.intake.ingest import StoredVersion, plan


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
