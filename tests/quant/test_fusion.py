"""Label fusion of a multi-atlas: plain majority voting, subjects that may not vote (a rejected ROI, outside their
image) left out of the vote, and a visit's labels fused from the atlas's entries most similar to it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from quant.atlas import contoured_subjects, load_atlas, read_label_table, read_manifest
from quant.atlas_build import Subject, build_and_save
from quant.fusion import abstain_value, fuse_entries, fuse_votes, fuse_where_they_differ, is_usable, similarity
from quant.params import QuantParams
from quant.register import register, registration_maps
from tests.support.calves import write_contoured_calves


def test_without_abstentions_the_most_common_label_wins_and_ties_go_to_the_earlier_subject() -> None:
    labels = [np.array([1, 1, 2, 3]), np.array([1, 2, 2, 4]), np.array([5, 2, 6, 5])]
    none = [np.zeros(4, dtype=bool)] * 3
    assert fuse_votes(labels, none).tolist() == [1, 2, 2, 3]


def test_a_subject_does_not_vote_where_it_abstains() -> None:
    labels = [np.array([7, 7, 0]), np.array([7, 3, 0]), np.array([3, 3, 5])]
    # subject 0's label 7 was rejected by a reviewer: its 7s do not count, for or against
    abstains = [labels[0] == 7, np.zeros(3, dtype=bool), np.zeros(3, dtype=bool)]
    assert fuse_votes(labels, abstains).tolist() == [7, 3, 0]


def test_where_every_subject_abstains_the_voxel_is_background() -> None:
    labels = [np.array([4, 4]), np.array([4, 9])]
    abstains = [np.array([True, False]), np.array([True, True])]
    assert fuse_votes(labels, abstains).tolist() == [0, 4]


def test_fusing_only_where_the_entries_differ_is_fusing_everywhere() -> None:
    rng = np.random.default_rng(3)
    abstain = abstain_value(frozenset({1, 4, 5, 9, 255}))
    assert abstain == 254
    votes = [rng.choice([0, 0, 0, 4, 5, 9], size=(6, 7, 8)).astype(np.uint8) for _ in range(4)]
    votes[1][votes[0] == 0] = 0  # much agreement, as on a body
    for v in votes[2:]:
        v[rng.random(v.shape) < 0.2] = abstain
    everywhere = fuse_votes(votes, [v == abstain for v in votes])
    assert np.array_equal(fuse_where_they_differ(votes, abstain), everywhere)


def test_similarity_is_the_correlation_where_both_images_hold_one() -> None:
    rng = np.random.default_rng(4)
    a = rng.uniform(1, 100, size=(10, 10, 10))
    assert similarity(a, 2 * a + 5) == pytest.approx(1.0)
    assert similarity(a, 200 - a) == pytest.approx(-1.0)
    outside = a.copy()
    outside[5:] = 0  # another field of view: only the overlap counts
    assert similarity(a, np.where(outside > 0, outside, 0)) == pytest.approx(1.0)
    assert similarity(a, np.zeros_like(a)) == -1.0  # nothing to compare


@pytest.fixture(scope="module")
def calves(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_contoured_calves(tmp_path_factory.mktemp("calves"), (0, 1, 2, 3))


def test_a_visit_fuses_the_multi_atlas_s_most_similar_entries_each_registered_to_it(calves: Path,
                                                                                    tmp_path: Path) -> None:
    table = read_label_table(calves / "labels.csv")
    params = QuantParams(grid_mm=20.0, iterations=60)  # 60 mm of calf: a short registration suffices
    subjects = [Subject(name=name, t2=t2, labels=labels) for name, (t2, labels) in
                contoured_subjects(calves, table).items() if name != "calf3"]
    atlas = load_atlas(build_and_save(subjects, table, tmp_path / "atlas", "site-calves", "three contoured calves",
                                      params=params))
    assert [e.name for e in atlas.entries] == ["calf0", "calf1", "calf2"]
    accuracy = read_manifest(atlas.path).accuracy
    assert accuracy is not None and "their entries registered to it and fused" in accuracy["method"]

    subject = sitk.ReadImage(str(calves / "calf3_t2.nii.gz"), sitk.sitkFloat32)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(calves / "calf3_labels.nii.gz"), sitk.sitkUInt8))
    assert is_usable(atlas, params) and not is_usable(atlas, replace(params, fusion_entries=1))
    to_template = register(subject, atlas.template, registration_maps(deformable=True, grid_mm=20.0, iterations=60))
    fused = fuse_entries(subject, atlas, to_template, subject, params)
    assert sorted(fused.entries) == ["calf0", "calf1", "calf2"] and set(fused.transforms) == set(fused.entries)
    assert [fused.similarity[n] for n in fused.entries] == sorted(fused.similarity.values(), reverse=True)
    got = sitk.GetArrayFromImage(fused.labels)
    for lab in atlas.table:
        a, b = got == lab.value, truth == lab.value
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.7, lab.name
    two = fuse_entries(subject, atlas, to_template, subject, replace(params, fusion_entries=2))
    assert two.entries == fused.entries[:2]  # the two most similar
