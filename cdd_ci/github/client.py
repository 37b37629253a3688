"""GitHub's issues, behind the few calls the reporting needs; the only module that imports PyGithub.

`IssueTracker` is the interface; `PyGithubTracker` talks to GitHub (or GitHub Enterprise);
`tests.fakes.tracker.FakeTracker` keeps issues in memory for unit tests. Every failure leaves
this module as `GitHubError` with one line and no token in it.

What the real client does about retries, deliberately:
- GET and PATCH are retried on 5xx with backoff. Our PATCHes set a whole body or state, so
  repeating one is harmless; urllib3 would not retry PATCH by default.
- POST is *not* repeated after a 5xx or a broken connection: GitHub may have created the issue
  before failing, and a blind retry opens a duplicate. The error says `ambiguous`, and the
  caller looks again before it posts again.
- Rate limits (403 primary/secondary, 429) are waited out for every method, since GitHub did
  nothing with a rate-limited request: for as long as `Retry-After` says, else until
  `x-ratelimit-reset` when no requests remain, else a minute (GitHub's advice).
- Every wait (rate limits and backoff alike) is paid from one budget per tracker,
  `max_rate_limit_wait`: a wait that would overrun it is not started; the call fails at once
  with a line saying how long GitHub asked for, instead of holding the CI job for an hour.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Literal, Protocol, TypeVar

import requests
from github import Auth, Github, GithubException, GithubRetry
from github.GithubException import RateLimitExceededExceedsMaxWait
from github.GithubObject import GithubObject
from github.Repository import Repository
from urllib3.connectionpool import ConnectionPool
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from cdd_ci.github.context import GitHubContext
from cdd_ci.text import Scrubber, one_line

IssueState = Literal["open", "closed"]
T = TypeVar("T")
USER_AGENT = "cdd-ci"


@dataclass(frozen=True)
class RemoteIssue:
    """An issue as GitHub has it (never a pull request)."""

    number: int
    title: str
    body: str
    state: IssueState
    html_url: str
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelSpec:
    name: str
    color: str
    description: str


class GitHubError(Exception):
    """A GitHub call failed for good (after the retries that are safe)."""

    def __init__(self, message: str, status: int | None = None, *, ambiguous: bool = False):
        super().__init__(message)
        self.status = status
        self.ambiguous = ambiguous
        """The request may have taken effect although it failed: look before repeating it."""

    @property
    def only_this_item(self) -> bool:
        """The issue is gone, moved or locked: the other issues can still be reported."""
        return self.status in (404, 410, 422)


class IssueTracker(Protocol):
    """The calls the reporting makes. Listing never returns pull requests."""

    def issues(self, label: str, state: IssueState) -> Iterator[RemoteIssue]:
        """Issues carrying `label`, most recently updated first, fetched page by page."""
        ...

    def issue(self, number: int) -> RemoteIssue:
        """The issue as GitHub has it now (not as a listing saw it a while ago)."""
        ...

    def create_issue(self, title: str, body: str, labels: list[str]) -> RemoteIssue: ...

    def edit_issue(
        self, number: int, body: str, state: IssueState | None = None, reason: str | None = None
    ) -> RemoteIssue: ...

    def comment(self, number: int, body: str) -> None: ...

    def comments(self, number: int) -> Iterator[str]:
        """Bodies of the issue's comments, oldest first."""
        ...

    def label_names(self) -> set[str]: ...

    def create_label(self, label: LabelSpec) -> bool:
        """Create a label; False if one of that name exists already (GitHub's names are unique)."""
        ...

    def label_description(self, name: str) -> str | None:
        """The label's description, or None when there is no such label."""
        ...


@dataclass(frozen=True)
class ClientOptions:
    """How hard to try. The defaults suit a CI job; tests pass zeros so they do not wait."""

    timeout: int = 20
    retries: int = 5
    backoff: float = 1.0
    """urllib3's backoff factor: retries wait 0, 2, 4, 8, 16 s with the default."""
    seconds_between_requests: float = 0.0
    """Reads are few (one listing per run), so they are not spaced out."""
    seconds_between_writes: float = 1.0
    """GitHub asks for a second between writes to stay clear of its secondary rate limit."""
    secondary_rate_wait: float = 60.0
    """Wait after a secondary rate limit that gives no Retry-After (GitHub's advice: a minute)."""
    max_rate_limit_wait: float = 300.0
    """All the waiting for GitHub one tracker may do (rate limits, backoff): past it, give up."""
    per_page: int = 100


class WaitTooLong(GithubException):
    """GitHub asked for a wait that the budget cannot pay: given up without waiting."""

    def __init__(self, status: int, wait: float, why: str, left: float, budget: float) -> None:
        super().__init__(status, {"message": why})
        self.wait = wait
        self.why = why
        self.left = left
        self.budget = budget


