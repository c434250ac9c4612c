"""``validate``: every required validator on one artifact, as one report.

Guarantees: each required validator that was not skipped yields at least one result; a validator
that raises (its consumer cannot be run, a bug) yields an ``error`` result naming the exception,
never a pass and never a crash of the run; a validator that returns nothing yields an ``error``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

from ringfence.core.errors import InvalidInput
from ringfence.validation.command import CommandValidator
from ringfence.validation.consumer import ConsumerUnavailable
from ringfence.validation.contract import ContractValidator
from ringfence.validation.definition import ContentTypeDefinition
from ringfence.validation.fuzz import FuzzValidator
from ringfence.validation.matrix import MatrixValidator
from ringfence.validation.results import Report, ValidationResult
from ringfence.validation.schema import SchemaValidator
from ringfence.validation.validator import REGISTRY, Context, Limits, Validator, register

for _builtin in (SchemaValidator(), ContractValidator(), CommandValidator(), FuzzValidator(), MatrixValidator()):
    register(_builtin)


def validate(definition: ContentTypeDefinition, artifact_path: Path, live_versions: Collection[str] = (), *,
             skip: Collection[str] = (), limits: Limits | None = None,
             validators: Mapping[str, Validator] | None = None) -> Report:
    """Run the definition's required validators, except ``skip``, on the artifact.

    ``live_versions`` are consumer versions seen in the fleet; they are covered as well as the
    declared ones. Raises InvalidInput for a name in ``skip`` that is not required, and OSError
    when the artifact cannot be read.
    """
    available = REGISTRY if validators is None else validators
    required = definition.validators.required
    unknown = [name for name in skip if name not in required]
    if unknown:
        raise InvalidInput(f"cannot skip {', '.join(unknown)}: not a required validator of {definition.name}"
                           f" (required: {', '.join(required)})", field="skip")
    context = Context(definition, artifact_path, definition.covered_versions(live_versions),
                      limits or Limits())
    _ = context.data  # an unreadable artifact is the caller's error, not a validator's
    results: list[ValidationResult] = []
    for name in required:
        if name in skip:
            continue
        validator = available.get(name)
        if validator is None:
            results.append(ValidationResult(name, None, "error", f"validator {name} is not available here"))
            continue
        results.extend(_run(name, validator, context))
    return Report(tuple(results), tuple(name for name in required if name in skip))


def _run(name: str, validator: Validator, context: Context) -> list[ValidationResult]:
    try:
        results = list(validator(context))
    except ConsumerUnavailable as exc:
        return [ValidationResult(name, None, "error", f"cannot judge: {exc}")]
    except Exception as exc:  # a validator's own crash is a verdict: error
        return [ValidationResult(name, None, "error", f"validator {name} crashed: {type(exc).__name__}: {exc}",
                                 {"exception": type(exc).__name__})]
    if not results:
        return [ValidationResult(name, None, "error", f"validator {name} returned no result")]
    return results
