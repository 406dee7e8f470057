"""What a restarted operator reads back from a run's journal."""

from __future__ import annotations

from pathlib import Path

from nbkube.kernelwork.journal import WorkJournal


def stream(text: str) -> dict[str, str]:
    return {"output_type": "stream", "name": "stdout", "text": text}


async def test_the_cell_in_flight_is_the_one_started_without_a_result(tmp_path: Path) -> None:
    journal = WorkJournal(tmp_path, "uid")
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
    journal = WorkJournal(tmp_path, "uid")
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
    journal = WorkJournal(tmp_path, "uid")
    await journal.started(1, 3, "m3")
    await journal.started(1, 3, "m3")  # journaled again by the operator that resumed it

    progress = await journal.progress(1)

    assert progress.in_flight == (3, "m3")
    assert progress.replied is None


# A writer that journals `cells` finished cells of attempt 1, then dies (SIGKILL) halfway through the
# line of the next one: what an operator killed mid-write leaves behind.
_TORN_WRITER = """
import asyncio, json, sys
from pathlib import Path
from nbkube.kernelwork.journal import WorkJournal

async def main(directory, first, last):
    journal = WorkJournal(Path(directory), "uid")
    for index in range(first, last + 1):
        await journal.started(1, index, f"m{index}")
        journal.output(1, index, {"output_type": "stream", "name": "stdout", "text": f"{index}\\n"})
        await journal.record(1, index, {"cell_type": "code", "source": f"c{index}", "outputs": []})
    await journal.started(1, last + 1, f"m{last + 1}")
    line = json.dumps({"attempt": 1, "index": last + 1, "cell": {"source": "x" * 4096}}) + "\\n"
    journal._append(line[: len(line) // 2])  # through the journal's own write path, then killed
    print("torn", flush=True)
    await asyncio.sleep(60)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


async def _write_then_die(directory: Path, first: int, last: int) -> None:
    import asyncio
    import os
    import signal
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _TORN_WRITER,
        str(directory),
        str(first),
        str(last),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.stdout is not None
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"torn\n"
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL


async def test_writers_killed_mid_line_twice_lose_no_finished_cell(tmp_path: Path) -> None:
    journal_file = tmp_path / "uid.jsonl"
    await _write_then_die(tmp_path, 0, 0)  # cell 0 finished, cell 1's line torn
    assert not journal_file.read_bytes().endswith(b"\n")
    await _write_then_die(tmp_path, 1, 3)  # the restarted operator finishes 1-3, dies mid-line again

    progress = await WorkJournal(tmp_path, "uid").progress(1)

    assert sorted(progress.finished) == [0, 1, 2, 3]
    assert progress.in_flight == (4, "m4")
    assert progress.partial_outputs == []


async def test_the_first_append_cuts_a_torn_tail_and_readers_skip_a_bad_line(tmp_path: Path, caplog) -> None:
    journal_file = tmp_path / "uid.jsonl"
    journal_file.write_bytes(
        b'{"attempt":1,"index":0,"cell":{"source":"a"}}\n'
        b"\xff\xfe not json\n"  # a torn line glued to a later one by an older operator
        b'{"attempt":1,"index":1,"cell":{"source":"b"}}\n'
        b'{"attempt":1,"index":2,"ce'
    )
    journal = WorkJournal(tmp_path, "uid")
    assert sorted((await journal.progress(1)).finished) == [0, 1]
    assert "line 2 is not a journal entry" in caplog.text

    await journal.open()
    assert journal_file.read_bytes().endswith(b'"index":1,"cell":{"source":"b"}}\n')
    await journal.record(1, 2, {"source": "c"})

    assert journal_file.read_bytes().endswith(
        b'{"attempt":1,"index":1,"cell":{"source":"b"}}\n'
        + (b'{"attempt":1,"index":2,"cell":{"source":"c"}}\n')
    )
    assert sorted((await journal.progress(1)).finished) == [0, 1, 2]