class _Budget:
    """Seconds of waiting left, shared by every retry object of one tracker (and its threads)."""

    def __init__(self, seconds: float) -> None:
        self.total = seconds
        self.spent = 0.0
        self._lock = threading.Lock()

    def take(self, seconds: float) -> float | None:
        """Reserve `seconds`; None, and nothing reserved, if they are more than is left."""
        with self._lock:
            left = self.total - self.spent
            if seconds > left:
                return left
            self.spent += seconds
            return None


class _Retry(GithubRetry):
    """GithubRetry, except that a POST is never repeated once the server may have acted on it,
    and that no wait is longer than what is left of the budget (Retry-After included)."""

    def __init__(self, *, budget: _Budget, **kwargs: Any) -> None:
        self._budget = budget
        # 429 is GitHub's secondary rate limit too, with or without Retry-After
        kwargs["status_forcelist"] = [*range(500, 600), 429]
        super().__init__(**kwargs)

    def new(self, **kw: Any) -> _Retry:
        kw["budget"] = self._budget
        retry: _Retry = super().new(**kw)
        return retry

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if method.upper() == "POST" and status_code >= 500:
            return False
        return super().is_retry(method, status_code, has_retry_after)

    def increment(  # type: ignore[override]
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: ConnectionPool | None = None,
        _stacktrace: TracebackType | None = None,
    ) -> Retry:
        # a read error means the request reached the server: the POST may have been applied
        if error is not None and (method or "").upper() == "POST" and self._is_read_error(error):
            raise error.with_traceback(_stacktrace)
        return super().increment(method, url, response, error, _pool, _stacktrace)  # type: ignore[arg-type]

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        """The one place a retry waits: what GitHub asked for, paid from the budget."""
        wait, why = self._wanted(response)
        if wait <= 0:
            return
        left = self._budget.take(wait)
        if left is not None:
            status = response.status if response is not None else 0
            raise WaitTooLong(status, wait, why, max(0.0, left), self._budget.total)
        time.sleep(wait)

    def _wanted(self, response: BaseHTTPResponse | None) -> tuple[float, str]:
        backoff = self.get_backoff_time()  # GithubRetry sets it for the limits it knows
        if response is None:
            return backoff, "backoff after a failed request"
        headers = response.headers
        after = _retry_after(headers.get("Retry-After"))  # a 503 may say it too
        if after is not None:
            return after, f"Retry-After: {headers.get('Retry-After')}"
        if response.status not in (403, 429):
            return backoff, "backoff after a failed request"
        reset = headers.get("x-ratelimit-reset") or ""
        if headers.get("x-ratelimit-remaining") == "0" and reset.isdigit():
            # plus a second: it is not said when in that second the limit resets
            return max(0.0, int(reset) - time.time()) + 1, "until x-ratelimit-reset"
        if response.status == 429:
            return max(backoff, self.secondary_rate_wait), "secondary rate limit"
        return backoff, "rate limit"


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date); None if absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        return max(0.0, parsedate_to_datetime(text).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class PyGithubTracker:
    """IssueTracker over PyGithub, for github.com or a GitHub Enterprise API URL."""

    def __init__(self, context: GitHubContext, options: ClientOptions = ClientOptions()) -> None:
        self._scrub = Scrubber.from_env(os.environ, secrets=[context.token])
        retry = _Retry(
            budget=_Budget(options.max_rate_limit_wait),
            total=options.retries,
            backoff_factor=options.backoff,
            secondary_rate_wait=options.secondary_rate_wait,
            max_rate_limit_wait=options.max_rate_limit_wait,
            # hand back the last response rather than urllib3's RetryError: its status is clearer
            raise_on_status=False,
            allowed_methods=frozenset({"GET", "HEAD", "PATCH", "POST"}),
        )
        self._github = Github(
            auth=Auth.Token(context.token),
            base_url=context.api_url,
            timeout=options.timeout,
            user_agent=USER_AGENT,
            per_page=options.per_page,
            retry=retry,
            seconds_between_requests=options.seconds_between_requests or None,
            seconds_between_writes=options.seconds_between_writes or None,
            # objects are built from what a call returned, never completed by a second GET
            lazy=True,
        )
        self._repo: Repository = self._github.get_repo(context.repository)

    def issues(self, label: str, state: IssueState) -> Iterator[RemoteIssue]:
        listing = self._call(
            "list issues",
            lambda: self._repo.get_issues(
                state=state, labels=[label], sort="updated", direction="desc"
            ),
        )
        pages = iter(listing)
        while True:
            item = self._call("list issues", lambda: next(pages, None))
            if item is None:
                return
            raw = _raw(item)
            if "pull_request" not in raw:  # the issues API lists pull requests too
                yield _issue(raw)

    def issue(self, number: int) -> RemoteIssue:
        found = self._call(f"get issue #{number}", lambda: self._repo.get_issue(number).complete())
        return _issue(_raw(found))

    def create_issue(self, title: str, body: str, labels: list[str]) -> RemoteIssue:
        created = self._call(
            "create issue", lambda: self._repo.create_issue(title=title, body=body, labels=labels)
        )
        return _issue(_raw(created))

    def edit_issue(
        self, number: int, body: str, state: IssueState | None = None, reason: str | None = None
    ) -> RemoteIssue:
        issue = self._repo.get_issue(number)  # lazy: no request
        changes: dict[str, Any] = {"body": body}
        if state is not None:
            changes["state"] = state
        if reason is not None:
            changes["state_reason"] = reason
        self._call(f"edit issue #{number}", lambda: issue.edit(**changes))
        # edit() keeps the answer in the object's attributes, not in its raw data
        return RemoteIssue(
            number=issue.number,
            title=issue.title,
            body=issue.body or "",
            state="closed" if issue.state == "closed" else "open",
            html_url=issue.html_url,
            labels=tuple(label.name for label in issue.labels),
        )

    def comment(self, number: int, body: str) -> None:
        issue = self._repo.get_issue(number)
        self._call(f"comment on issue #{number}", lambda: issue.create_comment(body))

    def comments(self, number: int) -> Iterator[str]:
        issue = self._repo.get_issue(number)
        pages = iter(self._call("list comments", issue.get_comments))
        while True:
            item = self._call("list comments", lambda: next(pages, None))
            if item is None:
                return
            yield str(_raw(item).get("body") or "")

    def label_names(self) -> set[str]:
        labels = self._call("list labels", lambda: [_raw(x) for x in self._repo.get_labels()])
        return {str(label["name"]) for label in labels}

    def create_label(self, label: LabelSpec) -> bool:
        try:
            self._repo.create_label(label.name, label.color, label.description)
        except GithubException as exc:
            if exc.status == 422 and "already_exists" in str(exc.data):
                return False
            raise self._error("create label", exc) from None
        except requests.RequestException as exc:
            raise self._error("create label", exc) from None
        return True

    def label_description(self, name: str) -> str | None:
        try:
            label = self._repo.get_label(name)
            return str(_raw(label.complete()).get("description") or "")
        except GithubException as exc:
            if exc.status == 404:
                return None
            raise self._error("get label", exc) from None
        except requests.RequestException as exc:
            raise self._error("get label", exc) from None

    def _call(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except (GithubException, requests.RequestException) as exc:
            raise self._error(what, exc) from None

    def _error(self, what: str, exc: Exception) -> GitHubError:
        if isinstance(exc, WaitTooLong):
            budget = f"the {_seconds(exc.budget)} s cdd waits for GitHub (max_rate_limit_wait)"
            room = (f"more than {budget}" if exc.left >= exc.budget
                    else f"only {_seconds(exc.left)} s are left of {budget}")
            kind = " (rate limit)" if exc.status in (403, 429) else ""
            text = (f"{what}: GitHub answered {exc.status}{kind} and asks to wait"
                    f" {_seconds(exc.wait)} s ({exc.why}), {room}: gave up")
            return GitHubError(self._scrub(one_line(text)), exc.status)
        if isinstance(exc, RateLimitExceededExceedsMaxWait):
            text = (f"{what}: GitHub answered {exc.status} (rate limit) and asks to wait"
                    f" {_seconds(exc.wait or 0)} s, more than the limit cdd waits for GitHub"
                    f" (max_rate_limit_wait): gave up")
            return GitHubError(self._scrub(one_line(text)), exc.status)
        if isinstance(exc, GithubException):
            message = exc.message or (exc.data.get("message") if isinstance(exc.data, dict) else "")
            text = f"{what}: GitHub answered {exc.status}: {message or 'no message'}"
            hint = _HINTS.get(exc.status, "")
            return GitHubError(self._scrub(one_line(text + hint)), exc.status,
                               ambiguous=exc.status >= 500)
        # no answer at all: connection refused, reset or timed out
        text = f"{what}: {type(exc).__name__}: {exc}"
        return GitHubError(self._scrub(one_line(text)), None, ambiguous=True)


_HINTS = {
    401: " (is GITHUB_TOKEN valid?)",
    403: " (does the token have `issues: write`? a rate limit that would take too long to"
    " reset also ends here)",
    404: " (is GITHUB_REPOSITORY right, and can the token see it?)",
}


def _seconds(value: float) -> str:
    return f"{round(value, 1):g}"


def _raw(obj: GithubObject) -> dict[str, Any]:
    # What the API returned, as it returned it. The `raw_data` of a list item would first
    # GET the object again (PyGithub "completes" list items), one extra request per issue.
    data: dict[str, Any] = GithubObject.raw_data.__get__(obj)
    return data


def _issue(raw: dict[str, Any]) -> RemoteIssue:
    return RemoteIssue(
        number=int(raw["number"]),
        title=str(raw.get("title") or ""),
        body=str(raw.get("body") or ""),
        state="closed" if raw.get("state") == "closed" else "open",
        html_url=str(raw.get("html_url") or ""),
        labels=tuple(
            str(label["name"] if isinstance(label, dict) else label)
            for label in raw.get("labels") or ()
        ),
    )
