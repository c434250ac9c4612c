"""``command``: programs the content type's owners run on every artifact (a linter, a compiler).
Exit 0 passes; any other exit fails; a program that outlives its timeout is an error."""

from __future__ import annotations

from collections.abc import Sequence

from ringfence.validation.consumer import expand, run_process
from ringfence.validation.results import ValidationResult
from ringfence.validation.validator import Context


class CommandValidator:
    name = "command"

    def __call__(self, context: Context) -> Sequence[ValidationResult]:
        results: list[ValidationResult] = []
        for check in context.definition.validators.commands:
            argv = expand(check.argv, {"artifact": str(context.artifact.resolve())})
            outcome = run_process(argv, context.definition.base_dir, check.timeout_s)
            details = outcome.as_dict()
            if outcome.timed_out:
                results.append(ValidationResult(self.name, check.name, "error",
                                                f"{check.name} did not finish within {check.timeout_s:g}s", details))
            elif outcome.returncode != 0:
                how = (f"was killed by {outcome.signal_name}" if outcome.signal_name
                       else f"exited {outcome.returncode}")
                results.append(ValidationResult(self.name, check.name, "failed",
                                                f"{check.name} {how}: {outcome.last_words}".rstrip(": "), details))
            else:
                results.append(ValidationResult(self.name, check.name, "passed", f"{check.name} exited 0", details))
        return results
