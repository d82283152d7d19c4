"""The dynamic batcher: batches up to max_batch within the wait window, groups by key, refuses when full, survives
errors; the upload decoder's limits; the Prometheus rendering."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from visionfm.serve.batching import DynamicBatcher, Overloaded
from visionfm.serve.metrics import Metrics
from visionfm.serve.uploads import UploadError, decode_upload


def _calls():
    seen: list[list] = []

    def fn(payloads):
        seen.append(list(payloads))
        return [p * 10 for p in payloads]

    return seen, fn


async def _submit_all(b: DynamicBatcher, fn, items, key=lambda i: 0):
    return await asyncio.gather(*[b.submit(fn, key(i), i) for i in items])


def test_concurrent_jobs_share_one_batch():
    seen, fn = _calls()
    b = DynamicBatcher(max_batch=8, wait_ms=200, queue_size=32)
    try:
        assert asyncio.run(_submit_all(b, fn, range(8))) == [i * 10 for i in range(8)]  # each caller its own row
    finally:
        b.close()
    assert [len(s) for s in seen] == [8]


def test_bound_methods_of_one_model_share_a_batch():
    class Model:
        def __init__(self):
            self.sizes = []

        def run(self, payloads):
            self.sizes.append(len(payloads))
            return list(payloads)

    m = Model()
    b = DynamicBatcher(max_batch=8, wait_ms=200, queue_size=32)
    try:  # m.run is a new bound-method object at every access
        asyncio.run(_submit_all(b, m.run, range(6)))
    finally:
        b.close()
    assert m.sizes == [6]


def test_max_batch_one_runs_each_alone_and_keys_split_groups():
    seen, fn = _calls()
    b = DynamicBatcher(max_batch=1, wait_ms=50, queue_size=32)
    try:
        asyncio.run(_submit_all(b, fn, range(5)))
    finally:
        b.close()
    assert [len(s) for s in seen] == [1] * 5
    seen, fn = _calls()
    b = DynamicBatcher(max_batch=8, wait_ms=200, queue_size=32)
    try:  # two input shapes never go into one forward
        asyncio.run(_submit_all(b, fn, range(6), key=lambda i: i % 2))
    finally:
        b.close()
    assert sorted(sorted(s) for s in seen) == [[0, 2, 4], [1, 3, 5]]


def test_batch_waits_for_announced_jobs_and_not_for_withdrawn_ones():
    """Jobs announced while their uploads decode (``arriving``) join the batch being collected, past the wait
    window; a withdrawn announcement (a bad upload) does not hold the batch, and nothing waits past ``hold_ms``."""
    import time

    seen, fn = _calls()
    b = DynamicBatcher(max_batch=8, wait_ms=1, queue_size=32, hold_ms=2000)

    async def late(i: int, delay: float):
        with b.arriving() as arrived:
            await asyncio.sleep(delay)  # "decoding": much longer than the 1 ms window
            arrived()
            return await b.submit(fn, 0, i)

    async def scenario():
        return await asyncio.gather(b.submit(fn, 0, 0), late(1, 0.05), late(2, 0.1))

    try:
        assert asyncio.run(scenario()) == [0, 10, 20]
        assert [len(s) for s in seen] == [3]  # one forward: the first job waited for the two announced ones
        seen.clear()

        async def withdrawn():
            with b.arriving():
                await asyncio.sleep(0.01)
                raise ValueError("bad upload")

        async def scenario2():
            t0 = time.perf_counter()
            first = asyncio.ensure_future(b.submit(fn, 0, 5))
            with pytest.raises(ValueError):
                await withdrawn()
            await first
            return time.perf_counter() - t0

        assert asyncio.run(scenario2()) < 1.0 and [len(s) for s in seen] == [1]  # not held for 2 s
        assert b.incoming() == 0
    finally:
        b.close()
    seen, fn = _calls()
    b = DynamicBatcher(max_batch=8, wait_ms=1, queue_size=32, hold_ms=30)
    try:  # an announcement that never arrives holds a batch for hold_ms at most

        async def stuck():
            with b.arriving():
                t0 = time.perf_counter()
                await b.submit(fn, 0, 1)
                return time.perf_counter() - t0

        assert asyncio.run(stuck()) < 1.0 and seen == [[1]]
    finally:
        b.close()


def test_full_queue_is_refused_and_errors_reach_the_caller():
    gate = threading.Event()

    def slow(payloads):
        gate.wait(5)
        return payloads

    b = DynamicBatcher(max_batch=1, wait_ms=0, queue_size=2)
    try:
        first = b.submit_nowait(slow, 0, 1)
        for _ in range(50):  # the worker takes the first job, then two more fit in the queue
            if b.depth() == 0:
                break
            threading.Event().wait(0.01)
        b.submit_nowait(slow, 0, 2)
        b.submit_nowait(slow, 0, 3)
        with pytest.raises(Overloaded, match="busy"):
            b.submit_nowait(slow, 0, 4)
        gate.set()
        assert first.result(5) == 1

        def broken(payloads):
            raise RuntimeError("model exploded")

        with pytest.raises(RuntimeError, match="exploded"):
            b.submit_nowait(broken, 1, 0).result(5)
        assert b.submit_nowait(lambda p: p, 2, 7).result(5) == 7  # the worker survived
    finally:
        gate.set()
        b.close()


def test_decode_upload_refuses_bad_files_with_a_status(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((40, 30, 3), np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    up = decode_upload(data, "dir/ok.png", 10_000)
    assert up.size == (30, 40) and up.filename == "ok.png" and up.image.dtype == np.uint8
    for bad, why in ((b"", "empty"), (b"\x00" * 300, "ok.png"), (data[: len(data) // 2], "ok.png")):
        with pytest.raises(UploadError, match=why) as e:
            decode_upload(bad, "ok.png", 10_000)
        assert e.value.status == 400
    with pytest.raises(UploadError, match="exceed") as e:
        decode_upload(data, "ok.png", 1000)  # 1200 pixels
    assert e.value.status == 413


def test_metrics_text_format():
    m = Metrics(lambda: 3)
    m.requests.inc("/v1/predict", "200")
    m.requests.inc("/v1/predict", "200")
    m.latency.observe(0.03, "/v1/predict")
    m.batch.observe(4, "dr")
    text = m.render()
    assert 'visionfm_requests_total{endpoint="/v1/predict",status="200"} 2' in text
    assert 'visionfm_request_seconds_bucket{endpoint="/v1/predict",le="0.025"} 0' in text
    assert 'visionfm_request_seconds_bucket{endpoint="/v1/predict",le="0.05"} 1' in text
    assert 'visionfm_batch_size_bucket{model="dr",le="4"} 1' in text and "visionfm_queue_depth 3" in text
    assert text.count("# TYPE") == 7
