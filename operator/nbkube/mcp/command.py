"""`nbkube mcp`: the MCP server over stdio, or streamable HTTP with --http (the SDK is imported only when
the command runs)."""

from __future__ import annotations

import argparse
import sys

from nbkube.cli.errors import CliError, UsageError
from nbkube.cli.kubeclient import add_cluster_options


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "mcp",
        help="serve notebook sessions, runs and sweeps as MCP tools over stdio (for agents)",
        description="Runs a Model Context Protocol server on stdin/stdout: sessions (create, list, fork, "
        "delete), cell edits by id, execution with outputs as content, kernel state, interrupt and restart, "
        "notebooks, runs and sweeps, acting with your kubeconfig. Add it to an MCP client's configuration "
        "as the command `nbkube mcp -n NAMESPACE`. With --http it serves streamable HTTP on a loopback "
        "address instead, answering only requests with the bearer token it prints (or NBKUBE_MCP_TOKEN).",
    )
    add_cluster_options(parser)
    parser.add_argument(
        "--http", action="store_true", help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio"
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (8765; 0: any free one)")
    parser.set_defaults(handler=cmd_mcp)


def cmd_mcp(args: argparse.Namespace) -> int:
    from nbkube.mcp.actions import Nbkube
    from nbkube.mcp.server import build_server

    sock = None
    if args.http:
        from nbkube.mcp import http

        try:
            sock = http.listen(args.host, args.port)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise CliError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
    nbkube = Nbkube(args.kubeconfig, args.context, args.namespace)
    try:
        server = build_server(nbkube)
        if sock is None:
            server.run("stdio")
            return 0
        token, made = http.server_token()
        host, port = sock.getsockname()[:2]
        url = f"http://{'[' + host + ']' if ':' in host else host}:{port}{http.MCP_PATH}"
        print(f"nbkube mcp: streamable HTTP at {url}", file=sys.stderr)
        if made:
            print(f"nbkube mcp: send 'Authorization: Bearer {token}'", file=sys.stderr)
        sys.stderr.flush()
        app = server.streamable_http_app(streamable_http_path=http.MCP_PATH, host=args.host)
        http.serve(http.bearer_guard(app, token), sock)
    finally:
        nbkube.close()
        if sock is not None:
            sock.close()
    return 0
