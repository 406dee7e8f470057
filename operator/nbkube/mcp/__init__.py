"""`nbkube mcp`: NotebookSessions, NotebookRuns and sweeps as Model Context Protocol tools for agents.

The server speaks MCP over stdio (the official Python SDK, `mcp`) and acts with the user's own
kubeconfig through the CLI's path: `nbkube.cli.kubeclient.ClusterClient` for the objects and
`nbkube.cli.sessionops.SessionApi` for a session's operations through the user API, so RBAC is the
API server's, exactly as for `nbkube session ...`.

    command.py   the `nbkube mcp` subcommand (imports the SDK only when it runs)
    actions.py   what each tool does, synchronously, with the CLI's functions (run in worker threads)
    content.py   outputs, results and notebooks as MCP content blocks; the resource URIs
    server.py    the MCPServer: tools, resources, every failure a tool error saying what to do
"""
