"""Ringfence's default plans, one per kind of content (also in ``examples/plans/``)."""

from __future__ import annotations

from importlib import resources

from ringfence.core.models import Category
from ringfence.core.plan import Plan, parse_plan

DEFAULT_PLAN = {
    Category.RAPID_RESPONSE: "rapid-content",
    Category.SYSTEM_CRITICAL: "rapid-content",
    Category.CONFIGURATION: "rapid-content",
    Category.SOFTWARE: "conservative-software",
}


def plan_text(name: str) -> str:
    return resources.files("ringfence.plans").joinpath(f"{name}.yaml").read_text("utf-8")


def default_plan(category: Category) -> Plan:
    """The default plan for content of ``category``, with that category's health defaults."""
    name = DEFAULT_PLAN[category]
    return parse_plan(plan_text(name), f"default plan {name}", category)
