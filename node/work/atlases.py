"""Which atlas the node propagates: ``[atlas] path``, or the default one built from phantom subjects.

The default atlas is built on first use (fixed seeds, so every node builds the same one)
into the atlas cache (:func:`atlas_cache`), with a file lock so two workers never build it
at once; ``myonode atlas build`` builds one anywhere.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from functools import lru_cache
from pathlib import Path

from phantom.anatomy import LABELS
from phantom.atlas import atlas_subject, hand_regions, reference_for
from quant.atlas import (
    Atlas,
    AtlasLabel,
    AtlasRegion,
    build_atlas,
    load_atlas,
    save_atlas,
)

log = logging.getLogger(__name__)

DEFAULT_ATLAS_VERSION = "2"  # 2: regional hand templates


# The code the default atlas is made from: when any of it changes, so does the atlas id (and it is rebuilt).
ATLAS_SOURCES = ("phantom/anatomy.py", "phantom/contrast.py", "phantom/geometry.py", "phantom/atlas.py",
                 "quant/atlas.py", "quant/register.py")


def default_atlas_id(subjects: int) -> str:
    root = Path(__file__).resolve().parents[2]  # the source tree: node/work/atlases.py → ./
    digest = hashlib.sha256(b"".join((root / name).read_bytes() for name in ATLAS_SOURCES)).hexdigest()[:10]
    return f"myonode-phantom-v{DEFAULT_ATLAS_VERSION}-n{subjects}-{digest}"


def atlas_cache() -> Path:
    """Where default atlases are kept: $MYONODE_ATLAS_CACHE, else $XDG_CACHE_HOME/myonode/atlas
    (~/.cache/myonode/atlas). Shared by every node, test and demo on the machine: the build is
    deterministic, and the id changes with the code it is built from."""
    if os.environ.get("MYONODE_ATLAS_CACHE"):
        return Path(os.environ["MYONODE_ATLAS_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "myonode" / "atlas"


def phantom_label_table() -> list[AtlasLabel]:
    return [AtlasLabel(value=lab.value, key=lab.key, side=lab.side, tissue=lab.tissue, name=lab.name, reference=reference_for(lab)) for lab in LABELS]


def build_phantom_atlas(out: Path, subjects: int) -> Path:
    """Build the default atlas from ``subjects`` phantom subjects (seeds disjoint from every cohort's)."""
    samples = [atlas_subject(k) for k in range(subjects)]
    template, labels = build_atlas(samples)
    regions = [AtlasRegion(name=name, template=template, labels=labels, refine=refine)
               for name, template, labels, refine in hand_regions(samples[0][1])]
    description = (f"Default myonode atlas: {subjects} healthy phantom subjects (atlas seeds), registered to the "
                   f"first and fused by majority vote; each hand also at 1 mm (subject 0) for regional refinement")
    return save_atlas(out, default_atlas_id(subjects), description, template, labels, phantom_label_table(), regions)


def ensure_default_atlas(subjects: int) -> Path:
    """The default atlas folder, built first if it is not there yet (under a lock)."""
    path = atlas_cache() / default_atlas_id(subjects)
    if (path / "atlas.json").is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (path / "atlas.json").is_file():
            log.info("building the default atlas %s from %d phantom subjects (once)", path, subjects)
            build_phantom_atlas(path, subjects)
    return path


@lru_cache(maxsize=4)
def _load(path: Path, mtime: float) -> Atlas:
    return load_atlas(path)


def resolve_atlas(atlas_path: Path | None, default_subjects: int) -> Atlas:
    """The configured atlas, loaded (cached while its atlas.json is unchanged)."""
    path = atlas_path if atlas_path is not None else ensure_default_atlas(default_subjects)
    return _load(path, (path / "atlas.json").stat().st_mtime if (path / "atlas.json").exists() else 0.0)
