"""``fuzz``: the content and seeded mutations of it through the reference consumer.

A document that loads today can be one edit away from a crash: in 2024, instances with a wildcard
on the 21st field loaded for months; the first one with a concrete value there crashed every
sensor. This validator makes those edits itself — wildcards turned into values, indexes shifted up
by one, criteria dropped, instances duplicated — and loads each result into every covered consumer
version on a platform where the template type is interpreted. A crash (death by signal) fails,
naming the mutation; a refusal (a non-zero exit) is the consumer doing its job; a hang is an
error. The content as given is mutation ``original``; where it already crashes a consumer, the
mutations that crash the same consumer are not reported again. Mutations are chosen with a seeded
random generator, so a run is repeatable.
"""

from __future__ import annotations

import copy
import json
import random
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ringfence.core.models import PLATFORMS
from ringfence.validation import channel
from ringfence.validation.consumer import ConsumerInterface, Outcome, run_check
from ringfence.validation.results import ValidationResult
from ringfence.validation.validator import Context


@dataclass(frozen=True)
class Mutation:
    """A changed copy of the document; ``templates`` are the template types the change touches."""

    name: str
    document: dict[str, Any]
    templates: tuple[str, ...]


def mutations(doc: dict[str, Any], seed: int, limit: int) -> list[Mutation]:
    """The original document, then up to ``limit`` mutations of it: every wildcard-to-value first (the
    2024 edit), then the others, each group in a seeded random order."""
    instances = [i for i in doc.get("instances", []) if isinstance(i, dict) and isinstance(i.get("criteria"), dict)]
    rng = random.Random(seed)
    risky, other = list(_wildcards(doc, instances)), list(_others(doc, instances))
    rng.shuffle(risky)
    rng.shuffle(other)
    every_template = tuple(str(t) for t in doc.get("template_types", {}))
    return [Mutation("original", doc, every_template), *(risky + other)[:limit]]


def _changed(doc: dict[str, Any], position: int, instance: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["instances"][position] = instance
    return out


def _position(doc: dict[str, Any], instance: dict[str, Any]) -> int:
    return next(p for p, item in enumerate(doc["instances"]) if item is instance)


def _wildcards(doc: dict[str, Any], instances: list[dict[str, Any]]) -> Iterator[Mutation]:
    for item in instances:
        for key, pattern in item["criteria"].items():
            if pattern == channel.WILDCARD:
                changed = copy.deepcopy(item)
                changed["criteria"][key] = f"fuzz-{key}"
                yield Mutation(f"wildcard-to-value: instance {item.get('id')} field {key}",
                               _changed(doc, _position(doc, item), changed), (str(item.get("template")),))


def _others(doc: dict[str, Any], instances: list[dict[str, Any]]) -> Iterator[Mutation]:
    for item in instances:
        position, template, name = _position(doc, item), (str(item.get("template")),), item.get("id")
        criteria = item["criteria"]
        if criteria and all(isinstance(k, str) and k.isdigit() for k in criteria):
            shifted = {**copy.deepcopy(item), "criteria": {str(int(k) + 1): v for k, v in criteria.items()}}
            yield Mutation(f"shift-indexes-up: instance {name}", _changed(doc, position, shifted), template)
        for key in criteria:
            dropped = copy.deepcopy(item)
            del dropped["criteria"][key]
            yield Mutation(f"drop-field: instance {name} field {key}", _changed(doc, position, dropped), template)
        duplicated = copy.deepcopy(doc)
        duplicated["instances"].append({**copy.deepcopy(item), "id": f"{name}-copy"})
        yield Mutation(f"duplicate-instance: instance {name}", duplicated, template)


def _platforms(interface: ConsumerInterface, version: str, templates: Sequence[str]) -> list[str]:
    """One platform per template type touched: the first where this version interprets it."""
    found = [interface.versions.get(version, {}).get(t) for t in templates]
    chosen = {support.platforms[0] for support in found if support is not None and support.platforms}
    return sorted(chosen) or [PLATFORMS[0]]


class FuzzValidator:
    name = "fuzz"

    def __call__(self, context: Context) -> Sequence[ValidationResult]:
        consumer, limits = context.consumer, context.limits
        try:
            doc = context.document()
        except channel.ContentUnreadable as exc:
            return [ValidationResult(self.name, None, "failed", f"artifact is unreadable: {exc}")]
        if not isinstance(doc, dict):
            return [ValidationResult(self.name, None, "failed", "artifact is not a JSON object; nothing to mutate")]
        interface = context.interface()
        plan = mutations(doc, limits.fuzz_seed, limits.fuzz_mutations)
        with tempfile.TemporaryDirectory(prefix="ringfence-fuzz-") as tmp:
            runs: list[tuple[Mutation, str, str, Path]] = []
            for number, mutation in enumerate(plan):
                path = Path(tmp) / f"{number:04d}.json"
                path.write_text(json.dumps(mutation.document), encoding="utf-8")
                runs.extend((mutation, version, platform, path) for version in context.versions
                            for platform in _platforms(interface, version, mutation.templates))

            def one(run: tuple[Mutation, str, str, Path]) -> Outcome:
                _, version, platform, path = run
                return run_check(consumer, context.definition.base_dir, path, {"os": platform, "version": version})

            with ThreadPoolExecutor(max_workers=limits.fuzz_workers) as pool:
                outcomes = list(pool.map(one, runs))

        results: list[ValidationResult] = []
        refused = 0
        # Where the content as given already crashes, a mutation that crashes too says nothing new.
        broken = {(version, platform) for (mutation, version, platform, _), outcome in zip(runs, outcomes, strict=True)
                  if mutation.name == "original" and outcome.signal_name is not None}
        for (mutation, version, platform, _), outcome in zip(runs, outcomes, strict=True):
            if mutation.name != "original" and (version, platform) in broken and outcome.signal_name is not None:
                continue
            where = f"{consumer.name} {version} on {platform}"
            details = {"mutation": mutation.name, "version": version, "platform": platform,
                       "seed": limits.fuzz_seed, **outcome.as_dict()}
            if outcome.timed_out:
                results.append(ValidationResult(self.name, mutation.name, "error",
                                                f"{mutation.name} hangs {where} (no answer within"
                                                f" {consumer.timeout_s:g}s)", details))
            elif outcome.signal_name is not None:
                results.append(ValidationResult(self.name, mutation.name, "failed",
                                                f"{mutation.name} crashes {where} (killed by {outcome.signal_name}):"
                                                f" {outcome.last_words}", details))
            elif outcome.returncode != 0:
                refused += 1
        if not results:
            results.append(ValidationResult(
                self.name, None, "passed",
                f"{len(runs)} loads of the content and {len(plan) - 1} mutations into {consumer.name}"
                f" {', '.join(context.versions)}: no crash, no hang ({refused} refused, as they should be)",
                {"runs": len(runs), "mutations": [m.name for m in plan[1:]], "refused": refused,
                 "seed": limits.fuzz_seed}))
        return results
