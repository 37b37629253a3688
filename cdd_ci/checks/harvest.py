"""Copy logs off the machines before they are destroyed.

After destroy there is nothing left to debug, so whatever the config asks for is copied to
`reports/logs/<machine>/` first: guest files (globs) and command output (the journal, a
service's status). Each log keeps its tail, capped, because that is where failures are.
Nothing here raises: a harvest failure is reported and never blocks destroy.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cdd_ci.config import Config
from cdd_ci.infra.ssh import Shell, SshError
from cdd_ci.models import Phase, Status, StepResult
from cdd_ci.words import plural

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """A guest path or log name as a flat file name: /var/log/a.log -> var_log_a.log."""
    return _UNSAFE.sub("_", text).strip("_.") or "log"


def harvest(
    config: Config,
    shells: Mapping[str, Shell],
    log_root: Path,
    *,
    timeout: float,
) -> list[StepResult]:
    """One `harvest` step per machine; machines are harvested concurrently."""
    machines = config.environment.machines
    with ThreadPoolExecutor(max_workers=max(1, len(machines))) as pool:
        return list(pool.map(
            lambda m: _one_machine(config, m, shells.get(m), log_root / m, timeout), machines
        ))


def _one_machine(
    config: Config, machine: str, shell: Shell | None, out_dir: Path, timeout: float
) -> StepResult:
    started = time.monotonic()
    deadline = started + timeout
    out_dir.mkdir(parents=True, exist_ok=True)
    if shell is None:
        return StepResult(Phase.HARVEST, machine, "harvest", Status.SKIPPED,
                          message="machine not reachable: only host-side logs kept")
    cap = config.report.max_log_bytes
    kept: list[str] = []
    problems: list[str] = []
    for spec in config.harvest:
        if machine not in config.targets(spec.on):
            continue
        for name, command in spec.commands.items():
            _keep(shell, f"{command} 2>&1 | tail -c {cap}", out_dir / f"{safe_name(name)}.log",
                  deadline, kept, problems)
        for pattern in spec.files:
            try:
                listing = shell.run(f"ls -1d -- {pattern} 2>/dev/null || true",
                                    timeout=_left(deadline), sudo=True)
            except SshError as exc:
                problems.append(f"{pattern}: {exc}")
                continue
            for path in listing.stdout.split("\n"):
                if path.strip():
                    _keep(shell, f"tail -c {cap} -- {shlex.quote(path.strip())}",
                          out_dir / safe_name(path.strip()), deadline, kept, problems)
    status = Status.ERROR if problems else Status.PASSED
    message = f"{plural(len(kept), 'log')} kept in {out_dir}" + (
        f"; {plural(len(problems), 'problem')}: {problems[0]}" if problems else "")
    return StepResult(Phase.HARVEST, machine, "harvest", status,
                      duration=time.monotonic() - started, message=message,
                      output="\n".join(problems))


def _keep(
    shell: Shell, command: str, dest: Path, deadline: float,
    kept: list[str], problems: list[str],
) -> None:
    if time.monotonic() >= deadline:
        problems.append(f"{dest.name}: harvest time limit reached")
        return
    try:
        res = shell.run(command, timeout=_left(deadline), sudo=True)
    except SshError as exc:
        problems.append(f"{dest.name}: {exc}")
        return
    dest.write_text(res.stdout, encoding="utf-8")
    kept.append(dest.name)


def _left(deadline: float) -> float:
    return max(1.0, deadline - time.monotonic())
