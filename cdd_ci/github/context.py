"""Where a run reports to, read from the variables GitHub Actions sets for every job.

The same variables exist on a developer's machine when they set them by hand, so
`cdd issues` works there too; only the token and the repository are required.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, urlparse

from cdd_ci.config import ConfigError

DEFAULT_API_URL = "https://api.github.com"
DEFAULT_SERVER_URL = "https://github.com"
PULL_REQUEST_EVENTS = frozenset({"pull_request", "pull_request_target"})
_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class GitHubContext:
    """The repository, the credentials and the Actions run that is reporting."""

    token: str = field(repr=False)
    """Never printed: a repr goes into logs and tracebacks."""
    repository: str
    api_url: str = DEFAULT_API_URL
    server_url: str = DEFAULT_SERVER_URL
    run_id: str = ""
    event_name: str = ""
    base_ref: str = ""
    sha: str = ""

    @property
    def is_pull_request(self) -> bool:
        return self.event_name in PULL_REQUEST_EVENTS

    @property
    def main_branch(self) -> str:
        """The branch a pull request would merge into: where the scheduled runs report from."""
        return self.base_ref or "main"

    @property
    def repository_url(self) -> str:
        return f"{self.server_url}/{self.repository}"

    @property
    def run_url(self) -> str:
        return f"{self.repository_url}/actions/runs/{self.run_id}" if self.run_id else ""

    def commit_url(self, sha: str) -> str:
        return f"{self.repository_url}/commit/{quote(sha)}"

    def compare_url(self, base: str, head: str) -> str:
        return f"{self.repository_url}/compare/{quote(base)}...{quote(head)}"


def context_from_env(env: Mapping[str, str], api_url: str | None = None) -> GitHubContext:
    """Read the context; a missing or malformed value raises ConfigError with one line."""
    token = env.get("GITHUB_TOKEN", "").strip()
    repository = env.get("GITHUB_REPOSITORY", "").strip()
    if not token:
        raise ConfigError(
            "GITHUB_TOKEN is not set: reporting issues needs a token allowed to write issues"
            " (in a workflow: `permissions: issues: write` and `env: GITHUB_TOKEN:"
            " ${{ secrets.GITHUB_TOKEN }}`)"
        )
    if not repository:
        raise ConfigError("GITHUB_REPOSITORY is not set: give the repository as owner/name")
    if not _REPOSITORY.match(repository):
        raise ConfigError(f"GITHUB_REPOSITORY must be owner/name, not {repository!r}")
    api = (api_url or env.get("GITHUB_API_URL") or DEFAULT_API_URL).rstrip("/")
    server = (env.get("GITHUB_SERVER_URL") or DEFAULT_SERVER_URL).rstrip("/")
    for name, url in (("GITHUB_API_URL (or --github-api-url)", api), ("GITHUB_SERVER_URL", server)):
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError(f"{name} must be an http(s) URL, not {url!r}")
    return GitHubContext(
        token=token,
        repository=repository,
        api_url=api,
        server_url=server,
        run_id=env.get("GITHUB_RUN_ID", ""),
        event_name=env.get("GITHUB_EVENT_NAME", ""),
        base_ref=env.get("GITHUB_BASE_REF", ""),
        sha=env.get("GITHUB_SHA", ""),
    )
