"""The extraction LLM is never called from several threads at once: concurrent requests to the
AttributeExtractor queue for its one engine thread (the serve_llm backend sends them to the
LLMServer asynchronously instead: no thread calls an engine there)."""
import asyncio
import threading
import time

from ipl.serve.config import ServeConfig
from ipl.serve.extractor import AttributeExtractor


def hits(n):
    return [{"listing_id": f"L{i}", "category": "phone", "description": f"Selling my Huawei P30, blue. {i}"}
            for i in range(n)]


def test_concurrent_requests_share_one_engine_thread_one_call_at_a_time(tiny_vlm):
    cfg = ServeConfig(extract={"backend": "llm", "llm": {"backend": "transformers", "model": str(tiny_vlm.path),
                                                         "max_new_tokens": 8, "batch_size": 4}})
    ext = AttributeExtractor(cfg)
    threads, real = set(), ext.llm.generate

    def watched(convs):  # the real engine call, with the calling thread recorded
        threads.add(threading.get_ident())
        time.sleep(0.02)  # widen the window in which overlapping calls would show
        return real(convs)

    ext.llm.generate = watched

    async def many():
        return await asyncio.gather(*(ext.extract("phone", ["Brand", "Color"], hits(3)) for _ in range(8)))

    results = asyncio.run(many())
    assert len(results) == 8 and all("listings" in r and len(r["listings"]) == 3 for r in results)
    stats = ext.get_stats()
    assert stats["engine_calls"] == 8 and stats["max_concurrent_engine_calls"] == 1
    assert len(threads) == 1 and threads != {threading.get_ident()}


def test_the_offline_backend_needs_no_engine():
    ext = AttributeExtractor(ServeConfig())
    out = asyncio.run(ext.extract("phone", ["Brand"], [{**h, "attributes": {"Brand": "Huawei"}} for h in hits(2)]))
    assert [l_["values"] for l_ in out["listings"]] == [{"Brand": "Huawei"}] * 2
    assert ext.get_stats()["engine_calls"] == 0
