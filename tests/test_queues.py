import threading
import time

import pytest

from stream.pipeline.frames import EndOfStream
from stream.pipeline.queues import FrameQueue, Stopped


def drain_until_end(q: FrameQueue) -> list:
    items = []
    while True:
        item = q.get(timeout=5)
        if isinstance(item, EndOfStream):
            return items
        items.append(item)


def test_block_policy_is_lossless_and_ordered_with_a_slow_consumer():
    stop = threading.Event()
    q = FrameQueue(2, "block", stop)

    def produce():
        for i in range(50):
            q.put(i)
        q.close()

    producer = threading.Thread(target=produce)
    producer.start()
    received = []
    while True:
        item = q.get(timeout=5)
        if isinstance(item, EndOfStream):
            break
        received.append(item)
        time.sleep(0.001)
    producer.join(5)
    assert received == list(range(50))
    assert q.dropped == 0


def test_latest_policy_keeps_newest_and_counts_every_drop():
    q = FrameQueue(3, "latest", threading.Event())
    for i in range(10):
        q.put(i)
    assert q.dropped == 7
    assert [q.get(timeout=1) for _ in range(3)] == [7, 8, 9]


def test_end_marker_displaces_the_oldest_frame_under_latest_policy_without_blocking():
    q = FrameQueue(3, "latest", threading.Event())
    for i in range(3):
        q.put(i)
    q.close("done")  # no consumer: must not wait for one
    assert q.dropped == 1
    items = [q.get(timeout=1) for _ in range(3)]
    assert items[:2] == [1, 2]
    assert isinstance(items[2], EndOfStream) and items[2].reason == "done"


def test_blocked_put_and_get_give_up_when_stop_is_set():
    stop = threading.Event()
    q = FrameQueue(1, "block", stop)
    q.put("a")
    threading.Timer(0.1, stop.set).start()
    with pytest.raises(Stopped):
        q.put("b")  # would block forever without the stop Event
    empty = FrameQueue(1, "block", stop)
    with pytest.raises(Stopped):
        empty.get()


def test_get_times_out_on_an_empty_queue():
    import queue

    q = FrameQueue(1, "block", threading.Event())
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.1)
    assert time.monotonic() - started < 2


def test_drain_returns_queued_items_without_the_marker():
    q = FrameQueue(4, "block", threading.Event())
    q.put(1)
    q.put(2)
    q.close()
    assert q.drain() == [1, 2]


@pytest.mark.parametrize("size,policy", [(0, "block"), (2, "newest")])
def test_bad_queue_settings_are_rejected(size, policy):
    with pytest.raises(ValueError):
        FrameQueue(size, policy, threading.Event())
