"""Names of the user-facing API (the aggregated API group), shared by the operator and the CLI."""

from __future__ import annotations

from urllib.parse import quote

GROUP = "subresources.nbkube.io"
VERSION = "v1alpha1"
APISERVICE = f"{VERSION}.{GROUP}"
PREFIX = f"/apis/{GROUP}/{VERSION}"
# The one repository of a namespace, as a named object of the `repositories` resource.
REPOSITORY = "results"

# Subresources, as RBAC names them (resource/subresource).
RUN_LOG = "notebookruns/log"
REPOSITORY_GIT = "repositories/git"
REPOSITORY_FILES = "repositories/files"
REPOSITORY_RUNS = "repositories/runs"
REPOSITORY_HTML = "repositories/html"  # a notebook of the repository rendered as inert HTML
REPOSITORY_UI = "repositories/ui"  # the read-only web page of a namespace's runs and results
SESSIONS = "notebooksessions"
# A session's reads (verb get) and operations (verb create: the API server's verb for a POST).
SESSION_READS = ("notebook", "history", "variables")
# `exec`, not `execute`: the API server keeps a request open past its 60 s timeout only for the
# long-running subresources it knows by name (exec, attach, log, portforward, proxy, watch).
SESSION_EXEC = "exec"
SESSION_OPERATIONS = ("edit", SESSION_EXEC, "interrupt", "restart")


def run_log_path(namespace: str, run: str) -> str:
    return f"{PREFIX}/namespaces/{quote(namespace, safe='')}/notebookruns/{quote(run, safe='')}/log"


def repository_path(namespace: str, sub: str) -> str:
    """`sub` is git, files, html, runs or ui."""
    return f"{PREFIX}/namespaces/{quote(namespace, safe='')}/repositories/{REPOSITORY}/{sub}"


def file_path(namespace: str, path: str) -> str:
    return f"{repository_path(namespace, 'files')}/{quote(path, safe='/')}"


def html_path(namespace: str, path: str) -> str:
    """The notebook at `path` rendered as HTML (`?ref=` a commit or branch)."""
    return f"{repository_path(namespace, 'html')}/{quote(path, safe='/')}"


def ui_path(namespace: str) -> str:
    """The web page of a namespace (its index; its scripts and styles are beside it)."""
    return f"{repository_path(namespace, 'ui')}/"


def session_path(namespace: str, session: str, sub: str) -> str:
    """`sub` is one of SESSION_READS or SESSION_OPERATIONS."""
    return f"{PREFIX}/namespaces/{quote(namespace, safe='')}/{SESSIONS}/{quote(session, safe='')}/{sub}"
