"""Fingerprints follow the cause: the same cause on another day is one issue, whatever that
day's temporary names, times, addresses and run ids; two causes are two."""

from __future__ import annotations

from pathlib import Path

from cdd_ci.github.fingerprint import fingerprint
from cdd_ci.infra.vagrant import failure_message

CORPUS = Path(__file__).parent.parent / "golden" / "causes"


def fp(machine: str, message: str, phase: str = "provision") -> str:
    return fingerprint("swarm", phase, machine, phase, message)


def provision(machine: str, output: str) -> str:
    return fp(machine, failure_message(f"provision {machine}", 1, output))


def test_the_same_cause_on_another_day_is_the_same_failure() -> None:
    monday = ("==> manager: Running provisioner: shell...\n"
              "    manager: 2026-12-01 09:14:03 fetching /tmp/tmp.Qx81bZa/get-docker.sh\n"
              "    manager: curl: (6) Could not resolve host: get.docker.com\n"
              "The SSH command responded with a non-zero exit status. Vagrant\n")
    tuesday = monday.replace("2026-12-01 09:14:03", "2026-12-02 17:40:59").replace(
        "tmp.Qx81bZa", "tmp.Lm02Cde")
    assert provision("manager", monday) == provision("manager", tuesday)


def test_what_varies_inside_a_cause_does_not_split_it() -> None:
    pairs = [
        ("E: Failed to fetch http://deb.debian.org/x.deb  404  [IP: 151.101.2.132 80]",
         "E: Failed to fetch http://deb.debian.org/x.deb  404  [IP: 199.232.18.132 80]"),
        ("ssh to cdd-20261201091403-08f0b9-db: Connection refused",
         "ssh to cdd-20261202174059-a95592-db: Connection refused"),
        ("FileNotFoundError: [Errno 2] No such file or directory: '/tmp/tmpab12cd34/app.yml'",
         "FileNotFoundError: [Errno 2] No such file or directory: '/tmp/tmpzz99xx11/app.yml'"),
        ("/tmp/vagrant-shell: line 27: cdd-configure: command not found",
         "/tmp/vagrant-shell: line 31: cdd-configure: command not found"),
        ("mariadbd[4121]: [ERROR] Can't start server: Bind on TCP/IP port",
         "mariadbd[977]: [ERROR] Can't start server: Bind on TCP/IP port"),
    ]
    for monday, tuesday in pairs:
        assert provision("db", f"    db: {monday}\n") == provision("db", f"    db: {tuesday}\n")


def test_a_check_retried_a_different_number_of_times_is_the_same_failure() -> None:
    assert fp("rabbitmq", "mysql:3306 from rabbitmq: connection refused (after 15 attempts)",
              "check") == \
        fp("rabbitmq", "mysql:3306 from rabbitmq: connection refused (after 9 attempts)", "check")


def test_two_causes_are_two_failures() -> None:
    package = (CORPUS / "provision-package.txt").read_text()
    dns = (CORPUS / "provision-dns.txt").read_text()
    # the old message was Vagrant's boilerplate for both, so both were one fingerprint
    assert provision("alpha", package) != provision("alpha", dns)
    assert provision("alpha", package) != provision("beta", dns)
    outputs = [p.read_text() for p in CORPUS.glob("provision-*.txt")]
    assert len({provision("alpha", output) for output in outputs}) == len(outputs)


def test_a_port_is_part_of_the_cause() -> None:
    assert fp("app", "mysql:3306 from app: connection refused", "check") != \
        fp("app", "rabbitmq:5672 from app: connection refused", "check")
