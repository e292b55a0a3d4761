"""The OpenAPI schema as the API serves it, and a check that a real response is one it
documents: its status for that operation, its content type, the headers it requires, a body
valid against the response's schema with no property the schema does not name, and, for an
error, a code that the response's description lists."""

import copy
import json
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from rest_framework.test import APIClient

SCHEMA_URL = "/api/schema/?format=json"
INT64 = range(-(2**63), 2**63)

_formats = FormatChecker()


@_formats.checks("int64")
def _is_int64(value: object) -> bool:
    return not isinstance(value, int) or value in INT64


def served_schema() -> dict[str, Any]:
    response = APIClient().get(SCHEMA_URL)
    assert response.status_code == 200, response.content[:500]
    return json.loads(response.content)


def closed(node: Any) -> Any:
    """A copy of the schema in which an object allows no property it does not name."""
    if isinstance(node, list):
        return [closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    result = {key: closed(value) for key, value in node.items()}
    if "properties" in result and "additionalProperties" not in result:
        result["additionalProperties"] = False
    return result


class Conformance:
    """Checks responses against one served schema."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.components = closed(copy.deepcopy(document["components"]))
        self.codes_seen: set[str] = set()

    def operation(self, path: str, method: str) -> dict[str, Any]:
        return self.document["paths"][path][method.lower()]

    def body_errors(self, body: Any, schema: dict[str, Any]) -> list[str]:
        root = {**closed(schema), "components": self.components}
        validator = Draft202012Validator(root, format_checker=_formats)
        return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(body)]

    def component_errors(self, body: Any, name: str) -> list[str]:
        return self.body_errors(body, {"$ref": f"#/components/schemas/{name}"})

    def check(self, response: Any, *, path: str, method: str) -> dict[str, Any]:
        """Assert that ``response`` is documented for the operation; returns its body."""
        where = f"{method.upper()} {path} -> {response.status_code}"
        documented = self.operation(path, method)["responses"]
        assert str(response.status_code) in documented, f"{where} is not documented: {response.content[:300]!r}"
        answer = documented[str(response.status_code)]
        content_type = response["Content-Type"].split(";")[0].strip()
        assert content_type in answer.get("content", {}), f"{where}: undocumented content type {content_type}"
        for name, header in answer.get("headers", {}).items():
            if header.get("required"):
                assert response.has_header(name), f"{where}: the required header {name} is missing"
        body = json.loads(response.content)
        errors = self.body_errors(body, answer["content"][content_type]["schema"])
        assert not errors, f"{where}: the body is not what the schema says:\n" + "\n".join(errors) + f"\n{body}"
        if response.status_code >= 400:
            code = body["error"]["code"]
            assert f"- `{code}`:" in answer["description"], f"{where}: `{code}` is not listed in its description"
            self.codes_seen.add(code)
        return body
