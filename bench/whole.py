#!/usr/bin/env python3
"""Benchmark 2, the whole run: build from scratch, check, destroy, three ways.

    cdd run          up (parallel) + provision, checks, harvest, destroy, verify, report
    molecule test    Molecule's full sequence with a trivial converge and the same checks
                     as testinfra tests
    naive script     bench/naive.sh: vagrant up; vagrant ssh -c per check; vagrant destroy -f

Also the provider's own figures from the same round: `vagrant up` and `vagrant destroy -f`
of the same machines (as timed inside the naive script's phases).

    python3 bench/whole.py [--checks 50] [--machines 2] [--repeat 3] [--dry-run]
    python3 bench/whole.py --provider docker --no-molecule --no-naive-checks

Molecule is measured on lxc only (its Vagrant driver's settings here are lxc's).
"""

from __future__ import annotations

import argparse
import sys

import benchlib as b


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = b.arguments(__doc__.splitlines()[1], checks=True)
    p.add_argument("--no-molecule", action="store_true", help="leave Molecule out")
    p.add_argument("--no-naive", action="store_true", help="leave the naive script out")
    p.add_argument("--no-naive-checks", action="store_true",
                   help="the naive script only brings the machines up and destroys them: the "
                        "provider alone, for cdd_over_provider")
    p.add_argument("--provider", choices=b.PROVIDERS, default="lxc",
                   help="the machines' provider (default lxc; prepared by scripts/setup-host.sh)")
    args = b.parse_checks(p, argv)
    if args.provider != "lxc" and not args.no_molecule:
        p.error("Molecule is measured on lxc only: add --no-molecule")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    commands = b.check_commands(args.checks // args.machines)
    plan = [f"{args.repeat} rounds of, one after the other on {args.machines} {args.provider} "
            f"machines with "
            f"{args.checks} checks: cdd run"
            + ("" if args.no_molecule else " | molecule test")
            + ("" if args.no_naive else " | naive script (up, checks, destroy timed apart)")]
    if args.dry_run:
        print("\n".join(plan))
        return 0
    times: dict[str, list[float]] = {"cdd_run": [], "molecule_test": [], "naive": [],
                                     "vagrant_up": [], "naive_checks": [],
                                     "vagrant_destroy": []}
    cpu: dict[str, list[float]] = {"cdd_run": [], "provider": []}
    """CPU seconds of cdd and everything it ran, and of `vagrant up` + `vagrant destroy -f`."""
    phases: list[dict[str, float]] = []
    naive_failures: list[int] = []
    with b.workdir(args.keep) as work:
        log = work / "bench.log"
        if not args.no_molecule:
            b.ensure_molecule(log)
        def cdd_run(i: int) -> None:
            project = b.Project(work / f"cdd{i}", args.machines, args.subnet, commands,
                                provider=args.provider)
            project.write()
            try:
                ran = b.must(project.cdd("run", log=log), "cdd run")
                times["cdd_run"].append(ran.seconds)
                cpu["cdd_run"].append(ran.cpu)
                phases.append(project.junit_durations())
            finally:
                for run_id in project.run_ids():
                    b.sweep(run_id, args.provider)

        def molecule_test(i: int) -> None:
            mol_id = b.new_run_id("mol")
            root = b.molecule_scenario(work / f"molecule{i}", mol_id, args.machines, commands)
            try:
                times["molecule_test"].append(
                    b.must(b.molecule(root, "test", log=log), "molecule test").seconds)
            finally:
                if b.containers(mol_id):
                    b.molecule(root, "destroy", log=log)
                b.sweep(mol_id)

        def naive_script(i: int) -> None:
            env = b.BenchEnv(b.new_run_id("sh"), args.machines, args.subnet, work / f"naive{i}",
                             args.provider)
            checks_file = b.write_checks_file(work / "checks.tsv", env, commands)
            naive = [str(b.NAIVE)]
            try:
                up = b.must(b.timed([*naive, "up"], cwd=b.ENV_DIR, env=env.vagrant_env(),
                                    log=log), "naive up")
                checks = b.timed([*naive, "checks", "/dev/null" if args.no_naive_checks
                                  else str(checks_file)], cwd=b.ENV_DIR,
                                 env=env.vagrant_env(), log=log)
                # under load `vagrant ssh` itself fails now and then: counted, not fatal
                naive_failures.append(checks.output.count("naive: check failed"))
                down = b.must(b.timed([*naive, "destroy"], cwd=b.ENV_DIR,
                                      env=env.vagrant_env(), log=log), "naive destroy")
                times["vagrant_up"].append(up.seconds)
                times["naive_checks"].append(checks.seconds)
                times["vagrant_destroy"].append(down.seconds)
                cpu["provider"].append(up.cpu + down.cpu)
                times["naive"].append(up.seconds + checks.seconds + down.seconds)
            finally:
                b.sweep(env.run_id, args.provider)

        tools = [cdd_run]
        tools += [] if args.no_molecule else [molecule_test]
        tools += [] if args.no_naive else [naive_script]
        for i in range(args.repeat):
            # the host's load drifts over minutes: each round starts with another tool, so
            # none is always measured at the same point of a round
            order = tools[i % len(tools):] + tools[:i % len(tools)]
            b.say(f"round {i + 1}/{args.repeat}: {', '.join(t.__name__ for t in order)} "
                  f"(log {log})")
            for tool in order:
                tool(i)
            b.say("  " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items() if v)
                  + "; CPU " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in cpu.items() if v))
    med = {k: b.median(v) for k, v in times.items() if v}
    provider_rounds = [b.ratio(c, u + d) for c, u, d in zip(
        times["cdd_run"], times["vagrant_up"], times["vagrant_destroy"], strict=False)]
    result: dict[str, object] = {
        "benchmark": "whole", "host": b.host_info(), "provider": args.provider,
        "checks": args.checks,
        "machines": args.machines, "repeat": args.repeat, "seconds": times, "median": med,
        "cdd_phases": phases, "naive_failures": naive_failures,
        "cpu_seconds": cpu, "median_cpu": {k: b.median(v) for k, v in cpu.items() if v},
        "round_ratios": {
            "cdd_over_molecule": [b.ratio(c, m) for c, m in
                                  zip(times["cdd_run"], times["molecule_test"], strict=False)],
            "cdd_over_naive": [b.ratio(c, n) for c, n in
                               zip(times["cdd_run"], times["naive"], strict=False)],
            "cdd_over_provider": provider_rounds,
        },
        # each round runs the tools side by side, so a round's ratio cancels the host's drift
        # from one minute to the next, which the ratio of the medians does not
        "median_round_ratios": {"cdd_over_provider": b.median(provider_rounds)},
        "ratios": {
            "cdd_over_molecule": b.ratio(med["cdd_run"], med.get("molecule_test", 0)),
            "cdd_over_naive": b.ratio(med["cdd_run"], med.get("naive", 0)),
            # the whole cdd run (build, checks, harvest, destroy, verify, report) against the
            # provider alone bringing the same machines up and destroying them
            "cdd_over_provider": b.ratio(med["cdd_run"], med.get("vagrant_up", 0)
                                         + med.get("vagrant_destroy", 0)),
        },
    }
    b.emit("whole", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
