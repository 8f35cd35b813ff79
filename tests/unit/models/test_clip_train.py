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
