import threading
import time

import pytest

from stream.frames import EndOfStream
from stream.pipeline.queues import FrameQueue, Stopped


def drain_until_end(q: FrameQueue) -> list:
    items = []
    while True:
        item = q.get(timeout=5)
        if isinstance(item, EndOfStream):
            return items
        items.append(item)


def test_the_queue_is_lossless_and_ordered_with_a_slow_consumer():
    stop = threading.Event()
    q = FrameQueue(2, stop)

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


def test_blocked_put_and_get_give_up_when_stop_is_set():
    stop = threading.Event()
    q = FrameQueue(1, stop)
    q.put("a")
    threading.Timer(0.1, stop.set).start()
    with pytest.raises(Stopped):
        q.put("b")  # would block forever without the stop Event
    empty = FrameQueue(1, stop)
    with pytest.raises(Stopped):
        empty.get()


def test_get_times_out_on_an_empty_queue():
    import queue

    q = FrameQueue(1, threading.Event())
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.1)
    assert time.monotonic() - started < 2


def test_drain_returns_queued_items_without_the_marker():
    q = FrameQueue(4, threading.Event())
    q.put(1)
    q.put(2)
    q.close()
    assert q.drain() == [1, 2]


def test_bad_queue_settings_are_rejected():
    with pytest.raises(ValueError):
        FrameQueue(0, threading.Event())
