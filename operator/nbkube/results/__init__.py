"""The results repository: executed notebooks committed to git, served read-only over HTTP.

One bare repository per namespace (`nbkube.results.repositories`), each a `ResultsStore`.
See `nbkube.results.store` for the design (why the git CLI, layout, crash safety, pruning) and
`nbkube.results.http` for how users fetch and clone.
"""

from .branches import BranchCommit, StaleBranch
from .checkpoint import CheckpointPolicy
from .records import (
    CommitInfo,
    InvalidNotebookError,
    PruneResult,
    ReadLimitExceeded,
    RunRecord,
    RunSummary,
)
from .repositories import ResultsRepositories
from .store import ResultsStore, StoreClosedError, StoreLockedError

__all__ = [
    "BranchCommit",
    "CheckpointPolicy",
    "CommitInfo",
    "InvalidNotebookError",
    "PruneResult",
    "ReadLimitExceeded",
    "ResultsRepositories",
    "ResultsStore",
    "RunRecord",
    "RunSummary",
    "StaleBranch",
    "StoreClosedError",
    "StoreLockedError",
]
