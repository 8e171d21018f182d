"""Atlases: a T2 template, a label volume and a label table, in a folder anyone can make.

Format (one folder):

- ``atlas.json``: ``{"id", "description", "template", "labels", "label_table": [...]}``
  where each label-table entry is ``{"value", "key", "side", "tissue", "name",
  "reference"}``: ``key`` is a muscle key of the catalogue for muscles (``tissue`` =
  ``"muscle"``) or a tissue key; marrow compartments have ``tissue`` = ``"marrow"`` and
  serve as relative-T2 references; ``reference`` (muscles only, optional) names the marrow
  key preferred as that muscle's reference when it is in the same station.
- ``template`` (NIfTI): stitched whole-body T2-weighted template, LPS geometry.
- ``labels`` (NIfTI, integer): label volume in the template's physical space (any spacing).
- ``regions`` (optional): ``[{"name", "template", "labels", "refine": [values]}]`` — finer
  templates and labels of small parts of the same space (e.g. each hand at 1 mm) that
  :mod:`quant.regional` registers again, locally, after the whole-body registration; only the
  label values in ``refine`` are replaced by the regional result.

- ``entries`` (optional, a multi-atlas built by :mod:`quant.atlas_build`): ``[{"name", "labels", "t2", "unusable",
  "source"}]`` — each subject it was built from, its labels and its T2 carried into the template's space (``t2``: 0
  outside the subject's field of view; atlases built before 2026-12-07 have none), and the label values a reviewer
  rejected in it (``unusable``: they never vote). Entries with a T2 are what a visit's multi-atlas fusion
  (:mod:`quant.fusion`) refines and fuses;
- ``accuracy`` (optional): the build's leave-one-out accuracy (:func:`quant.atlas_build.leave_one_out`);
- ``source`` (optional): what it was made from (visits, a folder).

The default atlas is built from phantom subjects (``myonode atlas build``) and says it is synthetic
(``"synthetic": true``); a site makes one from its own reviewed visits (``myonode atlas build --from-visits``) or
contoured scans (``myonode atlas import``) with :mod:`quant.atlas_build`. This module reads and writes the
folder and checks what it reads: the label table (:func:`read_label_table`) and contoured subjects
(:func:`contoured_subjects`) with errors that name the file, line and label.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from quant.volumes import same_grid
from storage.catalogue import MUSCLE_BY_KEY, Side


class AtlasError(ValueError):
    """An atlas folder that cannot be used (names the file and what is wrong)."""


@dataclass(frozen=True, kw_only=True)
class AtlasLabel:
    value: int
    key: str
    side: str  # left | right | none
    tissue: str  # muscle | marrow | … (other tissues are carried along but not measured)
    name: str
    reference: str | None = None  # preferred reference marrow key (muscles)

    @property
    def is_muscle(self) -> bool:
        return self.tissue == "muscle" and self.key in MUSCLE_BY_KEY

    @property
    def is_marrow(self) -> bool:
        return self.tissue == "marrow"


@dataclass(frozen=True, kw_only=True)
class AtlasRegion:
    """A finer template and label volume of one small part of the atlas space, refined locally."""

    name: str
    template: sitk.Image
    labels: sitk.Image
    refine: tuple[int, ...]  # label values the regional registration decides


@dataclass(frozen=True, kw_only=True)
class FusionEntry:
    """An entry of a multi-atlas as a visit uses it: its T2 in the template's space (read with the atlas), its labels
    (read when the entry is chosen: :meth:`labels`) and the label values it may not vote with."""

    name: str
    t2: sitk.Image
    labels_path: Path | None  # None: ``image`` holds them (an atlas being built, in memory)
    unusable: tuple[int, ...]
    values: frozenset[int]  # the atlas's label values
    image: sitk.Image | None = None

    def labels(self) -> sitk.Image:
        """The entry's labels (uint8, template space), checked against the label table."""
        if self.labels_path is None:
            if self.image is None:
                raise AtlasError(f"entry {self.name!r}: neither a labels file nor labels")
            return self.image
        if not self.labels_path.is_file():
            raise AtlasError(f"{self.labels_path}: entry {self.name!r}: labels file is missing")
        labels = sitk.Cast(_read_image(self.labels_path), sitk.sitkUInt8)
        unknown = set(np.unique(sitk.GetArrayViewFromImage(labels)).tolist()) - self.values - {0}
        if unknown:
            raise AtlasError(f"{self.labels_path}: label values {sorted(unknown)} are not in the label table")
        return labels


