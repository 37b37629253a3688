"""The cause of a failure, found in what Vagrant really printed: a corpus of outputs from real
machines (tests/unit/golden/causes), then the shapes the corpus cannot show on this host."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdd_ci.infra.vagrant import failure_message
from cdd_ci.report.cause import explain, running

CORPUS = Path(__file__).parent.parent / "golden" / "causes"

CAUSES = {
    "package": "E: Unable to locate package cdd-no-such-package",
    "dns": "curl: (6) Could not resolve host: cdd-no-such-host.invalid",
    "service": "Job for cdd-test-broker.service failed because the control process exited "
               "with error code.",
    "set-e": "command failed: grep -q '^ready' /etc/cdd-test",
    "traceback": "json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)",
    "not-found": "/tmp/vagrant-shell: line 27: cdd-configure: command not found",
    "no-file": "cp: cannot stat '/etc/cdd/app.conf': No such file or directory",
}


def real(kind: str) -> str:
    return (CORPUS / f"provision-{kind}.txt").read_text(encoding="utf-8")


def test_the_corpus_is_all_here() -> None:
    kinds = {p.stem.removeprefix("provision-") for p in CORPUS.glob("provision-*.txt")}
    assert kinds == {*CAUSES, "hang"}


@pytest.mark.parametrize("kind", sorted(CAUSES))
def test_the_message_of_a_real_failure_is_its_cause(kind: str) -> None:
    message = failure_message("provision alpha", 1, real(kind))
    assert message == f"{CAUSES[kind]} (vagrant provision alpha exited 1)"
    assert "Vagrant assumes" not in message and "==>" not in message


def test_a_failed_trigger_is_told_by_what_its_script_said() -> None:
    # Vagrant's own words ("A script exited with an unacceptable exit code 1.") say nothing
    message = failure_message("destroy beta", 1,
                              (CORPUS / "destroy-trigger.txt").read_text(encoding="utf-8"))
    assert message == "cannot release the storage of beta (vagrant destroy beta exited 1)"


def test_a_real_timeout_says_what_was_running() -> None:
    assert running(real("hang")) == "waiting for the cluster to form"


def test_the_lines_before_apt_s_last_error_come_with_it() -> None:
    output = ("    db: Reading package lists...\n"
              "    db: E: Failed to fetch http://deb.debian.org/pool/m/mysql.deb  404 Not Found\n"
              "    db: E: Unable to fetch some archives, maybe run apt-get update?\n"
              "The SSH command responded with a non-zero exit status. Vagrant\n"
              "assumes that this means the command failed. The output for this command\n"
              "should be in the log above. Please read the output to determine what\n"
              "went wrong.\n")
    assert explain(output) == ("E: Failed to fetch http://deb.debian.org/pool/m/mysql.deb 404 "
                               "Not Found / E: Unable to fetch some archives, maybe run "
                               "apt-get update?")


def test_colour_codes_and_prefixes_are_gone() -> None:
    output = ("\x1b[0;32m==> swarm1: Running provisioner: shell...\x1b[0m\n"
              "\x1b[0;31m    swarm1: curl: (6) Could not resolve host: get.docker.com\x1b[0m\n")
    assert explain(output) == "curl: (6) Could not resolve host: get.docker.com"


def test_a_traced_command_and_what_it_said() -> None:
    output = "    a: + make install\n    a: make: *** [Makefile:3: install] Error 2\n"
    assert explain(output) == "make: *** [Makefile:3: install] Error 2 (running: make install)"
    assert running("    a: + sleep 600\n") == "sleep 600"


def test_an_earlier_tolerated_error_is_not_the_cause() -> None:
    output = ("    a: rm: cannot remove '/etc/old': No such file or directory\n"
              "    a: Job for mariadb.service failed because a timeout was exceeded.\n")
    assert explain(output) == "Job for mariadb.service failed because a timeout was exceeded."


def test_vagrant_s_own_error_for_an_up_that_failed() -> None:
    output = ("Bringing machine 'alpha' up with 'lxc' provider...\n"
              "==> alpha: Box 'cdd/nosuch' could not be found. Attempting to find and "
              "install...\n"
              "The box 'cdd/nosuch' could not be found or\n"
              "could not be accessed in the remote catalog.\n")
    assert explain(output) == ("The box 'cdd/nosuch' could not be found or could not be "
                               "accessed in the remote catalog.")


def test_a_chained_traceback_gives_its_last_exception() -> None:
    output = ("Traceback (most recent call last):\n  File \"a.py\", line 1, in <module>\n"
              "    open('x')\nFileNotFoundError: [Errno 2] No such file or directory: 'x'\n\n"
              "During handling of the above exception, another exception occurred:\n\n"
              "Traceback (most recent call last):\n  File \"a.py\", line 3, in <module>\n"
              "    raise SystemExit('config missing')\nSystemExit: config missing\n")
    assert explain(output) == "SystemExit: config missing"


def test_no_output_says_so() -> None:
    assert explain("") == ""
    assert failure_message("provision a", 1, "") == \
        "vagrant provision a failed (exit 1) with no output"


def test_a_long_line_is_clipped() -> None:
    assert len(explain("E: " + "x" * 1000)) == 300
