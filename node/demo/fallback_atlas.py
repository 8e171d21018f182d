"""``[atlas] path`` filled in with the default phantom atlas when a site named none (the commands that start a node).

A synthetic atlas measures real patients only as well as the phantom resembles them: the
warning says so every time a node starts with it.
"""

from __future__ import annotations

import logging

from node.settings import Settings
from phantom.default_atlas import ensure_default_atlas

log = logging.getLogger(__name__)


def with_default_atlas(settings: Settings) -> Settings:
    """``settings`` as they are when ``[atlas] path`` is set; else with the default phantom atlas (built once)."""
    if settings.atlas.path is not None:
        return settings
    path = ensure_default_atlas(settings.atlas.default_subjects)
    log.warning("[atlas] path is not set: measuring with the default atlas %s, built from %d synthetic phantom "
                "subjects (not from real anatomy)", path.name, settings.atlas.default_subjects)
    return settings.model_copy(update={"atlas": settings.atlas.model_copy(update={"path": path})})
