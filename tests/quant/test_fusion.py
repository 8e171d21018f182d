"""Label fusion of a multi-atlas: plain majority voting, and subjects that may not vote (a rejected ROI, outside
their image) left out of the vote."""

from __future__ import annotations

import numpy as np

from quant.fusion import fuse_votes


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
