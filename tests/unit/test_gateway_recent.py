"""The gateway's ring of recently written messages: what it gives back after a drop is what was
written in the last seconds, oldest first, bounded in count and bytes."""

from __future__ import annotations

from nbkube.gateway.recent import RecentMessages


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_only_the_last_seconds_come_back_oldest_first_and_once() -> None:
    clock = Clock()
    recent = RecentMessages(seconds=3.0, clock=clock)
    recent.add("iopub", [b"old"])
    clock.now += 5
    recent.add("iopub", [b"a"])
    clock.now += 1
    recent.add("shell", [b"b"])
    assert recent.take() == [("iopub", [b"a"]), ("shell", [b"b"])]
    assert recent.take() == []


def test_the_ring_keeps_at_most_its_count_and_bytes_and_never_one_message_larger_than_them() -> None:
    recent = RecentMessages(seconds=60, max_messages=3, max_bytes=10, clock=Clock())
    for part in (b"1", b"2", b"3", b"4"):
        recent.add("iopub", [part])
    assert [parts for _, parts in recent.take()] == [[b"2"], [b"3"], [b"4"]]
    recent.add("iopub", [b"x" * 11])
    assert recent.take() == []
    recent.add("iopub", [b"123456"])
    recent.add("iopub", [b"789012"])
    assert [parts for _, parts in recent.take()] == [[b"789012"]]
