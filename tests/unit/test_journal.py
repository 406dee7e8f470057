"""What a restarted operator reads back from a run's journal."""

from __future__ import annotations

from pathlib import Path

from nbkube.run.journal import RunJournal


def stream(text: str) -> dict[str, str]:
    return {"output_type": "stream", "name": "stdout", "text": text}


async def test_the_cell_in_flight_is_the_one_started_without_a_result(tmp_path: Path) -> None:
    journal = RunJournal(tmp_path, "uid")
    await journal.started(1, 0, "m0")
    await journal.record(1, 0, {"cell_type": "code", "source": "a"})
    await journal.started(1, 1, "m1")
    journal.output(1, 1, stream("partial"))
    await journal.started(2, 5, "other-attempt")

    progress = await journal.progress(1)

    assert set(progress.finished) == {0}
    assert progress.in_flight == (1, "m1")
    assert progress.partial_outputs == [stream("partial")]
    assert progress.replied is None


async def test_a_cell_sent_ahead_is_in_flight_and_the_one_before_it_counts_as_replied(tmp_path: Path) -> None:
    journal = RunJournal(tmp_path, "uid")
    await journal.started(1, 0, "m0")
    journal.output(1, 0, stream("done before the reply\n"))
    await journal.started(1, 2, "m2")  # sent when cell 0 replied ok, before its idle status
    journal.output(1, 2, stream("next"))

    progress = await journal.progress(1)

    assert progress.finished == {}
    assert progress.in_flight == (2, "m2")
    assert progress.partial_outputs == [stream("next")]
    assert progress.replied == (0, [stream("done before the reply\n")])


async def test_a_resumed_cell_started_twice_is_one_cell_in_flight(tmp_path: Path) -> None:
    journal = RunJournal(tmp_path, "uid")
    await journal.started(1, 3, "m3")
    await journal.started(1, 3, "m3")  # journaled again by the operator that resumed it

    progress = await journal.progress(1)

    assert progress.in_flight == (3, "m3")
    assert progress.replied is None
