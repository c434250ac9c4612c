"""Request bodies of the HTTP API (responses are plain JSON objects documented per route)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ringfence.core.models import EventKind


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContentTypeIn(_Strict):
    name: str = Field(max_length=128)
    category: str
    definition: str | None = Field(default=None, max_length=256_000,
                                   description="the YAML text of the content-type definition")
    definition_dir: str | None = Field(default=None, max_length=1000,
                                       description="absolute directory on the server where its consumer runs")
    team: str | None = Field(default=None, max_length=128, description="the owning team (default: the caller's)")
    unvalidated_reason: str | None = Field(default=None, max_length=2000,
                                           description="why a content type without a definition is registered "
                                                       "without validation")


class DefinitionIn(_Strict):
    definition: str = Field(max_length=256_000, description="the YAML text of the content-type definition")
    definition_dir: str = Field(max_length=1000,
                                description="absolute directory on the server where its consumer runs")


class ReleaseIn(_Strict):
    content_type: str
    version: str
    plan: str = Field(description="the plan file's YAML text", max_length=256_000)
    plan_origin: str = Field(default="<plan>", max_length=500, description="file name used in messages")


class ReasonIn(_Strict):
    reason: str = Field(default="", max_length=2000)
    emergency: bool = Field(default=False, description="start despite failed validation (needs a reason)")


class EnrollTokenIn(_Strict):
    tenant: str = Field(default="default", max_length=200)


class AttributesIn(_Strict):
    platform: str = Field(min_length=1, max_length=64)
    os_version: str = Field(default="", max_length=64)
    arch: str = Field(default="", max_length=32)
    region: str = Field(default="", max_length=64)
    channel: str = Field(default="ga", max_length=32)
    tags: list[str] = Field(default_factory=list, max_length=64)
    agent_version: str = Field(default="", max_length=64)


class EventIn(_Strict):
    id: str = Field(min_length=1, max_length=64, description="unique per device; retries reuse it")
    kind: EventKind
    content_type: str = Field(max_length=128)
    version: str = Field(max_length=128)
    at: datetime
    details: dict[str, Any] = Field(default_factory=dict)


class CheckInIn(_Strict):
    sequence: int | None = Field(default=None, ge=1, le=2**62, description="increases with every check-in of "
                                 "the device; once a device sends it, a check-in without a newer one is refused")
    attributes: AttributesIn | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    events: list[EventIn] = Field(default_factory=list)


class RevocationsIn(_Strict):
    versions: dict[str, str] = Field(description="content type -> the version the device is about to load",
                                     max_length=256)


class ApprovalIn(_Strict):
    reason: str = Field(default="", max_length=2000)
    emergency: bool = Field(default=False, description="approve the emergency path (for somebody else to take)")


class PlanIn(_Strict):
    plan: str = Field(max_length=256_000, description="the YAML text of the new plan")
    plan_origin: str = Field(default="<plan>", max_length=500, description="file name used in messages")


class FreezeIn(_Strict):
    team: str | None = Field(default=None, max_length=128, description="the team frozen; none: everyone")
    starts_at: datetime | None = Field(default=None, description="default: now")
    ends_at: datetime | None = None
    hours: float | None = Field(default=None, gt=0, le=24 * 90, description="length, instead of ends_at")
    reason: str = Field(max_length=2000)

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone (e.g. 2026-12-24T00:00:00Z)")
        return value


class TeamIn(_Strict):
    name: str = Field(max_length=128)


class TokenIn(_Strict):
    name: str | None = Field(default=None, max_length=200,
                             description="the person or service account (default: named after the role)")
    role: str
    team: str | None = Field(default=None, max_length=128)
    tenant: str | None = Field(default=None, max_length=200)
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)
