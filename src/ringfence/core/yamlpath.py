"""YAML documents validated as a whole: every problem with its dotted field and its line."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import ValidationError

from ringfence.core.errors import DocumentError, PlanProblem


def load_document(text: str, source: str, error: type[DocumentError],
                  what: str) -> tuple[yaml.Node | None, dict[str, Any]]:
    """The composed node tree (for lines) and the data of a YAML mapping; ``error`` when the text
    is not YAML or not a mapping (``what`` says what the mapping should hold)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise error([PlanProblem("<yaml>", f"not valid YAML: {problem}",
                                 mark.line + 1 if mark is not None else None)], source) from None
    if not isinstance(data, dict):
        raise error([PlanProblem("<document>", f"must be a mapping with {what}", 1)], source)
    return root, data


def model_problems(exc: ValidationError, root: yaml.Node | None) -> list[PlanProblem]:
    """A model's validation errors as problems naming field and line."""
    problems = []
    for item in exc.errors():
        path = [str(p) for p in item["loc"]]
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        elif item["type"] == "missing":
            message = "required field is missing"
        problems.append(PlanProblem(".".join(path) or "<document>", message, line_of(root, path)))
    return problems


def line_of(node: yaml.Node | None, path: Sequence[str]) -> int | None:
    """The 1-based line of the node at ``path`` (mapping keys and list indexes as strings) in the
    composed document ``node``, or of its nearest existing parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in path:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
        else:
            node = None
        if node is None:
            break
        line = node.start_mark.line + 1
    return line
