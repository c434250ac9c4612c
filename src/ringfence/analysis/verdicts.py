"""Verdicts: what a judge concluded, as data — a phase, a sentence a person can read, and the
numbers behind it. Missing data is a verdict of its own, never a silent pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class VerdictPhase(StrEnum):
    RUNNING = "running"  # not enough evidence either way yet
    PASSED = "passed"  # the evidence says the version is not worse than allowed
    FAILED = "failed"  # the evidence says it is worse: halt
    INCONCLUSIVE = "inconclusive"  # the data needed to decide is missing: a person must look
    ERROR = "error"  # the judge could not run


@dataclass(frozen=True, slots=True)
class Verdict:
    judge: str
    stratum: str
    phase: VerdictPhase
    sentence: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"judge": self.judge, "stratum": self.stratum, "phase": self.phase.value,
                "sentence": self.sentence, "numbers": self.numbers}
