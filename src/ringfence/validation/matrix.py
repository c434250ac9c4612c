"""``matrix``: the artifact through the real consumer on every platform target.

Each target is one process: the consumer's ``check`` command configured for that target's OS and
consumer version. A target passes only when the process loaded the content and exited 0. Killed by
a signal (the 2024 crash) or refusing the content fails it; a hang is an error. Every declared
target gets a result: a target that was not run is not a pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from ringfence.validation.consumer import Outcome, run_check
from ringfence.validation.definition import PlatformTarget
from ringfence.validation.results import ValidationResult
from ringfence.validation.validator import Context


def verdict(target: PlatformTarget, outcome: Outcome, consumer: str, timeout_s: float) -> ValidationResult:
    """A target's result from how its consumer process ended."""
    details = {"target": target.model_dump(), **outcome.as_dict()}
    where = f"{consumer} {target.consumer_version} on {target.os} {target.os_version} {target.arch}"
    if outcome.timed_out:
        return ValidationResult("matrix", target.label, "error", f"{where} hung: no answer within {timeout_s:g}s",
                                details)
    if outcome.signal_name is not None:
        return ValidationResult("matrix", target.label, "failed",
                                f"{where} crashed (killed by {outcome.signal_name}): {outcome.last_words}", details)
    if outcome.returncode != 0:
        return ValidationResult("matrix", target.label, "failed",
                                f"{where} refused the content (exit {outcome.returncode}): {outcome.last_words}",
                                details)
    return ValidationResult("matrix", target.label, "passed", f"{where} loaded the content", details)


class MatrixValidator:
    name = "matrix"

    def __call__(self, context: Context) -> Sequence[ValidationResult]:
        consumer, targets = context.consumer, context.definition.targets
        if not targets:
            return [ValidationResult(self.name, None, "error", "no platform targets are declared")]

        def one(target: PlatformTarget) -> ValidationResult:
            values = {"os": target.os, "os_version": target.os_version, "arch": target.arch,
                      "version": target.consumer_version}
            outcome = run_check(consumer, context.definition.base_dir, context.artifact, values)
            return verdict(target, outcome, consumer.name, consumer.timeout_s)

        with ThreadPoolExecutor(max_workers=context.limits.matrix_workers) as pool:
            return list(pool.map(one, targets))
