"""The atlas the node propagates, and the one place that decides which: the study's pinned atlas, else ``[atlas] path``.

A person pins an atlas for the study (``myonode atlas use DIR``, :func:`pin_atlas`): a row of
``atlas_pins``, the newest of which holds. Pinning queues a ``process_visit`` job for every visit measured with
another atlas; each keeps its old values until its new ones are committed (the job's one transaction), and the
statistics refuse to mix atlases meanwhile (:func:`stats.cohort.atlas_mix`). With no pin, the atlas is the one
``[atlas] path`` names. The atlas is loaded once while its ``atlas.json`` is unchanged; a pinned folder whose
``atlas.json`` now names another id is refused (the folder was rebuilt in place: pin it again).

The serving code builds no atlas. With ``[atlas] path`` unset, the command that starts a node
(``myonode serve``, ``worker``, ``process``, ``demo``) fills it in with the default phantom atlas
and says so (:func:`node.demo.fallback_atlas.with_default_atlas`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.settings import AtlasSettings
from quant.atlas import Atlas, AtlasError, AtlasManifest, load_atlas, read_manifest
from storage import models as m


class NoAtlasError(RuntimeError):
    """``[atlas] path`` names no atlas, or the pinned atlas is not what was pinned."""


@lru_cache(maxsize=4)
def _load(path: Path, mtime: float) -> Atlas:
    return load_atlas(path)


def current_pin(s: Session) -> m.AtlasPin | None:
    """The study's pinned atlas (the newest pin), if a person pinned one."""
    return s.scalar(select(m.AtlasPin).order_by(m.AtlasPin.id.desc()).limit(1))


def atlas_path(atlas: AtlasSettings, pin: m.AtlasPin | None) -> tuple[Path, str | None]:
    """The folder of the atlas in use, and the id it must have (a pin's) or None (``[atlas] path``'s)."""
    if pin is not None:
        return Path(pin.path), pin.atlas_id
    if atlas.path is None:
        raise NoAtlasError("[atlas] path is not set: name an atlas folder (atlas.json, template, labels), or start "
                           "the node with `myonode serve`, which uses the default phantom atlas when none is named")
    return atlas.path, None


def atlas_in_use(atlas: AtlasSettings, pin: m.AtlasPin | None = None) -> Atlas:
    """The atlas in use (``pin``'s, else the configured one), loaded (cached while its atlas.json is unchanged)."""
    path, expected = atlas_path(atlas, pin)
    manifest = path / "atlas.json"
    if not manifest.is_file():
        raise NoAtlasError(f"{'the pinned atlas' if expected else '[atlas] path'} {path}: no atlas.json there")
    loaded = _load(path, manifest.stat().st_mtime)
    if expected is not None and loaded.id != expected:
        raise NoAtlasError(f"the study is pinned to atlas {expected} at {path}, which now holds {loaded.id}: pin it "
                           f"again with `myonode atlas use {path}` (its visits are then measured again)")
    return loaded


@dataclass(frozen=True, kw_only=True)
class Pinned:
    atlas_id: str
    synthetic: bool
    queued: list[int]  # visit ids queued for re-processing


def pin_atlas(s: Session, path: Path, by: str, queue: Callable[[Session, int], object]) -> Pinned:
    """Pin the atlas at ``path`` for the study (in the caller's transaction) and queue (``queue(s, visit_id)``) every
    processed or failed visit whose measurements come from another atlas. Raises :class:`quant.atlas.AtlasError`
    for a folder that is no atlas (checked by loading it: images and label table)."""
    path = path.resolve()
    atlas = load_atlas(path)
    measured = s.execute(select(m.Visit.id, m.Measurement.atlas_id).join(m.Measurement)
                         .where(m.Visit.state.in_((m.VisitState.PROCESSED, m.VisitState.FAILED)),
                                m.Measurement.source == m.MeasurementSource.AUTOMATIC)
                         .distinct()).all()
    failed = s.scalars(select(m.Visit.id).where(m.Visit.state == m.VisitState.FAILED)).all()
    waiting = sorted({visit for visit, atlas_id in measured if atlas_id != atlas.id} | set(failed))
    for visit_id in waiting:
        queue(s, visit_id)
    s.add(m.AtlasPin(atlas_id=atlas.id, path=str(path), synthetic=atlas.synthetic, pinned_by=by,
                     visits_queued=len(waiting)))
    return Pinned(atlas_id=atlas.id, synthetic=atlas.synthetic, queued=waiting)


def manifest_in_use(atlas: AtlasSettings, pin: m.AtlasPin | None) -> tuple[Path | None, AtlasManifest | None, str | None]:
    """What the console shows of the atlas in use: its folder, its manifest, or why it cannot be read."""
    try:
        path, _ = atlas_path(atlas, pin)
    except NoAtlasError as exc:
        return None, None, str(exc)
    try:
        return path, read_manifest(path), None
    except AtlasError as exc:
        return path, None, str(exc)


def atlas_id_in_use(s: Session, atlas: AtlasSettings) -> str | None:
    """The id of the atlas the study is measured with (the pin's, else ``[atlas] path``'s); None when neither names
    a readable atlas."""
    _, manifest, _ = manifest_in_use(atlas, current_pin(s))
    return manifest.id if manifest else None

