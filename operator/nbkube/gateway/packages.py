"""`python -m nbkube.gateway.packages --target DIR --scratch DIR --log FILE [options] -- [REQUIREMENT ...]`

The init container `nbkube-packages` of a gateway pod: pip-installs an environment's packages into
DIR (the pod's emptyDir, first on the gateway's PYTHONPATH) before the gateway starts. Everything pip
says goes to stdout (the container's log) and to FILE (kernels can read it); on failure the decisive
line, pip's last `ERROR:` line, is printed last and written to the termination-message file, so the
pod's status carries it and the environment's condition shows it.

Kernel-side module: stdlib only (pip is run as `python -m pip` of this interpreter).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TextIO

PIP_OPTIONS = [
    "--no-cache-dir",
    "--disable-pip-version-check",
    "--no-input",
    "--progress-bar",
    "off",
    "--no-warn-script-location",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m nbkube.gateway.packages", description=__doc__)
    parser.add_argument("--target", required=True, type=Path, help="where pip installs (--target)")
    parser.add_argument("--scratch", required=True, type=Path, help="pip's temporary and home directory")
    parser.add_argument("--log", required=True, type=Path, help="a copy of everything printed")
    parser.add_argument(
        "--termination-log",
        type=Path,
        help="the container's termination-message file, written on failure if it exists",
    )
    parser.add_argument("--requirements-file", type=Path, help="a pip requirements file (pip -r)")
    parser.add_argument("--requirements-source", default="", help="where the requirements file comes from")
    parser.add_argument("--index-url", help="pip's --index-url")
    parser.add_argument("requirements", nargs="*", help="requirement specifiers")
    return parser.parse_args(argv)


def pip_command(args: argparse.Namespace) -> list[str]:
    command = [sys.executable, "-m", "pip", "install", "--target", str(args.target), *PIP_OPTIONS]
    if args.index_url:
        command += ["--index-url", args.index_url]
    if args.requirements_file is not None:
        command += ["--requirement", str(args.requirements_file)]
    return [*command, "--", *args.requirements]


def decisive_line(output: list[str], code: int) -> str:
    """pip's last `ERROR:` line (it ends with the one that decided), else its last line."""
    lines = [line.strip() for line in output if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    if errors:
        return errors[-1]
    return lines[-1] if lines else f"pip exited with code {code} and said nothing"


class Output:
    """Prints to stdout and to the log file."""

    def __init__(self, log: TextIO) -> None:
        self.log = log

    def line(self, text: str) -> None:
        for stream in (sys.stdout, self.log):
            stream.write(text if text.endswith("\n") else text + "\n")
            stream.flush()


def installed(target: Path) -> list[str]:
    dists = {f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions(path=[str(target)])}
    return sorted(dists, key=str.lower)


def fail(out: Output, termination_log: Path | None, message: str, code: int = 1) -> int:
    out.line(message)
    # The kubelet creates the termination-message file before the container starts; where none exists
    # (no kubelet) nothing is created: the container's log tail says the same (FallbackToLogsOnError).
    if termination_log is not None and termination_log.is_file():
        try:
            termination_log.write_text(message + "\n")
        except OSError:
            pass
    return code


def install(args: argparse.Namespace) -> int:
    for directory in (args.target, args.scratch):  # a retried install starts from nothing
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with args.log.open("w", encoding="utf-8") as log:
        out = Output(log)
        try:
            return _install(args, out)
        finally:
            shutil.rmtree(args.scratch, ignore_errors=True)


def _install(args: argparse.Namespace, out: Output) -> int:
    if args.requirements_file is not None and not args.requirements_file.is_file():
        source = args.requirements_source or "the requirements file"
        return fail(
            out,
            args.termination_log,
            f"ERROR: {source} has no key {args.requirements_file.name} (or does not exist): "
            f"create it, then the install is retried",
        )
    command = pip_command(args)
    out.line(f"nbkube-packages: {' '.join(command[1:])}")
    output: list[str] = []
    env = {**os.environ, "PIP_NO_CACHE_DIR": "1", "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=args.scratch,
        env=env,
        text=True,
        errors="replace",
    ) as pip:
        assert pip.stdout is not None
        for line in pip.stdout:
            out.line(line)
            output.append(line)
            del output[:-200]  # the decisive line is among the last ones
        code = pip.wait()
    if code != 0:
        return fail(out, args.termination_log, decisive_line(output, code), code if code > 0 else 1)
    done = ", ".join(installed(args.target)) or "nothing"
    out.line(f"nbkube-packages: installed into {args.target}: {done}")
    return 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(install(parse_args(argv)))


if __name__ == "__main__":
    main()
