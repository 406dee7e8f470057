"""The results repository: executed notebooks committed to git, served read-only over HTTP.

See `nbkube.results.store` for the design (why the git CLI, layout, crash safety, pruning) and
`nbkube.results.http` for how users fetch and clone.
"""

from .checkpoint import CheckpointPolicy
from .records import CommitInfo, InvalidNotebookError, PruneResult, RunRecord, RunSummary
from .store import ResultsStore, StoreClosedError, StoreLockedError

__all__ = [
    "CheckpointPolicy",
    "CommitInfo",
    "InvalidNotebookError",
    "PruneResult",
    "ResultsStore",
    "RunRecord",
    "RunSummary",
    "StoreClosedError",
    "StoreLockedError",
]
