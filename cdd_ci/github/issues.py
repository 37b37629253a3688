"""Failure issues: one per distinct failure, kept up to date by every later run.

- A new failure opens an issue (labels `cdd`, `environment-failure`, `phase:<phase>`).
- The same failure again updates the counts in the body, and comments at most once per
  `comment_interval`; a closed issue is reopened, with a comment.
- After `close_after` runs in a row in which the failed step passed, the issue is closed.
- At most `max_issues` failures of one run get an issue each; the rest share one summary issue.
- On a pull request nothing is written: the output says which failures are known on main.

Issues are found by listing those labelled `cdd` and reading the fingerprint hidden in their
body (never by search, which lags behind writes). What a run must remember for the next one
(counts, dates, the green streak) is hidden in the body as well: CI runners start clean.

Two runs can report the same new failure at once. Looking again just before creating narrows
the window; to close it, a run first creates a label named after the fingerprint. GitHub's
label names are unique, so only one run can create it: that run opens the issue, the other
waits for it to appear and updates it instead.

Two runs can also update one issue at once, and GitHub has no transactions: the second write
replaces the first, and its count. So a run counts on the issue as it is just before writing,
notes its run id among the last runs counted, and once its writes have settled reads each
issue again: a run missing from it counts itself again. If that too is overwritten, the issue
says that its count may be low.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TypeVar

from cdd_ci.github.body import Failure, IssueWriter, comment_mark, details_of
from cdd_ci.github.client import (
    ClientOptions,
    GitHubError,
    IssueTracker,
    LabelSpec,
    PyGithubTracker,
    RemoteIssue,
)
from cdd_ci.github.context import GitHubContext
from cdd_ci.github.fingerprint import fingerprint
from cdd_ci.github.record import Record, RunFacts, decode, fingerprint_of
from cdd_ci.history.changes import Changes
from cdd_ci.models import ENVIRONMENT, Phase, RunResult, Status, StepResult
from cdd_ci.text import Scrubber, one_line

LABEL = "cdd"
FAILURE_LABEL = "environment-failure"
CLAIM_PREFIX = "cdd-claim-"
STEP_NAME = "github issues"
_LABELS = {
    LABEL: LabelSpec(LABEL, "5319e7", "Opened by cdd for a failing environment run"),
    FAILURE_LABEL: LabelSpec(FAILURE_LABEL, "d73a4a",
                             "The environment failed to build, pass its checks or go away"),
}
T = TypeVar("T")
COUNTED_RUNS = 20
"""Run ids kept in a record: more than ever report one issue at once."""


@dataclass(frozen=True)
class IssuePolicy:
    comment_interval: timedelta = timedelta(hours=24)
    """At most one comment per failure in this time; the body's counts are updated anyway."""
    close_after: int = 2
    """Green runs in a row before an issue is closed."""
    max_issues: int = 10
    """Failures of one run that get an issue each; the rest share one summary issue."""
    claim_wait: float = 10.0
    """Seconds to wait for the issue of a run that claimed a failure first."""
    poll_interval: float = 1.0
    post_attempts: int = 3
    """Tries of a POST whose answer was lost, each after looking whether it went in."""
    closed_scan: int = 1000
    """Closed issues looked through for one to reopen, most recently updated first."""
    settle: float | None = None
    """Seconds between a run's writes and its re-reading of the issues it counted on, longer
    than another run's read-to-write time; None: 2.5 times the client's spacing of writes."""
    recount_rounds: int = 3
    """Times a run re-reads, and counts itself again where another run's write took its count."""


@dataclass(frozen=True)
class IssueAction:
    """One thing done (or, in a dry run, to be done) to one issue."""

    verb: str
    title: str
    number: int | None = None
    url: str = ""
    note: str = ""

    def line(self) -> str:
        where = f" #{self.number}" if self.number is not None else ""
        note = f" ({self.note})" if self.note else ""
        return f"{self.verb}{where}{note}: {self.title}"


