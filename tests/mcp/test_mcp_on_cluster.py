"""`nbkube mcp` against the local control plane with the operator, driven by the MCP SDK's own client
over stdio: the tools and their schemas; one session's life (create, three cells inserted and executed,
kernel state, a matplotlib PNG as image content, a failing cell's traceback, history, fork, the notebook
as a resource); a two-child sweep; wrong arguments and unknown ids as tool errors while the server stays
up; a viewer's refusal. Prints the round trip of a trivial cell through MCP against the CLI's own
session exec path (SessionApi), alternating, in the same run."""

from __future__ import annotations

import base64
import json
import statistics
import time
from pathlib import Path
from typing import Any

from mcp_helpers import images, mcp_server, ok, texts, tool_error
from nbkube.cli.kubeclient import ClusterClient, ClusterOptions
from nbkube.cli.sessionops import SessionApi
from nbkube_testenv.cluster import ClusterInfo

# A matplotlib figure as PNG bytes, displayed (whichever backend the kernel has, no inline one needed).
PLOT = """\
import io
import matplotlib
matplotlib.use("agg")
import matplotlib.pyplot as plt
from IPython.display import Image, display
fig, ax = plt.subplots(figsize=(1, 1))
ax.plot([1, 2, 3])
png = io.BytesIO()
fig.savefig(png, format="png")
display(Image(data=png.getvalue()))"""
ROUND_TRIPS = 15
# A recorded value the package-free way (the output scrapbook's glue writes).
RECORD_SCORE = """\
from IPython.display import display
display({"application/scrapbook.scrap.json+json":
         {"name": "score", "data": alpha * 10, "encoder": "json", "version": 1}}, raw=True)"""


