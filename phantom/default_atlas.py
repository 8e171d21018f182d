"""The default atlas: built from phantom subjects (fixed seeds disjoint from every cohort's), kept in a cache.

It is what the demo, the tests and the benchmarks measure with, and what ``myonode serve`` falls back to
(with a warning: a synthetic atlas) when ``[atlas] path`` is unset — the serving code itself only
loads the atlas its settings name (:mod:`node.work.atlas_in_use`). Built on first use (the same on every
machine) into the atlas cache (:func:`atlas_cache`), with a file lock so two processes never build it at
once; its id changes with the code it is made from, so a change rebuilds it.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quant.atlas import AtlasLabel

# The phantom and the registration stack are imported only to build (seconds of CPU at every start of a node
# and of each of its worker processes otherwise, for an atlas that is almost always in the cache already).

log = logging.getLogger(__name__)

DEFAULT_ATLAS_VERSION = "3"  # 2: regional hand templates; 3: atlas.json says it is synthetic

# The code the default atlas is made from: when any of it changes, so does the atlas id (and it is rebuilt).
ATLAS_SOURCES = ("phantom/anatomy.py", "phantom/contrast.py", "phantom/geometry.py", "phantom/atlas_subjects.py",
                 "phantom/default_atlas.py", "quant/atlas.py", "quant/atlas_build.py", "quant/register.py")


def default_atlas_id(subjects: int) -> str:
    root = Path(__file__).resolve().parents[1]  # the source tree: phantom/default_atlas.py → ./
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
    from phantom.anatomy import LABELS
    from phantom.atlas_subjects import reference_for
    from quant.atlas import AtlasLabel

    return [AtlasLabel(value=lab.value, key=lab.key, side=lab.side, tissue=lab.tissue, name=lab.name,
                       reference=reference_for(lab)) for lab in LABELS]


def build_phantom_atlas(out: Path, subjects: int) -> Path:
    """Build the default atlas from ``subjects`` phantom subjects (seeds disjoint from every cohort's)."""
    from phantom.atlas_subjects import atlas_subject, hand_regions
    from quant.atlas import AtlasRegion, save_atlas
    from quant.atlas_build import Subject, build_atlas

    samples = [atlas_subject(k) for k in range(subjects)]
    built = build_atlas([Subject(name=f"atlas subject {k}", t2=t2, labels=labels) for k, (t2, labels) in
                         enumerate(samples)], reference=0, partial_fields=False)
    template, labels = built.template, built.labels
    regions = [AtlasRegion(name=name, template=template, labels=labels, refine=refine)
               for name, template, labels, refine in hand_regions(samples[0][1])]
    description = (f"Default myonode atlas: {subjects} healthy phantom subjects (atlas seeds), registered to the "
                   f"first and fused by majority vote; each hand also at 1 mm (subject 0) for regional refinement")
    return save_atlas(out, default_atlas_id(subjects), description, template, labels, phantom_label_table(), regions,
                      synthetic=True)


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
