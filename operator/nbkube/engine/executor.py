"""Execute nbformat notebooks cell by cell over a KernelConnection.

Per-cell metadata written into the notebook:
- `cell.metadata.execution`: nbclient's keys `iopub.status.busy`, `iopub.execute_input`,
  `shell.execute_reply`, `iopub.status.idle` (the kernel's message timestamps), so tools that read
  nbclient's timing read ours;
- `cell.metadata.nbkube`: `{"state", "started", "finished", "duration_ms"}` (engine wall clock, UTC ISO).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

from nbkube.api.states import CellState
from nbkube.engine.connection import KERNEL_LOST_STATES, KernelConnection, Subscription
from nbkube.engine.errors import EngineError, ExecutionLost, GatewayUnavailable, KernelNotFound
from nbkube.engine.outputs import CellOutputs, NotebookBudget, Output, OutputLimits
from nbkube.engine.protocol import new_id, parent_id

SKIP_TAG = "skip-execution"
RAISES_TAG = "raises-exception"
SUMMARY_CHARS = 2000
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
CELL_ID = re.compile(r"^[a-zA-Z0-9-_]{1,64}$")


@dataclass
class CellResult:
    index: int
    """Position of the cell in notebook.cells."""
    cell_id: str
    state: CellState = CellState.PENDING
    execution_count: int | None = None
    msg_id: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_ms: float | None = None
    error_name: str | None = None
    error_value: str | None = None
    traceback_summary: str | None = None
    """The traceback's last lines without ANSI colours, at most SUMMARY_CHARS characters."""
    error_allowed: bool = False
    """The cell raised, but `raises-exception` or allow_errors lets the notebook go on; or it timed out,
    was stopped by an interrupt, and allow_errors lets the notebook go on (as nbclient does with
    interrupt_on_timeout and allow_errors)."""
    input_requested: bool = False
    output_bytes: int = 0
    truncated: bool = False
    kernel_restarted: bool = False
    """The engine restarted the kernel (an interrupt did not stop a timed-out or cancelled cell)."""
    resumed: bool = False

    @property
    def blocks_notebook(self) -> bool:
        if self.state in (CellState.FAILED, CellState.TIMED_OUT):
            return not self.error_allowed
        return self.state in (CellState.KERNEL_DIED, CellState.CANCELLED)


@dataclass
class NotebookResult:
    notebook: NotebookNode
    state: CellState
    """succeeded, failed, timedOut, kernelDied or cancelled."""
    cells: list[CellResult] = field(default_factory=list)
    """One per code cell from the first executed one (the resume point) on, in order."""
    failed_index: int | None = None
    duration_ms: float = 0.0
    spill_path: Path | None = None
    """The JSON-lines spill of truncated cells' full outputs, if any; store it beside the notebook."""


@dataclass(frozen=True)
class ResumePoint:
    """Where a previous executor left off: the cell at `index` was sent as `msg_id`, and `outputs` are
    what of it reached the previous executor (the gateway does not replay those). They count against
    the caps as if they had just arrived."""

    index: int
    msg_id: str
    outputs: tuple[dict[str, Any], ...] = ()


OnCellStart = Callable[[int, NotebookNode, str], Awaitable[None] | None]
OnOutput = Callable[[int, Output], Awaitable[None] | None]
OnCellEnd = Callable[[int, CellResult], Awaitable[None] | None]
OnOutputMessage = Callable[[int, str], None]


async def _call(callback: Callable[..., Any] | None, *args: Any) -> None:
    if callback is not None:
        result = callback(*args)
        if inspect.isawaitable(result):
            await result


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class _SentAhead:
    """A cell whose execute request went out while the cell before it was finishing."""

    index: int
    msg_id: str
    started_at: str
    started: float


def _execute_content(cell: NotebookNode) -> dict[str, Any]:
    return {
        "code": cell.source,
        "silent": False,
        "store_history": True,
        "user_expressions": {},
        "allow_stdin": True,
        "stop_on_error": False,
    }


def _runs(cell: NotebookNode) -> bool:
    """Whether a code cell is executed (not skipped by tag or for being empty)."""
    return SKIP_TAG not in cell.get("metadata", {}).get("tags", []) and bool(cell.source.strip())


