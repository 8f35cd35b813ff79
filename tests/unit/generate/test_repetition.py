"""Repeats taken out of a description, a loop ended: on texts the demo model wrote."""
import pytest

from ipl.generate.repetition import MAX_REPEATS, MAX_RUN, Repeats, clean_repeats

# written by the demo's fine-tuned tiny VLM for a real catalogue photo (out of its domain)
LOOP = ("Well looked after, upgraded so letting letting letting letting letting letting this go. No much letting "
        "letting letting letting letting letting letting letting this go. No much anymore. No much anymore. Ask me "
        "anything, got. No as a gift, hardly used. No much letting letting letting letting this go.")
CYCLE = ("Works perfectly, got it as shown works fine. Ask me anything. No much anymore. No much anymore. No as a "
         "gift, hardly used. No as a gift, hardly used. No much anymore. No as a gift, hardly used. No much as a "
         "gift, hardly used. No much")
# ... and in its own domain (held-out synthetic listings), where it stutters over values
STUTTERS = {
    "Selling my Seiko Presage, 40mm, 40mm, in Blue, 40mm, Works perfectly, moving out and clearing stuff. "
    "Shipping included.":
    "Selling my Seiko Presage, 40mm, in Blue, Works perfectly, moving out and clearing stuff. Shipping included.",
    "Personal used Coach, colour is Green, leather, leather, leather, leather, Well looked after, bought a new one. "
    "No lowballers pls.":
    "Personal used Coach, colour is Green, leather, Well looked after, bought a new one. No lowballers pls.",
    "Selling my Apple Apple Apple MacBook Pro 16, Grey, Works perfectly.":
    "Selling my Apple MacBook Pro 16, Grey, Works perfectly.",
    "Used Seiko Presage, 40mm, 40mm.": "Used Seiko Presage, 40mm.",
    "九成新，九成新，九成新，功能正常。自提或包邮都可以。": "九成新，功能正常。自提或包邮都可以。",
}


def test_a_loop_ends_the_text_before_it():
    out, info = clean_repeats(LOOP)
    assert out == "Well looked after, upgraded so letting this go."
    assert info["ended"] and info["collapsed"] == 1 and info["removed"][0].startswith("No much letting")


def test_a_cycle_of_clauses_ends_at_its_fourth_copy():
    out, info = clean_repeats(CYCLE)
    assert out == ("Works perfectly, got it as shown works fine. Ask me anything. No much anymore. No as a gift, "
                   "hardly used.")
    assert info["ended"] and len(info["removed"]) == MAX_REPEATS + 1  # one adjacent copy, then four further back


@pytest.mark.parametrize("text", sorted(STUTTERS))
def test_stutters_are_said_once_and_every_value_stays(text):
    out, info = clean_repeats(text)
    assert out == STUTTERS[text] and not info["ended"]


@pytest.mark.parametrize("text", [
    "Selling my iPhone 13 Pro Max, 256GB. iPhone 13 Pro Max is in great shape, no scratches.",
    "Used, works. Used, works.",  # "Used," is one word: a copy further back counts from two; "works." is not adjacent
    "Works. e.g. cable, mouse and stand. Works, e.g. like new.",  # nothing dropped: nothing capitalised
    "Battery 89%, 8/10. Comes with box, cable and case.",
    "自用华为 Mate 60 Pro，12GB+512GB，雅川青，九成新。",
    "",
])
def test_text_without_a_loop_is_unchanged(text):
    out, info = clean_repeats(text)
    assert out == text.strip() and info == {"removed": [], "collapsed": 0, "ended": False}


def test_a_word_said_max_run_times_ends_even_without_a_clause_end():
    r = Repeats()
    text = "Nice bag, " + "letting " * MAX_RUN
    r.feed(text)
    assert r.ended and r.finish(text + "more text.") == "Nice bag."
    assert clean_repeats("好" * MAX_RUN)[0] == ""  # nothing before the loop: an empty description


def test_the_stream_is_a_growing_prefix_of_the_whole_edit():
    """Fed token by token, what a stream would send only grows, never shows a dropped repeat,
    and ends as the start of the edit of the whole text (which is what the evaluation scores)."""
    for text in [LOOP, CYCLE, *STUTTERS]:
        r, sent = Repeats(), ""
        for i in range(1, len(text) + 1, 3):
            now = r.feed(text[:i])
            assert now.startswith(sent)
            sent = now
        final = r.finish(text)
        assert final == clean_repeats(text)[0] and final.startswith(sent.strip())
        for dropped in r.removed:
            if dropped.strip() not in final:
                assert dropped.strip() not in sent


def test_a_clause_is_sent_as_soon_as_it_ends():
    """Chinese first text must not wait: a clause goes out when it ends, without its closing
    punctuation (a repeat dropped next may still turn that comma into a full stop)."""
    r = Repeats()
    assert r.feed("九成新") == ""  # not ended: it may be a repeat
    assert r.feed("九成新，功") == "九成新"
    assert r.feed("九成新，九成新。") == "九成新"
    assert r.finish("九成新，九成新。") == "九成新。"


def test_a_clause_after_a_dropped_sentence_starts_a_sentence():
    out, _ = clean_repeats("No much anymore. Ask me anything. No much anymore. got it as a gift, hardly used.")
    assert out == "No much anymore. Ask me anything. Got it as a gift, hardly used."


def test_only_a_clause_right_after_a_dropped_one_is_capitalised():
    assert clean_repeats("Nice, nice, good. e.g. cable.")[0] == "Nice, good. e.g. cable."
