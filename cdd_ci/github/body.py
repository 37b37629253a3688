"""What a failure issue and its comments say, rendered from the templates, within GitHub's limit.

A body is a header (status, counts: re-rendered on every run) and details (what failed, the log
tail, what changed, how to reproduce: rendered when the failure happens, and kept verbatim by
green runs, which have no log of it). Untrusted text goes through `safe_text`; the token is
scrubbed from the inputs (before any cut, so no half token survives) and from the output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jinja2

from cdd_ci import templating
from cdd_ci import text as safe_text
from cdd_ci.github.context import GitHubContext
from cdd_ci.github.record import Record, RunFacts, encode
from cdd_ci.history.changes import Changes
from cdd_ci.models import ENVIRONMENT, Status
from cdd_ci.words import plural

DETAILS_MARK = "<!-- cdd-details -->"
BODY_BUDGET = safe_text.BODY_LIMIT - 2_000
"""Details are cut to fit this, leaving room for a header that grows on later runs."""
LOG_TAIL = 40_000
"""At most this much of a log tail, even when more would fit: the end is what matters."""
SUMMARY_LOG_TAIL = 3_000
SUMMARY_MAX = 25
"""Failures listed in the summary issue; the JUnit report has all of them."""
SUMMARY_MESSAGE_LIMIT = 300
TITLE_LIMIT = 256
"""GitHub refuses a longer title (422); counted as `safe_text.github_length` counts."""
MESSAGE_LIMIT = 1_000
PACKAGE_LINES = 40
"""Packages named in one issue (changed, added, removed, over all machines); the rest are
counted. The run history has all of them."""
SUBJECT_LIMIT = 100
COMMENT_PACKAGES = 5
"""Package changes named in a comment; the issue's body lists more."""


class Markdown(str):
    """Text that is already safe to place in a GitHub Markdown document as it is."""


@dataclass(frozen=True)
class Failure:
    """One failing step of a run, as an issue describes it."""

    fingerprint: str
    environment: str
    phase: str
    machine: str
    check: str
    status: Status
    message: str
    output: str

    @property
    def title(self) -> str:
        what = self.phase if self.check == self.phase else f'{self.phase} "{self.check}"'
        where = "the environment" if self.machine == ENVIRONMENT else self.machine
        return f"{self.environment}: {what} failed on {where}"

    @property
    def blame(self) -> str:
        if self.status is Status.FAILED:
            return "The product failed a check"
        return "The infrastructure failed"


_VERSIONS = (("Provider", "provider"), ("Box", "box"), ("Vagrant", "vagrant_version"))
"""What a run depends on besides the repository's commits, as the run's properties name it."""


