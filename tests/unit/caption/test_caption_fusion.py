"""Reciprocal rank fusion on hand-made rankings."""
import pytest

from ipl.caption.fusion import reciprocal_rank_fusion


def ids(fused):
    return [i for i, _ in fused]


def test_an_item_high_in_both_lists_beats_one_first_in_only_one():
    image = ["a", "b", "c", "d"]
    caption = ["c", "b", "e", "a"]
    fused = ids(reciprocal_rank_fusion([image, caption], k=60))
    assert fused.index("b") < fused.index("a")  # 2nd + 2nd beats 1st + 4th at the paper's k
    assert set(fused) == {"a", "b", "c", "d", "e"} and fused[-1] in ("d", "e")
    # a small k rewards the head of a list: 1st + 4th now beats 2nd + 2nd
    steep = ids(reciprocal_rank_fusion([image, caption], k=1))
    assert steep.index("a") < steep.index("b")


def test_scores_are_the_reciprocal_rank_sums():
    fused = dict(reciprocal_rank_fusion([["x", "y"], ["y"]], k=60))
    assert fused["x"] == pytest.approx(1 / 61)
    assert fused["y"] == pytest.approx(1 / 62 + 1 / 61)


def test_a_single_ranking_keeps_its_order_and_a_repeat_counts_once():
    assert ids(reciprocal_rank_fusion([["p", "q", "p", "r"]])) == ["p", "q", "r"]


def test_weights_tilt_the_fusion_and_a_zero_weight_list_only_adds_items():
    image, caption = ["a", "b"], ["b", "a"]
    assert ids(reciprocal_rank_fusion([image, caption], weights=[2, 1]))[0] == "a"
    assert ids(reciprocal_rank_fusion([image, caption], weights=[1, 2]))[0] == "b"
    assert ids(reciprocal_rank_fusion([image, ["z"]], weights=[1, 0])) == ["a", "b", "z"]


def test_ties_break_by_best_rank_then_first_appearance():
    fused = reciprocal_rank_fusion([["a", "b"], ["b", "a"]], k=10)
    assert ids(fused) == ["a", "b"]  # equal scores, equal best rank: first seen first


def test_bad_arguments_are_refused_with_what_is_wrong():
    with pytest.raises(ValueError, match="k must be > 0"):
        reciprocal_rank_fusion([["a"]], k=0)
    with pytest.raises(ValueError, match="1 weights for 2 rankings"):
        reciprocal_rank_fusion([["a"], ["b"]], weights=[1])
    with pytest.raises(ValueError, match="negative weight"):
        reciprocal_rank_fusion([["a"]], weights=[-1])
