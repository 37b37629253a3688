"""The host-wide index of runs: one small pointer file per run, so `cdd reap` and
`cdd status` find the ledgers of every project on this host without knowing the projects.

Each project keeps its ledgers in its own `.cdd/runs/`; the index says where they are and
keeps a copy of the latest ledger, written with it. A pointer is removed when the run is
forgotten (its machines verified gone). A pointer whose ledger is gone is stale: the project
was deleted, or its workspace cleaned (an ephemeral runner, `git clean`), or a crash came
between forgetting and unregistering. Its copy still says what the run created, by which
process and when, so the reaper can tell a live run from a dead one and destroy the dead
one's machines at once, instead of waiting until they are old enough to be anyone's.

Where the index lives:
  `$CDD_STATE_HOME/runs` when CDD_STATE_HOME is set (tests point it at a temporary
  directory so they never see, or touch, the host's real runs);
  `/var/lib/cdd-ci/runs` when running as root (CI runners, cron);
  `$XDG_STATE_HOME/cdd/runs`, by default `~/.local/state/cdd/runs`, otherwise.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

STATE_HOME_VAR = "CDD_STATE_HOME"
ROOT_STATE_HOME = Path("/var/lib/cdd-ci")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class IndexEntry:
    run_id: str
    run_dir: Path
    """The run's directory in its project (`<project>/.cdd/runs/<run_id>`)."""
    environment: str = ""
    ledger: str = ""
    """A copy of the run's ledger (JSON), for when the project's own is gone."""

    @property
    def state_dir(self) -> Path:
        """The project's `.cdd/`: what a LedgerStore for this run is built on."""
        return self.run_dir.parent.parent


def index_dir(environ: Mapping[str, str], *, is_root: bool, home: Path) -> Path:
    """Where this user's index lives (see the module docstring)."""
    explicit = environ.get(STATE_HOME_VAR, "")
    if explicit:
        return Path(explicit) / "runs"
    if is_root:
        return ROOT_STATE_HOME / "runs"
    xdg = environ.get("XDG_STATE_HOME", "")
    return (Path(xdg) if xdg else home / ".local" / "state") / "cdd" / "runs"


class HostIndex:
    """Pointer files, one per run, in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> HostIndex:
        env = os.environ if environ is None else environ
        return cls(index_dir(env, is_root=os.geteuid() == 0, home=Path.home()))

    def _path(self, run_id: str) -> Path:
        if not _RUN_ID.match(run_id):
            raise ValueError(f"not a run id: {run_id!r}")
        return self.directory / f"{run_id}.json"

    def register(self, run_id: str, run_dir: Path, environment: str = "",
                 ledger: str = "") -> None:
        """Record where a run's ledger is, with a copy of it; atomic (a half pointer is no
        pointer), and rewritten with every ledger update so the copy stays current."""
        path = self._path(run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = IndexEntry(run_id, run_dir.resolve(), environment, ledger)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**asdict(entry), "run_dir": str(entry.run_dir)},
                                  sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)

    def unregister(self, run_id: str) -> None:
        self._path(run_id).unlink(missing_ok=True)

    def entries(self) -> list[IndexEntry]:
        """Every registered run, by run id (so oldest first); unreadable pointers skipped."""
        if not self.directory.is_dir():
            return []
        out = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                out.append(IndexEntry(str(data["run_id"]), Path(data["run_dir"]),
                                      str(data.get("environment", "")),
                                      str(data.get("ledger", ""))))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # another cdd is replacing it, or it is garbage: never fatal
        return out
