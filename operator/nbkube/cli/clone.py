"""`nbkube clone [DIR]` and `nbkube pull [DIR]`: the namespace's results repository, with stock git.

git talks to the API server (`.../namespaces/<ns>/repositories/results/git`) with the kubeconfig's own
credentials: its CA, client certificate and key, or a bearer token (exec plugins included). They reach
git through its environment (GIT_SSL_*, and GIT_CONFIG_COUNT for the token), never its command line,
which `ps` shows, and are not written into the clone: pull again with `nbkube pull`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path

from nbkube.cli.errors import EXIT_OK, CliError
from nbkube.cli.kubeclient import ClusterClient, ClusterOptions, add_cluster_options
from nbkube.kube import authorization
from nbkube.userapi import paths


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    clone = subparsers.add_parser(
        "clone",
        help="git clone the namespace's results repository",
        description="Clones the results repository of the namespace (every run's executed notebooks, "
        "their history) through the Kubernetes API server, with your kubeconfig's credentials.",
    )
    clone.add_argument("directory", nargs="?", metavar="DIR", help="where (default: results-<namespace>)")
    add_cluster_options(clone)
    clone.set_defaults(handler=cmd_clone)
    pull = subparsers.add_parser(
        "pull", help="git pull a clone made by `nbkube clone`", description="Fetches the newer results."
    )
    pull.add_argument("directory", nargs="?", default=".", metavar="DIR", help="the clone (default: .)")
    add_cluster_options(pull)
    pull.set_defaults(handler=cmd_pull)


def git_environment(kube: ClusterClient) -> dict[str, str]:
    """git's TLS and authentication settings for this kubeconfig's server and user, as environment
    variables: GIT_SSL_* (which win over any git config and over a GIT_SSL_CAINFO already set for other
    servers) and the bearer token as an http.extraHeader through GIT_CONFIG_COUNT."""
    configuration = kube.api_client.configuration
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    if configuration.ssl_ca_cert:
        env["GIT_SSL_CAINFO"] = str(configuration.ssl_ca_cert)
    if not configuration.verify_ssl:
        env["GIT_SSL_NO_VERIFY"] = "1"
    if configuration.cert_file:
        env["GIT_SSL_CERT"] = str(configuration.cert_file)
        env["GIT_SSL_KEY"] = str(configuration.key_file)
    token = authorization(configuration)
    settings = [("http.extraHeader", f"Authorization: {token}")] if token else []
    env["GIT_CONFIG_COUNT"] = str(len(settings))
    for i, (key, value) in enumerate(settings):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


def _git(argv: list[str], env: dict[str, str]) -> None:
    git = shutil.which("git")
    if not git:
        raise CliError("git not found: install git to clone the results repository")
    done = subprocess.run([git, *argv], env=env, stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        raise CliError(
            f"git {argv[0]} failed (exit code {done.returncode}): see git's message above; a 403 means "
            "your kubeconfig's user may not read this namespace's results (get repositories/git)"
        )


def cmd_clone(args: argparse.Namespace) -> int:
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        url = kube.api_client.configuration.host.rstrip("/") + paths.repository_path(kube.namespace, "git")
        target = args.directory or f"results-{kube.namespace}"
        _git(["clone", "--quiet", url, target], git_environment(kube))
    finally:
        kube.close()
    print(
        f"cloned namespace {kube.namespace}'s results into {target} (update it with `nbkube pull {target}`)"
    )
    return EXIT_OK


def cmd_pull(args: argparse.Namespace) -> int:
    directory = Path(args.directory)
    if not (directory / ".git").exists():
        raise CliError(f"{directory} is not a clone made by `nbkube clone`")
    kube = ClusterClient(ClusterOptions.from_args(args))
    try:
        _git(["-C", str(directory), "pull", "--quiet", "--ff-only"], git_environment(kube))
    finally:
        kube.close()
    return EXIT_OK
