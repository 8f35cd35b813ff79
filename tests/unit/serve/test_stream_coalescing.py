"""The Generator's stream: the first text at once, later text joined into one item per interval,
the end item flushing what is pending. Driven by what is queued when, not by timings."""
import asyncio

from ipl.serve.generator import coalesced

LONG = 30.0  # an interval no test waits out: an item that needed it would hit the 5 s guard below


def test_the_first_text_leaves_at_once_and_later_text_is_joined_until_the_end():
    async def go():
        q: asyncio.Queue = asyncio.Queue()
        stream = coalesced(q, LONG)
        q.put_nowait({"text": "t0 "})
        first = await asyncio.wait_for(stream.__anext__(), 5)  # not held back for LONG
        for i in (1, 2, 3):
            q.put_nowait({"text": f"t{i} "})
        q.put_nowait({"finish_reason": "stop", "tokens": 4})
        rest = [item async for item in stream]
        return first, rest

    first, rest = asyncio.run(go())
    assert first == {"text": "t0 "}
    assert rest == [{"text": "t1 t2 t3 "}, {"finish_reason": "stop", "tokens": 4}]  # one item, then the end


def test_what_is_already_decoded_leaves_with_the_first_text():
    async def go():
        q: asyncio.Queue = asyncio.Queue()
        for item in ({"text": "a"}, {"text": "b"}, {"finish_reason": "stop"}):
            q.put_nowait(item)
        return [item async for item in coalesced(q, LONG)]

    assert asyncio.run(asyncio.wait_for(go(), 5)) == [{"text": "ab"}, {"finish_reason": "stop"}]


def test_interval_zero_sends_each_token_as_it_comes():
    async def go():
        q: asyncio.Queue = asyncio.Queue()
        stream, out = coalesced(q, 0.0), []
        for i in range(3):
            q.put_nowait({"text": f"t{i} "})
            out.append(await asyncio.wait_for(stream.__anext__(), 5))
        q.put_nowait({"finish_reason": "stop"})
        out += [item async for item in stream]
        return out

    assert asyncio.run(go()) == [{"text": "t0 "}, {"text": "t1 "}, {"text": "t2 "}, {"finish_reason": "stop"}]
