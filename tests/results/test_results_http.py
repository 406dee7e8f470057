"""Users read results back: stock `git clone` and plain file GETs against a real aiohttp server."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import nbformat
import pytest
from conftest import executed_notebook, git, record
from nbkube.results import ResultsStore
from nbkube.results.http import serve_results

CLIENT_ENV = {
    **os.environ,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    "NO_PROXY": "127.0.0.1",
}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ResultsStore]:
    """One namespace's repository, as ResultsRepositories keeps it: the HTTP app serves one namespace."""
    async with ResultsStore(tmp_path / "results" / "default.git", namespace="default", fsync=False) as s:
        yield s


@pytest.fixture
async def base_url(store: ResultsStore) -> AsyncIterator[str]:
    """One repository served as the user-facing API serves each namespace's (without its
    authentication), on a loopback port: `<url>` is what `git clone` is given."""
    runner, url = await serve_results(store)
    yield f"{url}/git"
    await runner.cleanup()


async def user_git(*args: str, cwd: Path | None = None, check: bool = True) -> tuple[int, str]:
    """A user's git client; async because the server under test runs in this event loop."""
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=CLIENT_ENV,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed:\n{text}")
    return proc.returncode or 0, text


async def _seed(store: ResultsStore) -> None:
    await store.commit_run(record(1), executed_notebook(), {"log.txt": b"hello\n"}, final=True)
    await store.commit_run(record(2), executed_notebook(), final=True)


@pytest.mark.parametrize("protocol", ["2", "0"])
async def test_stock_git_clones_the_repository_over_http(
    store: ResultsStore, base_url: str, tmp_path: Path, protocol: str
) -> None:
    await _seed(store)
    dest = tmp_path / "clone"
    await user_git("-c", f"protocol.version={protocol}", "clone", "--quiet", base_url, str(dest))

    assert (dest / "default/analysis-1/outputs/log.txt").read_bytes() == b"hello\n"
    cloned = nbformat.read(dest / "default/analysis-2/analysis.ipynb", as_version=4)
    assert sorted(p.name for p in dest.iterdir() if p.name != ".git") == ["default"]
    assert cloned.metadata["nbkube"]["uid"] == "0000-uid-2"
    _, head = await user_git("rev-parse", "HEAD", cwd=dest)
    assert head.strip() == store.head
    await user_git("fsck", "--strict", cwd=dest)
    _, refs = await user_git("ls-remote", base_url)
    assert "refs/nbkube" not in refs  # the final-result index stays internal
    assert f"{store.head}\trefs/heads/main" in refs


async def test_partial_clone_fetches_blobs_on_demand(
    store: ResultsStore, base_url: str, tmp_path: Path
) -> None:
    await _seed(store)
    dest = tmp_path / "partial"
    await user_git("clone", "--quiet", "--filter=blob:none", "--no-checkout", base_url, str(dest))
    _, text = await user_git("show", "HEAD:default/analysis-1/outputs/log.txt", cwd=dest)
    assert text == "hello\n"


async def test_pushes_are_refused(store: ResultsStore, base_url: str, tmp_path: Path) -> None:
    await _seed(store)
    dest = tmp_path / "clone"
    await user_git("clone", "--quiet", base_url, str(dest))
    (dest / "mine.txt").write_text("not allowed\n")
    await user_git("add", "mine.txt", cwd=dest)
    await user_git("-c", "user.name=u", "-c", "user.email=u@x", "commit", "-qm", "sneaky", cwd=dest)
    rc, _ = await user_git("push", "origin", "HEAD:main", cwd=dest, check=False)
    assert rc != 0
    assert git(store.root, "rev-parse", "main").strip() == store.head
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base_url}/info/refs", params={"service": "git-receive-pack"}) as resp:
            assert resp.status == 403
        async with http.post(f"{base_url}/git-receive-pack", data=b"0000") as resp:
            assert resp.status == 403
        async with http.get(f"{base_url}/HEAD") as resp:  # the dumb protocol
            assert resp.status == 404


async def test_files_endpoint_returns_a_file_at_a_commit(store: ResultsStore, base_url: str) -> None:
    base_url = base_url.removesuffix("/git")
    info = await store.commit_run(record(1), executed_notebook(), final=True)
    await store.commit_run(record(1, state="Running"), executed_notebook(1), final=False)  # ignored
    newer = await store.commit_run(record(2), executed_notebook(5), final=True)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base_url}/files/{info.path}", params={"ref": info.commit}) as resp:
            assert resp.status == 200
            assert resp.headers["X-Nbkube-Commit"] == info.commit
            assert resp.content_type == "application/x-ipynb+json"
            body = await resp.read()
        assert body == await store.read_file(info.path, info.commit)
        assert nbformat.reads(body.decode(), as_version=4).metadata["nbkube"]["run"] == "analysis-1"
        async with http.get(f"{base_url}/files/{info.path}") as resp:  # HEAD by default
            assert resp.headers["X-Nbkube-Commit"] == newer.commit
        async with http.get(f"{base_url}/files/{newer.path}", params={"ref": info.commit}) as resp:
            assert resp.status == 404  # analysis-2 did not exist yet at that commit
        async with http.get(f"{base_url}/files/default/nope.ipynb") as resp:
            assert resp.status == 404
        async with http.get(f"{base_url}/files/{info.path}", params={"ref": "--upload-pack=x"}) as resp:
            assert resp.status == 400


async def test_large_files_are_streamed_intact(tmp_path: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    async with ResultsStore(tmp_path / "r" / "default.git", namespace="default", fsync=False) as store:
        info = await store.commit_run(record(1), executed_notebook(), {"big.bin": payload}, final=True)
        runner, base_url = await serve_results(store)
        try:
            async with aiohttp.ClientSession() as http:
                url = f"{base_url}/files/default/analysis-1/outputs/big.bin"
                async with http.get(url, params={"ref": info.commit}) as resp:
                    assert resp.status == 200
                    assert resp.content_type == "application/octet-stream"
                    assert await resp.read() == payload
        finally:
            await runner.cleanup()


async def test_the_runs_endpoint_lists_the_repositorys_runs_and_no_uid_lookup_is_served(
    store: ResultsStore, base_url: str
) -> None:
    base_url = base_url.removesuffix("/git")
    await _seed(store)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base_url}/runs") as resp:
            runs = await resp.json()
        assert [(r["namespace"], r["name"], r["uid"], r["final"]) for r in runs] == [
            ("default", "analysis-1", "0000-uid-1", True),
            ("default", "analysis-2", "0000-uid-2", True),
        ]
        async with http.get(f"{base_url}/final/0000-uid-2") as resp:
            assert resp.status == 404
