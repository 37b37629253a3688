#!/usr/bin/env python3
"""Benchmark 1, checks: the same command checks over the same machines, three ways.

    cdd check            against an environment kept by `cdd up`
    vagrant ssh -c loop  one `vagrant ssh M -c CMD` per check, as a shell script does it
    molecule verify      the same commands as testinfra tests, on Molecule's own instances

Also the checks phase itself: cdd's check runner over already-open connections, in process
(what `cdd run` spends on checks after connecting). Rounds run the three side by side.

    python3 bench/checks.py [--checks 50] [--machines 2] [--repeat 3] [--dry-run]
"""

from __future__ import annotations

import argparse
import sys
import time

import benchlib as b


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = b.arguments(__doc__.splitlines()[1], checks=True)
    p.add_argument("--no-molecule", action="store_true", help="leave Molecule out")
    p.add_argument("--no-loop", action="store_true", help="leave the vagrant ssh loop out")
    return b.parse_checks(p, argv)


def checks_phase(project: b.Project) -> float:
    """cdd's check runner alone, over connections opened beforehand."""
    try:
        import cdd_ci  # noqa: F401  (the cdd under test, if this Python has it)
    except ImportError:
        sys.path.insert(0, str(b.REPO))
    from cdd_ci.checks import smoke as checks
    from cdd_ci.config import load_config
    from cdd_ci.host.ledger import LedgerStore
    from cdd_ci.lifecycle import real_backend

    config = load_config(project.root / "cdd.toml")
    ledger = LedgerStore(config.state_dir).read(project.run_ids()[-1])
    backend = real_backend()
    text = backend.environment(ledger, None).ssh_config(ledger.machines, timeout=60)
    pool = backend.shells(text, None)
    try:
        for machine in ledger.machines:
            pool.open(machine, timeout=60)
        started = time.perf_counter()
        steps = checks.run_checks(config, pool.shells, pool.addresses,
                                  deadline=time.monotonic() + 300)
        seconds = time.perf_counter() - started
    finally:
        pool.close()
    bad = [s for s in steps if not s.ok]
    if bad:
        raise RuntimeError(f"checks failed in process: {bad[0].name}: {bad[0].message}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    per_machine = args.checks // args.machines
    commands = b.check_commands(per_machine)
    plan = [
        f"cdd up ({args.machines} machines, {args.checks} checks), keep",
        f"{args.repeat} rounds of: cdd check | checks phase in process"
        + ("" if args.no_loop else " | vagrant ssh -c loop")
        + ("" if args.no_molecule else " | molecule verify"),
        "destroy everything",
    ]
    if args.dry_run:
        print("\n".join(plan))
        return 0
    result: dict[str, object] = {"benchmark": "checks", "host": b.host_info(),
                                 "checks": args.checks, "machines": args.machines,
                                 "repeat": args.repeat}
    times: dict[str, list[float]] = {"cdd_check": [], "checks_phase": [], "loop": [],
                                     "molecule_verify": []}
    loop_failures: list[int] = []
    with b.workdir(args.keep) as work:
        log = work / "bench.log"
        project = b.Project(work / "cdd", args.machines, args.subnet, commands)
        project.write()
        mol_root = work / "molecule"
        mol_id = b.new_run_id("mol")
        cdd_ids: list[str] = []
        try:
            b.say(f"cdd up: {args.machines} machines (log {log})")
            b.must(project.cdd("up", log=log), "cdd up")
            cdd_ids = project.run_ids()
            env = project.run_env(cdd_ids[-1])
            checks_file = b.write_checks_file(work / "checks.tsv", env, commands)
            if not args.no_molecule:
                b.ensure_molecule(log)
                b.molecule_scenario(mol_root, mol_id, args.machines, commands)
                b.say("molecule create + converge (its own instances)")
                b.must(b.molecule(mol_root, "create", log=log), "molecule create")
                b.must(b.molecule(mol_root, "converge", log=log), "molecule converge")
            for i in range(args.repeat):
                b.say(f"round {i + 1}/{args.repeat}")
                times["cdd_check"].append(b.must(project.cdd("check", log=log),
                                                 "cdd check").seconds)
                times["checks_phase"].append(checks_phase(project))
                if not args.no_loop:
                    loop = b.timed([str(b.NAIVE), "checks", str(checks_file)], cwd=b.ENV_DIR,
                                   env=env.vagrant_env(), log=log)
                    times["loop"].append(loop.seconds)
                    # under load `vagrant ssh` itself fails now and then: counted, not fatal
                    loop_failures.append(loop.output.count("naive: check failed"))
                if not args.no_molecule:
                    times["molecule_verify"].append(b.must(
                        b.molecule(mol_root, "verify", log=log), "molecule verify").seconds)
                b.say("  " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items() if v))
        finally:
            b.say("destroying")
            if not args.no_molecule and (mol_root / "molecule").is_dir():
                b.molecule(mol_root, "destroy", log=log)
            project.cdd("destroy", log=log)
            for run_id in [*cdd_ids, mol_id]:
                if b.sweep(run_id):
                    b.say(f"swept leftovers of {run_id}")
    med = {k: b.median(v) for k, v in times.items() if v}
    result["seconds"] = times
    result["loop_failures"] = loop_failures
    result["median"] = med
    result["ratios"] = {
        "loop_over_cdd_check": b.ratio(med.get("loop", 0), med["cdd_check"]),
        "molecule_over_cdd_check": b.ratio(med.get("molecule_verify", 0), med["cdd_check"]),
        "loop_over_checks_phase": b.ratio(med.get("loop", 0), med["checks_phase"]),
        "molecule_over_checks_phase": b.ratio(med.get("molecule_verify", 0),
                                              med["checks_phase"]),
    }
    result["ms_per_check"] = {k: 1000 * v / args.checks for k, v in med.items()}
    b.emit("checks", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
