#!/usr/bin/env bash
# scripts/test.sh: every check the project makes, from a clean clone on a fresh Debian 12 host.
#
#   scripts/test.sh [pytest arguments]
#
# Prepares the host for real Vagrant (scripts/setup-host.sh, as root or through sudo),
# installs the package and its test tools into .venv, then runs the linters, the type
# checker and the tests (unit, workflows, and integration tests on real Vagrant machines;
# the long `slow` runs of the founding environments are left to `-m slow`). Last, it fails
# if any machine a test started is still there.
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '[test %s] %s\n' "$(date -u +%T)" "$*" >&2; }

# lxc for most tests (systemd guests), docker for those of the docker provider
if [ "$(id -u)" = 0 ]; then
  scripts/setup-host.sh >/dev/null
  scripts/setup-host.sh --provider docker >/dev/null
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo scripts/setup-host.sh >/dev/null
  sudo scripts/setup-host.sh --provider docker >/dev/null
else
  say "not root and no password-less sudo: Vagrant tests will be skipped"
fi

say "installing into .venv"
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

say "ruff"
.venv/bin/ruff check cdd_ci tests bench
say "mypy --strict"
.venv/bin/mypy
machines() {  # every cdd machine on this host, LXC containers and Docker containers
  { lxc-ls -1 2>/dev/null || true; /usr/bin/docker ps -a --format '{{.Names}}' 2>/dev/null || true; } \
    | tr ' ' '\n' | grep '^cdd-' | sort || true
}
before=$(machines)

say "pytest"
status=0
.venv/bin/python -m pytest -m "not slow" "$@" || status=$?

# Tests destroy what they build; this is the user's view of that promise. Machines that were
# there before the tests (another job's on a shared runner) are not the tests' to answer for.
left=$(comm -13 <(printf '%s\n' "$before") <(machines) | grep . || true)
if [ -n "$left" ]; then
  say "FAIL: machines left running after the tests:"; printf '  %s\n' $left >&2
  status=1
fi
exit "$status"
