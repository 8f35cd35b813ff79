"""The SafetyGate's Open-NSFW screen (the real classifier from its wheel, onnxruntime on the CPU).
No fixture is explicit: the refusal path is exercised with a configured threshold, the pass path
on ordinary and real photos."""
import asyncio
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ipl.serve.config import ServeConfig
from ipl.serve.deployments import SafetyGate, load_nsfw

REAL = Path("../shared/realdata")


def jpeg(seed):
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def gate_cfg(tiny_clip, tmp_path):
    (tmp_path / "templates.yaml").write_text("categories:\n  phone: {template: [Brand]}\n")
    return lambda **safety: ServeConfig(models={"clip": str(tiny_clip.source), "templates": str(tmp_path / "templates.yaml")},
                                        safety={"prohibited": [], **safety})


def test_scores_are_probabilities():
    scores = load_nsfw(ServeConfig().safety).score_images([Image.open(io.BytesIO(jpeg(i))) for i in range(3)])
    assert scores.shape == (3,) and ((0 <= scores) & (scores <= 1)).all()


def test_threshold_decides_refusal_with_a_message_naming_the_photo(gate_cfg):
    strict = SafetyGate(gate_cfg(nsfw_threshold=0.0))
    out = asyncio.run(strict.check([jpeg(1), jpeg(2)]))
    assert out["error"]["code"] == "prohibited_content" and "Open-NSFW score" in out["error"]["message"]
    assert out["error"]["message"].startswith("photo ")
    lax = SafetyGate(gate_cfg())  # the default threshold: an ordinary photo passes
    assert len(asyncio.run(lax.check([jpeg(1)]))["images"]) == 1
    off = SafetyGate(gate_cfg(nsfw=False, nsfw_threshold=0.0))
    assert off.nsfw is None and "images" in asyncio.run(off.check([jpeg(1)]))


def test_real_photos_pass_at_the_default_threshold(gate_cfg):
    photos = sorted((REAL / "fashion" / "images").glob("*.jpg"))[:20] + sorted((REAL / "abo").glob("*/*.jpg"))[:4]
    if not photos:
        pytest.skip(f"{REAL}: the real-data fixtures are not on this machine")
    gate = SafetyGate(gate_cfg())
    for p in photos:
        out = asyncio.run(gate.check([p.read_bytes()]))
        assert "images" in out, (p, out)


def messages(gate, photos):
    async def collect():
        return [m async for m in gate.check_stream(photos)]
    return asyncio.run(collect())


def test_check_stream_sends_the_decoded_photos_before_the_open_nsfw_verdict(gate_cfg):
    """Open-NSFW alone: the photos first (Perception may start on them), then the verdict; a refusal
    is the second message; no screen at all, or an undecodable photo: one message."""
    passed = messages(SafetyGate(gate_cfg()), [jpeg(1), jpeg(2)])
    assert [m.get("screened") for m in passed] == [False, True]
    assert len(passed[0]["images"]) == 2 and passed[0]["images"][0].dtype == np.uint8
    assert "images" not in passed[1] and passed[1]["vectors"] is None
    refused = messages(SafetyGate(gate_cfg(nsfw_threshold=0.0)), [jpeg(1)])
    assert refused[0]["screened"] is False and refused[1]["error"]["code"] == "prohibited_content"
    off = messages(SafetyGate(gate_cfg(nsfw=False)), [jpeg(1)])
    assert len(off) == 1 and off[0]["screened"] is True and len(off[0]["images"]) == 1
    bad = messages(SafetyGate(gate_cfg()), [b"not a photo"])
    assert len(bad) == 1 and "error" in bad[0]
