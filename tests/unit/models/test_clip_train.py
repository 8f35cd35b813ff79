"""Contrastive losses: positives are the same group; the photo <-> photo term ignores self-pairs."""
import torch
import torch.nn.functional as F

from ipl.models.clip_train import image_positive_loss, multi_positive_loss


def test_image_positive_loss_prefers_grouped_embeddings():
    groups = torch.tensor([0, 0, 1, 1, 2])
    e = torch.eye(3)
    together = F.normalize(e[groups] + 0.01, dim=-1)
    apart = F.normalize(torch.eye(5), dim=-1)
    scale = torch.tensor(10.0)
    assert image_positive_loss(together, groups, scale) < image_positive_loss(apart, groups, scale)
    # group 2 has one photo: no positive, it does not count (and self-similarity is not a positive)
    only_singletons = image_positive_loss(apart[[0, 2, 4]], torch.tensor([0, 1, 2]), scale)
    assert only_singletons.item() == 0.0


def test_multi_positive_loss_is_symmetric_in_positives():
    groups = torch.tensor([0, 0, 1])
    img = F.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    txt = img.clone()
    low = multi_positive_loss(img, txt, groups, torch.tensor(20.0))
    high = multi_positive_loss(img, txt.flip(0), groups, torch.tensor(20.0))
    assert low < high


def test_family_weight_makes_a_products_other_colours_targets_not_negatives():
    # groups 0 and 1 are two SKUs of one SPU (family 0); group 2 is another product
    groups, families = torch.tensor([0, 1, 2]), torch.tensor([0, 0, 1])
    scale = torch.tensor(10.0)
    txt = torch.eye(3)
    apart = torch.eye(3)  # each photo on its own caption only
    near = F.normalize(torch.tensor([[1.0, 0.8, 0.0], [0.8, 1.0, 0.0], [0.0, 0.0, 1.0]]), dim=-1)  # siblings close
    plain = (multi_positive_loss(apart, txt, groups, scale), multi_positive_loss(near, txt, groups, scale))
    assert plain[0] < plain[1]  # without the weight the sibling's caption is a negative: closeness costs
    weighted = (multi_positive_loss(apart, txt, groups, scale, families, 0.5),
                multi_positive_loss(near, txt, groups, scale, families, 0.5))
    assert weighted[1] < weighted[0]  # with it, siblings close are what the loss wants
    # weight 0, or no families, is the plain loss
    assert torch.allclose(multi_positive_loss(near, txt, groups, scale, families, 0.0), plain[1])
    assert torch.allclose(multi_positive_loss(near, txt, groups, scale, None, 0.5), plain[1])


def test_consistency_threshold_sits_between_matched_and_mismatched_scores():
    import numpy as np

    from ipl.models.clip_train import consistency_threshold

    rng = np.random.default_rng(0)
    matched, mismatched = rng.normal(0.6, 0.05, 300), rng.normal(0.1, 0.05, 300)
    out = consistency_threshold(matched, mismatched)
    assert mismatched.max() < out["threshold"] < matched.min() and out["balanced_accuracy"] == 1.0
    # overlapping scores: the cut still lies between the two means, and the accuracy says it is not perfect
    out = consistency_threshold(rng.normal(0.4, 0.1, 300), rng.normal(0.2, 0.1, 300))
    assert 0.2 < out["threshold"] < 0.4 and 0.7 < out["balanced_accuracy"] < 1.0


def test_prepare_uses_the_calibrated_threshold_or_says_what_to_set(tmp_path):
    import json

    import pytest

    from ipl.data.config import ConsistencyConfig
    from ipl.data.pipeline import consistency_threshold

    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {}, "ipl": {"consistency": {"threshold": 0.31}}}))
    assert consistency_threshold(ConsistencyConfig(), str(tmp_path)) == 0.31
    assert consistency_threshold(ConsistencyConfig(threshold=0.2), str(tmp_path)) == 0.2
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {}}))
    with pytest.raises(ValueError, match="set consistency.threshold"):
        consistency_threshold(ConsistencyConfig(), str(tmp_path))


def test_similarity_preserving_loss_is_zero_only_for_the_teachers_geometry():
    from ipl.models.clip_train import similarity_preserving_loss

    torch.manual_seed(0)
    teacher = torch.randn(16, 40)
    rotated = F.normalize(teacher @ torch.linalg.qr(torch.randn(40, 40))[0], dim=-1)  # same cosines
    assert similarity_preserving_loss(rotated, teacher).item() < 1e-10
    other = F.normalize(torch.randn(16, 40), dim=-1)
    assert similarity_preserving_loss(other, teacher).item() > 1e-3