async def test_an_agent_drives_a_session_and_a_sweep_through_mcp_and_mistakes_are_tool_errors(
    cluster: ClusterInfo, operator: Any, env_namespace: str, kubectl: Any, tmp_path: Path
) -> None:
    ns = env_namespace
    async with mcp_server(cluster.kubeconfig, ns) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) >= set(
            "session_create session_list session_delete session_fork cell_edit execute kernel_state "
            "kernel_interrupt kernel_restart notebook_read run_notebook run_sweep".split()
        )
        edit = tools["cell_edit"].input_schema
        assert edit["required"] == ["session", "edit_mode"]
        assert edit["properties"]["edit_mode"]["enum"] == ["insert", "replace", "delete"]
        cell_ids = tools["execute"].input_schema["properties"]["cell_ids"]["anyOf"][0]
        assert cell_ids == {"type": "array", "items": {"type": "string"}}
        assert all(tool.description for tool in tools.values())

        created = json.loads(texts(await ok(client, "session_create", name="agent", environment="py")))
        assert created["state"] == "Ready" and created["kernel"] == "idle"
        assert created["notebook"] == f"nbkube://{ns}/sessions/agent/notebook"

        # three cells inserted by id, at the end in turn, then executed: text, and the PNG as an image
        for cell_id, source in (("x", "x = 21"), ("y", "y = x * 2\nprint('y is', y)"), ("plot", PLOT)):
            edited = texts(await ok(client, "cell_edit", session="agent", edit_mode="insert", cell_id=cell_id,
                                    new_source=source))  # fmt: skip
            assert f"cell {cell_id}; head " in edited
        executed = await ok(client, "execute", session="agent", all=True)
        assert "── cell y succeeded [2] ──\ny is 42\n" in texts(executed)
        [png] = images(executed)
        assert png.mime_type == "image/png" and base64.b64decode(png.data).startswith(b"\x89PNG\r\n\x1a\n")

        state = await ok(client, "kernel_state", session="agent")
        variables = json.loads(state.content[1].text)
        assert {v["name"]: v["repr"] for v in variables["variables"]}.items() >= {
            "x": "21",
            "y": "42",
        }.items()

        # a failing cell: a tool error carrying its traceback (no ANSI colours) and what to do
        failed = await tool_error(client, "execute", session="agent", code="def f():\n    1 / 0\nf()")
        assert "ZeroDivisionError: division by zero" in failed and "----> 2     1 / 0" in failed
        assert "\x1b" not in failed and "fix the cell (cell_edit with edit_mode replace)" in failed

        # history and a fork at the commit of the `execute --all`: the fork has its outputs, fresh kernel
        history = json.loads(texts(await ok(client, "session_history", session="agent")))
        executed_at = next(e["commit"] for e in history if e["message"].startswith("execute x, y, plot"))
        forked = json.loads(texts(await ok(client, "session_fork", session="agent", new_name="agent-fork",
                                           at_commit=executed_at[:10])))  # fmt: skip
        assert forked["state"] == "Ready"
        read = texts(await ok(client, "notebook_read", session="agent-fork"))
        assert "── 1 y code [2] ──\ny = x * 2\nprint('y is', y)\n┄┄ output ┄┄\ny is 42\n" in read
        assert "1 / 0" not in read
        resource = await client.read_resource(f"nbkube://{ns}/sessions/agent/notebook")
        notebook = json.loads(resource.contents[0].text)
        assert [c["id"] for c in notebook["cells"]][:3] == ["x", "y", "plot"]
        await ok(client, "session_delete", name="agent-fork")

        # a sweep of two children: each child's parameters, state and cell summaries
        swept = await client.call_tool(
            "run_sweep",
            {"environment": "py", "cells": ["alpha = 0", "print('alpha is', alpha * 10)", RECORD_SCORE],
             "matrix": {"alpha": [1, 2]}, "parallelism": 2, "name": "agent-sweep", "wait_seconds": 120},
        )  # fmt: skip
        sweep = json.loads(texts(swept))
        assert not swept.is_error, sweep
        assert sweep["state"] == "Succeeded" and sweep["sweep"]["succeeded"] == 2
        children = {c["parameters"]["alpha"]: c for c in sweep["children"]}
        assert set(children) == {1, 2} and all(c["state"] == "Succeeded" for c in children.values())
        assert [children[a]["values"] for a in (1, 2)] == [{"score": 10}, {"score": 20}]
        assert sweep["sweep"]["valueNames"] == ["score"] and "rows" not in sweep["sweep"]
        assert "alpha is 20" in [cell.get("summary") for cell in children[2]["cells"]]
        child = sweep["children"][0]["name"]
        assert "alpha is" in texts(await ok(client, "notebook_read", run=child))

        # a session from the run's executed notebook, with a local file beside it
        (tmp_path / "data.csv").write_text("a,b\n1,2\n")
        created = json.loads(
            texts(
                await ok(client, "session_create", name="from-run", environment="py", from_run=child,
                         files=[str(tmp_path / "data.csv")])
            )
        )  # fmt: skip
        assert created["state"] == "Ready"
        assert "alpha is" in texts(await ok(client, "notebook_read", session="from-run"))
        code = "print(open('data.csv').read().split()[-1])"
        read = await ok(client, "execute", session="from-run", code=code)
        assert "1,2" in texts(read)
        await ok(client, "session_delete", name="from-run")

        # hostile names are refused before they reach a request path
        for hostile in ("../agent", "agent/../../secrets", "agent?watch=true", "%2e%2e"):
            assert "name" in await tool_error(client, "execute", session=hostile, all=True)
            assert "name" in await tool_error(client, "session_create", name=hostile, environment="py")
        assert "at most one of" in await tool_error(
            client, "session_create", name="two", environment="py", cells=["1"], from_run=child
        )

        # mistakes: tool errors that say what is wrong, and the server stays up
        assert "not found" in await tool_error(client, "execute", session="nope", all=True)
        assert "nope" in await tool_error(client, "execute", session="agent", cell_ids=["nope"])
        assert "cell_ids" in await tool_error(client, "execute", session="agent", cell_ids="x")
        assert "timeout" in await tool_error(client, "execute", session="agent", all=True, timeout="soon")
        assert "exactly one of" in await tool_error(client, "execute", session="agent")
        assert "name" in await tool_error(client, "session_create", name=7, environment="py")
        assert "NotebookEnvironment 'nope' not found" in await tool_error(
            client, "session_create", name="other", environment="nope"
        )
        assert "needs cell_id" in await tool_error(client, "cell_edit", session="agent", edit_mode="delete")
        assert "Unknown tool" in await tool_error(client, "no_such_tool")
        listed = json.loads(texts(await ok(client, "session_list")))
        assert [row["name"] for row in listed] == ["agent"]

        # the MCP round trip of a trivial cell against the CLI's own exec path, alternating
        await ok(client, "cell_edit", session="agent", edit_mode="insert", cell_id="trivial", new_source="1")
        kube = ClusterClient(ClusterOptions(str(cluster.kubeconfig), None, ns))
        api = SessionApi(kube, "agent")
        mcp_ms, cli_ms = [], []
        try:
            for _ in range(ROUND_TRIPS):
                start = time.perf_counter()
                await ok(client, "execute", session="agent", cell_ids=["trivial"])
                mcp_ms.append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                events = list(api.execute({"cellIds": ["trivial"]}))
                cli_ms.append((time.perf_counter() - start) * 1000)
                assert events[-1]["type"] == "result"
        finally:
            kube.close()
        mcp_median, cli_median = statistics.median(mcp_ms), statistics.median(cli_ms)
        print(
            f"\nmcp_cell_round_trip_ms={mcp_median:.1f} cli_session_exec_ms={cli_median:.1f} "
            f"mcp_overhead_ms={mcp_median - cli_median:.1f} (medians of {ROUND_TRIPS}, alternating)"
        )

    # a viewer reads but may not change the session; in a namespace without rights it reads nothing
    kubectl("create", "serviceaccount", "mcp-viewer", namespace=ns)
    kubectl("create", "rolebinding", "mcp-viewer", "--clusterrole=view", f"--serviceaccount={ns}:mcp-viewer",
            namespace=ns)  # fmt: skip
    viewer = cluster.service_account_kubeconfig(ns, "mcp-viewer", tmp_path / "viewer.kubeconfig")
    async with mcp_server(viewer, ns) as client:
        assert "x = 21" in texts(await ok(client, "notebook_read", session="agent"))
        refused = await tool_error(client, "cell_edit", session="agent", edit_mode="insert", new_source="2")
        assert "was refused" in refused and "notebooksessions/edit" in refused
        refused = await tool_error(client, "execute", session="agent", all=True)
        assert "was refused" in refused and "notebooksessions/exec" in refused
        assert "forbidden" in await tool_error(client, "session_list", namespace="default")
        await ok(client, "session_list")

    async with mcp_server(cluster.kubeconfig, ns) as client:
        await ok(client, "session_delete", name="agent")
