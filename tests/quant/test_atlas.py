"""The atlas folder format: what save_atlas writes load_atlas reads back, regions included, and bad
folders are refused naming the file and the entry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from quant.atlas import AtlasEntry, AtlasError, AtlasLabel, AtlasRegion, load_atlas, save_atlas

TABLE = [AtlasLabel(value=1, key="quadriceps", side="left", tissue="muscle", name="Quadriceps (left)", reference="marrow_femur"),
         AtlasLabel(value=2, key="marrow_femur", side="none", tissue="marrow", name="Femoral marrow"),
         AtlasLabel(value=3, key="thenar", side="left", tissue="muscle", name="Thenar (left)", reference="marrow_forearm")]


def image(values: np.ndarray, spacing: float, origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(values)
    img.SetSpacing((spacing,) * 3)
    img.SetOrigin(origin)
    return img


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1:3] = 1
    labels[3:5] = 2
    fine = np.zeros((8, 8, 8), np.uint8)
    fine[2:6, 2:6, 2:6] = 3
    region = AtlasRegion(name="hand_left", template=image(np.full((8, 8, 8), 7.0, np.float32), 1.0, (4.0, 4.0, 4.0)),
                         labels=image(fine, 1.0, (4.0, 4.0, 4.0)), refine=(3,))
    return save_atlas(tmp_path / "atlas", "test-atlas", "two compartments and a hand",
                      image(np.random.default_rng(0).random((6, 6, 6)).astype(np.float32), 4.0), image(labels, 4.0),
                      TABLE, [region], synthetic=False)


def test_round_trip_keeps_table_images_and_regions(folder: Path) -> None:
    atlas = load_atlas(folder)
    assert atlas.id == "test-atlas" and atlas.table == TABLE and not atlas.synthetic
    assert [m.key for m in atlas.muscles()] == ["quadriceps", "thenar"] and [m.key for m in atlas.marrows()] == ["marrow_femur"]
    assert np.array_equal(np.unique(sitk.GetArrayViewFromImage(atlas.labels)), [0, 1, 2])
    (region,) = atlas.regions
    assert region.name == "hand_left" and region.refine == (3,)
    assert region.template.GetOrigin() == (4.0, 4.0, 4.0) and region.template.GetSpacing() == (1.0, 1.0, 1.0)
    assert int((sitk.GetArrayViewFromImage(region.labels) == 3).sum()) == 64


def test_an_atlas_without_regions_is_still_read(folder: Path) -> None:
    meta = json.loads((folder / "atlas.json").read_text())
    del meta["regions"]
    (folder / "atlas.json").write_text(json.dumps(meta))
    assert load_atlas(folder).regions == []


@pytest.mark.parametrize("change, message", [
    (lambda m: m["regions"][0].update(refine=[9]), r"regions\[0\]: refine values \[9\] are not in the label table"),
    (lambda m: m["regions"][0].pop("labels"), r"regions\[0\]: needs name, template, labels and refine"),
    (lambda m: m["regions"][0].update(template="nowhere.nii.gz"), r"regions\[0\]: template file .*nowhere.nii.gz is missing"),
    (lambda m: m.update(label_table=[e for e in m["label_table"] if e["tissue"] != "marrow"]), "no marrow label"),
    (lambda m: m.pop("labels"), "missing key 'labels'"),
    (lambda m: m.update(synthetic="yes"), "synthetic must be true or false, got 'yes'"),
])
def test_broken_atlas_folders_are_refused_with_the_reason(folder: Path, change, message: str) -> None:
    meta = json.loads((folder / "atlas.json").read_text())
    change(meta)
    (folder / "atlas.json").write_text(json.dumps(meta))
    with pytest.raises(AtlasError, match=message):
        load_atlas(folder)


def test_label_values_missing_from_the_table_are_named(folder: Path) -> None:
    bad = np.zeros((4, 4, 4), np.uint8)
    bad[0, 0, 0] = 42
    sitk.WriteImage(image(bad, 4.0), str(folder / "labels.nii.gz"))
    with pytest.raises(AtlasError, match=r"labels.nii.gz: label values \[42\]"):
        load_atlas(folder)


def test_an_atlas_drawn_from_phantom_subjects_says_it_is_synthetic(folder: Path) -> None:
    """``atlas.json`` written with synthetic=true reads back as synthetic; one written before the key existed (a
    site's own atlas) is not."""
    meta = json.loads((folder / "atlas.json").read_text())
    assert meta["synthetic"] is False
    (folder / "atlas.json").write_text(json.dumps({**meta, "synthetic": True}))
    assert load_atlas(folder).synthetic
    del meta["synthetic"]
    (folder / "atlas.json").write_text(json.dumps(meta))
    assert not load_atlas(folder).synthetic


def multi_atlas(tmp_path: Path) -> Path:
    """An atlas of two entries, the second with a rejected quadriceps (label 1)."""
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1:3] = 1
    labels[3:5] = 2
    t2 = image(np.random.default_rng(1).random((6, 6, 6)).astype(np.float32), 4.0)
    entries = [AtlasEntry(name=f"visit {k}", labels=image(labels, 4.0), t2=t2, unusable=(1,) if k else (),
                          source={"visit_id": k}) for k in (0, 1)]
    return save_atlas(tmp_path / "multi", "multi", "two entries", t2, image(labels, 4.0), TABLE, synthetic=False,
                      entries=entries)


def test_a_multi_atlas_reads_back_its_entries_with_their_t2_and_what_they_may_not_vote_with(tmp_path: Path) -> None:
    atlas = load_atlas(multi_atlas(tmp_path))
    assert [(e.name, e.unusable) for e in atlas.entries] == [("visit 0", ()), ("visit 1", (1,))]
    assert all(e.t2.GetSize() == (6, 6, 6) and e.labels().GetPixelID() == sitk.sitkUInt8 for e in atlas.entries)


def test_entries_written_before_they_kept_their_t2_leave_the_atlas_a_single_template(tmp_path: Path) -> None:
    folder = multi_atlas(tmp_path)
    meta = json.loads((folder / "atlas.json").read_text())
    for entry in meta["entries"]:
        del entry["t2"]
    (folder / "atlas.json").write_text(json.dumps(meta))
    assert load_atlas(folder).entries == []


def test_an_entry_s_missing_or_foreign_files_are_named(tmp_path: Path) -> None:
    folder = multi_atlas(tmp_path)
    (folder / "entry_001_t2.nii.gz").unlink()
    with pytest.raises(AtlasError, match=r"entries\[1\]: t2 file .*entry_001_t2.nii.gz is missing"):
        load_atlas(folder)
    folder = multi_atlas(tmp_path / "again")
    bad = np.zeros((6, 6, 6), np.uint8)
    bad[0, 0, 0] = 42
    sitk.WriteImage(image(bad, 4.0), str(folder / "entry_000_labels.nii.gz"))
    with pytest.raises(AtlasError, match=r"entry_000_labels.nii.gz: label values \[42\] are not in the label table"):
        load_atlas(folder).entries[0].labels()
