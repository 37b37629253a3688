"""What differs between a failing run and the last green run of its environment.

From the run history: each machine's box and packages (name: old -> new, added, removed),
Vagrant's and its plugins' versions, and the commits in between with their authors (from
`git log` in the checkout, bounded in count and time). What cannot be known is said plainly
in `problem`, never guessed: no green run on record, a green run recorded without an
inventory, a commit that a shallow checkout does not have.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cdd_ci.history.store import GreenRun, History, HistoryError
from cdd_ci.infra.git import git
from cdd_ci.models import Inventory, MachineInventory, Package, RunResult

GIT_TIMEOUT = 10.0
MAX_COMMITS = 20
"""Commits listed by name; beyond that, their number (and the compare link) says the rest."""


@dataclass(frozen=True)
class Change:
    """One thing with a version, before and after; "" is absent on that side."""

    name: str
    before: str
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def added(self) -> bool:
        return not self.before

    @property
    def removed(self) -> bool:
        return not self.after


@dataclass(frozen=True)
class MachineChanges:
    machine: str
    box: Change
    """`name version` in each run, changed or not."""
    packages: tuple[Change, ...]
    """Changed, added and removed packages, by name."""
    installed: int
    """Packages on the machine in this run (0 when unknown)."""
    problem: str = ""
    """Why packages cannot be compared (not listed in one of the runs), or ""."""


@dataclass(frozen=True)
class Commit:
    sha: str
    author: str
    subject: str


@dataclass(frozen=True)
class Commits:
    listed: tuple[Commit, ...]
    more: int = 0
    """Commits in between beyond the ones listed."""
    problem: str = ""


@dataclass(frozen=True)
class Changes:
    """The comparison a failure's issue shows under "What changed since the last green run"."""

    green: GreenRun | None
    machines: tuple[MachineChanges, ...] = ()
    tools: tuple[Change, ...] = ()
    """Vagrant and each plugin, in each run, changed or not."""
    commits: Commits | None = None
    """None when there is nothing to compare (no green run, or the same commit)."""
    problem: str = ""
    """Why nothing, or less than the above, can be said; "" when all of it is known."""

    @property
    def packages_changed(self) -> int:
        return sum(len(m.packages) for m in self.machines)


def since_last_green(history: History, result: RunResult, *, commit: str,
                     checkout: Path) -> Changes:
    """`result` against the last green run of its environment before it; never raises."""
    try:
        green = history.last_green(result.environment, before=result.started_at,
                                   other_than=result.run_id)
        if green is None:
            return Changes(None, problem=f"no green run of {result.environment} is on record "
                                         f"in the run history ({history.location})")
        before = history.inventory(green.run_id)
        after = result.inventory or history.inventory(result.run_id)
    except HistoryError as exc:
        return Changes(None, problem=f"the run history cannot be read: {exc}")
    commits = commits_between(checkout, green.commit, commit)
    if before is None or after is None:
        which = "the last green run" if before is None else "this run"
        return Changes(green, commits=commits,
                       problem=f"{which} has no inventory of packages and versions in the "
                               "run history (recorded by an older cdd, or no machine came up)")
    return Changes(green, tuple(compare_machines(before, after)),
                   tuple(_compare(_tools(before), _tools(after), every=True)), commits)


def compare_machines(before: Inventory, after: Inventory) -> list[MachineChanges]:
    old = {m.machine: m for m in before.machines}
    out = []
    for machine in after.machines:
        was = old.get(machine.machine)
        if was is None:
            out.append(MachineChanges(machine.machine, Change("box", "", _box(machine)), (),
                                      len(machine.packages), "not in the last green run"))
            continue
        box = Change("box", _box(was), _box(machine))
        problem = ""
        if machine.problem:
            problem = f"packages not listed in this run: {machine.problem}"
        elif was.problem:
            problem = f"packages not listed in the last green run: {was.problem}"
        packages = () if problem else tuple(_compare(was.packages, machine.packages))
        out.append(MachineChanges(machine.machine, box, packages, len(machine.packages),
                                  problem))
    return out


def commits_between(checkout: Path, old: str, new: str, *,
                    limit: int = MAX_COMMITS) -> Commits | None:
    """`git log old..new` in the checkout, newest first; None when there is nothing between."""
    if not old or not new:
        return Commits((), problem="the commit of " + ("the last green run" if not old
                                                       else "this run") + " is not known")
    if old == new:
        return None
    for sha in (old, new):
        if _git(checkout, "cat-file", "-e", f"{sha}^{{commit}}") is None:
            shallow = _git(checkout, "rev-parse", "--is-shallow-repository") == "true\n"
            return Commits((), problem=f"commit {sha[:12]} is not in the checkout "
                           f"at {checkout}" + (" (a shallow clone: check out with "
                                               "fetch-depth: 0 to list the commits)"
                                               if shallow else ""))
    out = _git(checkout, "log", f"--max-count={limit + 1}", "--format=%H%x1f%an%x1f%s",
               f"{old}..{new}")
    count = _git(checkout, "rev-list", "--count", f"{old}..{new}")
    if out is None or count is None:
        return Commits((), problem=f"git log {old[:12]}..{new[:12]} failed in {checkout}")
    listed = [Commit(*[*line.split("\x1f", 2), "", ""][:3])
              for line in out.splitlines()[:limit] if line]
    return Commits(tuple(listed), more=max(0, int(count.strip() or 0) - len(listed)))


def _compare(before: Iterable[Package], after: Iterable[Package], *,
             every: bool = False) -> list[Change]:
    """By name: what differs (added, removed, another version), or `every` one."""
    old = {p.name: p.version for p in before}
    new = {p.name: p.version for p in after}
    changes = (Change(name, old.get(name, ""), new.get(name, ""))
               for name in sorted(old.keys() | new.keys(), key=_tool_order))
    return [c for c in changes if every or c.changed]


def _tool_order(name: str) -> tuple[bool, str]:
    return name != "Vagrant", name


def _tools(inventory: Inventory) -> list[Package]:
    vagrant = [Package("Vagrant", inventory.vagrant)] if inventory.vagrant else []
    return [*vagrant, *inventory.plugins]


def _box(machine: MachineInventory) -> str:
    return f"{machine.box} {machine.box_version}".strip()


def _git(checkout: Path, *args: str) -> str | None:
    answer = git(checkout, *args, timeout=GIT_TIMEOUT)
    return answer.stdout if answer.ok else None
