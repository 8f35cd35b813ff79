"""The streaming output monitor: unsafe text halts before it is sent; safe text flows."""
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
