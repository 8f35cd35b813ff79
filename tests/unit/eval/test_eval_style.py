"""The casual-register check with configurable phrase lists."""
from ipl.eval.style import Register, default_register


def test_defaults():
    r = default_register()
    assert r.is_casual("Selling my Coach Willow, white, barely used. Ask me anything.")
    assert r.is_casual("自用华为手机，成色如图")
    assert not r.is_casual("The best-in-class premium quality handbag!!")
    assert not r.is_casual("Coach Willow handbag, white canvas.")  # no seller voice
    assert r.marketing_phrases("A MUST HAVE, world class!!") == ["MUST HAVE", "world class", "!!"]


def test_word_boundaries_and_spacing():
    r = Register(["my", "i"], ["state of the art"])
    assert not r.is_first_person("mystery in india")  # "my" and "i" only as words
    assert r.is_first_person("I am selling")
    assert r.marketing_phrases("state-of-the-art") == ["state-of-the-art"]  # hyphen or space


def test_configured_lists_replace_the_defaults():
    r = Register(["letting go"], ["bargain"])
    assert r.is_casual("Letting go of this lamp")
    assert not r.is_casual("Letting go of this lamp, a bargain")
    assert r.summary(["letting go of it", "a bargain", "lamp"]) == {
        "descriptions": 3, "casual": 1 / 3, "first_person": 1 / 3, "marketing": 1 / 3}
