#!/usr/bin/env python3
"""All five benchmarks, one after the other, with their results in bench/results/.

    python3 bench/run.py                  # everything, medians of 3 (about an hour)
    python3 bench/run.py checks whole     # some of them
    python3 bench/run.py --smoke          # tiny counts, no Molecule: do the scripts still work?
    python3 bench/run.py --dry-run        # print what would run
    python3 bench/run.py --table          # the README's table from bench/results/*.json

Run it as root on a host prepared by scripts/setup-host.sh (lxc provider), with the Python
whose `cdd` is to be measured (e.g. `.venv/bin/python bench/run.py`). Molecule is installed
into bench/.venv on first use.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import benchlib as b
import checks
import scale
import startup
import teardown
import whole

RESULTS = b.BENCH / "results"
BENCHMARKS: dict[str, Callable[[list[str] | None], int]] = {
    "checks": checks.main,
    "whole": whole.main,
    "scale": scale.main,
    "teardown": teardown.main,
    "startup": startup.main,
}
SMOKE = {
    "checks": ["--checks", "2", "--machines", "1", "--repeat", "1", "--no-molecule"],
    "whole": ["--checks", "2", "--machines", "1", "--repeat", "1", "--no-molecule"],
    "scale": ["--counts", "1,2", "--repeat", "1", "--no-vagrant"],
    "teardown": ["--machines", "1", "--repeat", "1"],
    "startup": ["--runs", "3", "--warmup", "1"],
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", choices=[*BENCHMARKS, []], metavar="NAME",
                   help=f"benchmarks to run (default all: {', '.join(BENCHMARKS)})")
    p.add_argument("--repeat", type=int, default=3, help="rounds per benchmark (default 3)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny counts, results not kept: checks that the scripts work")
    p.add_argument("--dry-run", action="store_true", help="print the plans, run nothing")
    p.add_argument("--table", action="store_true",
                   help="print the README table from bench/results/ and stop")
    p.add_argument("--results", type=Path, default=RESULTS, help="where results go")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.table:
        print(table(args.results))
        return 0
    failed = []
    for name in args.names or list(BENCHMARKS):
        extra = list(SMOKE[name]) if args.smoke else (
            ["--repeat", str(args.repeat)] if name != "startup" else [])
        if args.dry_run:
            extra.append("--dry-run")
        elif not args.smoke:
            extra += ["--out", str(args.results / f"{name}.json")]
        b.say(f"{name} {' '.join(extra)}")
        try:
            BENCHMARKS[name](extra)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            b.say(f"{name} FAILED: {exc}")
            failed.append(name)
    if failed:
        b.say(f"failed: {', '.join(failed)}")
        return 1
    return 0


def _load(results: Path, name: str) -> dict[str, object] | None:
    path = results / f"{name}.json"
    data = json.loads(path.read_text()) if path.is_file() else None
    return data if isinstance(data, dict) else None


def table(results: Path) -> str:
    """Markdown rows for the README, from the JSON the benchmarks wrote."""
    rows = ["| benchmark | cdd | peer | ratio | goal |", "|---|---|---|---|---|"]
    host: dict[str, str] = {}
    if (c := _load(results, "checks")) is not None:
        host = c["host"]  # type: ignore[assignment]
        m, r = c["median"], c["ratios"]
        n = c["checks"]
        assert isinstance(m, dict) and isinstance(r, dict)
        rows.append(f"| checks ({n} over {c['machines']} machines) | `cdd check` "
                    f"{m['cdd_check']:.2f} s | `vagrant ssh -c` loop {m['loop']:.1f} s | "
                    f"{r['loop_over_cdd_check']:.0f}x faster | ≥ 100x |")
        rows.append(f"| | `cdd check` {m['cdd_check']:.2f} s | `molecule verify` "
                    f"{m['molecule_verify']:.2f} s | {r['molecule_over_cdd_check']:.1f}x "
                    "faster | ≥ 2x |")
        rows.append(f"| | checks phase {m['checks_phase']:.2f} s "
                    f"({1000 * m['checks_phase'] / n:.1f} ms per check) | loop "
                    f"{1000 * m['loop'] / n:.0f} ms, Molecule "
                    f"{1000 * m['molecule_verify'] / n:.0f} ms per check | "
                    f"{r['loop_over_checks_phase']:.0f}x / "
                    f"{r['molecule_over_checks_phase']:.1f}x faster | |")
    if (w := _load(results, "whole")) is not None:
        host = host or w["host"]  # type: ignore[assignment]
        m, r = w["median"], w["ratios"]
        assert isinstance(m, dict) and isinstance(r, dict)
        rounds = w.get("round_ratios", {})
        assert isinstance(rounds, dict)
        each = ", ".join(f"{x:.2f}" for x in rounds.get("cdd_over_molecule", []))
        rows.append(f"| whole run (up, {w['checks']} checks, destroy) | `cdd run` "
                    f"{m['cdd_run']:.1f} s | `molecule test` {m['molecule_test']:.1f} s | "
                    f"{r['cdd_over_molecule']:.2f}x" + (f" (rounds: {each})" if each else "")
                    + " | ≤ 0.6x |")
        rows.append(f"| | `cdd run` {m['cdd_run']:.1f} s | naive script {m['naive']:.1f} s "
                    f"(up {m['vagrant_up']:.1f}, checks {m['naive_checks']:.1f}, destroy "
                    f"{m['vagrant_destroy']:.1f}) | {r['cdd_over_naive']:.2f}x | ≤ 0.9x |")
        rows.append(f"| | `cdd run` {m['cdd_run']:.1f} s | the provider alone: `vagrant up` + "
                    f"`vagrant destroy -f` {m['vagrant_up'] + m['vagrant_destroy']:.1f} s | "
                    f"{m['cdd_run'] / (m['vagrant_up'] + m['vagrant_destroy']):.2f}x | |")
    if (s := _load(results, "scale")) is not None:
        med = s["median"]
        assert isinstance(med, dict)
        cdd, vag = med["cdd_up"], med["vagrant_up"]
        counts = sorted(cdd, key=int)
        first = counts[0]
        rows.append("| scale: `cdd up` of N machines | "
                    + ", ".join(f"{n}: {cdd[n]:.1f} s" for n in counts)
                    + " | `vagrant up`: "
                    + ", ".join(f"{n}: {vag[n]:.1f} s" for n in counts if n in vag)
                    + f" | 3 machines: {cdd.get('3', float('nan')) / cdd[first]:.2f}x one "
                    f"(vagrant {vag.get('3', float('nan')) / vag.get(first, float('nan')):.2f}x)"
                    " | ≤ 1.5x |")
    if (t := _load(results, "teardown")) is not None:
        m, d = t["median"], t["difference"]
        assert isinstance(m, dict) and isinstance(d, dict)
        rows.append(f"| teardown ({t['machines']} machines) | SIGTERM to last machine gone "
                    f"{m['cdd_sigterm_to_gone']:.1f} s (to exit "
                    f"{m['cdd_sigterm_to_exit']:.1f} s) | `vagrant destroy -f` "
                    f"{m['vagrant_destroy']:.1f} s | "
                    f"{d['cdd_gone_minus_vagrant_destroy']:+.1f} s | within 2 s |")
    if (u := _load(results, "startup")) is not None:
        sec = u["seconds"]
        assert isinstance(sec, dict)
        rows.append(f"| start-up ({u['tool']}, mean of {u['runs']}) | `cdd --help` "
                    f"{1000 * sec['cdd --help']['mean']:.0f} ms, `cdd validate` "
                    f"{1000 * sec['cdd validate']['mean']:.0f} ms | `python3 -c pass` "
                    f"{1000 * sec['python3 -c pass']['mean']:.0f} ms | | < 300 ms |")
    dates = sorted(str(d["host"]["date"]) for name in BENCHMARKS  # type: ignore[index]
                   if (d := _load(results, name)) is not None and "host" in d)
    if host:
        when = dates[0] if dates[0] == dates[-1] else f"{dates[0]} to {dates[-1]}"
        rows.append("")
        rows.append(f"Measured {when} on {host.get('nproc')} cores (`nproc`) of "
                    f"{host.get('cpu')}, {host.get('ram')} RAM, Linux {host.get('kernel')}, "
                    f"Vagrant {host.get('vagrant')}, Python {host.get('python')}.")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
