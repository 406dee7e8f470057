"""Results repository benchmark: commits/s with 1,000 runs already committed, fetch and clone times.

    python bench/bench_results.py [--runs 1000] [--commits 200] [--namespaces 200]

Builds namespace `default`'s repository (one repository per namespace, `ResultsRepositories`) with
`--runs` final results (20-cell executed notebooks) in a temporary directory, then measures, in it:
- commits per second of new final results, one at a time and 50 at once, with fsync on (the default,
  what survives a node crash) and off (what survives a process crash);
- the time to read one run's notebook back through `GET /results/files/<path>?ref=<commit>` from a real
  aiohttp server on 127.0.0.1 (what `nbkube fetch` does after reading the run's status);
- the time of a stock `git clone` of the whole repository over the read-only smart-HTTP endpoint;
- with `--namespaces` namespaces committing one run each at once: the git processes and open file
  descriptors of this process, at the peak, right after, and once the idle git processes have stopped.
Prints a table, then a JSON object on the last line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import nbformat
from nbkube.results import ResultsRepositories, RunRecord
from nbkube.results.http import serve_results
from nbkube_testenv.procs import git_children, open_fds

GIT_ENV = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "NO_PROXY": "127.0.0.1"}


def notebook(i: int, cells: int = 20) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for c in range(cells):
        cell = nbformat.v4.new_code_cell(f"y = {i} * {c}\nprint(y)", execution_count=c + 1)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"{i * c}\n" * 5)]
        cell.metadata["execution"] = {"iopub.status.busy": "2024-01-01T00:00:00.000Z"}
        nb.cells.append(cell)
    return nb


def run(i: int, namespace: str = "default") -> RunRecord:
    return RunRecord(
        namespace=namespace,
        name=f"run-{i}",
        uid=f"bench-uid-{i}",
        notebook="analysis.ipynb",
        environment="py",
        parameters={"alpha": 0.1 * i},
        state="Succeeded",
    )


async def build(store: ResultsRepositories, runs: int) -> float:
    start = time.perf_counter()
    batch = 16
    for first in range(0, runs, batch):
        await asyncio.gather(
            *(
                store.commit_run(run(i), notebook(i), final=True)
                for i in range(first, min(first + batch, runs))
            )
        )
    return time.perf_counter() - start


async def commits_per_s(store: ResultsRepositories, first: int, count: int, concurrency: int) -> float:
    nbs = [notebook(first + k) for k in range(count)]
    start = time.perf_counter()
    for k0 in range(0, count, concurrency):
        await asyncio.gather(
            *(
                store.commit_run(run(first + k), nbs[k], final=True)
                for k in range(k0, min(k0 + concurrency, count))
            )
        )
    return count / (time.perf_counter() - start)


async def fetch_times(base: str, path: str, commit: str, repeat: int = 20) -> tuple[float, int]:
    times: list[float] = []
    size = 0
    for _ in range(repeat):
        start = time.perf_counter()
        async with aiohttp.ClientSession() as http:  # a fresh client, as a CLI invocation has
            async with http.get(f"{base}/files/{path}", params={"ref": commit}) as resp:
                resp.raise_for_status()
                body = await resp.read()
        times.append(time.perf_counter() - start)
        size = len(body)
    return statistics.median(times), size


async def clone_time(base: str, dest: Path, *extra: str) -> float:
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "git", "clone", "--quiet", *extra, base, str(dest), env=GIT_ENV, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"git clone failed: {err.decode()}")
    return time.perf_counter() - start


def cpu_s() -> float:
    """CPU seconds of this process and its reaped children (the git pipes are reaped when a store closes)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


async def phase(root: Path, first: int, count: int, concurrency: int, fsync: bool) -> tuple[float, float]:
    """(commits/s, CPU ms per commit) for `count` new final results, the store opened and closed around it."""
    cpu0 = cpu_s()
    async with ResultsRepositories(root, fsync=fsync) as store:
        rate = await commits_per_s(store, first, count, concurrency)
    return rate, (cpu_s() - cpu0) * 1e3 / count


async def many_namespaces(root: Path, count: int, idle_s: float = 2.0) -> dict[str, int]:
    """One commit in each of `count` namespaces at once; git processes and fds at the peak and after."""
    fds_before = open_fds()
    peak = {"git": 0, "fds": 0}
    async with ResultsRepositories(root, fsync=False, pipe_idle_seconds=idle_s) as repositories:

        async def sample() -> None:
            while True:
                peak["git"] = max(peak["git"], await asyncio.to_thread(git_children))
                peak["fds"] = max(peak["fds"], open_fds())
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample())
        await asyncio.gather(
            *(repositories.commit_run(run(i, f"ns-{i}"), notebook(i, 3), final=True) for i in range(count))
        )
        sampler.cancel()
        after_git, after_fds = await asyncio.to_thread(git_children), open_fds()
        await asyncio.sleep(idle_s + 1.0)
        idle_git, idle_fds = await asyncio.to_thread(git_children), open_fds()
        assert len(repositories.namespaces()) == count
    return {
        "fds_before": fds_before,
        "peak_git": peak["git"],
        "peak_fds": peak["fds"],
        "after_git": after_git,
        "after_fds": after_fds,
        "idle_git": idle_git,
        "idle_fds": idle_fds,
    }


