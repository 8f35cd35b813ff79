"""The Serve pipeline takes repeats out of a description as it streams and ends a loop there,
where the Generator stops decoding: the real tiny Qwen2-VL, taught to answer with a loop, behind
the real Generator and DraftPipeline."""
import asyncio
import io
import time
from pathlib import Path

import pytest
from PIL import Image

from ipl.generate.prompts import description_prompt

REPO = Path(__file__).resolve().parents[3]
LOOP = "Nice bag, hardly used, " + "letting " * 40


@pytest.fixture(scope="module")
def looping_vlm(tiny_vlm, tmp_path_factory):
    from planted import plant_output

    return plant_output(tiny_vlm.path, tmp_path_factory.mktemp("looping") / "vlm", LOOP.strip(), categories=[],
                        steps=150, lr=1e-2)


def photo() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 60, 30)).save(out, format="JPEG")
    return out.getvalue()


def draft_events(vlm, *overrides):
    from ipl.serve.generator import Generator
    from ipl.serve.pipeline import Draft, DraftPipeline, LocalStages
    from ipl.serve.stage import load_serve_config

    cfg = load_serve_config(REPO / "serve_configs" / "local.yaml",
                            [f"models.vlm={vlm}", "generate.max_new_tokens=30", "generate.max_model_len=2048",
                             *overrides])
    generator = Generator(cfg)
    pipe = DraftPipeline(LocalStages(None, None, None, generator), {}, cfg)
    draft = Draft(meta={"timings": {}}, prompt=description_prompt(None, None, None), photos=[photo()], language="en",
                  max_new_tokens=None, started=time.monotonic())

    async def run():
        return [e async for e in pipe.generate(draft)]

    events = asyncio.run(run())
    return events, draft, generator.get_stats()


def test_a_loop_is_ended_and_its_decoding_stopped(looping_vlm):
    raw, _, _ = draft_events(looping_vlm, "generate.repeats=false")
    kind, done = raw[-1]
    assert kind == "done" and done["repetition"] is None
    assert done["description"].count("letting letting letting") >= 3  # the model loops: what the edit is for
    assert done["usage"]["completion_tokens"] == 30  # ... to its token limit (the planted text is longer)

    events, draft, stats = draft_events(looping_vlm)
    kind, done = events[-1]
    assert kind == "done", events[-1]
    assert done["description"] == "Nice bag, hardly used."  # the clause that loops is dropped whole
    assert done["repetition"]["ended"] and done["repetition"]["removed"] == 1
    assert "repetition_ended" in draft.fallbacks
    sent = "".join(d["text"] for k, d in events if k == "delta")
    assert sent.strip() == done["description"]  # the stream never showed the loop
    # the Generator stopped decoding at the loop and counted the tokens it decoded
    assert stats["loops_ended"] == 1 and stats["completed"] == 1 and stats["cancelled"] == 0
    assert done["finish_reason"] == "stop" and 10 < done["usage"]["completion_tokens"] < 30


@pytest.fixture(scope="module")
def only_loop_vlm(tiny_vlm, tmp_path_factory):
    from planted import plant_output

    return plant_output(tiny_vlm.path, tmp_path_factory.mktemp("only-loop") / "vlm", ("letting " * 40).strip(),
                        categories=[], steps=150, lr=1e-2)


def test_a_draft_that_is_only_a_loop_tells_the_seller_to_write_it(only_loop_vlm):
    events, draft, stats = draft_events(only_loop_vlm)
    assert [k for k, _ in events] == ["error"], events  # nothing was sent before it
    error = events[-1][1]
    assert error["code"] == "generation_failed" and "describe the item yourself" in error["message"]
    assert "in time" not in error["message"] and error["fallbacks"] == ["repetition_ended"]
    assert stats["loops_ended"] == 1
