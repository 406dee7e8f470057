"""`nbkube mcp`: the MCP server over stdio (the SDK is imported only when the command runs)."""

from __future__ import annotations

import argparse

from nbkube.cli.kubeclient import add_cluster_options


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "mcp",
        help="serve notebook sessions, runs and sweeps as MCP tools over stdio (for agents)",
        description="Runs a Model Context Protocol server on stdin/stdout: sessions (create, list, fork, "
        "delete), cell edits by id, execution with outputs as content, kernel state, interrupt and restart, "
        "notebooks, runs and sweeps, acting with your kubeconfig. Add it to an MCP client's configuration "
        "as the command `nbkube mcp -n NAMESPACE`.",
    )
    add_cluster_options(parser)
    parser.set_defaults(handler=cmd_mcp)


def cmd_mcp(args: argparse.Namespace) -> int:
    from nbkube.mcp.actions import Nbkube
    from nbkube.mcp.server import build_server

    nbkube = Nbkube(args.kubeconfig, args.context, args.namespace)
    try:
        build_server(nbkube).run("stdio")
    finally:
        nbkube.close()
    return 0