async def main(runs: int, commits: int, namespaces: int, authorised: bool = True) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="nbkube-bench-results-") as tmp:
        root = Path(tmp) / "results"
        async with ResultsRepositories(root, fsync=False) as repositories:
            build_s = await build(repositories, runs)
        seq_nofsync, cpu_nofsync = await phase(root, runs, commits, 1, fsync=False)
        seq_fsync, cpu_fsync = await phase(root, runs + commits, commits, 1, fsync=True)
        conc_fsync, cpu_conc = await phase(root, runs + 2 * commits, commits, 50, fsync=True)
        async with ResultsRepositories(root) as repositories:
            store = await repositories.repository("default")
            assert store is not None
            start = time.perf_counter()
            total = len(await store.list_runs())
            list_s = time.perf_counter() - start
            target = await store.find_final(f"bench-uid-{runs // 2}")
            assert target is not None
            runner, base = await serve_results(store)
            try:
                fetch_s, fetch_bytes = await fetch_times(base, target.path, target.commit)
                clone_s = await clone_time(f"{base}/git", Path(tmp) / "clone")
                partial_s = await clone_time(
                    f"{base}/git", Path(tmp) / "partial", "--filter=blob:none", "--no-checkout"
                )
            finally:
                await runner.cleanup()
        repo_mb = sum(p.stat().st_size for p in store.git_dir.rglob("*") if p.is_file()) / 1e6
        procs = await many_namespaces(Path(tmp) / "many", namespaces)
    paths: dict[str, float] = {}
    if authorised:
        from _user_api_fetch import authorised_vs_direct

        paths = await authorised_vs_direct()

    rows = [
        ("build: runs committed (16 at a time, fsync off)", f"{runs} in {build_s:.2f} s"),
        ("runs in the repository when measuring", f"{runs}..{total}"),
        ("commits/s, one at a time, fsync off", f"{seq_nofsync:.1f}  ({cpu_nofsync:.1f} CPU ms/commit)"),
        ("commits/s, one at a time, fsync on (default)", f"{seq_fsync:.1f}  ({cpu_fsync:.1f} CPU ms/commit)"),
        ("commits/s, 50 at once, fsync on (default)", f"{conc_fsync:.1f}  ({cpu_conc:.1f} CPU ms/commit)"),
        ("load average (1 min) at the end, on this shared machine", f"{os.getloadavg()[0]:.1f}"),
        (f"list_runs() over {total} runs", f"{list_s * 1e3:.0f} ms"),
        (f"GET /files/ one notebook ({fetch_bytes / 1e3:.0f} kB), median", f"{fetch_s * 1e3:.1f} ms"),
        (f"git clone over HTTP ({total} runs, {repo_mb:.1f} MB repo)", f"{clone_s:.2f} s"),
        ("git clone --filter=blob:none --no-checkout", f"{partial_s:.2f} s"),
        (
            f"{namespaces} namespaces, one commit each at once: git processes peak/after/idle",
            f"{procs['peak_git']}/{procs['after_git']}/{procs['idle_git']}",
        ),
        (
            f"{namespaces} namespaces: open fds before/peak/idle",
            f"{procs['fds_before']}/{procs['peak_fds']}/{procs['idle_fds']}",
        ),
    ]
    if paths:
        rows += [
            (
                f"1 MiB notebook ({paths['fetch_bytes'] / 2**20:.2f} MiB): direct / authorised, median",
                f"{paths['direct_fetch_ms']:.1f} ms / {paths['authorised_fetch_ms']:.1f} ms",
            ),
            (
                "authorised / direct (target: within 2x, under 50 ms)",
                f"{paths['authorised_over_direct']:.2f}x",
            ),
            ("GET /version via the API server, fresh connection", f"{paths['apiserver_version_ms']:.1f} ms"),
        ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return {
        "commits_per_s_with_1000_runs": round(seq_fsync, 1),
        "commits_per_s_with_1000_runs_concurrent50": round(conc_fsync, 1),
        "commits_per_s_with_1000_runs_nofsync": round(seq_nofsync, 1),
        "fetch_s": round(fetch_s, 4),
        "clone_s": round(clone_s, 3),
        "partial_clone_s": round(partial_s, 3),
        "list_runs_s": round(list_s, 3),
        "runs_in_repo": total,
        "cpu_ms_per_commit": round(cpu_fsync, 2),
        "cpu_ms_per_commit_concurrent50": round(cpu_conc, 2),
        "loadavg_1m": round(os.getloadavg()[0], 1),
        **{f"namespaces_{k}": v for k, v in procs.items()},
        **paths,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--namespaces", type=int, default=200)
    parser.add_argument(
        "--no-authorised", dest="authorised", action="store_false", help="skip the authorised-path fetch"
    )
    args = parser.parse_args()
    result = asyncio.run(main(args.runs, args.commits, args.namespaces, args.authorised))
    sys.stdout.flush()
    print(json.dumps(result))