@dataclass(kw_only=True)
class Atlas:
    id: str
    path: Path
    template: sitk.Image
    labels: sitk.Image
    table: list[AtlasLabel]
    regions: list[AtlasRegion] = field(default_factory=list)
    # drawn from synthetic (phantom) subjects, not real anatomy: every result measured with it says so
    synthetic: bool = False
    entries: list[FusionEntry] = field(default_factory=list)  # a multi-atlas's entries with a T2 (quant.fusion)

    def muscles(self) -> list[AtlasLabel]:
        return [lab for lab in self.table if lab.is_muscle]

    def marrows(self) -> list[AtlasLabel]:
        return [lab for lab in self.table if lab.is_marrow]


@dataclass(frozen=True, kw_only=True)
class AtlasManifest:
    """What ``atlas.json`` says, checked, without reading an image (what the console shows of the atlas in use)."""

    id: str
    description: str
    synthetic: bool
    table: list[AtlasLabel]
    regions: list[str]  # names of the finer regional templates
    entries: list[str]  # names of the subjects a multi-atlas was built from (empty: not said)
    accuracy: dict[str, Any] | None  # the build's leave-one-out accuracy (quant.atlas_build.leave_one_out)
    meta: dict[str, Any]  # the JSON itself (image file names)


def read_manifest(path: Path) -> AtlasManifest:
    """An atlas folder's ``atlas.json``, checked (keys, label table, a marrow label, the synthetic flag)."""
    meta_path = path / "atlas.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError as exc:
        raise AtlasError(f"{meta_path}: no atlas here (make one with `myonode atlas build --out {path}`)") from exc
    except json.JSONDecodeError as exc:
        raise AtlasError(f"{meta_path}: not JSON: {exc}") from exc
    for key in ("id", "template", "labels", "label_table"):
        if key not in meta:
            raise AtlasError(f"{meta_path}: missing key {key!r}")
    table: list[AtlasLabel] = []
    for i, entry in enumerate(meta["label_table"]):
        try:
            table.append(AtlasLabel(**entry))
        except TypeError as exc:
            raise AtlasError(f"{meta_path}: label_table[{i}]: {exc}") from exc
    values = [lab.value for lab in table]
    if len(set(values)) != len(values):
        raise AtlasError(f"{meta_path}: label_table has duplicate values")
    if not any(lab.is_marrow for lab in table):
        raise AtlasError(f"{meta_path}: no marrow label: relative T2 needs a bone-marrow reference")
    synthetic = meta.get("synthetic", False)
    if not isinstance(synthetic, bool):
        raise AtlasError(f"{meta_path}: synthetic must be true or false, got {synthetic!r}")
    regions = [str(r.get("name", "?")) if isinstance(r, dict) else "?" for r in meta.get("regions", [])]
    entries = meta.get("entries", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "name" in e for e in entries):
        raise AtlasError(f"{meta_path}: entries must be a list of objects with a name")
    accuracy = meta.get("accuracy")
    if accuracy is not None and not isinstance(accuracy, dict):
        raise AtlasError(f"{meta_path}: accuracy must be an object, got {type(accuracy).__name__}")
    return AtlasManifest(id=str(meta["id"]), description=str(meta.get("description", "")), synthetic=synthetic,
                         table=table, regions=regions, entries=[str(e["name"]) for e in entries], accuracy=accuracy,
                         meta=meta)


def load_atlas(path: Path) -> Atlas:
    """Read and check an atlas folder."""
    manifest = read_manifest(path)
    meta, meta_path, table = manifest.meta, path / "atlas.json", manifest.table
    values = [lab.value for lab in table]
    template, labels = _read_pair(path, meta, meta_path, set(values))
    regions = []
    for i, entry in enumerate(meta.get("regions", [])):
        where = f"{meta_path}: regions[{i}]"
        if not isinstance(entry, dict) or not {"name", "template", "labels", "refine"} <= set(entry):
            raise AtlasError(f"{where}: needs name, template, labels and refine")
        try:
            refine = tuple(int(v) for v in entry["refine"])
        except (TypeError, ValueError) as exc:
            raise AtlasError(f"{where}: refine must list label values: {exc}") from exc
        if not set(refine) <= set(values):
            raise AtlasError(f"{where}: refine values {sorted(set(refine) - set(values))} are not in the label table")
        r_template, r_labels = _read_pair(path, entry, where, set(values))
        regions.append(AtlasRegion(name=str(entry["name"]), template=r_template, labels=r_labels, refine=refine))
    entries = []
    for i, entry in enumerate(meta.get("entries", [])):
        if "t2" not in entry:
            continue  # built before entries kept their T2: the atlas is used by its template and fused labels
        where = f"{meta_path}: entries[{i}]"
        try:
            unusable = tuple(int(v) for v in entry.get("unusable", []))
        except (TypeError, ValueError) as exc:
            raise AtlasError(f"{where}: unusable must list label values: {exc}") from exc
        if "labels" not in entry:
            raise AtlasError(f"{where}: has a t2 but no labels")
        t2_file = path / entry["t2"]
        if not t2_file.is_file():
            raise AtlasError(f"{where}: t2 file {t2_file} is missing")
        entries.append(FusionEntry(name=str(entry["name"]), t2=sitk.Cast(_read_image(t2_file), sitk.sitkFloat32),
                                   labels_path=path / entry["labels"], unusable=unusable, values=frozenset(values)))
    return Atlas(id=manifest.id, path=path, template=template, labels=labels, table=table, regions=regions,
                 synthetic=manifest.synthetic, entries=entries)


