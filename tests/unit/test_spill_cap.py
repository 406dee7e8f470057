"""How much of a run's spilled outputs the results store keeps: a pure decision."""

from __future__ import annotations

from pathlib import Path

from nbkube.results.spills import DEFAULT_MAX_SPILL_BYTES, SpillCut, SpillSource, cap_spills


def test_spills_are_kept_whole_in_name_order_until_the_cap_and_the_one_passing_it_is_cut() -> None:
    cuts = cap_spills({"c.jsonl": 500, "a.jsonl": 600, "b.jsonl": 600}, 1000)

    assert cuts == [SpillCut("a.jsonl", 600, 600), SpillCut("b.jsonl", 600, 400), SpillCut("c.jsonl", 500, 0)]
    assert [cut.truncated for cut in cuts] == [False, True, True]
    assert [cut.info() for cut in cuts] == [
        {"bytes": 600, "stored": 600, "truncated": False},
        {"bytes": 600, "stored": 400, "truncated": True},
        {"bytes": 500, "stored": 0, "truncated": True},
    ]


def test_spills_that_fill_the_cap_exactly_are_not_truncated() -> None:
    cuts = cap_spills({"a": 400, "b": 600, "empty": 0}, 1000)

    assert [(cut.stored, cut.truncated) for cut in cuts] == [(400, False), (600, False), (0, False)]


def test_a_cap_of_zero_or_less_keeps_nothing() -> None:
    for limit in (0, -5):
        assert cap_spills({"a": 10}, limit) == [SpillCut("a", 10, 0)]
    assert cap_spills({}, 10) == []


def test_the_default_cap_keeps_a_large_spill_whole() -> None:
    [cut] = cap_spills({"outputs.jsonl": DEFAULT_MAX_SPILL_BYTES}, DEFAULT_MAX_SPILL_BYTES)
    assert not cut.truncated


def test_a_truncated_spill_ends_with_a_marker_naming_what_was_kept_and_the_cap() -> None:
    marker = SpillCut("a", 600, 400).marker(1000)

    assert marker == (
        b"\n[nbkube: output truncated: 400 of 600 bytes kept; the per-run spill limit is 1000 bytes]\n"
    )


def test_a_spill_reads_the_same_given_as_bytes_or_as_a_file(tmp_path: Path) -> None:
    data = b'{"index": 0}\n{"index": 1}\n'
    (tmp_path / "spill.jsonl").write_bytes(data)
    as_bytes, as_file = SpillSource(data), SpillSource(tmp_path / "spill.jsonl")

    for source in (as_bytes, as_file):
        assert (source.size, source.head(5), source.whole()) == (len(data), data[:5], data)
    assert as_bytes.git_path is None  # bytes must be written to a file for git
    assert as_file.git_path == (tmp_path / "spill.jsonl").absolute()  # git reads the file itself


def test_a_spill_file_whose_path_has_a_newline_is_not_given_to_git_by_path(tmp_path: Path) -> None:
    path = tmp_path / "odd\nname.jsonl"
    path.write_bytes(b"x\n")

    assert SpillSource(path).git_path is None  # hash-object --stdin-paths reads one path a line
