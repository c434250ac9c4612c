"""The domain's exception tree. The server maps each leaf to one HTTP status and the CLI to
one exit code (see ``server/errors.py`` and ``cli/client.py``); a test pins both mappings.

    RingfenceError
     ├── InvalidInput          bad value from a caller: names the field and the value    -> 400
     │    └── PlanError        a plan file that does not validate: field and line        -> 400
     ├── Unauthorized          missing or wrong credential                               -> 401
     ├── Forbidden             credential is valid but may not do this                   -> 403
     ├── NotFound              unknown release, artifact, content type, device           -> 404
     ├── Conflict              already exists, or lost a race for the same rollout       -> 409
     │    ├── TransitionRejected  a rule refused a phase change, with its reason         -> 409
     │    └── ReplayedCheckIn  a device's check-in that is not newer than its last one   -> 409
     ├── PayloadTooLarge       upload over the configured limit                          -> 413
     └── Unavailable           the database or another dependency cannot be reached      -> 503
"""

from __future__ import annotations

from typing import Any


class RingfenceError(Exception):
    """Base of every error Ringfence raises on purpose."""

    code = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details


class InvalidInput(RingfenceError):
    code = "invalid_input"


class DocumentError(InvalidInput):
    """A YAML document (plan, scenario, content-type definition) that does not validate.
    ``problems`` lists every issue found, each with the dotted field path and the 1-based line
    in the source file (None when unknown)."""

    code = "invalid_document"

    def __init__(self, problems: list[PlanProblem], source: str = "<plan>") -> None:
        self.problems = problems
        self.source = source
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(
            f"{source}:{first.line or '?'}: {first.field}: {first.message}{more}",
            problems=[p.as_dict() for p in problems],
        )


class PlanError(DocumentError):
    """A plan that does not validate."""

    code = "invalid_plan"


class PlanProblem:
    __slots__ = ("field", "line", "message")

    def __init__(self, field: str, message: str, line: int | None) -> None:
        self.field = field
        self.message = message
        self.line = line

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "line": self.line, "message": self.message}

    def __str__(self) -> str:
        return f"line {self.line or '?'}: {self.field}: {self.message}"


class Unauthorized(RingfenceError):
    code = "unauthorized"


class Forbidden(RingfenceError):
    code = "forbidden"


class NotFound(RingfenceError):
    code = "not_found"


class Conflict(RingfenceError):
    code = "conflict"


class TransitionRejected(Conflict):
    code = "transition_rejected"


class ReplayedCheckIn(Conflict):
    code = "replayed_checkin"


class PayloadTooLarge(RingfenceError):
    code = "payload_too_large"


class Unavailable(RingfenceError):
    code = "unavailable"
