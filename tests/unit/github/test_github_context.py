"""Where issues go, from the variables GitHub Actions sets: required ones fail in one line."""

from __future__ import annotations

import pytest

from cdd_ci.config import ConfigError
from cdd_ci.github.context import context_from_env

TOKEN = "ghs_" + "k" * 36
ACTIONS = {"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": "acme/cloud", "GITHUB_RUN_ID": "77",
           "GITHUB_SERVER_URL": "https://github.com", "GITHUB_API_URL": "https://api.github.com",
           "GITHUB_EVENT_NAME": "schedule", "GITHUB_SHA": "abc123"}


def test_the_actions_variables_give_the_run_link_and_the_api() -> None:
    context = context_from_env(ACTIONS)
    assert context.run_url == "https://github.com/acme/cloud/actions/runs/77"
    assert context.compare_url("a1", "b2") == "https://github.com/acme/cloud/compare/a1...b2"
    assert context.api_url == "https://api.github.com" and not context.is_pull_request


def test_github_enterprise_by_variable_or_option_the_option_winning() -> None:
    ghe = {**ACTIONS, "GITHUB_API_URL": "https://ghe.example/api/v3/",
           "GITHUB_SERVER_URL": "https://ghe.example"}
    assert context_from_env(ghe).api_url == "https://ghe.example/api/v3"
    assert context_from_env(ghe, "https://other.example/api/v3").api_url == \
        "https://other.example/api/v3"
    assert context_from_env(ghe).run_url.startswith("https://ghe.example/acme/cloud/")


@pytest.mark.parametrize(("missing", "says"), [
    ("GITHUB_TOKEN", "GITHUB_TOKEN is not set"),
    ("GITHUB_REPOSITORY", "GITHUB_REPOSITORY is not set"),
])
def test_a_missing_token_or_repository_is_one_clear_line(missing: str, says: str) -> None:
    env = {k: v for k, v in ACTIONS.items() if k != missing}
    with pytest.raises(ConfigError) as caught:
        context_from_env(env)
    assert str(caught.value).startswith(says) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("name", "value"), [
    ("GITHUB_REPOSITORY", "just-a-name"),
    ("GITHUB_API_URL", "ftp://api.example"),
])
def test_malformed_values_are_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}"):
        context_from_env({**ACTIONS, name: value})


def test_pull_requests_are_recognised_and_name_their_base_branch() -> None:
    context = context_from_env({**ACTIONS, "GITHUB_EVENT_NAME": "pull_request",
                                "GITHUB_BASE_REF": "develop"})
    assert context.is_pull_request and context.main_branch == "develop"


def test_the_token_is_never_in_the_repr() -> None:
    assert TOKEN not in repr(context_from_env(ACTIONS))
