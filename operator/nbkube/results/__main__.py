"""Offline maintenance of the results repositories, one per namespace (the operator must not hold them):

python -m nbkube.results list  --root /results [--namespace NS]
python -m nbkube.results prune --root /results [--older-than 30d] [--keep-last 20] [--namespace NS]
python -m nbkube.results fsck  --root /results [--namespace NS]

Each command goes over every namespace's repository (or only NS's); prune prunes each one on its own.
Opening the root migrates a single repository of an earlier version first (see nbkube.results.repositories).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from datetime import timedelta
from pathlib import Path

from ._git import run_git
from .repositories import ResultsRepositories

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"an age like 30d, 12h or 90m, not {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


async def _main(args: argparse.Namespace) -> int:
    rc = 0
    async with ResultsRepositories(Path(args.root), lock_timeout=5) as repositories:
        namespaces = [args.namespace] if args.namespace else repositories.namespaces()
        for namespace in namespaces:
            store = await repositories.repository(namespace)
            if store is None:
                print(f"{namespace}: no results repository", file=sys.stderr)
                rc = rc or 1
                continue
            if args.command == "list":
                for run in await store.list_runs(namespace):
                    print(
                        f"{run.namespace}/{run.name}\t{run.state}\tfinal={run.final}\t{run.uid}\t{run.path}"
                    )
            elif args.command == "prune":
                result = await store.prune(older_than=args.older_than, keep_last=args.keep_last)
                head = result.commit or store.head
                print(f"{namespace}: removed {len(result.removed)} runs; main is {head}")
                for name in result.removed:
                    print(f"  {name}")
            else:
                code, out, err = await run_git(
                    store.git_dir, "fsck", "--strict", "--no-dangling", check=False
                )
                print(f"{namespace}: {store.git_dir}: {'ok' if code == 0 else f'fsck exited {code}'}")
                sys.stdout.write((out + err).decode())
                rc = rc or code
    return rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nbkube.results",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["list", "prune", "fsck"])
    parser.add_argument(
        "--root",
        required=True,
        help="the results directory, one repository per namespace (the PVC mount)",
    )
    parser.add_argument("--namespace")
    parser.add_argument("--older-than", type=parse_age)
    parser.add_argument("--keep-last", type=int)
    args = parser.parse_args(argv)
    if args.command == "prune" and args.older_than is None and args.keep_last is None:
        parser.error("prune needs --older-than and/or --keep-last")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
