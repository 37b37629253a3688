#!/usr/bin/env bash
# scripts/run.sh: the main job on a fresh Debian 12 host, in one command.
#
#   scripts/run.sh [cdd run options]
#
# Prepares the host for real Vagrant (scripts/setup-host.sh: Vagrant, the provider and a box
# built from Debian's archive), installs cdd into .venv and runs `cdd run` on the default
# environment of cdd.toml. Run it as root, or as a user with sudo: the provider, the box and
# the machines belong to root, so it runs itself through sudo (keeping CI and the GitHub
# variables a report needs).
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "run.sh: run as root, or as a user with sudo" >&2; exit 2; }
  exec sudo --preserve-env=CI,GITHUB_TOKEN,GITHUB_REPOSITORY,GITHUB_API_URL,GITHUB_SERVER_URL,GITHUB_RUN_ID,GITHUB_SHA,GITHUB_STEP_SUMMARY,GITHUB_OUTPUT,GITHUB_EVENT_NAME,GITHUB_ACTIONS \
    "$0" "$@"
fi

exports=$(scripts/setup-host.sh)
eval "$exports"
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check .
# exec: a signal meant for this job (a cancel, ^C) reaches cdd itself, which destroys
exec .venv/bin/cdd run "$@"
