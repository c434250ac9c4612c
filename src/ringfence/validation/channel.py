"""The ``sample-channel`` format plug-in: channel files as the sample sensor reads them
(``ringfence-sample-channel/1``), seen from the validator's side.

Each instance names a template type; each non-wildcard criterion reads one field of the input
array the consumer supplies for that type. A wildcard (``*``) matches without reading its field.
This module turns a document into the field references a consumer must be able to satisfy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

FORMAT = "ringfence-sample-channel/1"
WILDCARD = "*"

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": FORMAT,
    "type": "object",
    "required": ["format", "template_types", "instances"],
    "properties": {
        "format": {"const": FORMAT},
        "template_types": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["fields"],
                "properties": {"fields": {"type": "integer", "minimum": 1}},
            },
        },
        "instances": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "template", "criteria"],
                "properties": {
                    "id": {"type": "string", "minLength": 1},
                    "template": {"type": "string"},
                    "criteria": {
                        "type": "object",
                        "propertyNames": {"pattern": "^[0-9]+$"},
                        "additionalProperties": {"type": "string"},
                    },
                },
            },
        },
    },
}


class ContentUnreadable(Exception):
    """The artifact cannot be read as this format at all; the schema validator says where."""


@dataclass(frozen=True)
class FieldReference:
    """One criterion of one instance: which field of which template type it touches."""

    instance: str
    template: str
    index: int
    wildcard: bool


@dataclass(frozen=True)
class ChannelDocument:
    declared: dict[str, int]  # template type -> declared field count
    references: tuple[FieldReference, ...]
    raw: dict[str, Any]

    def templates_of_instances(self) -> dict[str, str]:
        return {r.instance: r.template for r in self.references}


def loads(data: bytes) -> Any:
    """The artifact as JSON; raises ContentUnreadable with the line and column of the problem."""
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ContentUnreadable(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise ContentUnreadable(f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def parse(doc: Any) -> ChannelDocument:
    """The field references of a channel document. Structure that the schema rejects raises
    ContentUnreadable; criteria keys that are not indexes are left to the schema validator."""
    if not isinstance(doc, dict):
        raise ContentUnreadable("the top level is not a JSON object")
    types, instances = doc.get("template_types"), doc.get("instances")
    if not isinstance(types, dict) or not isinstance(instances, list):
        raise ContentUnreadable("'template_types' must be an object and 'instances' an array")
    declared = {name: spec["fields"] for name, spec in types.items()
                if isinstance(spec, dict) and isinstance(spec.get("fields"), int)}
    references: list[FieldReference] = []
    for item in instances:
        if not isinstance(item, dict) or not isinstance(item.get("criteria"), dict):
            continue
        instance, template = str(item.get("id")), str(item.get("template"))
        for key, pattern in item["criteria"].items():
            if isinstance(key, str) and key.isdigit():
                references.append(FieldReference(instance, template, int(key), pattern == WILDCARD))
    return ChannelDocument(declared, tuple(references), doc)
