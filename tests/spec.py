"""Check response bodies against Stripe's own OpenAPI schemas in ../shared/stripe-spec/."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest

SPEC_DIR = Path(
    os.environ.get(
        "METERD_STRIPE_SPEC_DIR", Path(__file__).resolve().parents[2] / "shared" / "stripe-spec"
    )
)


@functools.cache
def _document(name: str) -> dict[str, Any]:
    path = SPEC_DIR / name
    if not path.exists():
        reason = f"Stripe's spec is not at {path} (set METERD_STRIPE_SPEC_DIR)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return _to_json_schema(json.loads(path.read_text()))


def _to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 ``nullable: true`` becomes JSON Schema's ``null`` alternative."""
    if isinstance(node, list):
        return [_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {k: _to_json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable"):
        if "type" in converted:
            converted["type"] = [converted["type"], "null"]
        if "enum" in converted:
            converted["enum"] = [*converted["enum"], None]
        if "anyOf" in converted or "$ref" in converted:
            converted = {"anyOf": [converted, {"type": "null"}]}
    return converted


def assert_matches(body: Any, schema_name: str, document: str = "v1-billing-meters.json") -> None:
    """Fail unless ``body`` is valid under ``components.schemas[schema_name]``."""
    spec = _document(document)
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": spec["components"]}
    jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)


def list_schema(document: str, path: str, method: str = "get") -> dict[str, Any]:
    """The 200 response schema of an operation, e.g. a list object."""
    spec = _document(document)
    operation = spec["paths"][path][method]
    return operation["responses"]["200"]["content"]["application/json"]["schema"]  # type: ignore[no-any-return]


def assert_matches_response(
    body: Any, path: str, method: str = "get", document: str = "v1-billing-meters.json"
) -> None:
    spec = _document(document)
    schema = {**list_schema(document, path, method), "components": spec["components"]}
    jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)
