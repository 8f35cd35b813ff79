"""The Generator's stream: text joined into one item per interval, the first text at once."""
import asyncio

from ipl.serve.generator import coalesced


def _run(interval: float, gap: float, tokens: int = 10):
    async def go():
        q: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def produce():
            for i in range(tokens):
                q.put_nowait({"text": f"t{i} "})
                await asyncio.sleep(gap)
            q.put_nowait({"finish_reason": "stop", "tokens": tokens})

        task = asyncio.create_task(produce())
        t0, out = loop.time(), []
        async for item in coalesced(q, interval):
            out.append((loop.time() - t0, item))
        await task
        return out

    return asyncio.run(go())


def test_the_first_text_leaves_at_once_and_the_rest_once_per_interval():
    out = _run(interval=0.06, gap=0.01)
    texts = [item for _, item in out if "text" in item]
    assert out[0][1] == {"text": "t0 "} and out[0][0] < 0.03  # no interval before the first text
    assert "".join(t["text"] for t in texts) == "".join(f"t{i} " for i in range(10))  # nothing lost or reordered
    assert 2 <= len(texts) <= 4  # ~100 ms of tokens at most one item per 60 ms
    assert out[-1][1] == {"finish_reason": "stop", "tokens": 10}  # the end item closes the stream
    gaps = [b - a for (a, x), (b, y) in zip(out, out[1:]) if "text" in x and "text" in y]
    assert all(g >= 0.045 for g in gaps)


def test_interval_zero_sends_each_token_as_it_comes():
    out = _run(interval=0.0, gap=0.01, tokens=5)
    assert [item for _, item in out if "text" in item] == [{"text": f"t{i} "} for i in range(5)]
