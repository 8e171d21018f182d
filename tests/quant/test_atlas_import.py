"""A site's contoured scans become an atlas (``myonode atlas import``): checked, fused, not synthetic."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from quant.atlas import LABEL_TABLE_COLUMNS, AtlasError, load_atlas, read_label_table, read_manifest
from quant.atlas_build import import_atlas
from tests.support.calves import LEG_KEYS, write_contoured_calves


@pytest.fixture(scope="module")
def contoured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two contoured calves (phantom atlas subjects cut to 60 mm of mid-calf) and their label table."""
    return write_contoured_calves(tmp_path_factory.mktemp("contoured"), (0, 1))


def test_contoured_scans_become_an_atlas_that_is_not_synthetic(contoured: Path, tmp_path: Path) -> None:
    path = import_atlas(contoured, tmp_path / "site", "site-calves-1", "two contoured calves")
    atlas = load_atlas(path)
    assert (atlas.id, atlas.synthetic) == ("site-calves-1", False)
    assert {(m.key, m.side) for m in atlas.muscles()} == {(k, s) for k in LEG_KEYS[:2] for s in ("left", "right")}
    assert [m.key for m in atlas.marrows()] == ["marrow_tibia"]
    present = set(np.unique(sitk.GetArrayViewFromImage(atlas.labels)).tolist())
    assert {lab.value for lab in atlas.table} <= present  # every label survives the fusion
    manifest = read_manifest(path)
    assert manifest.entries == ["calf0", "calf1"]
    # leave-one-out: each calf measured with the other; mid-calf muscles of two healthy phantom subjects agree well
    accuracy = manifest.accuracy
    assert accuracy is not None and accuracy["subjects"] == 2
    rows = {(r["key"], r["side"]): r for r in accuracy["labels"]}
    assert set(rows) == {(lab.key, lab.side) for lab in atlas.table}
    assert all(r["subjects"] == 2 and 0.6 < r["dice_worst"] <= r["dice_median"] <= 1 for r in rows.values())
    assert all(r["rel_t2_diff_pct_median"] is not None and r["rel_t2_diff_pct_median"] < 10
               for r in rows.values() if r["tissue"] == "muscle")
    assert accuracy["dice_median"] == pytest.approx(
        np.median([r["dice_median"] for r in rows.values() if r["tissue"] == "muscle"]), abs=1e-4)


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows[0].update(side="both"), r"labels.csv, line 2, column side: 'both' is not left, right or none"),
    (lambda rows: rows[0].update(value="x"), r"line 2, column value: 'x' is not an integer"),
    (lambda rows: rows[1].update(value=rows[0]["value"]), r"line 3, column value: \d+ is also on line 2"),
    (lambda rows: rows[0].update(key="tibialis_posterior"), r"'tibialis_posterior' is not a muscle of the catalogue"),
    (lambda rows: rows[0].update(reference="marrow_femur"), r"column reference: 'marrow_femur' is no marrow key"),
    (lambda rows: [r.update(tissue="bone") for r in rows if r["tissue"] == "marrow"], "no marrow label"),
])
def test_a_bad_label_table_is_refused_with_its_line_and_column(contoured: Path, tmp_path: Path, change,
                                                               message: str) -> None:
    with (contoured / "labels.csv").open() as f:
        rows = list(csv.DictReader(f))
    rows.sort(key=lambda r: r["tissue"] != "muscle")  # a muscle first
    change(rows)
    bad = tmp_path / "labels.csv"
    with bad.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LABEL_TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(AtlasError, match=message):
        read_label_table(bad)


def test_a_scan_without_its_labels_or_with_unknown_labels_is_named_and_nothing_is_written(contoured: Path,
                                                                                         tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "labels.csv").write_bytes((contoured / "labels.csv").read_bytes())
    (folder / "calf0_t2.nii.gz").write_bytes((contoured / "calf0_t2.nii.gz").read_bytes())
    with pytest.raises(AtlasError, match="no partner for calf0"):
        import_atlas(folder, tmp_path / "out", "x", "")
    labels = sitk.ReadImage(str(contoured / "calf0_labels.nii.gz"))
    arr = sitk.GetArrayFromImage(labels)
    arr[0, 0, 0] = 250
    odd = sitk.GetImageFromArray(arr)
    odd.CopyInformation(labels)
    sitk.WriteImage(odd, str(folder / "calf0_labels.nii.gz"))
    with pytest.raises(AtlasError, match=r"calf0_labels.nii.gz: label values \[250\] are not in the label table"):
        import_atlas(folder, tmp_path / "out", "x", "")
    assert not (tmp_path / "out").exists()
    cli = subprocess.run([str(Path(sys.executable).parent / "myonode"), "atlas", "import", str(folder), "--out",
                          str(tmp_path / "out"), "--id", "x"], capture_output=True, text=True, check=False)
    assert cli.returncode == 2 and "label values [250] are not in the label table" in cli.stderr
