"""The streaming output monitor: unsafe text halts before it is sent; safe text flows."""
import pytest

from ipl.serve.monitor import OutputMonitor


def feed_all(monitor, chunks):
    sent, halt = "", None
    for c in chunks:
        out, halt = monitor.feed(c)
        sent += out
        if halt:
            return sent, halt
    out, halt = monitor.finish()
    return sent + out, halt


def test_safe_text_flows_whole_words_and_finish_sends_the_rest():
    m = OutputMonitor(holdback=10)
    text = "Selling my Sony ZV-1 in black, barely used, comes with the kit lens and box."
    chunks = [text[i:i + 3] for i in range(0, len(text), 3)]
    partial = ""
    for c in chunks[:-1]:
        out, halt = m.feed(c)
        assert halt is None
        partial += out
    assert partial and text.startswith(partial) and partial.endswith(" ")
    out, halt = m.feed(chunks[-1])
    rest, halt = m.finish()
    assert halt is None and partial + out + rest == text


def test_phone_number_split_across_chunks_halts_before_any_digit_is_sent():
    m = OutputMonitor(holdback=24)
    chunks = ["Great phone, ", "works well. Call ", "me on 138", " 1234 ", "5678 for ", "a deal"]
    sent, halt = feed_all(m, chunks)
    assert halt is not None and halt.kind == "pii:phone"
    assert "138" not in sent


def test_each_kind_halts():
    cases = {"write to seller.bob@example.com now": "pii:email", "add my vx: bobby_2024 for more": "pii:wechat",
             "see www.cheap-deals.shop for photos": "pii:url", "100% refund guaranteed, deposit first": "risk:fraud",
             "this is a replica, looks real": "risk:prohibited"}
    for text, kind in cases.items():
        sent, halt = feed_all(OutputMonitor(holdback=48), [text[i:i + 4] for i in range(0, len(text), 4)])
        assert halt is not None and halt.kind == kind, text
        assert sent == ""


def test_nothing_after_a_halt_and_final_text_replaces_the_stream():
    m = OutputMonitor(holdback=0)
    m.feed("contact me at 13812345678 ")
    assert m.feed("more text ")[0] == "" and m.finish()[1] is not None
    m = OutputMonitor(holdback=5)
    m.feed("First sentence. Second sentence that goes on")
    rest, halt = m.finish("First sentence.")
    assert halt is None and m.text == "First sentence."


def test_storage_sizes_and_model_numbers_are_not_halts():
    sent, halt = feed_all(OutputMonitor(), ["iPhone 13 256GB, WH-1000XM4 headphones, ", "battery 89%, size EU 42."])
    assert halt is None and sent.endswith("EU 42.")


ZH = "自用闲置的小米手机，九成新，屏幕无划痕，电池健康，配件齐全，原装充电器和盒子都在，诚心出售，可小刀。"


def test_chinese_text_flows_by_characters_while_it_is_written():
    """No spaces in Chinese: the hold-back counts characters and each character is a break."""
    m = OutputMonitor(holdback=12)
    released = []
    for ch in ZH:  # one character per chunk, as a tokenizer streams it
        out, halt = m.feed(ch)
        assert halt is None
        released.append(out)
    first = next(i for i, out in enumerate(released) if out)
    assert first == 12  # the first character leaves as soon as 12 follow it
    assert "".join(released) == ZH[: len(ZH) - 12]
    rest, halt = m.finish()
    assert halt is None and "".join(released) + rest == ZH


def test_phone_number_inside_chinese_text_halts_before_any_digit_is_sent():
    m = OutputMonitor(holdback=16)
    text = "自用闲置的小米手机，九成新，屏幕无划痕，电池健康，有意联系13812345678，非诚勿扰。"
    sent, halt = feed_all(m, list(text))
    assert halt is not None and halt.kind == "pii:phone"
    assert sent.startswith("自用闲置") and not any(c.isdigit() for c in sent)


def test_latin_words_inside_chinese_text_are_not_cut():
    m = OutputMonitor(holdback=4)
    text = "出一台Sony相机，黑色。"
    released = [m.feed(c)[0] for c in text]
    for out in released:
        assert out not in ("S", "So", "Son")  # 'Sony' leaves whole or not at all
    joined = "".join(released)
    assert "Sony" in joined or "S" not in joined


def test_chinese_is_held_back_only_by_the_short_window_and_latin_keeps_the_full_one():
    m = OutputMonitor(holdback=48, cjk_holdback=6)
    released = [m.feed(ch)[0] for ch in ZH]
    first = next(i for i, out in enumerate(released) if out)
    assert first == 6  # not 48: no contact detail can be growing in Chinese characters
    latin = OutputMonitor(holdback=48, cjk_holdback=6)
    text = "Selling my Sony camera, black, barely used, with the box and strap and charger too."
    out = "".join(latin.feed(c)[0] for c in text)
    assert len(text) - len(out) >= 48  # Latin text: the full hold-back


@pytest.mark.parametrize("number", ["13812345678", "138 1234 5678", "１３８１２３４５６７８", "+86 138-1234-5678"])
def test_a_phone_number_in_chinese_text_is_caught_before_any_of_it_is_sent(number):
    m = OutputMonitor(holdback=48, cjk_holdback=6)
    text = ZH[:30] + "有意联系" + number + "，非诚勿扰。"
    sent, halt = feed_all(m, list(text))
    assert halt is not None and halt.kind == "pii:phone", (number, sent)
    assert sent.startswith(ZH[:20]) and not any(c.isdigit() for c in sent), sent


def test_a_chinese_risk_term_is_not_half_sent():
    m = OutputMonitor(holdback=48, cjk_holdback=0)  # raised to the longest Chinese term the detectors know
    text = ZH[:30] + "保证退款" + ZH[30:]
    sent, halt = feed_all(m, list(text))
    assert halt is not None and halt.kind.startswith("risk:"), sent
    assert sent and "保" not in sent[30:], sent


@pytest.mark.parametrize("inserted, kind", [
    ("加微信号：abc12345", "pii:wechat"), ("薇信 xy_998877", "pii:wechat"), ("扣扣 12345678", "pii:wechat"),
    ("电话13812345678", "pii:phone"), ("去拼多多买", "pii:platform"), ("保证退款", "risk:"),
])
def test_the_shipped_chinese_holdback_sends_no_part_of_a_match(inserted, kind):
    """The serve config's default (the floor: the longest Chinese term the detectors know) sends
    Chinese after a few characters, and still nothing of a contact detail or a risk term."""
    from ipl.serve.config import SafetyConfig
    from ipl.text.pii import find_pii

    cfg = SafetyConfig()
    m = OutputMonitor(cfg.monitor_holdback_chars, cjk_holdback=cfg.monitor_cjk_holdback_chars)
    assert m.cjk_holdback <= 6
    released = [m.feed(ch)[0] for ch in ZH[:20]]
    assert next(i for i, out in enumerate(released) if out) <= m.cjk_holdback + 1  # flows within a few characters
    sent, halt = "".join(released), None
    for ch in inserted + ZH[20:]:
        out, halt = m.feed(ch)
        sent += out
        if halt:
            break
    assert halt is not None and halt.kind.startswith(kind), (inserted, sent)
    assert sent == ZH[:len(sent)], sent  # nothing of the inserted text left
    if kind.startswith("pii"):
        assert not find_pii(sent)