def _next_executable(nb: NotebookNode, index: int) -> tuple[int, NotebookNode] | None:
    """The code cell after `index`, if it runs (a skipped code cell in between ends the look-ahead:
    its on_cell_end must come in order)."""
    for later in range(index + 1, len(nb.cells)):
        cell = nb.cells[later]
        if cell.cell_type == "code":
            return (later, cell) if _runs(cell) else None
    return None


def summarize_traceback(lines: list[str]) -> str:
    text = ANSI.sub("", "\n".join(lines))
    return text[-SUMMARY_CHARS:]


def upgrade_notebook(nb: NotebookNode) -> NotebookNode:
    """Upgrade to nbformat 4.5 (in place when already v4) so that every cell has a valid, unique id."""
    if nb.get("nbformat", 4) != 4:
        nb = nbformat.convert(nb, 4)
    if nb.get("nbformat_minor", 0) < 5:
        nb = nbformat.v4.upgrade(nb, from_version=4, from_minor=nb.get("nbformat_minor", 0))
    seen: set[str] = set()
    for cell in nb.cells:
        cell_id = cell.get("id")
        if not isinstance(cell_id, str) or not CELL_ID.match(cell_id) or cell_id in seen:
            cell_id = cell["id"] = uuid.uuid4().hex[:8]
        seen.add(cell_id)
    return nb


