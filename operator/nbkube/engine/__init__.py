"""nbkube's kernel engine: runs notebooks through Jupyter Kernel Gateway. Knows nothing of Kubernetes.

async with GatewayClient(url, token) as client:
    connection = await client.connect((await client.start_kernel("python3"))["id"])
    result = await NotebookExecutor(connection, cell_timeout=600).execute_notebook(nb)
"""

from nbkube.api.states import CellState
from nbkube.engine.client import GatewayClient, KernelModel
from nbkube.engine.connection import KernelConnection, Subscription
from nbkube.engine.errors import (
    AuthenticationError,
    EngineError,
    ExecutionLost,
    GatewayError,
    GatewayUnavailable,
    KernelLimitReached,
    KernelNotFound,
)
from nbkube.engine.executor import (
    CellResult,
    NotebookExecutor,
    NotebookResult,
    OnCellEnd,
    OnCellStart,
    OnOutput,
    ResumePoint,
    execute_cell,
    execute_notebook,
    upgrade_notebook,
)
from nbkube.engine.outputs import OutputLimits, bounded_outputs
from nbkube.engine.parameters import UnsupportedLanguage, inject_parameters, parameters_source
from nbkube.engine.pool import KernelPool

__all__ = [
    "AuthenticationError",
    "CellResult",
    "CellState",
    "EngineError",
    "ExecutionLost",
    "GatewayClient",
    "GatewayError",
    "GatewayUnavailable",
    "KernelConnection",
    "KernelLimitReached",
    "KernelModel",
    "KernelNotFound",
    "KernelPool",
    "NotebookExecutor",
    "NotebookResult",
    "OnCellEnd",
    "OnCellStart",
    "OnOutput",
    "OutputLimits",
    "ResumePoint",
    "Subscription",
    "UnsupportedLanguage",
    "bounded_outputs",
    "execute_cell",
    "execute_notebook",
    "inject_parameters",
    "parameters_source",
    "upgrade_notebook",
]
