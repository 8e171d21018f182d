"""The atlas the node propagates: the one ``[atlas] path`` names, loaded once while its ``atlas.json`` is unchanged.

The serving code builds no atlas. With ``[atlas] path`` unset, the command that starts a node
(``myonode serve``, ``worker``, ``process``, ``demo``) fills it in with the default phantom atlas
and says so (:func:`node.demo.fallback_atlas.with_default_atlas`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from node.settings import AtlasSettings
from quant.atlas import Atlas, load_atlas


class NoAtlasError(RuntimeError):
    """``[atlas] path`` names no atlas."""


@lru_cache(maxsize=4)
def _load(path: Path, mtime: float) -> Atlas:
    return load_atlas(path)


def atlas_in_use(atlas: AtlasSettings) -> Atlas:
    """The configured atlas, loaded (cached while its atlas.json is unchanged)."""
    if atlas.path is None:
        raise NoAtlasError("[atlas] path is not set: name an atlas folder (atlas.json, template, labels), or start "
                           "the node with `myonode serve`, which uses the default phantom atlas when none is named")
    manifest = atlas.path / "atlas.json"
    if not manifest.is_file():
        raise NoAtlasError(f"[atlas] path {atlas.path}: no atlas.json there")
    return _load(atlas.path, manifest.stat().st_mtime)
