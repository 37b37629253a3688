"""Pure pieces of the issue reporting: fingerprints, safe Markdown, the hidden record."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from cdd_ci.github.fingerprint import fingerprint, normalise
from cdd_ci.github.record import Record, RunFacts, decode, encode, fingerprint_of
from cdd_ci.text import ZWJ, Scrubber, code_span, fence, github_length, neutralise, tail

TOKEN = "ghs_16C7e42F292c6912E7710c838347Ae178B4a"


@pytest.mark.parametrize(("one", "other"), [
    ("failed at 2026-11-24T22:39:01Z", "failed at 2026-11-25T03:01:59.123+00:00"),
    ("Nov 24 22:39:01 db mariadbd[812]: crash", "Nov  3 01:02:03 db mariadbd[812]: crash"),
    ("took 12.3s", "took 950ms"),
    ("timed out after 300 seconds", "timed out after 45 seconds"),
    ("container 3f2a9c1b7e4d exited", "container 0a9b8c7d6e5f exited"),
    ("lease 1b4e28ba-2fa1-11d2-883f-0016d3cca427 lost",
     "lease 6fa459ea-ee8a-3ca4-894e-db77e160355e lost"),
    ("no route to 10.0.3.15", "no route to 10.0.3.201"),
    ("connect from 10.0.3.15:48212 refused", "connect from 10.0.3.99:51002 refused"),
    ("peer fe80::216:3eff:fe12:3456 gone", "peer fe80::216:3eff:feab:cdef gone"),
    ("cannot open /tmp/tmpa8d7f6s9/out.log", "cannot open /tmp/tmpzz81ke0q/out.log"),
    ("\x1b[31mERROR\x1b[0m mariadb down", "ERROR mariadb down"),
    ("killed pid 4242", "killed pid 17"),
    ("port 49152 in use", "port 60001 in use"),
])
def test_what_changes_from_run_to_run_does_not_change_the_fingerprint(one: str, other: str) -> None:
    assert normalise(one) == normalise(other)
    assert _fingerprint(one) == _fingerprint(other)


@pytest.mark.parametrize(("one", "other"), [
    ("exit status 1", "exit status 2"),
    ("broker:5672 refused", "broker:3306 refused"),
    ("mariadb inactive", "rabbitmq-server inactive"),
    ("expected ^keystone$, got ''", "expected ^glance$, got ''"),
])
def test_a_different_failure_has_a_different_fingerprint(one: str, other: str) -> None:
    assert _fingerprint(one) != _fingerprint(other)


def _fingerprint(message: str) -> str:
    return fingerprint("env", "check", "db", "c", message)


def test_where_it_failed_is_part_of_the_fingerprint() -> None:
    base = ("env", "check", "db", "mariadb running", "inactive")
    variants = {fingerprint(*base)}
    for i, value in enumerate(["env2", "provision", "broker", "other check"]):
        variants.add(fingerprint(*base[:i], value, *base[i + 1:]))
    assert len(variants) == 5
    assert all(re.fullmatch(r"[0-9a-f]{16}", f) for f in variants)


@pytest.mark.parametrize(("text", "live"), [
    ("ping @alice and @org/team", r"@[A-Za-z0-9]"),
    ("fixes #123 and acme/app#7", r"#\d"),
    ("see GH-42", r"GH-\d"),
    ("<!-- cdd-fingerprint: 0123456789abcdef -->", r"<!--"),
])
def test_mentions_references_and_comment_markers_are_neutralised(text: str, live: str) -> None:
    safe = neutralise(text)
    assert re.search(live, safe) is None
    assert safe.replace(ZWJ, "") == text  # looks the same


def test_an_email_address_stays_readable_but_pings_nobody() -> None:
    assert neutralise("mail root@example.org") == f"mail root@{ZWJ}example.org"


@pytest.mark.parametrize("text", ["plain", "a ``` fence", "````` five", "ends with `"])
def test_a_fence_is_longer_than_any_backtick_run_inside(text: str) -> None:
    block = fence(text)
    opening = block.split("\n", 1)[0]
    runs = [len(r) for r in re.findall(r"`+", text)]
    assert len(opening) >= 3 and len(opening) > max(runs, default=0)
    assert block.endswith("\n" + opening)


@pytest.mark.parametrize("text", ["x", "a `b` c", "`starts", "``double``"])
def test_a_code_span_cannot_be_closed_by_its_content(text: str) -> None:
    span = code_span(text)
    ticks = re.match(r"`+", span)
    assert ticks is not None
    inner = span[len(ticks.group(0)):-len(ticks.group(0))]
    assert ticks.group(0) not in inner
    assert inner.strip() == text


def test_the_token_and_anything_shaped_like_a_github_token_is_redacted() -> None:
    scrub = Scrubber([TOKEN, "short"])
    text = f"Authorization: token {TOKEN}; other ghp_{'a' * 36}; pat github_pat_{'B' * 30}; short"
    out = scrub(text)
    assert TOKEN not in out and "ghp_" not in out and "github_pat_" not in out
    assert out.endswith("short")  # too short to be a token: left alone


def test_a_tail_starts_on_a_line_boundary() -> None:
    text = "".join(f"line {i}\n" for i in range(1000))
    cut = tail(text, 100)
    assert len(cut) <= 100 and cut.startswith("line ") and text.endswith(cut)
    assert tail("short", 100) == "short"


def test_length_is_counted_as_github_counts_it() -> None:
    assert github_length("abc") == 3
    assert github_length("😀") == 2  # one code point, two UTF-16 units


def _record(**changes: object) -> Record:
    at = datetime(2026, 11, 24, 22, 0, tzinfo=UTC)
    record = Record("0123456789abcdef", "openstack-base", "check", "database", "mariadb running",
                    at, at, at, 3, "r3", "https://x/runs/3", "abc", at, 1,
                    RunFacts("r2", "https://x/runs/2", at, "def", "lxc", "debian 1", "2.4"))
    return replace(record, **changes)  # type: ignore[arg-type]


def test_the_record_survives_the_round_trip_through_an_issue_body() -> None:
    record = _record()
    body = f"{encode(record)}\n\nsome text a human added\n"
    assert decode(body) == record
    assert fingerprint_of(body) == "0123456789abcdef"


def test_a_record_cannot_end_its_html_comment_early() -> None:
    record = _record(check="weird --> name <!-- x")
    hidden = encode(record)
    assert hidden.count("-->") == 2 and hidden.count("<!--") == 2
    assert decode(hidden) == record


@pytest.mark.parametrize("body", [
    "no record at all",
    "<!-- cdd-record: {not json} -->",
    '<!-- cdd-record: {"v": 99, "fingerprint": "x"} -->',
])
def test_an_unreadable_record_is_no_record(body: str) -> None:
    assert decode(body) is None
