"""Shared test helpers: paths to the references that live beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture(autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private host index for every test (and every cdd it starts): tests never see the
    runs of the host they run on, and a reaper under test can never reach them."""
    home = tmp_path_factory.mktemp("state-home")
    monkeypatch.setenv("CDD_STATE_HOME", str(home))
    return home
