"""Bad input and faults give one clear message naming what is wrong and what to run."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from nbkube_testenv import procs
from nbkube_testenv.cluster import BINARIES, BUILD_SCRIPT, ClusterError, LocalCluster, find_assets


def path_with_only_bash(tmp_path: Path) -> str:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "bash").symlink_to(shutil.which("bash") or "/bin/bash")
    return str(bindir)


def test_build_without_go_names_the_missing_toolchain_and_the_alternative(tmp_path: Path) -> None:
    env = {"PATH": path_with_only_bash(tmp_path), "NBKUBE_CACHE": str(tmp_path / "c"), "HOME": str(tmp_path)}
    done = subprocess.run(
        [shutil.which("bash") or "/bin/bash", str(BUILD_SCRIPT)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "no Go toolchain on PATH" in done.stderr
    assert "KUBEBUILDER_ASSETS" in done.stderr


def test_up_reports_a_failed_build_with_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("PATH", path_with_only_bash(tmp_path))
    monkeypatch.setenv("NBKUBE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ClusterError) as failed:
        find_assets()
    message = str(failed.value)
    assert "building the Kubernetes binaries failed" in message
    assert "no Go toolchain" in message
    assert "make k8s-binaries" in message


def test_kubebuilder_assets_without_the_binaries_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    with pytest.raises(ClusterError) as failed:
        find_assets()
    assert f"KUBEBUILDER_ASSETS={tmp_path} lacks {', '.join(BINARIES)}" in str(failed.value)


def test_up_with_a_busy_apiserver_port_names_the_port(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ClusterError) as failed:
            LocalCluster(tmp_path / "c", assets=tmp_path).up(apiserver_port=port, quiet=True)
    assert f"port {port} on 127.0.0.1 is busy" in str(failed.value)
    assert not (tmp_path / "c" / "state.json").exists()


@pytest.mark.cluster
def test_component_that_dies_is_reported_with_its_log_and_nothing_is_left_running(tmp_path: Path) -> None:
    assets = tmp_path / "assets"
    assets.mkdir()
    real = find_assets()
    for name in BINARIES:
        (assets / name).symlink_to(real / name)
    # A real kube-apiserver refusing a flag value: its own error message must reach the user.
    (assets / "kube-apiserver").unlink()
    wrapper = assets / "kube-apiserver"
    bad_flag = "--service-cluster-ip-range=not-a-cidr"
    wrapper.write_text(f'#!/bin/sh\nexec {real / "kube-apiserver"} "$@" {bad_flag}\n')
    wrapper.chmod(0o755)
    directory = tmp_path / "c"
    with pytest.raises(ClusterError) as failed:
        LocalCluster(directory, assets).up(quiet=True)
    message = str(failed.value)
    assert message.startswith("kube-apiserver exited before ready; last lines of")
    assert "service-cluster-ip-range[0] is not a valid cidr" in message
    assert procs.marked_processes(str(directory)) == []
    assert (directory / "logs" / "kube-apiserver.log").exists()
    assert not os.path.exists(directory / "state.json")
