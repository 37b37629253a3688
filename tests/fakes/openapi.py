"""GitHub's OpenAPI description as a validator of requests and responses.

The local GitHub server checks every request the client sends and every response it returns
against the description of that operation, so neither the server nor the client can drift
from GitHub unnoticed. OpenAPI 3.0 schemas are almost JSON Schema draft 4; the difference
that matters is `nullable: true`, turned here into a union with null.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator

_SCHEMA_MAPS = ("properties", "patternProperties", "definitions")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SCHEMA_ONE = ("items", "additionalProperties", "not")


def to_json_schema(schema: Any) -> Any:
    """An OpenAPI 3.0 schema object as JSON Schema: `nullable: true` becomes a union."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "nullable":
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [to_json_schema(sub) for sub in value]
        elif key in _SCHEMA_ONE:
            out[key] = to_json_schema(value)
        else:
            out[key] = value  # keywords whose values are data (enum, example, required...)
    if schema.get("nullable") is True:
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str
    template: str
    spec: dict[str, Any]


class OpenApi:
    """Operations by method and path, with validators compiled once each and cached."""

    def __init__(self, path: Path) -> None:
        document = json.loads(path.read_text(encoding="utf-8"))
        self._routes: list[tuple[str, re.Pattern[str], Operation]] = []
        for template, item in document["paths"].items():
            regex = re.sub(r"\\\{[^}]+\\\}", "([^/]+)", re.escape(template))
            pattern = re.compile(f"^{regex}$")
            names = re.findall(r"\{([^}]+)\}", template)
            for method, spec in item.items():
                if isinstance(spec, dict) and "operationId" in spec:
                    op = Operation(spec["operationId"], method.upper(), template,
                                   {**spec, "_path_names": names})
                    self._routes.append((method.upper(), pattern, op))
        # GitHub answers every error it does not describe per operation with this shape
        basic = document["paths"]["/repos/{owner}/{repo}"]["get"]["responses"]["404"]
        self._basic_error = basic["content"]["application/json"]["schema"]
        self._validators: dict[tuple[str, str], Draft4Validator] = {}

    def find(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | None:
        for verb, pattern, op in self._routes:
            match = pattern.match(path)
            if verb == method and match:
                return op, dict(zip(op.spec["_path_names"], match.groups(), strict=True))
        return None

    def request_errors(self, op: Operation, path_params: dict[str, str],
                       query: dict[str, list[str]], body: Any) -> list[str]:
        errors: list[str] = []
        params = {(p["in"], p["name"]): p for p in op.spec.get("parameters", [])}
        for name, value in path_params.items():
            errors += self._param_errors(op, params.get(("path", name)), name, value)
        for name, values in query.items():
            if len(values) != 1:
                errors.append(f"query parameter {name} given {len(values)} times")
            errors += self._param_errors(op, params.get(("query", name)), name, values[-1])
        request_body = op.spec.get("requestBody")
        if body is None:
            if request_body and request_body.get("required"):
                errors.append("request body required but missing")
            return errors
        if not request_body:
            return [*errors, "request body sent to an operation that takes none"]
        schema = request_body["content"]["application/json"]["schema"]
        return errors + self._errors((op.operation_id, "request"), schema, body)

    def response_errors(self, op: Operation, status: int, body: Any) -> list[str]:
        response = op.spec["responses"].get(str(status))
        if response is None:
            if status < 400:
                return [f"status {status} is not a documented answer of {op.operation_id}"]
            return self._errors(("basic-error", str(status)), self._basic_error, body)
        content = response.get("content", {}).get("application/json")
        if content is None:
            return [] if body is None else [f"status {status} of {op.operation_id} has no body"]
        return self._errors((op.operation_id, str(status)), content["schema"], body)

    def _param_errors(self, op: Operation, param: dict[str, Any] | None, name: str,
                      raw: str) -> list[str]:
        if param is None:
            return [f"{op.operation_id} takes no parameter {name!r}"]
        schema = param.get("schema", {})
        value: Any = raw
        if schema.get("type") == "integer":
            if not re.fullmatch(r"-?\d+", raw):
                return [f"parameter {name}: {raw!r} is not an integer"]
            value = int(raw)
        elif schema.get("type") == "boolean":
            value = raw == "true"
        return self._errors((op.operation_id, f"param:{name}"), schema, value)

    def _errors(self, key: tuple[str, str], schema: Any, instance: Any) -> list[str]:
        validator = self._validators.get(key)
        if validator is None:
            validator = Draft4Validator(to_json_schema(schema),
                                        format_checker=Draft4Validator.FORMAT_CHECKER)
            self._validators[key] = validator
        return [
            f"{key[0]} {key[1]}: {'/'.join(map(str, e.absolute_path)) or '(root)'}: "
            f"{e.message[:300]}"
            for e in validator.iter_errors(instance)
        ]