class NotebookExecutor:
    """Runs cells on one kernel connection. One executor per notebook run (its output budget and
    spill are per notebook).

    Callbacks may be plain functions or coroutines: on_cell_start(index, cell, msg_id) runs before
    the execute request is sent (store msg_id and connection.session_id to resume later);
    on_output(index, output) gets each new output as it arrives (a stream output carries just the
    new chunk), and just before it on_output_message(index, msg_id) the id of the kernel's message that
    carried it (a journal keeps it, so a reconnect after a restart drops what it had already);
    on_cell_end(index, cell_result).

    With `pipeline` (the default), the next code cell's execute request is sent as soon as the current
    cell's execute_reply says ok, while the current cell's last iopub messages (its idle status) are
    still on their way: the kernel runs requests one at a time, so this only saves the round trip
    between the two. on_cell_start of the next cell then comes before on_cell_end of the current one.
    A cell that failed, timed out or was interrupted is never followed this way.
    """

    def __init__(
        self,
        connection: KernelConnection,
        *,
        cell_timeout: float | None = None,
        allow_errors: bool = False,
        limits: OutputLimits | None = None,
        on_cell_start: OnCellStart | None = None,
        on_output: OnOutput | None = None,
        on_cell_end: OnCellEnd | None = None,
        on_output_message: OnOutputMessage | None = None,
        interrupt_grace: float = 5.0,
        watchdog_interval: float = 0.5,
        kernel_info_timeout: float = 60.0,
        pipeline: bool = True,
        lost_reply_grace: float = 2.0,
    ) -> None:
        self.connection = connection
        self.cell_timeout = cell_timeout
        self.allow_errors = allow_errors
        self.budget = NotebookBudget(limits or OutputLimits())
        self.on_cell_start = on_cell_start
        self.on_output = on_output
        self.on_cell_end = on_cell_end
        self.on_output_message = on_output_message
        self.interrupt_grace = interrupt_grace
        self.watchdog_interval = watchdog_interval
        self.kernel_info_timeout = kernel_info_timeout
        self.pipeline = pipeline
        self.lost_reply_grace = lost_reply_grace
        """After a refused oversized message: how long a cell's reply may trail its probe's idle."""
        self._cancelled = False
        self._current: Subscription | None = None
        self._upcoming: tuple[int, NotebookNode] | None = None
        self._sent_ahead: _SentAhead | None = None
        # Kernel deaths the gateway reported on this connection before our cells (see _run).
        self._lost_events_seen = connection.kernel_lost_events
        # The last oversized-message event a cell took as its own (every subscription gets each one).
        self._oversized_seen = connection.oversized_messages

    # -- control ---------------------------------------------------------------------------------------

    def cancel(self) -> None:
        """Interrupt the running cell and end the notebook as cancelled (safe to call from callbacks)."""
        self._cancelled = True
        if self._current is not None:
            self._current.push({"nbkube": "cancel"})

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def spill_path(self) -> Path | None:
        return self.budget.spill.path

    # -- notebook --------------------------------------------------------------------------------------

    async def execute_notebook(
        self, nb: NotebookNode, *, resume: ResumePoint | None = None, start_index: int = 0
    ) -> NotebookResult:
        """Execute the notebook's code cells in order, in place (the notebook is upgraded to 4.5 first).

        Cells before start_index are left alone (a previous run executed them). With `resume`, cells
        before resume.index are left alone and the cell at resume.index is reattached by msg_id (see
        resume_cell) instead of executed again. The spill keeps what an earlier execution spilled for the
        cells before the first one run here (Spill.start), and nothing of a notebook started from 0.
        """
        first = resume.index if resume is not None else start_index
        await self.budget.spill.start(first)
        self._lost_events_seen = self.connection.kernel_lost_events
        started = time.monotonic()
        nb = upgrade_notebook(nb)
        result = NotebookResult(notebook=nb, state=CellState.SUCCEEDED)
        try:
            if resume is None:
                # (When resuming, the replayed messages must be consumed first: a request now would
                # wait behind the resumed cell while its bounded subscription holds up the reader.)
                await self._record_language_info(nb)
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code" or index < first:
                    continue
                if result.state is not CellState.SUCCEEDED:
                    result.cells.append(await self._not_run(index, cell, CellState.PENDING))
                    continue
                if self._cancelled:
                    result.state, result.failed_index = CellState.CANCELLED, index
                    result.cells.append(await self._not_run(index, cell, CellState.CANCELLED))
                    continue
                if resume is not None and index == resume.index:
                    self._upcoming = None
                    cell_result = await self.resume_cell(cell, index, resume.msg_id, resume.outputs)
                else:
                    self._upcoming = _next_executable(nb, index) if self.pipeline else None
                    cell_result = await self.execute_cell(cell, index)
                result.cells.append(cell_result)
                if cell_result.blocks_notebook:
                    result.state, result.failed_index = cell_result.state, index
        except GatewayUnavailable as e:
            self._drop_sent_ahead()
            result.state = CellState.FAILED
            result.duration_ms = (time.monotonic() - started) * 1000
            result.spill_path = self.budget.spill.path
            e.partial_result = result
            raise
        if resume is not None and result.state is CellState.SUCCEEDED:
            await self._record_language_info(nb)
        await self.budget.spill.flush()
        result.spill_path = self.budget.spill.path
        result.duration_ms = (time.monotonic() - started) * 1000
        return result

    async def _record_language_info(self, nb: NotebookNode) -> None:
        info = await self.connection.kernel_info(reply_timeout=self.kernel_info_timeout)
        if "language_info" in info:
            nb.metadata["language_info"] = info["language_info"]

    async def _not_run(self, index: int, cell: NotebookNode, state: CellState) -> CellResult:
        """The result of a cell the notebook stops before. If its request was already sent ahead (its
        on_cell_start was called), its on_cell_end says so; whatever the kernel does with it is not
        collected (the notebook is ending, and the kernel with it)."""
        result = CellResult(index, cell.id, state=state)
        ahead = self._sent_ahead
        if ahead is not None and ahead.index == index:
            self._drop_sent_ahead()
            result.msg_id = ahead.msg_id
            await _call(self.on_cell_end, index, result)
        return result

    def _drop_sent_ahead(self) -> None:
        if self._sent_ahead is not None:
            self.connection.unsubscribe(self._sent_ahead.msg_id)
            self._sent_ahead = None

    async def _send_ahead(self) -> None:
        """Sends the next cell's execute request now (called when the running cell's reply said ok)."""
        upcoming, self._upcoming = self._upcoming, None
        if upcoming is None or self._sent_ahead is not None or self._cancelled:
            return
        if self.connection.kernel_lost_events > self._lost_events_seen:
            return
        index, cell = upcoming
        msg_id = new_id()
        self.connection.subscribe(msg_id)
        self._sent_ahead = _SentAhead(index, msg_id, _now(), time.monotonic())
        await _call(self.on_cell_start, index, cell, msg_id)
        await self.connection.send("shell", "execute_request", _execute_content(cell), msg_id=msg_id)

    # -- cells -----------------------------------------------------------------------------------------

    async def execute_cell(self, cell: NotebookNode, index: int = 0) -> CellResult:
        """Execute one code cell, updating it in place (outputs, execution_count, metadata)."""
        return await self._run(cell, index, resume_msg_id=None)

    async def resume_cell(
        self, cell: NotebookNode, index: int, msg_id: str, earlier: Sequence[dict[str, Any]] = ()
    ) -> CellResult:
        """Collect the rest of an execution started earlier as `msg_id` on this kernel, without running it
        again. The connection must use the session_id of the one that sent it (the gateway replays what
        it buffered for that session); open it with GatewayClient.connect(..., resume_msg_ids=(msg_id,))
        so replayed messages are not dropped before this call. Outputs that reached the previous
        connection are not replayed: pass them as `earlier` (they come first, within the caps). Raises
        ExecutionLost if the kernel is already past the execution and none of its messages were
        replayed."""
        return await self._run(cell, index, resume_msg_id=msg_id, earlier=earlier)

    async def _run(
        self,
        cell: NotebookNode,
        index: int,
        resume_msg_id: str | None,
        earlier: Sequence[dict[str, Any]] = (),
    ) -> CellResult:
        if not cell.get("id"):
            cell["id"] = uuid.uuid4().hex[:8]
        result = CellResult(index, cell["id"])
        if not _runs(cell):
            result.state = CellState.SKIPPED
            await _call(self.on_cell_end, index, result)
            return result
        connection = self.connection
        ahead = self._sent_ahead if self._sent_ahead is not None and self._sent_ahead.index == index else None
        if connection.kernel_lost_events > self._lost_events_seen:
            if ahead is not None:
                self._drop_sent_ahead()
            # The kernel died and was restarted between cells: running on would execute the rest of
            # the notebook in a fresh kernel without the state of the cells before.
            result.state = CellState.KERNEL_DIED
            result.error_name = "KernelDied"
            result.error_value = "the kernel died between cells (restarted by the gateway; its state is lost)"
            await _call(self.on_cell_end, index, result)
            return result
        msg_id = ahead.msg_id if ahead is not None else resume_msg_id or new_id()
        subscription = connection.subscribe(msg_id)
        outputs = CellOutputs(self.budget, index, cell["id"])
        for output in earlier:
            await outputs.add(output)
        run = _CellRun(self, cell, index, result, subscription, outputs)
        result.msg_id = msg_id
        result.resumed = resume_msg_id is not None
        result.state = CellState.RUNNING
        result.started_at = ahead.started_at if ahead is not None else _now()
        started = ahead.started if ahead is not None else time.monotonic()
        if ahead is not None:
            self._sent_ahead = None
        cell.outputs = []
        self._current = subscription
        error: BaseException | None = None
        try:
            if ahead is None:
                await _call(self.on_cell_start, index, cell, msg_id)
            if self._cancelled:
                subscription.push({"nbkube": "cancel"})
            if resume_msg_id is not None:
                await run.send_probe()
            elif ahead is None:  # (a cell sent ahead went out while the previous one finished)
                await connection.send("shell", "execute_request", _execute_content(cell), msg_id=msg_id)
            await run.collect()
        except (GatewayUnavailable, ExecutionLost) as e:
            error = e
            result.state = CellState.FAILED
            result.error_name, result.error_value = type(e).__name__, str(e)
        finally:
            self._current = None
            await run.stop()
            result.finished_at = _now()
            result.duration_ms = (time.monotonic() - started) * 1000
            await self._finish_cell(cell, result, outputs, run.timing)
        if error is not None:
            raise error
        await _call(self.on_cell_end, index, result)
        return result

    async def _finish_cell(
        self, cell: NotebookNode, result: CellResult, outputs: CellOutputs, timing: dict[str, str]
    ) -> None:
        final = await outputs.finish()
        result.output_bytes = outputs.total
        result.truncated = outputs.incomplete
        cell.outputs = final
        cell.execution_count = result.execution_count
        cell.metadata["execution"] = timing
        cell.metadata["nbkube"] = {
            "state": result.state.value,
            "started": result.started_at,
            "finished": result.finished_at,
            "duration_ms": round(result.duration_ms or 0.0, 3),
        }


