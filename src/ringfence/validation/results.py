"""Validation results as data.

A validator never says "fine" by keeping quiet: every run ends in results, each ``passed``,
``failed`` (the content is wrong) or ``error`` (the validator could not judge: it crashed, timed
out, or its consumer could not be reached). ``error`` is never a pass, and a report is ``ok`` only
when every result it holds passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["passed", "failed", "error"]
_ORDER: dict[Status, int] = {"failed": 0, "error": 1, "passed": 2}


@dataclass(frozen=True)
class ValidationResult:
    """One verdict of one validator on one target (an instance, a platform target, a command) or on
    the whole artifact (``target`` None). ``message`` is one sentence a person understands."""

    validator: str
    target: str | None
    status: Status
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def as_dict(self) -> dict[str, Any]:
        return {"validator": self.validator, "target": self.target, "status": self.status,
                "message": self.message, "details": self.details}


@dataclass(frozen=True)
class Report:
    """Every result of one validation run, and the validators that were asked not to run."""

    results: tuple[ValidationResult, ...]
    skipped: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when there is at least one result and every result passed."""
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def problems(self) -> tuple[ValidationResult, ...]:
        """The failed and error results, failures first."""
        return tuple(r for r in self.ordered() if not r.passed)

    @property
    def failed(self) -> tuple[ValidationResult, ...]:
        return tuple(r for r in self.results if r.status == "failed")

    @property
    def errors(self) -> tuple[ValidationResult, ...]:
        return tuple(r for r in self.results if r.status == "error")

    def ordered(self) -> tuple[ValidationResult, ...]:
        """Failures first, then errors, then passes; within each, in the order they were found."""
        return tuple(sorted(self.results, key=lambda r: _ORDER[r.status]))

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "results": [r.as_dict() for r in self.ordered()], "skipped": list(self.skipped)}
