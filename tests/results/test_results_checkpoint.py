import pytest
from nbkube.results import CheckpointPolicy


def test_defaults_are_twenty_cells_or_thirty_seconds() -> None:
    policy = CheckpointPolicy()
    assert (policy.every_cells, policy.every_seconds) == (20, 30.0)


def test_checkpoint_after_every_n_cells() -> None:
    policy = CheckpointPolicy(every_cells=5, every_seconds=0)
    policy.start(now=0.0)
    assert not policy.should_checkpoint(4, now=1.0)
    assert policy.should_checkpoint(5, now=1.0)
    policy.checkpointed(5, now=1.0)
    assert not policy.should_checkpoint(9, now=2.0)
    assert policy.should_checkpoint(10, now=2.0)


def test_checkpoint_after_t_seconds_only_when_cells_finished() -> None:
    policy = CheckpointPolicy(every_cells=0, every_seconds=30)
    policy.start(now=100.0)
    assert not policy.should_checkpoint(1, now=129.9)
    assert policy.should_checkpoint(1, now=130.0)
    policy.checkpointed(1, now=130.0)
    assert not policy.should_checkpoint(1, now=500.0)  # nothing new to save


def test_first_call_starts_the_clock_when_start_was_not_called() -> None:
    policy = CheckpointPolicy(every_cells=100, every_seconds=10)
    assert not policy.should_checkpoint(1, now=50.0)
    assert policy.should_checkpoint(2, now=60.0)


def test_resumed_run_counts_from_the_cells_already_committed() -> None:
    policy = CheckpointPolicy(every_cells=3, every_seconds=0)
    policy.start(now=0.0, cells_done=10)
    assert not policy.should_checkpoint(12, now=1.0)
    assert policy.should_checkpoint(13, now=1.0)


def test_negative_intervals_are_refused() -> None:
    with pytest.raises(ValueError):
        CheckpointPolicy(every_cells=-1)
