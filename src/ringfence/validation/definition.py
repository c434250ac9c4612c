"""Content-type definitions: what an artifact of a content type must be, who consumes it, and
where it has to work.

A definition is a YAML file kept next to the content it describes::

    name: sensor/ipc-templates
    category: rapid-response
    format: sample-channel            # the parser plug-in: json (generic) or sample-channel
    schema: {...}                     # optional inline JSON Schema (the format may bring its own)
    consumer:                         # the reference consumer, run as a real process
      name: sensor
      command: ["{python}", sensor.py]
      describe: [describe, --json]    # prints the consumer interface as JSON
      check: [check, --content, "{artifact}", --platform, "{os}", --sensor-version, "{version}"]
      versions: ["7.11", "8.0"]       # declared; live versions from the fleet are added at run time
    targets:
      - {os: windows, os_version: "11", arch: x86_64, consumer_version: "7.11"}
    validators:
      required: [schema, contract, fuzz, matrix]
      commands: [{name: lint, argv: [...], timeout_s: 30}]

Consumer and command argv are run from the definition file's directory, so relative paths in them
resolve against it. ``{python}`` is the running interpreter; ``{artifact}`` the artifact's absolute
path; ``{os}``, ``{os_version}``, ``{arch}`` and ``{version}`` the platform target or covered
consumer version a run is for. Versions are labels: write them in quotes (YAML reads 7.10 as 7.1).

:func:`parse_definition` reports every problem at once, each with its dotted field and line.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, Literal

from jsonschema import SchemaError  # type: ignore[import-untyped]
from jsonschema.validators import validator_for  # type: ignore[import-untyped]
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from ringfence.core.errors import DocumentError, PlanProblem
from ringfence.core.models import PLATFORMS, Category
from ringfence.core.yamlpath import line_of, load_document, model_problems

BUILT_IN_VALIDATORS = ("schema", "contract", "command", "fuzz", "matrix")
_NEEDS_CONSUMER = ("contract", "fuzz", "matrix")

#: The validators a category requires of every release, whatever its definition says. Content that
#: reaches a kernel or a boot path is checked for shape, against every live consumer's interface,
#: through the real consumer under mutation, and on every platform; software must at least run on
#: every platform; configuration must at least have a schema.
CATEGORY_MINIMUM: dict[Category, tuple[str, ...]] = {
    Category.RAPID_RESPONSE: ("schema", "contract", "fuzz", "matrix"),
    Category.SYSTEM_CRITICAL: ("schema", "contract", "fuzz", "matrix"),
    Category.SOFTWARE: ("matrix",),
    Category.CONFIGURATION: ("schema",),
}


class DefinitionError(DocumentError):
    """A content-type definition that does not validate: every problem with its field and line."""

    code = "invalid_content_type_definition"


def _label(value: Any) -> Any:
    """Versions and OS versions are labels. An integer is taken as written; a float is refused,
    because YAML has already turned ``7.10`` into ``7.1``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        raise ValueError(f"write it in quotes, e.g. \"{value}\" (YAML reads an unquoted 7.10 as the number 7.1)")  # noqa: TRY004
    return value


Label = Annotated[str, BeforeValidator(_label)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlatformTarget(_Model):
    """One cell of the platform test matrix: where the artifact must load, and with which consumer."""

    os: str
    os_version: Label
    arch: str
    consumer_version: Label

    @field_validator("os")
    @classmethod
    def _os(cls, value: str) -> str:
        if value not in PLATFORMS:
            raise ValueError(f"must be one of {', '.join(PLATFORMS)}")
        return value

    @property
    def label(self) -> str:
        return f"{self.os} {self.os_version} {self.arch} / {self.consumer_version}"


class Consumer(_Model):
    """The reference consumer: a program that loads this content type the way endpoints do."""

    name: str = "consumer"
    command: list[str] = Field(min_length=1)
    describe: list[str]
    check: list[str]
    versions: list[Label] = Field(min_length=1)
    timeout_s: float = Field(10.0, gt=0)


class CommandCheck(_Model):
    """A program run on the artifact by the ``command`` validator; non-zero exit fails it."""

    name: str
    argv: list[str] = Field(min_length=1)
    timeout_s: float = Field(30.0, gt=0)


class Validators(_Model):
    required: list[str] = Field(min_length=1)
    commands: list[CommandCheck] = []


class ContentTypeDefinition(_Model):
    """A parsed, checked content-type definition. ``base_dir`` is where its commands run."""

    name: str
    category: Category
    format: Literal["json", "sample-channel"]
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    consumer: Consumer | None = None
    targets: list[PlatformTarget] = []
    validators: Validators

    _base_dir: Path = PrivateAttr(default=Path())

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    @field_validator("json_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            try:
                validator_for(value).check_schema(value)
            except SchemaError as exc:
                raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        return value

    @model_validator(mode="after")
    def _coherent(self) -> ContentTypeDefinition:
        required = self.validators.required
        if "command" in required and not self.validators.commands:
            raise ValueError("validators.required names 'command' but validators.commands declares no command")
        if any(v in required for v in _NEEDS_CONSUMER) and self.consumer is None:
            needing = ", ".join(v for v in _NEEDS_CONSUMER if v in required)
            raise ValueError(f"validators {needing} run the reference consumer, but no consumer is declared")
        if "matrix" in required and not self.targets:
            raise ValueError("validators.required names 'matrix' but no platform targets are declared")
        if "schema" in required and self.format == "json" and self.json_schema is None:
            raise ValueError("format json has no built-in schema: declare one under 'schema'")
        return self

    def category_gaps(self) -> tuple[str, ...]:
        """The validators its category requires (:data:`CATEGORY_MINIMUM`) that it does not."""
        return tuple(v for v in CATEGORY_MINIMUM[self.category] if v not in self.validators.required)

    def covered_versions(self, live_versions: Collection[str] = ()) -> tuple[str, ...]:
        """Declared consumer versions, then live versions seen in the fleet, each once."""
        declared = self.consumer.versions if self.consumer is not None else []
        return tuple(dict.fromkeys([*declared, *live_versions]))


def parse_definition(text: str, source: str = "<definition>", base_dir: Path | None = None,
                     known_validators: Collection[str] = BUILT_IN_VALIDATORS) -> ContentTypeDefinition:
    """Validate and parse a definition. Raises :class:`DefinitionError` naming every bad field and
    its line."""
    root, data = load_document(text, source, DefinitionError, "name, category, format and validators")
    problems: list[PlanProblem] = []
    required = data.get("validators", {}).get("required") if isinstance(data.get("validators"), dict) else None
    for position, name in enumerate(required if isinstance(required, list) else []):
        if name not in known_validators:
            problems.append(PlanProblem(f"validators.required.{position}",
                                        f"unknown validator {name!r}; known: {', '.join(known_validators)}",
                                        line_of(root, ["validators", "required", str(position)])))
    try:
        definition = ContentTypeDefinition.model_validate(data)
    except ValidationError as exc:
        problems += model_problems(exc, root)
        raise DefinitionError(problems, source) from None
    if problems:
        raise DefinitionError(problems, source)
    definition._base_dir = (base_dir or Path()).resolve()
    return definition


def load_definition(path: Path, known_validators: Collection[str] = BUILT_IN_VALIDATORS) -> ContentTypeDefinition:
    """Read a definition file; its commands run from its directory."""
    return parse_definition(path.read_text(encoding="utf-8"), str(path), path.parent, known_validators)
