#!/usr/bin/env python3
"""Benchmark 3, scale: bringing up 1, 2, 3 and 5 machines; wall time against machine count.

Per round and machine count: `cdd up` (parallel up, provision, connect; no checks) and,
as the provider's own figure, one `vagrant up` of the same machines. Each is destroyed
before the next starts, so every measurement starts from nothing.

    python3 bench/scale.py [--counts 1,2,3,5] [--repeat 3] [--dry-run]
"""

from __future__ import annotations

import argparse
import sys

import benchlib as b


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = b.arguments(__doc__.splitlines()[1])
    p.add_argument("--counts", default="1,2,3,5", help="machine counts (default 1,2,3,5)")
    p.add_argument("--no-vagrant", action="store_true", help="leave raw vagrant up out")
    args = p.parse_args(argv)
    try:
        args.counts = [int(c) for c in args.counts.split(",")]
    except ValueError:
        p.error("--counts: comma-separated numbers, e.g. 1,2,3,5")
    if not all(1 <= c <= 9 for c in args.counts):
        p.error("--counts: 1 to 9 machines")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    plan = [f"{args.repeat} rounds of, for {args.counts} machines: cdd up, cdd destroy"
            + ("" if args.no_vagrant else "; vagrant up, vagrant destroy -f")]
    if args.dry_run:
        print("\n".join(plan))
        return 0
    cdd: dict[int, list[float]] = {n: [] for n in args.counts}
    vagrant: dict[int, list[float]] = {n: [] for n in args.counts}
    phases: dict[int, list[dict[str, float]]] = {n: [] for n in args.counts}
    failures: list[str] = []
    with b.workdir(args.keep) as work:
        log = work / "bench.log"
        for i in range(args.repeat):
            for n in args.counts:
                b.say(f"round {i + 1}/{args.repeat}: {n} machines (log {log})")
                project = b.Project(work / f"cdd{i}-{n}", n, args.subnet)
                project.write()
                try:
                    up = project.cdd("up", log=log)
                    if up.returncode == 0:
                        cdd[n].append(up.seconds)
                        phases[n].append(project.junit_durations())
                    else:  # noted, and the round goes on (its reports stay in the work dir)
                        failures.append(f"round {i + 1}, {n} machines: cdd up exit "
                                        f"{up.returncode}: " + " ".join(
                                            line.strip() for line in up.output.splitlines()
                                            if "failed" in line)[:300])
                        b.say(f"  {failures[-1]}")
                finally:
                    project.cdd("destroy", log=log)
                    for run_id in project.run_ids():
                        b.sweep(run_id)
                if not args.no_vagrant:
                    env = b.BenchEnv(b.new_run_id("up"), n, args.subnet, work / f"vg{i}-{n}")
                    try:
                        vagrant[n].append(b.must(env.vagrant("up", log=log),
                                                 "vagrant up").seconds)
                    finally:
                        env.vagrant("destroy", "-f", log=log)
                        b.sweep(env.run_id)
                b.say(f"  cdd up {cdd[n][-1] if cdd[n] else float('nan'):.1f} s"
                      + (f", vagrant up {vagrant[n][-1]:.1f} s" if vagrant[n] else ""))
    med_cdd = {n: b.median(v) for n, v in cdd.items()}
    med_vagrant = {n: b.median(v) for n, v in vagrant.items() if v}
    one = args.counts[0]
    result: dict[str, object] = {
        "benchmark": "scale", "host": b.host_info(), "repeat": args.repeat,
        "seconds": {"cdd_up": cdd, "vagrant_up": vagrant},
        "median": {"cdd_up": med_cdd, "vagrant_up": med_vagrant},
        "cdd_phases": phases, "failures": failures,
        "ratios": {
            "cdd_up_over_first": {n: b.ratio(v, med_cdd[one]) for n, v in med_cdd.items()},
            "vagrant_up_over_first": {n: b.ratio(v, med_vagrant[one])
                                      for n, v in med_vagrant.items()} if med_vagrant else {},
            "cdd_up_over_vagrant_up": {n: b.ratio(med_cdd[n], med_vagrant[n])
                                       for n in med_vagrant},
        },
    }
    b.emit("scale", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
