"""Which real peers a run must have: ``make test`` sets MYONODE_TEST_REQUIRE=postgres,redis,registry, and a peer it
names that cannot be reached fails the test instead of skipping it."""

from __future__ import annotations

import os


def required(kind: str) -> bool:
    return kind.lower() in os.environ.get("MYONODE_TEST_REQUIRE", "").lower().split(",")
