#!/usr/bin/env python3
"""Write a realistic week of run history, to try `cdd savings` (and its plot) on.

    scripts/sample-history.py /tmp/history.sqlite
    cdd savings --history /tmp/history.sqlite --since 7d --price 0.05 --plot savings.png

The week ends now. Two environments:
  openstack-base (broker 2 CPUs / 2 GiB, database 1 CPU / 1 GiB): the daily run at 05:00
    UTC on weekdays, one to three pull-request runs a weekday, and a developer's day
    (`cdd up` in the morning, `cdd down` in the evening) Monday to Thursday; on Friday the
    `cdd down` is forgotten and the reaper frees the machines 6 hours after `cdd up`;
    Wednesday's daily run fails and is held for debugging for 2 hours;
  web (three machines): the daily run only, every day of the week.
Everything goes through cdd's own history API, as real runs write it.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cdd_ci.history.store import History, MachineSpec, PhaseSpan, RunStart

OPENSTACK = (MachineSpec("broker", 2, 2048), MachineSpec("database", 1, 1024))
WEB = (MachineSpec("front"), MachineSpec("api"), MachineSpec("db", 2, 2048))


@dataclass(frozen=True)
class Planned:
    env: str
    machines: tuple[MachineSpec, ...]
    command: str
    start: float
    minutes: float
    outcome: str = "passed"
    hold: float = 0.0
    released_by: str = ""


def run_id(at: float, rng: random.Random) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(at)) + f"-{rng.getrandbits(24):06x}"


def record(history: History, rng: random.Random, env: str, machines: tuple[MachineSpec, ...],
           command: str, start: float, minutes: float, now: float, *, outcome: str = "passed",
           hold: float = 0.0, released_by: str = "") -> None:
    """One run: up, provision, check, harvest, destroy; kept ones are released later."""
    rid = run_id(start, rng)
    event = history.begin(RunStart(rid, env, "lxc", command, start, machines, host="runner-1"))
    t = start + 5
    spans = []
    for phase, share in (("up", 0.25), ("provision", 0.45), ("check", 0.2)):
        length = minutes * 60 * share
        spans.append(PhaseSpan(phase, "environment", t, t + length))
        t += length
    kept = command == "up" or hold > 0
    if not kept:
        spans.append(PhaseSpan("harvest", "environment", t, t + 20))
        spans.append(PhaseSpan("destroy", "environment", t + 20, t + 60))
        t += 60
    history.finish(event, finished_at=min(t, now), outcome=outcome, spans=spans,
                   released_at=None if kept else t, released_by=command,
                   hold_until=start + hold if hold else None)
    if not kept:
        return
    if command == "up":
        end = start + minutes * 60 if not released_by else start + 6 * 3600 + 1800
    else:
        end = start + hold + 1800  # the hourly reaper after the hold expired
    if end > now:
        return  # still up: counted until now
    history.note(RunStart(rid, env, "lxc", command, start, machines), command=released_by
                 or "down", started_at=end - 60, finished_at=end, outcome="released",
                 spans=[PhaseSpan("destroy", "environment", end - 60, end)], released=True)


def main(path: Path) -> None:
    rng = random.Random(7)
    history = History(path)
    now = time.time()
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for back in range(6, -1, -1):
        day = today - timedelta(days=back)
        base = day.timestamp()

        def at(hour: float, base: float = base) -> float:
            return base + hour * 3600 + rng.uniform(0, 600)

        weekday = day.weekday() < 5
        runs = [Planned("web", WEB, "run", at(4), 18.0)]
        if weekday:
            failed = day.weekday() == 2
            runs.append(Planned("openstack-base", OPENSTACK, "run", at(5), 26.0,
                                "checks-failed" if failed else "passed",
                                hold=7200.0 if failed else 0.0))
            for _ in range(rng.randint(1, 3)):
                runs.append(Planned("openstack-base", OPENSTACK, "run",
                                    at(rng.uniform(9, 17)), rng.uniform(18, 30)))
            if day.weekday() < 4:
                runs.append(Planned("openstack-base", OPENSTACK, "up", at(8.5),
                                    rng.uniform(8.5, 9.5) * 60))
            else:  # Friday: `cdd down` forgotten
                runs.append(Planned("openstack-base", OPENSTACK, "up", at(8.5), 30.0,
                                    released_by="reap"))
        for r in runs:
            if r.start < now:
                record(history, rng, r.env, r.machines, r.command, r.start, r.minutes, now,
                       outcome=r.outcome, hold=r.hold, released_by=r.released_by)
    print(f"wrote a week of runs to {path}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