def _read_pair(path: Path, entry: dict, where: object, values: set[int]) -> tuple[sitk.Image, sitk.Image]:
    """The template (float32) and label (uint8) images an atlas entry names, checked against the table."""
    images = []
    for key in ("template", "labels"):
        file = path / entry[key]
        if not file.is_file():
            raise AtlasError(f"{where}: {key} file {file} is missing")
        images.append(sitk.ReadImage(str(file)))
    template, labels = images
    unknown = set(np.unique(sitk.GetArrayViewFromImage(labels)).tolist()) - values - {0}
    if unknown:
        raise AtlasError(f"{path / entry['labels']}: label values {sorted(unknown)} are not in the label table")
    return sitk.Cast(template, sitk.sitkFloat32), sitk.Cast(labels, sitk.sitkUInt8)


@dataclass(frozen=True, kw_only=True)
class AtlasEntry:
    """One subject a multi-atlas was built from (as written): its labels and T2 in the template's space, the label values a reviewer
    rejected in it (they never vote), and where it came from (a visit, a file)."""

    name: str
    labels: sitk.Image
    t2: sitk.Image | None = None  # its T2 in the template's space (0 outside its field of view)
    unusable: tuple[int, ...] = ()
    source: dict[str, Any] = field(default_factory=dict)


def save_atlas(out: Path, atlas_id: str, description: str, template: sitk.Image, labels: sitk.Image,
               table: Sequence[AtlasLabel], regions: Sequence[AtlasRegion] = (), *, synthetic: bool,
               entries: Sequence[AtlasEntry] = (), accuracy: dict[str, Any] | None = None,
               source: dict[str, Any] | None = None) -> Path:
    """Write an atlas folder atomically (a temporary sibling renamed into place); ``synthetic``: drawn from phantom
    subjects, not real anatomy (``atlas.json`` says so, and so does every result measured with it); ``entries``,
    ``accuracy`` and ``source``: a multi-atlas's subjects, its leave-one-out accuracy and what it was made from."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))

    def write(image: sitk.Image, name: str, pixel: int) -> str:
        sitk.WriteImage(sitk.Cast(image, pixel), str(tmp / name), useCompression=True)
        return name

    meta = {"id": atlas_id, "description": description, "synthetic": synthetic,
            "template": write(template, "template_t2.nii.gz", sitk.sitkFloat32),
            "labels": write(labels, "labels.nii.gz", sitk.sitkUInt8), "label_table": [asdict(lab) for lab in table]}
    if regions:
        meta["regions"] = [{"name": r.name, "template": write(r.template, f"region_{r.name}_t2.nii.gz", sitk.sitkFloat32),
                            "labels": write(r.labels, f"region_{r.name}_labels.nii.gz", sitk.sitkUInt8),
                            "refine": list(r.refine)} for r in regions]
    if entries:
        meta["entries"] = [{"name": e.name, "labels": write(e.labels, f"entry_{i:03d}_labels.nii.gz", sitk.sitkUInt8),
                            **({"t2": write(e.t2, f"entry_{i:03d}_t2.nii.gz", sitk.sitkFloat32)} if e.t2 is not None else {}),
                            "unusable": sorted(e.unusable), "source": e.source} for i, e in enumerate(entries)]
    if accuracy is not None:
        meta["accuracy"] = accuracy
    if source is not None:
        meta["source"] = source
    (tmp / "atlas.json").write_text(json.dumps(meta, indent=1))
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)
    return out


LABEL_TABLE_COLUMNS = ("value", "key", "side", "tissue", "name", "reference")
T2_SUFFIX, LABELS_SUFFIX = "_t2.nii.gz", "_labels.nii.gz"


def read_label_table(path: Path) -> list[AtlasLabel]:
    """A label table CSV (columns :data:`LABEL_TABLE_COLUMNS`, ``reference`` may be empty): values 0–255 and unique,
    sides left / right / none, a muscle's key and side from the catalogue, a reference naming a marrow key of the
    table, at least one marrow. Raises :class:`AtlasError` naming the file, line and column."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise AtlasError(f"{path}: cannot read the label table: {exc}") from exc
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in LABEL_TABLE_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise AtlasError(f"{path}: missing column(s) {', '.join(missing)} (needs {', '.join(LABEL_TABLE_COLUMNS)})")
    table: list[AtlasLabel] = []
    seen: dict[int, int] = {}
    for line, row in enumerate(reader, start=2):
        where = f"{path}, line {line}"
        try:
            value = int(row["value"])
        except (TypeError, ValueError):
            raise AtlasError(f"{where}, column value: {row['value']!r} is not an integer") from None
        if not 0 <= value <= 255:
            raise AtlasError(f"{where}, column value: {value} is outside 0–255")
        if value in seen:
            raise AtlasError(f"{where}, column value: {value} is also on line {seen[value]}")
        seen[value] = line
        key, side, tissue = (row[c].strip() for c in ("key", "side", "tissue"))
        if not key or not tissue:
            raise AtlasError(f"{where}: key and tissue must not be empty")
        if side not in {s.value for s in Side}:
            raise AtlasError(f"{where}, column side: {side!r} is not left, right or none")
        if tissue == "muscle":
            if key not in MUSCLE_BY_KEY:
                raise AtlasError(f"{where}, column key: {key!r} is not a muscle of the catalogue")
            if side not in MUSCLE_BY_KEY[key].sides:
                raise AtlasError(f"{where}, column side: {key} takes side {'/'.join(MUSCLE_BY_KEY[key].sides)}")
        table.append(AtlasLabel(value=value, key=key, side=side, tissue=tissue, name=row["name"].strip() or key,
                                reference=(row["reference"] or "").strip() or None))
    marrows = {lab.key for lab in table if lab.is_marrow}
    if not marrows:
        raise AtlasError(f"{path}: no marrow label (tissue marrow): relative T2 needs a bone-marrow reference")
    for lab in table:
        if lab.reference is not None and lab.reference not in marrows:
            raise AtlasError(f"{path}, line {seen[lab.value]}, column reference: {lab.reference!r} is no marrow key "
                             f"of the table ({', '.join(sorted(marrows))})")
    return table


