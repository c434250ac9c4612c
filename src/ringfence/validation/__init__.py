"""Validation: is this artifact safe to release, judged before anybody is exposed to it.

A content-type definition (:mod:`.definition`) says what the content must look like, which program
consumes it, which consumer versions and platforms it must work on, and which validators a release
requires. :func:`validate` runs them and returns a :class:`Report` of :class:`ValidationResult`
values — passed, failed or error; error is never a pass.

    validate()                      runner.py: required validators, skip list, one Report
     ├── schema      schema.py      JSON Schema (jsonschema)
     ├── contract    contract.py    every field read is supplied by every covered consumer version
     ├── command     command.py     owners' programs on the artifact, with timeouts
     ├── fuzz        fuzz.py        seeded mutations through the real consumer; crashes fail
     └── matrix      matrix.py      the real consumer per platform target; crash/refusal fail
    consumer.py                     the one process seam: run with a timeout, describe, check
"""

from ringfence.validation.contract import check_contract
from ringfence.validation.definition import (
    BUILT_IN_VALIDATORS,
    CATEGORY_MINIMUM,
    ContentTypeDefinition,
    DefinitionError,
    PlatformTarget,
    load_definition,
    parse_definition,
)
from ringfence.validation.results import Report, Status, ValidationResult
from ringfence.validation.runner import validate
from ringfence.validation.validator import REGISTRY, Context, Limits, Validator, register

__all__ = [
    "BUILT_IN_VALIDATORS", "CATEGORY_MINIMUM", "REGISTRY", "ContentTypeDefinition", "Context", "DefinitionError",
    "Limits",
    "PlatformTarget", "Report", "Status", "ValidationResult", "Validator", "check_contract", "load_definition",
    "parse_definition", "register", "validate",
]
