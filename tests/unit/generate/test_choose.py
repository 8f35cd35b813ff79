"""Closed-set answers (the LLM judge's yes/no): always one of the choices, with a probability."""
import pytest

from ipl.generate.local import choose_batch
from ipl.generate.prompts import description_messages


def test_every_answer_is_one_of_the_choices_and_its_probability_is_renormalised(tiny_vlm):
    import numpy as np
    from PIL import Image

    photo = Image.fromarray(np.full((32, 32, 3), 200, np.uint8))
    requests = [(description_messages(1, "Is this a phone? Answer yes or no.", "en"), [photo]),
                (description_messages(0, "Is the sky green? Answer yes or no.", "en"), [])]
    out = choose_batch(tiny_vlm, requests, ("yes", "no"), batch_size=2)
    assert len(out) == 2
    for said, p in out:
        assert said in ("yes", "no") and 0.5 <= p <= 1.0  # the chosen one has at least half the mass
    # batching does not change an answer
    assert [s for s, _ in choose_batch(tiny_vlm, requests, ("yes", "no"), batch_size=1)] == [s for s, _ in out]


def test_choices_that_share_a_first_token_are_refused(tiny_vlm):
    with pytest.raises(ValueError, match="share a first token"):
        choose_batch(tiny_vlm, [(description_messages(0, "x", "en"), [])], ("yes", "yes"))