@dataclass
class IssueReport:
    """What the reporting did. It never raises: GitHub's failures are in `errors`."""

    actions: list[IssueAction] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    def lines(self) -> list[str]:
        prefix = "dry run: " if self.dry_run else ""
        out = [prefix + action.line() for action in self.actions]
        if not out and self.ok:
            out.append(prefix + "no issue to open or change")
        return out + [f"error: {error}" for error in self.errors]

    def links(self) -> list[tuple[int, str, str]]:
        """(number, url, what happened) per issue touched, for the job summary."""
        return [(a.number, a.url, a.verb) for a in self.actions
                if a.number is not None and not self.dry_run]

    def step(self) -> StepResult:
        """The reporting as a testcase of the run: an error never changes the run's verdict."""
        return StepResult(
            Phase.REPORT, ENVIRONMENT, STEP_NAME,
            Status.ERROR if self.errors else Status.PASSED,
            message=self.errors[0] if self.errors else f"{len(self.actions)} issue actions",
            output="\n".join(self.lines()),
        )


def report_issues(
    result: RunResult,
    context: GitHubContext,
    *,
    policy: IssuePolicy = IssuePolicy(),
    dry_run: bool = False,
    baseline: RunResult | None = None,
    tracker: IssueTracker | None = None,
    options: ClientOptions | None = None,
    sleep: Callable[[float], None] = time.sleep,
    changes: Changes | None = None,
) -> IssueReport:
    """Open, update, close or reopen the issues for `result`; never raises.

    `baseline` is an earlier green run of the environment (e.g. read back from its JUnit
    report), used for "what changed" when an issue has no green run of its own on record.
    `changes` is the run history's comparison with the last green run of the environment
    (packages, boxes, tools, commits): when given, it is what a new failure's issue shows.
    """
    scrub = Scrubber.from_env(os.environ, secrets=[context.token])
    report = IssueReport(dry_run=dry_run)
    if policy.settle is None:  # a tracker handed in (a fake) has no writes to space out
        spacing = (options or ClientOptions()).seconds_between_writes if tracker is None else 0
        policy = replace(policy, settle=2.5 * spacing)
    try:
        tracker = tracker or PyGithubTracker(context, options or ClientOptions())
        _Reporter(result, context, tracker, policy, report, baseline, sleep, changes).run()
    except GitHubError as exc:
        report.errors.append(scrub(str(exc)))
    except Exception as exc:  # a bug here must not cost the run its report or its destroy
        report.errors.append(scrub(one_line(f"internal error: {type(exc).__name__}: {exc}")))
    return report


def failures_of(result: RunResult) -> list[Failure]:
    """The distinct failures of a run; the reporting's own step is not one of them."""
    out: dict[str, Failure] = {}
    for step in result.steps:
        if step.ok or step.phase is Phase.REPORT:
            continue
        key = fingerprint(result.environment, step.phase.value, step.machine, step.name,
                          step.message)
        out.setdefault(key, Failure(key, result.environment, step.phase.value, step.machine,
                                    step.name, step.status, step.message, step.output))
    return list(out.values())


def summary_fingerprint(environment: str) -> str:
    return fingerprint(environment, "*", "*", "*", "failures past the cap")


@dataclass(frozen=True)
class _Subject:
    """What one issue is about: one failure, or the failures past the cap."""

    fingerprint: str
    title: str
    labels: list[str]
    failures: list[Failure]
    summary: bool = False


@dataclass(frozen=True)
class _Tracked:
    issue: RemoteIssue
    record: Record | None


