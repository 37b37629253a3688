#!/usr/bin/env python3
"""Benchmark 4, teardown: from SIGTERM to the last machine gone, against the provider's own.

    cdd      `cdd run` is stopped with SIGTERM while its checks run (a check that sleeps);
             timed from the signal until no container of the run is left, and until cdd
             has exited (after verifying and reporting)
    vagrant  the same machines brought up by `vagrant up`, then `vagrant destroy -f` timed

    python3 bench/teardown.py [--machines 2] [--repeat 3] [--dry-run]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

import benchlib as b

SLEEPING_CHECK = """
[timeouts]
check = 3600

[[checks]]
name = "waits to be interrupted"
type = "command"
command = "sleep 3000"
timeout = 3500
deadline = 0
"""


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = b.arguments(__doc__.splitlines()[1])
    p.add_argument("--machines", type=int, default=2, help="machines (default 2)")
    return p.parse_args(argv)


def interrupted_run(project: b.Project, log: Path, timeout: float = 900) -> tuple[float, float]:
    """Seconds from SIGTERM to the last container gone, and to cdd's exit."""
    out = log.with_name(f"{project.root.name}.out")
    with out.open("w") as fh:
        proc = subprocess.Popen([*b.cdd_executable(), "run"], cwd=project.root,
                                stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while " check: " not in out.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cdd run ended before its checks:\n{out.read_text()[-3000:]}")
            time.sleep(0.1)
        time.sleep(1.0)  # the sleeping check is running now
        run_id = project.run_ids()[-1]
        if len(b.containers(run_id)) != project.count:
            raise RuntimeError(f"expected {project.count} containers of {run_id}")
        signalled = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        gone = b.wait_gone(run_id)
        proc.wait(timeout=300)
        exited = time.perf_counter()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with log.open("a") as fh:
            fh.write(out.read_text(errors="replace"))
    if proc.returncode != 128 + signal.SIGTERM:
        raise RuntimeError(f"cdd run exited {proc.returncode}, expected 143")
    return gone - signalled, exited - signalled


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    plan = [f"{args.repeat} rounds of, on {args.machines} machines: cdd run, SIGTERM during "
            "its checks, time to the last machine gone | vagrant up, vagrant destroy -f timed"]
    if args.dry_run:
        print("\n".join(plan))
        return 0
    times: dict[str, list[float]] = {"cdd_sigterm_to_gone": [], "cdd_sigterm_to_exit": [],
                                     "vagrant_destroy": []}
    with b.workdir(args.keep) as work:
        log = work / "bench.log"
        for i in range(args.repeat):
            b.say(f"round {i + 1}/{args.repeat} (log {log})")
            project = b.Project(work / f"cdd{i}", args.machines, args.subnet,
                                extra=SLEEPING_CHECK)
            project.write()
            try:
                gone, exited = interrupted_run(project, log)
                times["cdd_sigterm_to_gone"].append(gone)
                times["cdd_sigterm_to_exit"].append(exited)
            finally:
                for run_id in project.run_ids():
                    b.sweep(run_id)
            env = b.BenchEnv(b.new_run_id("td"), args.machines, args.subnet, work / f"vg{i}")
            try:
                b.must(env.vagrant("up", log=log), "vagrant up")
                started = time.perf_counter()
                b.must(env.vagrant("destroy", "-f", log=log), "vagrant destroy -f")
                times["vagrant_destroy"].append(b.wait_gone(env.run_id) - started)
            finally:
                b.sweep(env.run_id)
            b.say("  " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items() if v))
    med = {k: b.median(v) for k, v in times.items()}
    result: dict[str, object] = {
        "benchmark": "teardown", "host": b.host_info(), "machines": args.machines,
        "repeat": args.repeat, "seconds": times, "median": med,
        "difference": {
            "cdd_gone_minus_vagrant_destroy": med["cdd_sigterm_to_gone"]
            - med["vagrant_destroy"],
        },
        "ratios": {"cdd_gone_over_vagrant_destroy": b.ratio(med["cdd_sigterm_to_gone"],
                                                            med["vagrant_destroy"])},
    }
    b.emit("teardown", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
