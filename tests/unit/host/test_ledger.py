"""Ledgers written by other versions of cdd stay readable: they are how machines are found."""

from __future__ import annotations

import json
from pathlib import Path

from cdd_ci.host.index import HostIndex
from cdd_ci.host.ledger import LedgerPhase, LedgerStore


def test_a_ledger_with_fields_this_version_does_not_know_is_still_read(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / ".cdd", HostIndex(tmp_path / "index"))
    record = {"run_id": "20261124030000-abcdef", "environment": "pair", "directory": "/p",
              "provider": "lxc", "machines": ["alpha"], "vagrant_env": {},
              "started_at": 1.0, "heartbeat": 2.0}  # written by an earlier version
    path = store.run_dir(record["run_id"]) / "ledger.json"  # type: ignore[arg-type]
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))

    (ledger,) = store.all()
    assert ledger.machines == ["alpha"]
    assert store.read("20261124030000-abcdef").provider == "lxc"


def test_a_phase_this_version_does_not_know_is_reaped_not_kept_for_ever(tmp_path: Path) -> None:
    store = LedgerStore(tmp_path / ".cdd", HostIndex(tmp_path / "index"))
    record = {"run_id": "20261124030000-abcdef", "environment": "pair", "directory": "/p",
              "provider": "lxc", "machines": ["alpha"], "vagrant_env": {},
              "started_at": 1.0, "phase": "parked"}  # a phase of some later version
    path = store.run_dir(record["run_id"]) / "ledger.json"  # type: ignore[arg-type]
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))

    (ledger,) = store.all()
    assert ledger.phase is LedgerPhase.CREATED and not ledger.phase.kept_by_design
    ledger.phase = LedgerPhase.HELD
    store.write(ledger)
    assert json.loads(path.read_text())["phase"] == "held"
    assert store.read(ledger.run_id).phase.kept_by_design
