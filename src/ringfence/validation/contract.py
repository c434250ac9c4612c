"""``contract``: the content asks only for what every covered consumer version supplies.

The check the 2024 incident lacked. For every non-wildcard criterion (a wildcard reads nothing), the
template type must exist in every covered consumer version, and the field it reads must be one that
version supplies. A template type that *declares* more fields than a version supplies, where only
wildcards touch the extra fields, is a warning in the details — it loads today, and one concrete
criterion later it does not (the fuzz validator shows that).
"""

from __future__ import annotations

from collections.abc import Sequence

from ringfence.validation import channel
from ringfence.validation.consumer import ConsumerInterface
from ringfence.validation.results import ValidationResult
from ringfence.validation.validator import Context


def ordinal(n: int) -> str:
    """1 -> 1st, 2 -> 2nd, 11 -> 11th, 21 -> 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _fields(count: int) -> str:
    return f"{count} field{'s' if count != 1 else ''} ({'none' if count == 0 else f'0-{count - 1}'})"


def check_contract(document: channel.ChannelDocument, interface: ConsumerInterface, versions: Sequence[str],
                   consumer: str = "consumer") -> list[ValidationResult]:
    """The contract verdicts for a parsed document: pure, so it is tested without processes."""
    name = "contract"
    known = [v for v in versions if v in interface.versions]
    results = [ValidationResult(name, f"{consumer} {version}", "error",
                                f"{consumer} {version} is a covered version, but {consumer} describes only"
                                f" {', '.join(interface.versions) or 'no versions'}: its interface is unknown")
               for version in versions if version not in interface.versions]
    seen: set[tuple[str, int]] = set()
    for ref in document.references:
        if ref.wildcard or (ref.instance, ref.index) in seen:
            continue
        seen.add((ref.instance, ref.index))
        gaps: list[str] = []
        missing: dict[str, int | None] = {}
        for version in known:
            support = interface.versions[version].get(ref.template)
            if support is None:
                gaps.append(f"{consumer} {version} does not know template {ref.template}")
                missing[version] = None
            elif ref.index >= support.fields:
                gaps.append(f"{consumer} {version} supplies only {_fields(support.fields)} for {ref.template}")
                missing[version] = support.fields
        if gaps:
            results.append(ValidationResult(
                name, ref.instance, "failed",
                f"instance {ref.instance} of template {ref.template} reads field {ref.index}"
                f" (the {ordinal(ref.index + 1)}), but {', and '.join(gaps)}",
                {"instance": ref.instance, "template": ref.template, "field": ref.index,
                 "versions_missing_it": sorted(missing), "supplied": missing}))
    if not any(r.status == "failed" for r in results):
        warnings = _declared_beyond_supply(document, interface, known, consumer)
        tail = f" ({len(warnings)} warning{'s' if len(warnings) != 1 else ''}: {'; '.join(warnings)})" if warnings \
            else ""
        results.append(ValidationResult(
            name, None, "passed",
            f"every criterion reads a field that {consumer} {', '.join(known)} supply{tail}",
            {"warnings": warnings, "versions": list(known)}))
    return results


def _declared_beyond_supply(document: channel.ChannelDocument, interface: ConsumerInterface,
                            versions: Sequence[str], consumer: str) -> list[str]:
    warnings: list[str] = []
    for template, declared in sorted(document.declared.items()):
        for version in versions:
            support = interface.versions[version].get(template)
            if support is not None and declared > support.fields:
                warnings.append(
                    f"template {template} declares {declared} fields but {consumer} {version} supplies"
                    f" {support.fields}; only wildcards touch field {support.fields}"
                    f"{'' if declared == support.fields + 1 else f'-{declared - 1}'} today")
    return warnings


class ContractValidator:
    name = "contract"

    def __call__(self, context: Context) -> Sequence[ValidationResult]:
        if context.definition.format != "sample-channel":
            return [ValidationResult(self.name, None, "error",
                                     f"format {context.definition.format} does not say which fields its content "
                                     "reads; the contract validator needs sample-channel")]
        try:
            document = channel.parse(context.document())
        except channel.ContentUnreadable as exc:
            return [ValidationResult(self.name, None, "failed", f"artifact is unreadable: {exc}")]
        return check_contract(document, context.interface(), context.versions, context.consumer.name)