def _read_image(path: Path) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise AtlasError(f"{path}: not an image SimpleITK reads: {str(exc).strip().splitlines()[-1]}") from None


def contoured_subjects(folder: Path, table: Sequence[AtlasLabel]) -> dict[str, tuple[sitk.Image, sitk.Image]]:
    """The ``NAME_t2.nii.gz`` / ``NAME_labels.nii.gz`` pairs of ``folder`` by NAME, sorted, checked: every image has
    its partner, labels are integer and in their T2's physical space, and hold only values of ``table``."""
    t2s = {p.name[: -len(T2_SUFFIX)]: p for p in folder.glob(f"*{T2_SUFFIX}")}
    labels = {p.name[: -len(LABELS_SUFFIX)]: p for p in folder.glob(f"*{LABELS_SUFFIX}")}
    alone = sorted({*t2s, *labels} - (set(t2s) & set(labels)))
    if alone:
        raise AtlasError(f"{folder}: no partner for {', '.join(alone)} (each subject needs NAME{T2_SUFFIX} and "
                         f"NAME{LABELS_SUFFIX})")
    if not t2s:
        raise AtlasError(f"{folder}: no contoured subject (NAME{T2_SUFFIX} with NAME{LABELS_SUFFIX})")
    known = {lab.value for lab in table}
    samples = {}
    for name in sorted(t2s):
        t2, lab = _read_image(t2s[name]), _read_image(labels[name])
        if lab.GetPixelID() not in (sitk.sitkUInt8, sitk.sitkUInt16, sitk.sitkInt8, sitk.sitkInt16, sitk.sitkInt32,
                                    sitk.sitkUInt32):
            raise AtlasError(f"{labels[name]}: labels must be integers, not {lab.GetPixelIDTypeAsString()}")
        if not same_grid(t2, lab, position_mm=1e-3, spacing_mm=1e-4):
            raise AtlasError(f"{labels[name]}: not on the grid of {t2s[name].name} (size, origin, spacing and "
                             "direction must match)")
        present = set(np.unique(sitk.GetArrayViewFromImage(lab)).tolist())
        unknown = sorted(present - known - {0})
        if unknown:
            raise AtlasError(f"{labels[name]}: label values {unknown} are not in the label table")
        samples[name] = (sitk.Cast(t2, sitk.sitkFloat32), sitk.Cast(lab, sitk.sitkUInt8))
    return samples
