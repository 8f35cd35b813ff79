"""The loss computed only at target positions equals the model's own loss, value and gradients."""
import torch

from ipl.models.loss import IGNORE, target_loss, target_positions
from ipl.train.collate import Collator


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def test_same_loss_and_gradients_as_the_models_own(tiny_vlm, make_row):
    model = tiny_vlm.model
    batch = Collator(tiny_vlm.processor, max_photos=2)(
        [make_row("two photos here and a longer answer to score", 2, "a"), make_row("no photo", 0, "b"),
         make_row("one photo", 1, "c")])
    keep = target_positions(batch["labels"])
    assert 0 < len(keep) < batch["labels"].shape[1] - 1  # fewer positions than the whole sequence
    model.zero_grad(set_to_none=True)
    own = model(**batch).loss
    own.backward()
    expected = _grads(model)
    model.zero_grad(set_to_none=True)
    loss, n = target_loss(model, batch)
    loss.backward()
    got = _grads(model)
    model.zero_grad(set_to_none=True)
    assert n == int((batch["labels"][:, 1:] != IGNORE).sum())
    torch.testing.assert_close(loss, own, rtol=1e-5, atol=1e-6)
    assert expected.keys() == got.keys() and expected
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_positions_cover_every_target_of_every_row():
    labels = torch.full((2, 8), IGNORE)
    labels[0, 3:5] = 7   # row 0 targets tokens 3 and 4: predicted at positions 2 and 3
    labels[1, 6] = 9     # row 1 targets token 6: predicted at position 5
    assert target_positions(labels).tolist() == [2, 3, 5]
