"""``schema``: the artifact against a JSON Schema — the definition's own, or the format's built-in
one. Every violation is reported with its JSON path, not just the first."""

from __future__ import annotations

from collections.abc import Sequence

from jsonschema.validators import validator_for  # type: ignore[import-untyped]

from ringfence.validation import channel
from ringfence.validation.results import ValidationResult
from ringfence.validation.validator import Context

_SHOWN = 5


class SchemaValidator:
    name = "schema"

    def __call__(self, context: Context) -> Sequence[ValidationResult]:
        definition = context.definition
        schema = definition.json_schema or (channel.SCHEMA if definition.format == "sample-channel" else None)
        if schema is None:
            return [ValidationResult(self.name, None, "error", "no JSON Schema is declared for this content type")]
        try:
            doc = context.document()
        except channel.ContentUnreadable as exc:
            return [ValidationResult(self.name, None, "failed", f"artifact is {exc}")]
        errors = sorted(validator_for(schema)(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
        if not errors:
            return [ValidationResult(self.name, None, "passed", "artifact matches the JSON Schema")]
        problems = [f"{e.json_path}: {e.message}" for e in errors]
        more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        return [ValidationResult(self.name, None, "failed",
                                 f"artifact does not match the JSON Schema: {'; '.join(problems[:_SHOWN])}{more}",
                                 {"violations": problems})]