class _Reporter:
    def __init__(self, result: RunResult, context: GitHubContext, tracker: IssueTracker,
                 policy: IssuePolicy, report: IssueReport, baseline: RunResult | None,
                 sleep: Callable[[float], None], changes: Changes | None = None) -> None:
        self.result = result
        self.changes = changes
        self.context = context
        self.tracker = tracker
        self.policy = policy
        self.report = report
        self.sleep = sleep
        self.facts = _facts(result, context)
        # an earlier run: its Actions run is not this one, so no link rather than a wrong one
        self.baseline = replace(_facts(baseline, context), run_url="") if baseline else None
        self.failures = failures_of(result)
        self.writer = IssueWriter(context, close_after=policy.close_after,
                                  cap=policy.max_issues, interval=policy.comment_interval)
        self.open: dict[str, _Tracked] = {}
        self.closed: dict[str, _Tracked] = {}
        self._closed_pages: Iterator[RemoteIssue] | None = None
        self._counted_on: dict[int, _Subject] = {}
        """Issues this run counted an occurrence on, to read again once the writes settled."""
        self._labels: set[str] | None = None

    def run(self) -> None:
        if self.result.interrupted_by:
            return  # a cancelled run proves nothing either way
        self.open = self._list_open()
        if self.context.is_pull_request:
            self._pull_request(self.failures)
            return
        # failures that already have an issue keep it; the cap limits new issues per run
        ranked = sorted(self.failures, key=lambda f: f.fingerprint not in self.open)
        subjects = [self._subject(f) for f in ranked[:self.policy.max_issues]]
        overflow = ranked[self.policy.max_issues:]
        if overflow:
            subjects.append(_Subject(summary_fingerprint(self.result.environment),
                                     self.writer.summary_title(self.result.environment),
                                     [LABEL, FAILURE_LABEL], overflow, summary=True))
        handled = {s.fingerprint for s in subjects}
        for subject in subjects:
            self._isolated(partial(self._failed, subject))
        for key, tracked in list(self.open.items()):
            if key not in handled:
                self._isolated(partial(self._maybe_green, tracked))
        self._recount()

    # -- a failure -----------------------------------------------------------------------

    def _failed(self, subject: _Subject) -> None:
        tracked = self.open.get(subject.fingerprint) or self._find_closed(subject.fingerprint)
        if tracked is None:
            self._open_issue(subject)
        else:
            self._again(subject, tracked)

    def _open_issue(self, subject: _Subject) -> None:
        record = self._new_record(subject)
        body = self.writer.body(record, self._details(subject, record))
        if self.report.dry_run:
            self._did("open", subject.title)
            return
        self._ensure_labels(subject.labels)
        # another run may have opened it since we listed: look again right before creating
        found = self._look_again(subject.fingerprint)
        if found is None and not self._claim(subject.fingerprint):
            found = self._wait_for(subject.fingerprint)
            # still nothing: the run that claimed it died before opening it; open it here
        if found is not None:
            self._again(subject, found)
            return

        def created() -> RemoteIssue | None:
            found = self._wait_for(subject.fingerprint)
            return found.issue if found else None

        issue = self._post(
            lambda: self.tracker.create_issue(subject.title, body, subject.labels), created)
        self.open[subject.fingerprint] = _Tracked(issue, record)
        self._did("open", issue.title, issue)

    def _again(self, subject: _Subject, tracked: _Tracked) -> None:
        issue, old = tracked.issue, tracked.record
        if not self.report.dry_run:
            # the listing is as old as the run's start: count on the issue as it is now
            issue = self.tracker.issue(issue.number)
            old = decode(issue.body)
        if old is not None and self._counted(old):
            return  # this run was reported already (a second `cdd issues` of the same run)
        reopen = issue.state == "closed"
        if old is None:  # marker without a readable record (edited by hand): count afresh
            record = self._new_record(subject)
        else:
            record = replace(
                old,
                last_seen=self.facts.at,
                occurrences=old.occurrences + 1,
                last_run_id=self.facts.run_id,
                last_run_url=self.facts.run_url,
                last_commit=self.facts.commit,
                green_streak=0,
                failing_since=self.facts.at if reopen else old.failing_since,
                reopened=old.reopened + (1 if reopen else 0),
                counted=_with_run(old.counted, self.facts.run_id),
            )
        due = old is None or old.notified_at is None or (
            self.facts.at - old.notified_at >= self.policy.comment_interval)
        kind = "reopened" if reopen else "recurred" if due else None
        if kind:
            record = replace(record, notified_at=self.facts.at)
        body = self.writer.body(record, self._details(subject, record))
        verb = "reopen" if reopen else "comment on" if kind else "update"
        note = f"seen {record.occurrences} times"
        if self.report.dry_run:
            self._did(verb, issue.title, issue, note)
            return
        edited = self.tracker.edit_issue(issue.number, body, state="open" if reopen else None,
                                         reason="reopened" if reopen else None)
        self._counted_on[issue.number] = subject
        self.open[subject.fingerprint] = _Tracked(edited, record)
        self.closed.pop(subject.fingerprint, None)
        if kind:
            quiet = None if reopen else self.facts.at + self.policy.comment_interval
            first = subject.failures[0] if subject.failures and not subject.summary else None
            self._comment(issue.number, kind,
                          self.writer.comment(kind, record, self.facts, first, quiet_until=quiet,
                                              changes=self.changes))
        self._did(verb, issue.title, edited, note)

    def _counted(self, record: Record) -> bool:
        return record.last_run_id == self.facts.run_id or self.facts.run_id in record.counted

    def _recount(self) -> None:
        """Count again where another run's write, made at the same time, replaced this one's."""
        pending = dict(self._counted_on)
        rounds = self.policy.recount_rounds
        for round_ in range(rounds):
            if not pending:
                return
            # jittered: runs that lost their counts to each other do not count again in step
            self.sleep((self.policy.settle or 0) * (1 + random.random()))
            last = round_ + 1 == rounds
            for number, subject in list(pending.items()):
                if self._isolated(partial(self._count_again, number, subject, last)):
                    del pending[number]

    def _count_again(self, number: int, subject: _Subject, last: bool) -> bool:
        """True once this run's occurrence is in the issue (or the issue says it may be low)."""
        issue = self.tracker.issue(number)
        old = decode(issue.body) if fingerprint_of(issue.body) == subject.fingerprint else None
        if old is None or self._counted(old):
            return True
        record = replace(old, occurrences=old.occurrences + 1, green_streak=0,
                         last_seen=max(old.last_seen, self.facts.at),
                         counted=_with_run(old.counted, self.facts.run_id),
                         count_may_be_low=old.count_may_be_low or last)
        self.tracker.edit_issue(number, self.writer.body(record, details_of(issue.body)))
        return last

    # -- a failure that did not happen this time -----------------------------------------

    def _maybe_green(self, tracked: _Tracked) -> None:
        issue, old = tracked.issue, tracked.record
        if old is None or old.environment != self.result.environment:
            return
        if old.last_run_id == self.facts.run_id:
            return
        evidence = self._evidence(old)
        if evidence == "unknown" or (evidence == "failed" and old.green_streak == 0):
            return
        if evidence == "failed":  # the step failed differently: not green, start again
            record = replace(old, green_streak=0, last_run_id=self.facts.run_id)
        else:
            record = replace(old, green_streak=old.green_streak + 1,
                             last_run_id=self.facts.run_id, last_green=self.facts)
        close = record.green_streak >= self.policy.close_after
        if close:
            record = replace(record, notified_at=self.facts.at)
        body = self.writer.body(record, details_of(issue.body), closed=close)
        verb = "close" if close else "update"
        note = f"{record.green_streak} green run{'s' if record.green_streak != 1 else ''} in a row"
        if self.report.dry_run:
            self._did(verb, issue.title, issue, note)
            return
        edited = self.tracker.edit_issue(issue.number, body, state="closed" if close else None,
                                         reason="completed" if close else None)
        if close:
            self.open.pop(record.fingerprint, None)
            self._comment(issue.number, "recovered",
                          self.writer.comment("recovered", record, self.facts, None))
        else:
            self.open[record.fingerprint] = _Tracked(edited, record)
        self._did(verb, issue.title, edited, note)

    def _evidence(self, record: Record) -> str:
        """passed, failed or unknown: what this run says about the step the record is about."""
        if record.summary:
            return "passed"  # the summary is only left out when nothing went past the cap
        steps = [s for s in self.result.steps if s.phase.value == record.phase
                 and s.machine == record.machine and s.name == record.check]
        if any(s.status in (Status.FAILED, Status.ERROR) for s in steps):
            return "failed"
        if any(s.status is Status.PASSED for s in steps):
            return "passed"
        # never ran: green only if the whole run was (the check was renamed or removed)
        return "passed" if not steps and not self.failures else "unknown"

    # -- pull requests ---------------------------------------------------------------------

    def _pull_request(self, failures: list[Failure]) -> None:
        main = self.context.main_branch
        for failure in failures:
            tracked = self.open.get(failure.fingerprint)
            if tracked is not None:
                self._did(f"already failing on {main}:", tracked.issue.title, tracked.issue)
            else:
                self._did(f"not failing on {main} (no open issue)", self.writer.title(failure))

    # -- GitHub, carefully -------------------------------------------------------------------

    def _list_open(self) -> dict[str, _Tracked]:
        found: dict[str, _Tracked] = {}
        for issue in self.tracker.issues(LABEL, "open"):
            key = fingerprint_of(issue.body)
            # two open issues for one failure (opened by hand, or before claims): the oldest
            if key and (key not in found or issue.number < found[key].issue.number):
                found[key] = _Tracked(issue, decode(issue.body))
        return found

    def _find_closed(self, key: str) -> _Tracked | None:
        if key in self.closed:
            return self.closed[key]
        if self._closed_pages is None:
            self._closed_pages = self._scan_closed()
        for issue in self._closed_pages:
            found = fingerprint_of(issue.body)
            if found:
                self.closed.setdefault(found, _Tracked(issue, decode(issue.body)))
            if found == key:
                return self.closed[key]
        return None

    def _scan_closed(self) -> Iterator[RemoteIssue]:
        for count, issue in enumerate(self.tracker.issues(LABEL, "closed")):
            if count >= self.policy.closed_scan:
                return
            yield issue

    def _look_again(self, key: str) -> _Tracked | None:
        self.open.update(self._list_open())
        return self.open.get(key)

    def _wait_for(self, key: str) -> _Tracked | None:
        deadline = time.monotonic() + self.policy.claim_wait
        while True:
            found = self._look_again(key)
            if found is not None or time.monotonic() >= deadline:
                return found
            self.sleep(self.policy.poll_interval)

    def _claim(self, key: str) -> bool:
        """True if this run may open the issue for `key`: it created the claim label first."""
        token = uuid.uuid4().hex[:12]
        label = LabelSpec(CLAIM_PREFIX + key, "ededed",
                          f"cdd: run {self.facts.run_id[:40]} opens the issue ({token})")

        def ours() -> bool | None:
            description = self.tracker.label_description(label.name)
            return None if description is None else token in description

        return self._post(lambda: self.tracker.create_label(label), ours)

    def _ensure_labels(self, names: list[str]) -> None:
        if self._labels is None:
            self._labels = {n.lower() for n in self.tracker.label_names()}
        for name in names:
            if name.lower() in self._labels:
                continue
            phase = name.removeprefix("phase:")
            spec = _LABELS.get(name) or LabelSpec(name, "fbca04", f"Failed in the {phase} phase")
            self._post(partial(self.tracker.create_label, spec), partial(self._has_label, name))
            self._labels.add(name.lower())

    def _has_label(self, name: str) -> bool | None:
        return True if self.tracker.label_description(name) is not None else None

    def _comment(self, number: int, kind: str, body: str) -> None:
        mark = comment_mark(self.facts.run_id, kind)

        def posted() -> bool | None:
            return any(mark in text for text in self.tracker.comments(number)) or None

        def post() -> bool:
            self.tracker.comment(number, body)
            return True

        # another report of this same run may have said it already
        if not posted():
            self._post(post, posted)

    def _post(self, post: Callable[[], T], look: Callable[[], T | None]) -> T:
        """A POST that may have gone in although its answer was lost: look before repeating."""
        attempt = 1
        while True:
            try:
                return post()
            except GitHubError as exc:
                if not exc.ambiguous:
                    raise
                # the last attempt too may have gone in: it is a failure only if it did not
                found = look()  # None: it did not go in, so posting again is safe
                if found is not None:
                    return found
                if attempt >= self.policy.post_attempts:
                    raise
            attempt += 1
            self.sleep(self.policy.poll_interval)

    def _isolated(self, step: Callable[[], object]) -> bool:
        """One issue's trouble (deleted, locked) does not stop the others; GitHub's does.
        True if the step returned True, or failed for its issue alone (nothing more to do)."""
        try:
            return step() is True
        except GitHubError as exc:
            if not exc.only_this_item:
                raise
            self.report.errors.append(str(exc))
            return True

    # -- helpers -------------------------------------------------------------------------

    def _subject(self, failure: Failure) -> _Subject:
        return _Subject(failure.fingerprint, self.writer.title(failure),
                        [LABEL, FAILURE_LABEL, f"phase:{failure.phase}"], [failure])

    def _new_record(self, subject: _Subject) -> Record:
        first = subject.failures[0]
        return Record(
            fingerprint=subject.fingerprint,
            environment=self.result.environment,
            phase="" if subject.summary else first.phase,
            machine="" if subject.summary else first.machine,
            check="" if subject.summary else first.check,
            first_seen=self.facts.at,
            failing_since=self.facts.at,
            last_seen=self.facts.at,
            occurrences=1,
            last_run_id=self.facts.run_id,
            last_run_url=self.facts.run_url,
            last_commit=self.facts.commit,
            notified_at=self.facts.at,
            last_green=None,
            summary=subject.summary,
            counted=(self.facts.run_id,),
        )

    def _details(self, subject: _Subject, record: Record) -> str:
        green = record.last_green or self.baseline
        return self.writer.details(subject.failures, self.facts, green, summary=subject.summary,
                                   changes=self.changes)

    def _did(self, verb: str, title: str, issue: RemoteIssue | None = None, note: str = "") -> None:
        """Record an action; `verb` is "open", "update", ... or a phrase used as it is."""
        if verb in _DONE:
            verb = f"would {verb}" if self.report.dry_run else _DONE[verb]
        self.report.actions.append(IssueAction(
            verb, title, issue.number if issue else None, issue.html_url if issue else "", note))


def _with_run(counted: tuple[str, ...], run_id: str) -> tuple[str, ...]:
    return (*(r for r in counted if r != run_id), run_id)[-COUNTED_RUNS:]


_DONE = {"open": "opened", "reopen": "reopened", "comment on": "commented on",
         "update": "updated", "close": "closed"}


def _facts(result: RunResult, context: GitHubContext) -> RunFacts:
    at = result.finished_at or result.started_at
    inventory = result.inventory
    boxes = sorted({f"{m.box} {m.box_version}".strip() for m in inventory.machines} - {""}) \
        if inventory else []
    return RunFacts(
        # the run id tells a second report of a run from a new run: it must not be empty
        run_id=result.run_id or f"{result.environment}-{int(at)}",
        run_url=context.run_url,
        at=datetime.fromtimestamp(at, UTC) if at else datetime.now(UTC),
        commit=result.commit or context.sha,
        provider=result.provider,
        # a report read back from JUnit has no inventory: its properties say the same
        box=", ".join(boxes) or result.box,
        vagrant_version=(inventory.vagrant if inventory else "") or result.vagrant_version,
    )
