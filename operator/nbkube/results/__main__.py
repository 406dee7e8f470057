"""Offline maintenance of a results repository (the operator must not hold it open):

python -m nbkube.results list  --root /results [--namespace NS]
python -m nbkube.results prune --root /results [--older-than 30d] [--keep-last 20] [--namespace NS]
python -m nbkube.results fsck  --root /results
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from datetime import timedelta
from pathlib import Path

from ._git import run_git
from .store import ResultsStore

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"an age like 30d, 12h or 90m, not {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})


async def _main(args: argparse.Namespace) -> int:
    async with ResultsStore(Path(args.root), lock_timeout=5) as store:
        if args.command == "list":
            for run in await store.list_runs(args.namespace):
                print(f"{run.namespace}/{run.name}\t{run.state}\tfinal={run.final}\t{run.uid}\t{run.path}")
        elif args.command == "prune":
            result = await store.prune(
                older_than=args.older_than, keep_last=args.keep_last, namespace=args.namespace
            )
            print(f"removed {len(result.removed)} runs; main is {result.commit or store.head}")
            for name in result.removed:
                print(f"  {name}")
        else:
            rc, out, err = await run_git(store.git_dir, "fsck", "--strict", "--no-dangling", check=False)
            sys.stdout.write((out + err).decode())
            return rc
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nbkube.results",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["list", "prune", "fsck"])
    parser.add_argument("--root", required=True, help="the results repository (the PVC mount)")
    parser.add_argument("--namespace")
    parser.add_argument("--older-than", type=parse_age)
    parser.add_argument("--keep-last", type=int)
    args = parser.parse_args(argv)
    if args.command == "prune" and args.older_than is None and args.keep_last is None:
        parser.error("prune needs --older-than and/or --keep-last")
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
