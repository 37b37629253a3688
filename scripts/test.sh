#!/usr/bin/env bash
# scripts/test.sh: every check the project makes, from a clean clone on a fresh Debian 12 host.
#
#   scripts/test.sh [pytest arguments]
#
# Run it as root, or as a user with sudo: the integration tests drive real Vagrant machines,
# which belong to root, so it runs itself through sudo (keeping CI). It prepares the host
# (scripts/setup-host.sh), installs the package and its test tools into .venv, then runs the
# linters, the type checker and the tests (unit, workflows, and integration tests on real
# Vagrant machines; the long `slow` runs of the founding environments are left to `-m slow`)
# under coverage, subprocesses included, and prints coverage per module with its floor. Last,
# it fails if any machine a test started is still there. With CI=true a skipped test that
# tests/expected-skips.txt does not list fails the run.
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '[test %s] %s\n' "$(date -u +%T)" "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then
    exec sudo --preserve-env=CI,CDD_CONTRACTS_CACHE,CDD_TEST_WORKERS "$0" "$@"
  fi
  say "not root and no sudo: the Vagrant tests will skip (and fail the run under CI=true)"
else
  # lxc for most tests (systemd guests), docker for those of the docker provider
  scripts/setup-host.sh >/dev/null
  scripts/setup-host.sh --provider docker >/dev/null
  # libvirt (real VMs) only for the slow tests: its box takes a couple of minutes to build
  case " $* " in
    *"not slow"*) ;;
    *slow*) scripts/setup-host.sh --provider libvirt --no-reaper >/dev/null ;;
  esac
fi

say "installing into .venv"
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

say "ruff"
.venv/bin/ruff check cdd_ci tests bench
say "mypy --strict"
.venv/bin/mypy
machines() {  # every cdd machine on this host: LXC containers, Docker containers, libvirt domains
  { lxc-ls -1 2>/dev/null || true; /usr/bin/docker ps -a --format '{{.Names}}' 2>/dev/null || true
    timeout 60 virsh -c qemu:///system list --all --name 2>/dev/null || true; } \
    | tr ' ' '\n' | grep '^cdd-' | sort || true
}
before=$(machines)

say "pytest (under coverage, subprocesses included)"
status=0
rm -rf .coverage-data && mkdir -p .coverage-data
export COVERAGE_FILE="$PWD/.coverage-data/coverage"
# two workers, a test file each (a file's machines and fixtures stay together); the files
# that need the whole host wait for it (tests/integration/conftest.py: host_turn). Files in
# collection order, long ones first (tests/conftest.py): xdist would otherwise send the
# files with most tests first and leave the single-test minutes-long ones for last
.venv/bin/python -m coverage run -m pytest -m "not slow" --durations=15 \
  --numprocesses "${CDD_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@" \
  || status=$?
.venv/bin/python -m coverage combine -q || true
# per module; the whole default suite fails under the floor in pyproject.toml (which only ever
# goes up), a chosen subset of tests cannot be held to it
.venv/bin/python -m coverage report ${1:+--fail-under=0} || { [ "$status" != 0 ] || status=1; }

# Tests destroy what they build; this is the user's view of that promise. Machines that were
# there before the tests (another job's on a shared runner) are not the tests' to answer for.
left=$(comm -13 <(printf '%s\n' "$before") <(machines) | grep . || true)
if [ -n "$left" ]; then
  say "FAIL: machines left running after the tests:"; printf '  %s\n' $left >&2
  status=1
fi
exit "$status"
