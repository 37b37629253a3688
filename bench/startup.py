#!/usr/bin/env python3
"""Benchmark 5, start-up: wall time of `cdd --help` and `cdd validate`.

With hyperfine (Debian package `hyperfine`) when it is installed, else timed here; the
interpreter's own start-up (`python3 -c pass`) is measured beside them for scale.

    python3 bench/startup.py [--runs 30] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import benchlib as b


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--runs", type=int, default=30, help="runs per command (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--no-hyperfine", action="store_true", help="time in Python instead")
    p.add_argument("--out", type=Path, help="write the result as JSON here too")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    return p.parse_args(argv)


def commands(config: Path) -> dict[str, list[str]]:
    cdd = b.cdd_executable()
    python = Path(cdd[0]).parent / "python3"
    return {
        "cdd --help": [*cdd, "--help"],
        "cdd validate": [*cdd, "validate", "--config", str(config)],
        "python3 -c pass": [str(python) if python.is_file() else sys.executable, "-c", "pass"],
    }


def with_hyperfine(cmds: dict[str, list[str]], runs: int, warmup: int,
                   work: Path) -> dict[str, dict[str, float]]:
    export = work / "hyperfine.json"
    argv = ["hyperfine", "-N", "--style", "none", "--warmup", str(warmup), "--runs", str(runs),
            "--export-json", str(export)]
    for name, cmd in cmds.items():
        argv += ["-n", name, shlex.join(cmd)]
    b.must(b.timed(argv, cwd=work), "hyperfine")
    out = {}
    for r in json.loads(export.read_text())["results"]:
        out[r["command"]] = {"mean": r["mean"], "median": r["median"], "stddev": r["stddev"],
                             "min": r["min"]}
    return out


def in_python(cmds: dict[str, list[str]], runs: int, warmup: int,
              work: Path) -> dict[str, dict[str, float]]:
    out = {}
    for name, cmd in cmds.items():
        samples = []
        for i in range(warmup + runs):
            started = time.perf_counter()
            subprocess.run(cmd, cwd=work, stdout=subprocess.DEVNULL, check=True)
            if i >= warmup:
                samples.append(time.perf_counter() - started)
        out[name] = {"mean": sum(samples) / len(samples), "median": b.median(samples),
                     "min": min(samples)}
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    tool = "hyperfine" if shutil.which("hyperfine") and not args.no_hyperfine else "python"
    if args.dry_run:
        print(f"{tool}: {args.runs} runs each (after {args.warmup} warm-up) of "
              "cdd --help | cdd validate | python3 -c pass")
        return 0
    with b.workdir() as work:
        project = b.Project(work / "project", 2, b.DEFAULT_SUBNET, b.check_commands(25))
        config = project.write()
        cmds = commands(config)
        b.must(b.timed(cmds["cdd validate"]), "cdd validate")
        measure = with_hyperfine if tool == "hyperfine" else in_python
        seconds = measure(cmds, args.runs, args.warmup, work)
    result: dict[str, object] = {"benchmark": "startup", "host": b.host_info(), "tool": tool,
                                 "runs": args.runs, "cdd": b.cdd_executable(),
                                 "seconds": seconds}
    b.emit("startup", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