class _CellRun:
    """The state machine of one running cell: done when both execute_reply (shell) and status idle
    (iopub) of its msg_id arrived, in either order."""

    def __init__(
        self,
        executor: NotebookExecutor,
        cell: NotebookNode,
        index: int,
        result: CellResult,
        subscription: Subscription,
        outputs: CellOutputs,
    ) -> None:
        self.executor = executor
        self.connection = executor.connection
        self.cell = cell
        self.index = index
        self.result = result
        self.subscription = subscription
        self.outputs = outputs
        self.timing: dict[str, str] = {}
        self.got_reply = False
        self.got_idle = False
        self.reply_status: str | None = None
        self.final_state: CellState | None = None
        self.interrupted_at: float | None = None
        self.kernel_session: str | None = None
        self.probe_id: str | None = None
        self.watchdog: asyncio.Task[None] | None = None
        self.aliases: list[str] = []
        self.may_have_lost = False
        """A message over the websocket's limit was refused while this cell ran: what the gateway wrote
        after it went with the old websocket, so the cell's own reply or idle may never come."""
        self.reply_lost = False
        self.saw_idle = False
        self.saw_error = False
        self.probe_done_at: float | None = None
        self.owns_oversized = False

    async def send_probe(self) -> None:
        """An empty silent execution queued behind the resumed one: its reply arriving first means the
        resumed execution's reply will never come."""
        self.probe_id = new_id()
        self.connection.route(self.probe_id, self.subscription)
        self.aliases.append(self.probe_id)
        content = {
            "code": "",
            "silent": True,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": False,
        }
        await self.connection.send("shell", "execute_request", content, msg_id=self.probe_id)

    async def stop(self) -> None:
        self.connection.unsubscribe(self.subscription.msg_id)
        for alias in self.aliases:
            self.connection.unsubscribe(alias)
        if self.watchdog is not None:
            self.watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.watchdog

    async def interrupt(self, state: CellState) -> None:
        self.final_state = state
        self.interrupted_at = asyncio.get_running_loop().time()
        try:
            await self.connection.interrupt()
        except KernelNotFound:
            self.final_state = CellState.KERNEL_DIED
            self.got_reply = self.got_idle = True

    async def collect(self) -> None:
        executor = self.executor
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + executor.cell_timeout if executor.cell_timeout else None
        msg_id = self.subscription.msg_id
        while not (self.got_reply and self.got_idle):
            now = loop.time()
            wait = executor.watchdog_interval
            if self.interrupted_at is not None:
                wait = min(wait, self.interrupted_at + executor.interrupt_grace - now)
            elif deadline is not None:
                wait = min(wait, deadline - now)
            message = await self.subscription.get(max(wait, 0.0))
            if message is None:
                await self.on_quiet(loop.time(), start, deadline)
                continue
            event = message.get("nbkube")
            if event == "cancel":
                if self.interrupted_at is None:
                    await self.interrupt(CellState.CANCELLED)
                else:
                    self.final_state = CellState.CANCELLED
                continue
            if event == "kernel_died":
                self.kernel_died(message["reason"])
                return
            if event == "oversized":
                await self.on_oversized(message)
                continue
            header = message["header"]
            msg_type = header["msg_type"]
            channel = message.get("channel")
            content = message["content"]
            ours = parent_id(message) == msg_id
            if channel == "iopub":
                if msg_type == "status":
                    state = content.get("execution_state")
                    if state in KERNEL_LOST_STATES:
                        self.kernel_died(f"the gateway reported the kernel {state}")
                        return
                    if self.may_have_lost and parent_id(message) == self.probe_id:
                        # iopub is ordered: nothing of ours comes after the probe's status.
                        self.got_idle = True
                        if state == "idle" and self.probe_done_at is None:
                            self.probe_done_at = loop.time()
                    elif ours and state == "idle":
                        self.got_idle = self.saw_idle = True
                        self.timing["iopub.status.idle"] = header.get("date", "")
                    elif ours and state == "busy":
                        self.kernel_session = header.get("session")
                        self.timing["iopub.status.busy"] = header.get("date", "")
                elif not ours:
                    continue
                elif msg_type == "execute_input":
                    self.result.execution_count = content.get("execution_count")
                    self.timing["iopub.execute_input"] = header.get("date", "")
                    self.kernel_session = self.kernel_session or header.get("session")
                else:
                    output = await self.outputs.handle(message)
                    if msg_type == "error":
                        self.saw_error = True
                        self.note_error(content)
                    if output is not None:
                        if executor.on_output_message is not None:
                            executor.on_output_message(self.index, header["msg_id"])
                        await _call(executor.on_output, self.index, output)
            elif channel == "shell" and msg_type == "execute_reply":
                if not ours:  # the probe's reply: the kernel is past our execution
                    if self.may_have_lost:
                        # Shell is ordered: a reply of ours not seen by now went with the old websocket.
                        # With all of our iopub seen (our idle), an error output says how it ended.
                        if not self.got_reply:
                            self.reply_missing()
                        continue
                    if not self.got_reply:  # the probe overtook the resumed execution
                        raise ExecutionLost(msg_id)
                    continue
                self.got_reply = True
                self.reply_status = content.get("status")
                self.timing["shell.execute_reply"] = header.get("date", "")
                if content.get("execution_count") is not None:
                    self.result.execution_count = content["execution_count"]
                if self.reply_status == "error" and self.result.error_name is None:
                    self.note_error(content)
                if (
                    self.reply_status == "ok"
                    and not self.got_idle
                    and self.final_state is None
                    and self.interrupted_at is None
                    and self.probe_id is None
                ):
                    await executor._send_ahead()
            elif channel == "stdin" and msg_type == "input_request" and ours:
                self.result.input_requested = True
                await self.connection.send("stdin", "input_reply", {"value": ""}, parent=header)
        self.settle()

    async def on_oversized(self, event: dict[str, Any]) -> None:
        """A message over the websocket's limit was refused (the connection reconnected). It is this
        cell's unless the cell's idle came first (then it belongs to a cell after it) or an earlier
        cell took it. Either way the gateway's messages written after it on the old websocket are
        lost, and this cell's reply or idle may be among them (or every message of a cell sent ahead).
        A probe queued behind what was sent ends the wait: its shell reply says whether our reply was
        lost, its iopub status that nothing more of ours comes. An iopub message of the cell sent ahead
        says the same sooner (checked when quiet: it also keeps this cell from waiting on a probe stuck
        behind that cell's full subscription)."""
        executor = self.executor
        if not self.got_idle and event["seq"] > executor._oversized_seen:
            executor._oversized_seen = event["seq"]
            self.owns_oversized = True
            await self.outputs.message_lost(event.get("size"), event.get("limit"))
        self.may_have_lost = True
        if self.probe_id is None:
            await self.send_probe()

    def reply_missing(self) -> None:
        """Our reply will not come (the kernel is past the cell). With all of our iopub seen (our idle),
        an error output says how the cell ended; without it the outcome is unknown."""
        self.got_reply = True
        if self.saw_idle:
            self.reply_status = "error" if self.saw_error else "ok"
        else:
            self.reply_lost = True

    def _later_execution(self) -> Subscription | None:
        ahead = self.executor._sent_ahead
        if ahead is None or ahead.index == self.index:
            return None
        return self.connection.subscription(ahead.msg_id)

    def _kernel_is_past_us(self) -> bool:
        """Whether the cell sent ahead has iopub messages waiting: iopub is ordered, so nothing of ours
        comes after them."""
        later = self._later_execution()
        return later is not None and any(m.get("channel") == "iopub" for m in later.waiting())

    async def on_quiet(self, now: float, start: float, deadline: float | None) -> None:
        executor = self.executor
        if self.may_have_lost and self.got_reply and self._kernel_is_past_us():
            self.got_idle = True  # (a cell is sent ahead only once our reply came)
        elif (
            self.may_have_lost
            and not self.got_reply
            and self.probe_done_at is not None
            and now >= self.probe_done_at + executor.lost_reply_grace
        ):
            # The kernel sent our reply before it ran the probe: not here by now, it is lost.
            self.reply_missing()
        elif self.interrupted_at is not None:
            if now >= self.interrupted_at + executor.interrupt_grace:
                # The interrupt did not stop the cell: only a restart frees the kernel (its state is lost).
                await self.connection.restart_kernel()
                self.result.kernel_restarted = True
                self.got_reply = self.got_idle = True
                self.settle()
        elif deadline is not None and now >= deadline:
            await self.interrupt(CellState.TIMED_OUT)
        elif self.watchdog is None and now - start >= executor.watchdog_interval:
            self.watchdog = asyncio.create_task(self.watch_kernel())

    async def watch_kernel(self) -> None:
        """Catches a dead kernel whose `restarting`/`dead` status message we missed (e.g. sent while our
        websocket was reconnecting): the kernel gone from the gateway, or a different kernel process
        answering on the control channel."""
        executor = self.executor
        while True:
            await asyncio.sleep(executor.watchdog_interval)
            reason = None
            try:
                model = await self.connection.model()
                if model.get("execution_state") == "dead":
                    reason = "the gateway reports the kernel dead"
            except KernelNotFound:
                reason = "the kernel is gone from the gateway"
            except EngineError:
                continue  # the websocket path reports an unreachable gateway
            if reason is None and self.kernel_session is not None:
                try:
                    reply = await self.connection.request(
                        "control",
                        "kernel_info_request",
                        {},
                        reply_timeout=max(1.0, executor.watchdog_interval * 2),
                    )
                except (TimeoutError, EngineError):
                    continue
                session = reply["header"].get("session")
                if session and session != self.kernel_session:
                    reason = "the kernel was restarted (a new kernel process answers)"
            if reason is not None:
                self.subscription.push({"nbkube": "kernel_died", "reason": reason})
                return

    def note_error(self, content: dict[str, Any]) -> None:
        ename, evalue, traceback = content.get("ename"), content.get("evalue"), content.get("traceback")
        self.result.error_name = None if ename is None else str(ename)[:SUMMARY_CHARS]
        self.result.error_value = None if evalue is None else str(evalue)[:SUMMARY_CHARS]
        lines = [str(line) for line in traceback] if isinstance(traceback, list) else []
        self.result.traceback_summary = summarize_traceback(lines)

    def kernel_died(self, reason: str) -> None:
        result = self.result
        result.state = CellState.KERNEL_DIED
        result.error_name = "KernelDied"
        result.error_value = f"{reason}; the kernel's state is lost"
        result.traceback_summary = None
        self.outputs.outputs.append(
            nbformat.from_dict(
                {"output_type": "error", "ename": "KernelDied", "evalue": result.error_value, "traceback": []}
            )
        )

    def settle(self) -> None:
        result = self.result
        executor = self.executor
        if self.final_state is CellState.TIMED_OUT:
            result.state = CellState.TIMED_OUT
            result.error_name = "CellTimeout"
            result.error_value = f"the cell ran longer than {executor.cell_timeout:g}s and was interrupted"
            # Going on is sound only in the kernel the cell ran in: after a restart its state is gone.
            result.error_allowed = executor.allow_errors and not result.kernel_restarted
        elif self.final_state is CellState.CANCELLED:
            result.state = CellState.CANCELLED
        elif self.final_state is CellState.KERNEL_DIED:
            self.kernel_died("the kernel disappeared while interrupting")
        elif self.reply_lost:
            limit = self.connection.max_msg_size
            whose = "this cell" if self.owns_oversized else "an earlier cell"
            result.state = CellState.FAILED
            result.error_name = "OutputTooLarge"
            result.error_value = (
                f"{whose} sent a message larger than the websocket's limit of {limit} bytes; it was "
                "refused, the connection was reset, and the kernel's messages written after it (this "
                "cell's reply among them) were lost, so whether the cell raised is unknown. The kernel "
                "is past the cell and still running."
            )
            tags = self.cell.get("metadata", {}).get("tags", [])
            result.error_allowed = executor.allow_errors or RAISES_TAG in tags
        elif self.reply_status in ("error", "aborted"):
            result.state = CellState.FAILED
            if self.reply_status == "aborted" and result.error_name is None:
                result.error_name, result.error_value = "Aborted", "the kernel aborted the execution"
            tags = self.cell.get("metadata", {}).get("tags", [])
            result.error_allowed = executor.allow_errors or RAISES_TAG in tags
        elif result.input_requested:
            result.state = CellState.INPUT_REQUESTED
        else:
            result.state = CellState.SUCCEEDED


async def execute_notebook(
    nb: NotebookNode, connection: KernelConnection, *, resume: ResumePoint | None = None, **options: Any
) -> NotebookResult:
    """NotebookExecutor(connection, **options).execute_notebook(nb, resume=resume)."""
    return await NotebookExecutor(connection, **options).execute_notebook(nb, resume=resume)


async def execute_cell(
    cell: NotebookNode, connection: KernelConnection, index: int = 0, **options: Any
) -> CellResult:
    """Execute one cell with a one-off executor (its own output budget)."""
    return await NotebookExecutor(connection, **options).execute_cell(cell, index)