class IssueWriter:
    """Renders titles, bodies and comments for one repository."""

    def __init__(self, context: GitHubContext, *, close_after: int, cap: int,
                 interval: timedelta) -> None:
        self._context = context
        self._scrub = safe_text.Scrubber.from_env(os.environ, secrets=[context.token])
        self._close_after = close_after
        self._cap = cap
        self._interval = interval
        self._env = _environment()

    def title(self, failure: Failure) -> str:
        # titles are not mentions, but `#12` in one still links: neutralised like the body.
        # Neutralising lengthens the text, so the cut comes after it, and the scrub before it
        # (half a token is no longer a token the scrubber knows).
        title = safe_text.one_line(self._scrub(failure.title), 2 * TITLE_LIMIT)
        return safe_text.fit(safe_text.neutralise(title), TITLE_LIMIT)

    def summary_title(self, environment: str) -> str:
        title = f"{environment}: more failures in one run than cdd opens issues for"
        return safe_text.fit(safe_text.neutralise(self._scrub(title)), TITLE_LIMIT)

    def body(self, record: Record, details: str, *, closed: bool = False) -> str:
        state = "closed" if closed else "recovering" if record.green_streak else "failing"
        text = self._render(
            "issue_body.md.j2",
            markers=Markdown(encode(record)),
            state=state,
            environment=record.environment,
            machine=record.machine,
            phase=record.phase,
            check=record.check,
            summary=record.summary,
            cap=self._cap,
            first_seen=_when(record.first_seen),
            failing_since=_when(record.failing_since),
            last_seen=_when(record.last_seen),
            last_run=self._run_link(record.last_run_id, record.last_run_url),
            occurrences=record.occurrences,
            count_may_be_low=record.count_may_be_low,
            reopened=record.reopened,
            green_streak=record.green_streak,
            close_after=self._close_after,
            details=Markdown(details),
        )
        return self._final(text)

    def details(self, failures: list[Failure], run: RunFacts, green: RunFacts | None,
                *, summary: bool = False, changes: Changes | None = None) -> str:
        """The details section, with log tails cut until the whole body fits GitHub's limit."""
        shown, hidden = failures[:SUMMARY_MAX], len(failures) - SUMMARY_MAX
        logs = [self._scrub(f.output) for f in shown]
        limit = SUMMARY_LOG_TAIL if summary else LOG_TAIL
        while True:
            text = self._details(shown, max(hidden, 0), logs, limit, run, green, summary,
                                 changes)
            over = safe_text.github_length(text) - BODY_BUDGET
            if over <= 0:
                return text
            if limit == 0:  # cannot happen with the caps above; GitHub would refuse the body
                raise ValueError(f"issue details are {plural(over, 'character')} over the limit")
            # each log gives up its share of the excess, plus slack for a shorter fence
            limit = max(0, limit - over // max(1, len(shown)) - 100)

    def comment(self, kind: str, record: Record, run: RunFacts, failure: Failure | None,
                *, quiet_until: datetime | None = None, changes: Changes | None = None) -> str:
        view = self._changes(changes, run) if kind != "recovered" else None
        packages = [dict(line, machine=m["name"]) for m in (view or {}).get("machines", ())
                    for line in m["lines"]]
        total = sum(len(m.packages) for m in changes.machines) if changes else 0
        text = self._render(
            "issue_comment.md.j2",
            mark=Markdown(comment_mark(run.run_id, kind)),
            kind=kind,
            run=self._run_link(run.run_id, run.run_url),
            at=_when(run.at),
            commit=self._commit_link(run.commit),
            occurrences=record.occurrences,
            failing_since=_when(record.failing_since),
            green_streak=record.green_streak,
            message=self._scrub(failure.message) if failure else "",
            quiet_until=_when(quiet_until) if quiet_until else "",
            interval=_span(self._interval),
            changes=view,
            packages=packages[:COMMENT_PACKAGES],
            more_packages=total - min(len(packages), COMMENT_PACKAGES),
        )
        return self._final(text)

    # -- helpers -----------------------------------------------------------------------------

    def _details(self, failures: list[Failure], hidden: int, logs: list[str], limit: int,
                 run: RunFacts, green: RunFacts | None, summary: bool,
                 changes: Changes | None) -> str:
        views = []
        message_limit = SUMMARY_MESSAGE_LIMIT if summary else MESSAGE_LIMIT
        for failure, log in zip(failures, logs, strict=True):
            kept = safe_text.tail(log, limit)
            views.append({
                "title": failure.title,
                "blame": failure.blame,
                "message": safe_text.one_line(self._scrub(failure.message), message_limit),
                "log": kept or "(no output)",
                "log_summary": _log_summary(log, kept),
            })
        return self._render(
            "issue_details.md.j2",
            mark=Markdown(DETAILS_MARK),
            summary=summary,
            cap=self._cap,
            failures=views,
            hidden=hidden,
            run=self._run_link(run.run_id, run.run_url),
            commit=self._commit_link(run.commit),
            commit_sha=run.commit,
            environment=failures[0].environment,
            green=self._green(green, run),
            changes=self._changes(changes, run),
            versions=[
                {"name": name, "after": getattr(run, key) or "unknown",
                 "before": (getattr(green, key) or "unknown") if green else "",
                 "changed": bool(green and getattr(green, key) != getattr(run, key))}
                for name, key in _VERSIONS
                if getattr(run, key) or (green and getattr(green, key))
            ],
        )

    def _green(self, green: RunFacts | None, run: RunFacts) -> dict[str, Any] | None:
        if green is None:
            return None
        compare = None
        if green.commit and run.commit and green.commit != run.commit:
            url = self._context.compare_url(green.commit, run.commit)
            compare = _link(f"{_short(green.commit)}...{_short(run.commit)}", url)
        return {
            "run": self._run_link(green.run_id, green.run_url),
            "at": _when(green.at),
            "commit": self._commit_link(green.commit),
            "compare": compare,
            "same_commit": bool(green.commit) and green.commit == run.commit,
        }

    def _changes(self, changes: Changes | None, run: RunFacts) -> dict[str, Any] | None:
        """The run history's comparison with the last green run of the environment."""
        if changes is None:
            return None
        view: dict[str, Any] = {"problem": changes.problem, "green": None}
        green = changes.green
        if green is None:
            return view
        compare = None
        if green.commit and run.commit and green.commit != run.commit:
            compare = _link(f"{_short(green.commit)}...{_short(run.commit)}",
                            self._context.compare_url(green.commit, run.commit))
        commits = changes.commits
        view.update(
            green={"run": self._run_link(green.run_id, ""),
                   "at": _when(datetime.fromtimestamp(green.started_at, UTC)),
                   "commit": self._commit_link(green.commit)},
            compare=compare,
            commits=None if commits is None else {
                "problem": commits.problem,
                "count": len(commits.listed) + commits.more,
                "more": commits.more,
                "listed": [{"sha": self._commit_link(c.sha), "author": c.author,
                            "subject": safe_text.one_line(c.subject, SUBJECT_LIMIT)}
                           for c in commits.listed],
            },
            versions=[{"name": f"Box of {m.machine}", "before": m.box.before or "none",
                       "after": m.box.after or "none", "changed": m.box.changed}
                      for m in changes.machines]
            + [{"name": t.name, "before": t.before or "none", "after": t.after or "none",
                "changed": t.changed} for t in changes.tools],
            machines=_package_views(changes),
        )
        return view

    def _run_link(self, run_id: str, url: str) -> Markdown:
        return _link(f"run {run_id}" if run_id else "a local run", url)

    def _commit_link(self, sha: str) -> Markdown | str:
        return _link(_short(sha), self._context.commit_url(sha)) if sha else ""

    def _render(self, template: str, **values: Any) -> str:
        return self._env.get_template(template).render(**values)

    def _final(self, text: str) -> str:
        return self._scrub(text)


def comment_mark(run_id: str, kind: str) -> str:
    """Hidden in each comment, so that a run can tell whether its comment already went in."""
    return f"<!-- cdd-comment: {safe_text.one_line(run_id, 100)} {kind} -->"


def details_of(body: str) -> str:
    """The details section of an existing body (kept as it is by a green run)."""
    at = body.find(DETAILS_MARK)
    return body[at:] if at >= 0 else DETAILS_MARK + "\n"


def _environment() -> jinja2.Environment:
    env = templating.environment()
    env.filters["code"] = lambda text: Markdown(safe_text.code_span(str(text)))
    env.filters["fence"] = lambda text, info="": Markdown(safe_text.fence(str(text), info))
    # Every printed value that is not Markdown built on purpose is neutralised, so that no
    # template can let a mention or reference from a log through by forgetting a filter.
    # Set before any template is loaded: finalize is compiled into the templates.
    env.finalize = _finalize
    return env


def _finalize(value: Any) -> Any:
    if isinstance(value, Markdown):
        return value
    return safe_text.neutralise(str(value))


def _package_views(changes: Changes) -> list[dict[str, Any]]:
    """Per machine: counts, and the changes themselves up to PACKAGE_LINES in all."""
    left = PACKAGE_LINES
    views = []
    for machine in changes.machines:
        packages = machine.packages
        shown, left = packages[:left], max(0, left - len(packages))
        changed = sum(1 for p in packages if not p.added and not p.removed)
        added = sum(1 for p in packages if p.added)
        removed = len(packages) - changed - added
        summary = (f"not compared: {machine.problem}." if machine.problem else
                   f"{changed} changed, {added} added, {removed} removed "
                   f"({machine.installed} installed now)." if packages else
                   f"the same {plural(machine.installed, 'package')} and versions.")
        views.append({
            "name": machine.machine,
            "summary": summary,
            "lines": [{"name": p.name, "before": p.before, "after": p.after,
                       "kind": "added" if p.added else "removed" if p.removed else "changed"}
                      for p in shown],
            "more": len(packages) - len(shown),
        })
    return views


def _link(text: str, url: str) -> Markdown:
    label = safe_text.neutralise(templating.md(text))
    return Markdown(f"[{label}]({url})" if url else label)


def _short(sha: str) -> str:
    return sha[:7] if len(sha) >= 40 else sha


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _span(interval: timedelta) -> str:
    hours = interval.total_seconds() / 3600
    return f"{hours:g} hours" if hours != 1 else "hour"


def _log_summary(log: str, kept: str) -> str:
    lines = kept.count("\n") + (1 if kept and not kept.endswith("\n") else 0)
    if len(kept) == len(log):
        return f"Output: {lines} line{'' if lines == 1 else 's'}"
    return (f"Output: the last {plural(lines, 'line')} ({len(log) - len(kept):,} earlier "
            "characters cut)")
