"""A local HTTP server that speaks the part of GitHub's REST API the issue reporting uses.

Stateful (issues, pull requests in the issue list, comments, labels), paginated with `Link`
headers like GitHub, and able to answer with injected faults: 5xx (before or after carrying the
request out), primary rate limits (403 with `x-ratelimit-remaining: 0`), 429 with
`Retry-After`, and secondary rate limits (403 with GitHub's message). Every request it
receives and every response it sends is checked against GitHub's OpenAPI description of the
operation; what does not match is collected in `violations`, which the tests assert empty.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from tests.fakes.openapi import OpenApi, Operation

PREFIX = "/api/v3"
"""Served under a path prefix, like GitHub Enterprise: the client must keep it in every URL."""
DOCS = "https://docs.github.com/rest"
BODY_LIMIT = 65_536
SECONDARY_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
    " If you reach out to GitHub Support for help, please include the request ID 0000:1111."
)


@dataclass
class Fault:
    """An answer to give instead of the real one, `times` times, to requests that match."""

    method: str
    path: str
    """Regular expression matched against the whole path below the API prefix."""
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    after: bool = False
    """Carry the request out first, then answer with the fault (GitHub acted, the answer lost)."""

    @classmethod
    def server_error(cls, method: str, path: str, status: int = 502, *, times: int = 1,
                     after: bool = False) -> Fault:
        return cls(method, path, status, {"message": "Server Error"}, times=times, after=after)

    @classmethod
    def dropped(cls, method: str, path: str, *, after: bool = True) -> Fault:
        """No answer at all: the connection closes (after the work, by default)."""
        return cls(method, path, 0, {}, after=after)

    @classmethod
    def primary_rate_limit(cls, method: str, path: str, *, reset_in: int, times: int = 1) -> Fault:
        return cls(method, path, 403, {
            "message": "API rate limit exceeded for installation ID 4242.",
            "documentation_url": f"{DOCS}/overview/rate-limits-for-the-rest-api",
        }, {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0", "x-ratelimit-used": "5000",
            "x-ratelimit-reset": str(int(time.time()) + reset_in), "x-ratelimit-resource": "core"},
            times=times)

    @classmethod
    def too_many_requests(cls, method: str, path: str, *, retry_after: int,
                          times: int = 1) -> Fault:
        return cls(method, path, 429, {"message": SECONDARY_MESSAGE,
                                       "documentation_url": f"{DOCS}/overview/rate-limits"},
                   {"Retry-After": str(retry_after)}, times=times)

    @classmethod
    def secondary_rate_limit(cls, method: str, path: str, *, retry_after: int | None = None,
                             times: int = 1) -> Fault:
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        return cls(method, path, 403, {
            "message": SECONDARY_MESSAGE,
            "documentation_url": f"{DOCS}/overview/rate-limits-for-the-rest-api"
                                 "#about-secondary-rate-limits",
        }, headers, times=times)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    operation: str
    query: dict[str, list[str]]
    body: Any
    status: int
    raw: bytes


class GitHubServer:
    """One repository's issues, labels and comments, served on 127.0.0.1 at a random port."""

    def __init__(self, api: OpenApi, *, token: str, repository: str = "acme/cloud") -> None:
        self.api = api
        self.token = token
        self.repository = repository
        self.violations: list[str] = []
        self.requests: list[Request] = []
        self.faults: list[Fault] = []
        self.issues: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, dict[str, Any]] = {}
        self.labels: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._sequence = 0
        self._httpd: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    @contextmanager
    def serving(cls, api: OpenApi, *, token: str,
                repository: str = "acme/cloud") -> Iterator[GitHubServer]:
        """A running server that, once done, fails the test if any request or response broke
        GitHub's published contract."""
        server = cls(api, token=token, repository=repository)
        with server.running():
            yield server
        assert server.violations == [], "\n".join(server.violations)

    @contextmanager
    def running(self) -> Iterator[GitHubServer]:
        handler = type("Handler", (_Handler,), {"github": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        # a short poll interval: shutdown() waits for the loop to notice, 0.5 s by default
        thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._httpd.shutdown()
            self._httpd.server_close()
            thread.join(5)

    @property
    def root(self) -> str:
        assert self._httpd is not None, "server not running"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def base_url(self) -> str:
        return self.root + PREFIX

    # -- what tests use ----------------------------------------------------------------------

    def fail(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def add_pull_request(self, title: str, body: str, labels: list[str]) -> int:
        """A pull request, which GitHub lists among the issues."""
        with self._lock:
            number = self._new_issue(title, body, labels)
            self.issues[number]["pull_request"] = True
            return number

    def add_label(self, name: str, color: str = "ededed") -> None:
        with self._lock:
            self._new_label(name, color, None)

    def operations(self) -> list[str]:
        with self._lock:
            return [r.operation for r in self.requests]

    def comment_bodies(self, number: int) -> list[str]:
        with self._lock:
            return [c["body"] for c in sorted(self.comments.values(), key=lambda c: c["id"])
                    if c["issue"] == number]

    def real_issues(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(i) for n, i in sorted(self.issues.items()) if not i.get("pull_request")]

    # -- state -------------------------------------------------------------------------------

    def _tick(self) -> tuple[int, str]:
        self._sequence += 1
        return self._sequence, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _new_issue(self, title: str, body: str | None, labels: list[str]) -> int:
        number = len(self.issues) + 1
        seq, now = self._tick()
        for name in labels:
            if name.lower() not in self.labels:  # GitHub creates labels named on a new issue
                self._new_label(name, "ededed", None)
        self.issues[number] = {
            "number": number, "title": title, "body": body, "state": "open",
            "state_reason": None, "labels": [self.labels[n.lower()]["name"] for n in labels],
            "created_at": now, "updated_at": now, "closed_at": None, "seq": seq,
        }
        return number

    def _new_label(self, name: str, color: str, description: str | None) -> dict[str, Any]:
        label = {"id": 5000 + len(self.labels), "name": name, "color": color,
                 "description": description}
        self.labels[name.lower()] = label
        return label

    # -- JSON as GitHub writes it ------------------------------------------------------------

    def _repo_url(self) -> str:
        return f"{self.base_url}/repos/{self.repository}"

    def _user(self) -> dict[str, Any]:
        api = f"{self.base_url}/users/github-actions%5Bbot%5D"
        return {
            "login": "github-actions[bot]", "id": 41898282, "node_id": "MDM6Qm90NDE4OTgyODI=",
            "avatar_url": "https://avatars.githubusercontent.com/in/15368?v=4", "gravatar_id": "",
            "url": api, "html_url": f"{self.root}/apps/github-actions",
            "followers_url": f"{api}/followers",
            "following_url": f"{api}/following{{/other_user}}",
            "gists_url": f"{api}/gists{{/gist_id}}",
            "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{api}/subscriptions", "organizations_url": f"{api}/orgs",
            "repos_url": f"{api}/repos", "events_url": f"{api}/events{{/privacy}}",
            "received_events_url": f"{api}/received_events", "type": "Bot", "site_admin": False,
        }

    def _label_json(self, label: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": label["id"], "node_id": f"LA_{label['id']}",
            "url": f"{self._repo_url()}/labels/{quote(label['name'], safe='')}",
            "name": label["name"], "description": label["description"], "color": label["color"],
            "default": False,
        }

    def _issue_json(self, issue: dict[str, Any]) -> dict[str, Any]:
        number = issue["number"]
        url = f"{self._repo_url()}/issues/{number}"
        kind = "pull" if issue.get("pull_request") else "issues"
        data = {
            "id": 100_000 + number, "node_id": f"I_{number}", "url": url,
            "repository_url": self._repo_url(), "labels_url": f"{url}/labels{{/name}}",
            "comments_url": f"{url}/comments", "events_url": f"{url}/events",
            "html_url": f"{self.root}/{self.repository}/{kind}/{number}", "number": number,
            "state": issue["state"], "state_reason": issue["state_reason"],
            "title": issue["title"], "body": issue["body"], "user": self._user(),
            "labels": [self._label_json(self.labels[n.lower()]) for n in issue["labels"]],
            "assignee": None, "assignees": [], "milestone": None, "locked": False,
            "active_lock_reason": None,
            "comments": sum(1 for c in self.comments.values() if c["issue"] == number),
            "closed_at": issue["closed_at"], "created_at": issue["created_at"],
            "updated_at": issue["updated_at"], "author_association": "NONE",
        }
        if issue.get("pull_request"):
            pr = f"{self.root}/{self.repository}/pull/{number}"
            data["pull_request"] = {"url": f"{self._repo_url()}/pulls/{number}", "html_url": pr,
                                    "diff_url": f"{pr}.diff", "patch_url": f"{pr}.patch",
                                    "merged_at": None}
        return data

    def _comment_json(self, comment: dict[str, Any]) -> dict[str, Any]:
        issue_url = f"{self._repo_url()}/issues/{comment['issue']}"
        return {
            "id": comment["id"], "node_id": f"IC_{comment['id']}",
            "url": f"{self._repo_url()}/issues/comments/{comment['id']}",
            "html_url": f"{self.root}/{self.repository}/issues/{comment['issue']}"
                        f"#issuecomment-{comment['id']}",
            "body": comment["body"], "user": self._user(), "created_at": comment["created_at"],
            "updated_at": comment["created_at"], "issue_url": issue_url,
            "author_association": "NONE",
        }

    # -- operations --------------------------------------------------------------------------

    def handle(self, op: Operation, params: dict[str, str], query: dict[str, list[str]],
               body: Any, path: str) -> tuple[int, Any, dict[str, str]]:
        repo = f"{params.get('owner')}/{params.get('repo')}"
        if repo.lower() != self.repository.lower():
            return _error(404, "Not Found")
        handler = getattr(self, "op_" + op.operation_id.replace("/", "_").replace("-", "_"), None)
        if handler is None:
            self.violations.append(f"{op.operation_id}: called, but the reporting never should")
            return _error(404, "Not Found")
        result: tuple[int, Any, dict[str, str]] = handler(params, query, body, path)
        return result

    def op_issues_list_for_repo(self, params: dict[str, str], query: dict[str, list[str]],
                                body: Any, path: str) -> tuple[int, Any, dict[str, str]]:
        state = _one(query, "state", "open")
        wanted = [n.strip().lower() for n in _one(query, "labels", "").split(",") if n.strip()]
        found = [i for i in self.issues.values()
                 if (state == "all" or i["state"] == state)
                 and all(w in {n.lower() for n in i["labels"]} for w in wanted)]
        sort = _one(query, "sort", "created")
        key = {"created": lambda i: i["number"], "updated": lambda i: i["seq"],
               "comments": lambda i: sum(1 for c in self.comments.values()
                                         if c["issue"] == i["number"])}[sort]
        found.sort(key=key, reverse=_one(query, "direction", "desc") == "desc")
        return self._page([self._issue_json(i) for i in found], query, path)

    def op_issues_get(self, params: dict[str, str], query: dict[str, list[str]], body: Any,
                      path: str) -> tuple[int, Any, dict[str, str]]:
        issue = self.issues.get(int(params["issue_number"]))
        if issue is None:
            return _error(404, "Not Found")
        return 200, self._issue_json(issue), {}

    def op_issues_create(self, params: dict[str, str], query: dict[str, list[str]], body: Any,
                         path: str) -> tuple[int, Any, dict[str, str]]:
        problem = _too_long(body, "Issue")
        if problem:
            return problem
        number = self._new_issue(str(body["title"]), body.get("body"), list(body.get("labels", [])))
        location = f"{self._repo_url()}/issues/{number}"
        return 201, self._issue_json(self.issues[number]), {"Location": location}

    def op_issues_update(self, params: dict[str, str], query: dict[str, list[str]], body: Any,
                         path: str) -> tuple[int, Any, dict[str, str]]:
        issue = self.issues.get(int(params["issue_number"]))
        if issue is None:
            return _error(404, "Not Found")
        problem = _too_long(body, "Issue")
        if problem:
            return problem
        _, now = self._tick()
        for key in ("title", "body"):
            if key in body:
                issue[key] = body[key]
        if "state" in body and body["state"] != issue["state"]:
            issue["state"] = body["state"]
            issue["closed_at"] = now if body["state"] == "closed" else None
            default = "completed" if body["state"] == "closed" else "reopened"
            issue["state_reason"] = body.get("state_reason") or default
        issue["seq"], issue["updated_at"] = self._tick()
        return 200, self._issue_json(issue), {}

    def op_issues_list_comments(self, params: dict[str, str], query: dict[str, list[str]],
                                body: Any, path: str) -> tuple[int, Any, dict[str, str]]:
        number = int(params["issue_number"])
        if number not in self.issues:
            return _error(404, "Not Found")
        found = sorted((c for c in self.comments.values() if c["issue"] == number),
                       key=lambda c: c["id"])
        return self._page([self._comment_json(c) for c in found], query, path)

    def op_issues_create_comment(self, params: dict[str, str], query: dict[str, list[str]],
                                 body: Any, path: str) -> tuple[int, Any, dict[str, str]]:
        number = int(params["issue_number"])
        if number not in self.issues:
            return _error(404, "Not Found")
        problem = _too_long(body, "IssueComment")
        if problem:
            return problem
        _, now = self._tick()
        comment = {"id": 9000 + len(self.comments), "issue": number, "body": body["body"],
                   "created_at": now}
        self.comments[comment["id"]] = comment
        self.issues[number]["seq"], self.issues[number]["updated_at"] = self._tick()
        return 201, self._comment_json(comment), {}

    def op_issues_list_labels_for_repo(self, params: dict[str, str], query: dict[str, list[str]],
                                       body: Any, path: str) -> tuple[int, Any, dict[str, str]]:
        labels = sorted(self.labels.values(), key=lambda label: label["id"])
        return self._page([self._label_json(label) for label in labels], query, path)

    def op_issues_get_label(self, params: dict[str, str], query: dict[str, list[str]], body: Any,
                            path: str) -> tuple[int, Any, dict[str, str]]:
        label = self.labels.get(unquote(params["name"]).lower())
        if label is None:
            return _error(404, "Not Found")
        return 200, self._label_json(label), {}

    def op_issues_create_label(self, params: dict[str, str], query: dict[str, list[str]],
                               body: Any, path: str) -> tuple[int, Any, dict[str, str]]:
        name, color = body["name"], body.get("color", "ededed")
        description = body.get("description")
        if name.lower() in self.labels:
            return _invalid("Label", "name", "already_exists")
        if not re.fullmatch(r"[0-9a-fA-F]{6}", color):
            return _invalid("Label", "color", "invalid")
        if description is not None and len(description) > 100:
            return _invalid("Label", "description", "invalid")
        label = self._new_label(name, color, description)
        return 201, self._label_json(label), {"Location": self._label_json(label)["url"]}

    def _page(self, items: list[Any], query: dict[str, list[str]],
              path: str) -> tuple[int, Any, dict[str, str]]:
        per_page = min(int(_one(query, "per_page", "30")), 100)
        page = int(_one(query, "page", "1"))
        last = max(1, -(-len(items) // per_page))
        links = []

        def url(number: int) -> str:
            q = {k: v[-1] for k, v in query.items()}
            q["page"] = str(number)
            return f"{self.root}{PREFIX}{path}?{urlencode(q)}"

        if page > 1:
            links.append(f'<{url(page - 1)}>; rel="prev"')
        if page < last:
            links.append(f'<{url(page + 1)}>; rel="next"')
            links.append(f'<{url(last)}>; rel="last"')
        if page > 1:
            links.append(f'<{url(1)}>; rel="first"')
        headers = {"Link": ", ".join(links)} if links else {}
        return 200, items[(page - 1) * per_page: page * per_page], headers


class _Handler(BaseHTTPRequestHandler):
    github: GitHubServer
    protocol_version = "HTTP/1.1"  # keep-alive, as api.github.com
    disable_nagle_algorithm = True  # headers and body go out apart: no 40 ms delayed-ACK stall

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the tests assert on requests, not on a log

    def _serve(self) -> None:
        github = self.github
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        with github._lock:
            status, data, headers, operation = self._answer(url.path, query, raw)
            github.requests.append(Request(self.command, url.path, operation, query,
                                           _json(raw), status, raw))
        if status == 0:  # a dropped connection: no status line at all
            self.close_connection = True
            return
        payload = b"" if data is None else json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        headers.setdefault("x-ratelimit-limit", "5000")
        headers.setdefault("x-ratelimit-remaining", "4999")
        headers.setdefault("x-ratelimit-reset", str(int(time.time()) + 3600))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _answer(self, full_path: str, query: dict[str, list[str]],
                raw: bytes) -> tuple[int, Any, dict[str, str], str]:
        github = self.github
        if not full_path.startswith(PREFIX + "/"):
            github.violations.append(f"{self.command} {full_path}: outside the API prefix")
            return (*_error(404, "Not Found"), "")
        path = full_path[len(PREFIX):]
        found = github.api.find(self.command, path)
        if found is None:
            github.violations.append(f"{self.command} {path}: no such operation in the OpenAPI")
            return (*_error(404, "Not Found"), "")
        op, params = found
        body = _json(raw)
        if raw and body is None:
            github.violations.append(f"{op.operation_id}: request body is not JSON")
        github.violations += github.api.request_errors(op, params, query, body)
        status, data, headers = self._result(op, params, query, body, path)
        if status:
            github.violations += github.api.response_errors(op, status, data)
        return status, data, headers, op.operation_id

    def _result(self, op: Operation, params: dict[str, str], query: dict[str, list[str]],
                body: Any, path: str) -> tuple[int, Any, dict[str, str]]:
        github = self.github
        if self.headers.get("Authorization", "") not in (f"token {github.token}",
                                                         f"Bearer {github.token}"):
            return _error(401, "Bad credentials")
        fault = self._fault(path)
        if fault is None or fault.after:
            answer = github.handle(op, params, query, body, path)
        if fault is None:
            return answer
        # instead of the answer, or after the work was done when `after`
        return fault.status, fault.body, dict(fault.headers)

    def _fault(self, path: str) -> Fault | None:
        for fault in self.github.faults:
            if fault.times > 0 and fault.method == self.command and re.fullmatch(fault.path, path):
                fault.times -= 1
                return fault
        return None


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _one(query: dict[str, list[str]], name: str, default: str) -> str:
    return query.get(name, [default])[-1]


def _error(status: int, message: str) -> tuple[int, Any, dict[str, str]]:
    return status, {"message": message, "documentation_url": DOCS}, {}


def _invalid(resource: str, field_name: str, code: str,
             message: str | None = None) -> tuple[int, Any, dict[str, str]]:
    error: dict[str, Any] = {"resource": resource, "code": code, "field": field_name}
    if message:
        error["message"] = message
    return 422, {"message": "Validation Failed", "errors": [error], "documentation_url": DOCS}, {}


def _too_long(body: dict[str, Any], resource: str) -> tuple[int, Any, dict[str, str]] | None:
    if len(body.get("body") or "") > BODY_LIMIT:
        return _invalid(resource, "body", "custom",
                        f"body is too long (maximum is {BODY_LIMIT} characters)")
    if len(str(body.get("title", ""))) > 256:
        return _invalid(resource, "title", "custom",
                        "title is too long (maximum is 256 characters)")
    return None
