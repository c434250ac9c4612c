"""The validator plug-in interface, the context every validator reads, and the registry.

A validator takes a :class:`Context` and returns results; it does not decide what a crash of its
own means — the runner turns any exception into an ``error`` result (see :mod:`.runner`). Built-in
validators register here the same way an outside one does: ``register(MyValidator())``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ringfence.validation import channel
from ringfence.validation.consumer import ConsumerInterface, ConsumerUnavailable, consumer_interface
from ringfence.validation.definition import Consumer, ContentTypeDefinition
from ringfence.validation.results import ValidationResult


@dataclass(frozen=True)
class Limits:
    """Safety limits of a validation run, with conservative defaults."""

    fuzz_seed: int = 0
    fuzz_mutations: int = 48  # mutated documents per run, besides the original
    fuzz_workers: int = 8  # consumer processes at once
    matrix_workers: int = 8


@dataclass
class Context:
    """What validators read: the definition, the artifact, the consumer versions to cover."""

    definition: ContentTypeDefinition
    artifact: Path
    versions: tuple[str, ...]
    limits: Limits = field(default_factory=Limits)
    _data: bytes | None = None
    _interface: ConsumerInterface | None = None

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = self.artifact.read_bytes()
        return self._data

    def document(self) -> Any:
        """The artifact parsed as JSON; raises ContentUnreadable."""
        return channel.loads(self.data)

    @property
    def consumer(self) -> Consumer:
        if self.definition.consumer is None:
            raise ConsumerUnavailable("the definition declares no reference consumer")
        return self.definition.consumer

    def interface(self) -> ConsumerInterface:
        """The consumer's interface, asked once per run; raises ConsumerUnavailable."""
        if self._interface is None:
            self._interface = consumer_interface(self.consumer, self.definition.base_dir)
        return self._interface


class Validator(Protocol):
    """Judges an artifact; ``name`` is what definitions list under ``validators.required``."""

    @property
    def name(self) -> str: ...

    def __call__(self, context: Context) -> Sequence[ValidationResult]: ...


REGISTRY: dict[str, Validator] = {}


def register(validator: Validator) -> Validator:
    """Make a validator available by its name (a later registration replaces an earlier one)."""
    REGISTRY[validator.name] = validator
    return validator
