"""An in-memory IssueTracker for unit tests: keeps issues, comments and labels, and can be
told to fail the next call of an operation, before or after doing what was asked."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from cdd_ci.github.client import GitHubError, IssueState, LabelSpec, RemoteIssue

OPERATIONS = frozenset({
    "issues", "issue", "create_issue", "edit_issue", "comment", "comments", "label_names",
    "create_label", "label_description",
})


@dataclass
class FakeIssue:
    number: int
    title: str
    body: str
    labels: list[str]
    state: IssueState = "open"
    reason: str | None = None
    comments: list[str] = field(default_factory=list)
    updated: int = 0

    def remote(self) -> RemoteIssue:
        return RemoteIssue(
            number=self.number,
            title=self.title,
            body=self.body,
            state=self.state,
            html_url=f"https://github.example/acme/app/issues/{self.number}",
            labels=tuple(self.labels),
        )


@dataclass
class _Fault:
    operation: str
    error: GitHubError
    after: bool


class FakeTracker:
    """Behaves like the real tracker against a GitHub that answers instantly."""

    def __init__(self) -> None:
        self.issues_by_number: dict[int, FakeIssue] = {}
        self.labels: dict[str, LabelSpec] = {}
        self.calls: list[str] = []
        self._faults: list[_Fault] = []
        self._clock = itertools.count(1)

    def fail(self, operation: str, error: GitHubError | None = None, *, after: bool = False,
             times: int = 1) -> None:
        """Make the next `times` calls of `operation` raise; `after`: do the work first (a
        POST that GitHub applied although the answer was a 502)."""
        if operation not in OPERATIONS:
            raise ValueError(f"no such operation: {operation}")
        error = error or GitHubError(f"{operation}: GitHub answered 502", 502, ambiguous=True)
        self._faults.extend(_Fault(operation, error, after) for _ in range(times))

    # -- IssueTracker ------------------------------------------------------------------------

    def issues(self, label: str, state: IssueState) -> Iterator[RemoteIssue]:
        self._enter("issues")
        found = [i for i in self.issues_by_number.values()
                 if label in i.labels and i.state == state]
        found.sort(key=lambda i: i.updated, reverse=True)
        return iter([i.remote() for i in found])

    def issue(self, number: int) -> RemoteIssue:
        self._enter("issue")
        if number not in self.issues_by_number:
            raise GitHubError(f"get issue #{number}: GitHub answered 404: Not Found", 404)
        return self.issues_by_number[number].remote()

    def create_issue(self, title: str, body: str, labels: list[str]) -> RemoteIssue:
        fault = self._enter("create_issue")
        number = len(self.issues_by_number) + 1
        issue = FakeIssue(number, title, body, list(labels), updated=next(self._clock))
        self.issues_by_number[number] = issue
        self._exit(fault)
        return issue.remote()

    def edit_issue(
        self, number: int, body: str, state: IssueState | None = None, reason: str | None = None
    ) -> RemoteIssue:
        fault = self._enter("edit_issue")
        issue = self._get(number)
        issue.body = body
        if state is not None and state != issue.state:
            issue.state = state
            issue.reason = reason
        issue.updated = next(self._clock)
        self._exit(fault)
        return issue.remote()

    def comment(self, number: int, body: str) -> None:
        fault = self._enter("comment")
        issue = self._get(number)
        issue.comments.append(body)
        issue.updated = next(self._clock)
        self._exit(fault)

    def comments(self, number: int) -> Iterator[str]:
        self._enter("comments")
        return iter(list(self._get(number).comments))

    def label_names(self) -> set[str]:
        self._enter("label_names")
        return {label.name for label in self.labels.values()}

    def create_label(self, label: LabelSpec) -> bool:
        fault = self._enter("create_label")
        if label.name.lower() in self.labels:
            return False
        self.labels[label.name.lower()] = label
        self._exit(fault)
        return True

    def label_description(self, name: str) -> str | None:
        self._enter("label_description")
        label = self.labels.get(name.lower())
        return None if label is None else label.description

    # -- helpers -----------------------------------------------------------------------------

    def _enter(self, operation: str) -> _Fault | None:
        self.calls.append(operation)
        for i, fault in enumerate(self._faults):
            if fault.operation == operation:
                del self._faults[i]
                if not fault.after:
                    raise fault.error
                return fault
        return None

    @staticmethod
    def _exit(fault: _Fault | None) -> None:
        if fault is not None:
            raise fault.error

    def _get(self, number: int) -> FakeIssue:
        if number not in self.issues_by_number:
            raise GitHubError(f"issue #{number}: GitHub answered 404: Not Found", 404)
        return self.issues_by_number[number]
