#!/usr/bin/env bash
# The team's shell-script alternative to cdd, as they would write it: bring the machines up,
# run every check with `vagrant ssh -c`, destroy. Run in the Vagrantfile's directory.
#
#   naive.sh up|checks|destroy|all CHECKS_FILE
#
# CHECKS_FILE has one `machine<TAB>command` line per check. Exits 1 if a check failed,
# after running them all.
set -uo pipefail
step=$1 checks=${2:-/dev/null}

up() { vagrant up || exit 3; }
destroy() { vagrant destroy -f; }
run_checks() {
  local failed=0 machine command
  while IFS=$'\t' read -r machine command; do
    out=$(vagrant ssh "$machine" -c "$command" </dev/null 2>&1) && continue
    echo "naive: check failed on $machine (exit $?): $command: $(tail -n 1 <<<"$out")" >&2
    failed=$((failed + 1))
  done <"$checks"
  [ "$failed" = 0 ] || { echo "naive: $failed checks failed" >&2; return 1; }
}

case $step in
  up) up ;;
  checks) run_checks ;;
  destroy) destroy ;;
  all) up; run_checks; status=$?; destroy; exit "$status" ;;
  *) echo "usage: $0 up|checks|destroy|all CHECKS_FILE" >&2; exit 2 ;;
esac
