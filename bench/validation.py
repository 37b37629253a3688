#!/usr/bin/env python3
"""Benchmark 6, validation: wall time of `cdd validate` on a config of 10 MB.

Validation must be linear in the size of the file (it was quadratic in the number of
checks: 10 MB took 21 minutes). Three configs of about --megabytes each, no Vagrant needed:
a valid one (tens of thousands of checks), the same with a duplicate check name as its very
last check (everything is read before the error), and one whose environment name alone is
that long (the error line must stay short).

    python3 bench/validation.py [--megabytes 10] [--repeat 3] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import benchlib as b

CHECK = ('[[checks]]\nname = "check {i:07d}"\ntype = "command"\non = "{machine}"\n'
         'command = {command}\ndeadline = 0\n\n')
HEADER = ('destroy = "always"\n\n[environment]\nname = "{name}"\ndirectory = "."\n'
          'provider = "lxc"\nmachines = ["m1", "m2"]\n\n')


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--megabytes", type=float, default=10, help="size of each config (10)")
    p.add_argument("--repeat", type=int, default=3, help="runs each; medians are reported")
    p.add_argument("--out", type=Path, help="write the result as JSON here too")
    p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    args = p.parse_args(argv)
    if args.megabytes <= 0 or args.repeat < 1:
        p.error("--megabytes must be positive and --repeat at least 1")
    return args


def many_checks(size: int, *, duplicate_last: bool = False) -> str:
    parts = [HEADER.format(name="validation")]
    total, i = len(parts[0]), 0
    commands = b.check_commands(len(b.COMMANDS))
    while total < size:
        part = CHECK.format(i=i, machine=f"m{i % 2 + 1}",
                            command=json.dumps(commands[i % len(commands)]))
        parts.append(part)
        total += len(part)
        i += 1
    if duplicate_last:
        parts.append(CHECK.format(i=0, machine="m1", command='"true"'))
    return "".join(parts)


def huge_value(size: int) -> str:
    return HEADER.format(name="n" * size + "!")


def configs(size: int) -> dict[str, str]:
    return {"valid": many_checks(size), "duplicate at the end": many_checks(
        size, duplicate_last=True), "one huge value": huge_value(size)}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    size = int(args.megabytes * 1_000_000)
    expected = {"valid": 0, "duplicate at the end": 2, "one huge value": 2}
    if args.dry_run:
        print(f"cdd validate, {args.repeat} runs each, on configs of {args.megabytes:g} MB: "
              + " | ".join(expected))
        return 0
    result: dict[str, object] = {"benchmark": "validation", "host": b.host_info(),
                                 "megabytes": args.megabytes, "repeat": args.repeat}
    figures: dict[str, object] = {}
    with b.workdir() as work:
        (work / "Vagrantfile").write_text("# validate only reads the config\n")
        for name, text in configs(size).items():
            config = work / "cdd.toml"
            config.write_text(text, encoding="utf-8")
            runs = [b.timed([*b.cdd_executable(), "validate", "--config", str(config)],
                            cwd=work, timeout=3600) for _ in range(args.repeat)]
            last = runs[-1]
            if last.returncode != expected[name]:
                raise RuntimeError(f"{name}: exit {last.returncode}, expected "
                                   f"{expected[name]}: {last.output[-500:]}")
            line = last.output.strip().splitlines()[-1]
            figures[name] = {"bytes": len(text.encode()), "checks": text.count("[[checks]]"),
                             "seconds": b.median([r.seconds for r in runs]),
                             "exit": last.returncode, "line_chars": len(line)}
            b.say(f"{name}: {figures[name]}")
    result["validate"] = figures
    b.emit("validation", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
