"""The OpenAPI validator behind the local GitHub server catches drift, in either direction.

If it let anything through, the integration tests against the server would prove nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.openapi import OpenApi, to_json_schema

LABEL = {"id": 1, "node_id": "LA_1", "url": "https://api.github.com/repos/a/b/labels/cdd",
         "name": "cdd", "description": None, "color": "5319e7", "default": False}


@pytest.fixture(scope="module")
def api(github_openapi: OpenApi) -> OpenApi:
    return github_openapi


def _op(api: OpenApi, method: str, path: str) -> Any:
    found = api.find(method, path)
    assert found is not None
    return found


def test_a_response_as_github_sends_it_passes(api: OpenApi) -> None:
    op, _ = _op(api, "POST", "/repos/a/b/labels")
    assert api.response_errors(op, 201, LABEL) == []


@pytest.mark.parametrize(("change", "why"), [
    ({"color": None}, "None is not of type 'string'"),
    ({"id": "1"}, "'1' is not of type 'integer'"),
    ({"default": None}, "None is not of type 'boolean'"),
])
def test_a_response_that_drifted_is_caught(api: OpenApi, change: dict[str, Any], why: str) -> None:
    op, _ = _op(api, "POST", "/repos/a/b/labels")
    errors = api.response_errors(op, 201, {**LABEL, **change})
    assert len(errors) == 1 and why in errors[0]


def test_a_missing_required_field_is_caught(api: OpenApi) -> None:
    op, _ = _op(api, "POST", "/repos/a/b/labels")
    label = {k: v for k, v in LABEL.items() if k != "node_id"}
    assert api.response_errors(op, 201, label) == [
        "issues/create-label 201: (root): 'node_id' is a required property"]


def test_an_undocumented_success_status_is_caught_and_errors_have_githubs_shape(
        api: OpenApi) -> None:
    op, _ = _op(api, "POST", "/repos/a/b/labels")
    assert api.response_errors(op, 200, LABEL) == [
        "status 200 is not a documented answer of issues/create-label"]
    assert api.response_errors(op, 502, {"message": "Server Error"}) == []
    assert api.response_errors(op, 502, {"message": 502}) != []


@pytest.mark.parametrize(("query", "body", "why"), [
    ({"state": ["opened"]}, None, "'opened' is not one of ['open', 'closed', 'all']"),
    ({"per_page": ["many"]}, None, "per_page: 'many' is not an integer"),
    ({"label": ["cdd"]}, None, "takes no parameter 'label'"),
])
def test_a_request_that_drifted_is_caught(api: OpenApi, query: dict[str, list[str]],
                                          body: Any, why: str) -> None:
    op, params = _op(api, "GET", "/repos/a/b/issues")
    errors = api.request_errors(op, params, query, body)
    assert len(errors) == 1 and why in errors[0]


def test_a_request_body_is_checked(api: OpenApi) -> None:
    op, params = _op(api, "POST", "/repos/a/b/issues")
    assert api.request_errors(op, params, {}, {"title": "t", "labels": ["cdd"]}) == []
    assert api.request_errors(op, params, {}, {"body": "no title"}) == [
        "issues/create request: (root): 'title' is a required property"]
    assert api.request_errors(op, params, {}, {"title": "t", "labels": "cdd"}) != []


@pytest.mark.parametrize(("schema", "good", "bad"), [
    ({"type": "string", "nullable": True}, [None, "x"], [1]),
    ({"type": "string", "enum": ["a"], "nullable": True}, [None, "a"], ["b"]),
    ({"allOf": [{"type": "object"}], "nullable": True}, [None, {}], ["x"]),
    ({"type": "object", "properties": {"nullable": {"type": "integer"}}}, [{"nullable": 1}],
     [{"nullable": None}]),
])
def test_nullable_becomes_a_union_with_null(schema: dict[str, Any], good: list[Any],
                                            bad: list[Any]) -> None:
    from jsonschema import Draft4Validator

    validator = Draft4Validator(to_json_schema(schema))
    assert all(validator.is_valid(value) for value in good)
    assert not any(validator.is_valid(value) for value in bad)
