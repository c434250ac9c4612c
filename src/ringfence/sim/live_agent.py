"""A simulated agent: one endpoint's state and the update lifecycle's transitions, with no I/O.

:class:`SimulatedDevice` keeps the agent's own journal state (what runs, the last-known-good,
versions that failed here, the update in flight, the outbox) and changes it the way the agent
does, in the same order and with the same events::

    desired version differs -> (download, verified) -> ``intent`` -> acknowledged -> ``activated``
      -> trial (``heartbeat``) -> ``healthy``: LKG := new

and at every start: an unclean previous exit is reported as ``crash``; a version in trial booted
``boot_limit`` times goes back to the LKG (``auto_reverted``) before anything loads. Event ids
are ``<boot>-<seq>``, unique per device, and an event stays in the outbox until the server
acknowledges it. :mod:`ringfence.sim.live` does the waiting and the talking.

A :data:`FaultModel` decides what a version does on a device as it loads (:class:`FaultKind`);
:class:`FaultSpec` is the common case: one bad version on some platforms.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ringfence.agent.agent import MAX_EVENTS_PER_CHECKIN
from ringfence.agent.answers import Desired, revocations
from ringfence.agent.journal import State, Update, VersionRef
from ringfence.core.clock import Clock, SystemClock
from ringfence.core.errors import InvalidInput
from ringfence.core.models import PLATFORMS, EventKind

AGENT_VERSION = "sim-live"
OS_VERSIONS = {"windows": "11", "macos": "14.5", "linux": "6.8"}


class FaultKind(StrEnum):
    """How a bad version fails on a device that loads it: ``crash`` takes the host down, again at
    every boot, until the crash-loop guard reverts it; ``silent`` takes the host down for good (it
    never reports again); ``probe`` fails the trial's health probe."""

    CRASH = "crash"
    SILENT = "silent"
    PROBE = "probe"


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """What a device says about itself at enrolment."""

    platform: str
    region: str = ""
    os_version: str = ""
    arch: str = ""
    tags: tuple[str, ...] = ()

    def attributes(self) -> dict[str, Any]:
        return {"platform": self.platform, "region": self.region, "os_version": self.os_version, "arch": self.arch,
                "tags": list(self.tags), "agent_version": AGENT_VERSION}


def spread(n: int, *, platforms: Sequence[str] = PLATFORMS, regions: Sequence[str] = ("eu-west", "us-east"),
           archs: Sequence[str] = ("x86_64",), tags: Sequence[tuple[str, ...]] = ((),)) -> list[DeviceProfile]:
    """``n`` profiles cycling through every platform x region x arch x tag set, platform fastest,
    so every stratum gets its share (within one device) whatever ``n`` is. Devices with the same
    combination share one profile object."""
    combos = [DeviceProfile(p, r, OS_VERSIONS.get(p, ""), a, t)
              for t in tags for a in archs for r in regions for p in platforms]
    if not combos:
        raise InvalidInput("a spread needs at least one platform, region, arch and tag set", field="spread")
    return [combos[i % len(combos)] for i in range(n)]


FaultModel = Callable[[DeviceProfile, str, str], FaultKind | None]
"""(device, content type, version) -> how that version fails on that device, or None."""


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """A bad version: which one, on which (lower-case) platforms (empty: all), of which content
    type (None: any), and how it fails. A spec is a :data:`FaultModel`."""

    version: str
    kind: FaultKind = FaultKind.CRASH
    platforms: frozenset[str] = frozenset()
    content_type: str | None = None

    def __call__(self, profile: DeviceProfile, content_type: str, version: str) -> FaultKind | None:
        if version != self.version or self.content_type not in (None, content_type):
            return None
        if self.platforms and profile.platform.lower() not in self.platforms:
            return None
        return self.kind


class SimulatedDevice:
    """One endpoint: its profile, credential and the agent's journal state, and the lifecycle's
    transitions over them. No I/O and no waiting here (:class:`~ringfence.sim.live.LiveFleet` does
    both), so the transitions can be checked on their own. Events are tallied by kind in
    ``reported``, which a fleet shares among its devices."""

    __slots__ = ("attributes_sent", "clock", "crashes", "credential", "failures", "poll_interval_s", "profile",
                 "reported", "silent", "state")

    def __init__(self, profile: DeviceProfile, clock: Clock | None = None, reported: Counter[str] | None = None
                 ) -> None:
        self.profile = profile
        self.clock: Clock = clock or SystemClock()
        self.reported: Counter[str] = reported if reported is not None else Counter()
        self.state = State()
        self.credential: str | None = None
        self.poll_interval_s = 30.0
        self.failures = 0  # consecutive failed requests, for the backoff
        self.attributes_sent = False
        self.crashes = 0
        self.silent = False

    # -- reporting -------------------------------------------------------------------------------
    def event(self, kind: EventKind, content_type: str, version: str, **details: Any) -> str:
        event_id = self.state.next_event_id()
        self.state.queue({"id": event_id, "kind": kind.value, "content_type": content_type, "version": version,
                          "at": self.clock.now().isoformat(), "details": details})
        self.reported[kind.value] += 1
        return event_id

    def running(self) -> dict[str, str]:
        """The version switched in, per content type."""
        return {ct: c.active.version for ct, c in sorted(self.state.content.items()) if c.active is not None}

    def checkin_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "versions": {ct: (c.active.version if c.active else "") for ct, c in sorted(self.state.content.items())},
            "events": self.state.outbox[:MAX_EVENTS_PER_CHECKIN],
        }
        if not self.attributes_sent:
            body["attributes"] = self.profile.attributes()
        return body

    def answered(self, answer: dict[str, Any]) -> None:
        """A check-in came back: acknowledged events leave the outbox; the interval is obeyed."""
        self.failures = 0
        self.attributes_sent = True
        self.state.acknowledge({str(i) for i in answer.get("acked") or []})
        interval = answer.get("poll_interval_s")
        if isinstance(interval, int | float) and interval > 0:
            self.poll_interval_s = float(interval)

    def acknowledged(self, event_id: str | None) -> bool:
        return all(e["id"] != event_id for e in self.state.outbox)

    def updating(self) -> bool:
        return any(c.update is not None for c in self.state.content.values())

    # -- start-up --------------------------------------------------------------------------------
    def boot(self, boot_limit: int) -> list[str]:
        """Power on: an unclean previous exit is reported as ``crash``; then the crash-loop guard
        reverts a version in trial booted ``boot_limit`` times, or counts one more boot of it.
        Returns the content types whose trial resumes once the revocation check has run."""
        state = self.state
        unclean = not state.clean_exit
        state.boot += 1
        state.clean_exit = False
        if unclean:
            for ct, c in state.content.items():
                running = c.update.target if c.update is not None and c.update.switched else c.active
                if running is not None:
                    self.event(EventKind.CRASH, ct, running.version, reason="unclean exit found at start-up",
                               boot=state.boot - 1)
        resume: list[str] = []
        for ct, c in state.content.items():
            u = c.update
            if u is None or not u.switched:
                continue
            if u.boots >= boot_limit:
                self.revert(ct, u.target.version, c.lkg, f"crash-loop guard: {ct} {u.target.version} was booted "
                            f"{u.boots} times without passing its trial", EventKind.AUTO_REVERTED)
            else:
                c.active = u.target
                u.step = "trial"
                u.boots += 1  # before the content loads
                resume.append(ct)
        return resume

    def honour_revocations(self, revoked: dict[str, Any], *, at_start: bool = False) -> None:
        for r in revocations(self.state, revoked, at_start=at_start):
            self.revert(r.content_type, r.version, r.back, r.reason, EventKind.RECALLED)

    # -- the update lifecycle ----------------------------------------------------------------------
    def follow_rollback(self, desired: Desired) -> None:
        leaving = desired.rollback_from
        c = self.state.of(desired.content_type)
        if c.update is not None and c.update.target.version == leaving and not c.update.switched:
            c.update = None
        if leaving is None or c.active is None or c.active.version != leaving:
            return
        self.revert(desired.content_type, leaving, c.way_back(leaving, {leaving}),
                    "the server rolled the release back", EventKind.RECALLED)

    def begin(self, desired: Desired) -> Update | None:
        """The update towards ``desired`` (a new one, or the one already under way); None while
        a trial runs."""
        assert desired.version is not None
        ref = VersionRef(desired.version, desired.sha256)
        c = self.state.of(desired.content_type)
        if c.update is not None and c.update.switched:
            return None
        if c.update is None or c.update.target != ref:
            c.update = Update(target=ref, release=desired.release, size=desired.size,
                              started_at=self.clock.now().isoformat())
        return c.update

    def holds(self, content_type: str, ref: VersionRef) -> bool:
        """Whether the version is still on the device (active or a way back): no download needed."""
        c = self.state.of(content_type)
        return ref in (c.active, c.lkg, *c.history)

    def bad_download(self, content_type: str, reason: str, max_failures: int) -> None:
        """A download that arrived wrong; after ``max_failures`` the version is given up here."""
        c = self.state.of(content_type)
        u = c.update
        assert u is not None
        u.download_failures += 1
        if u.download_failures < max_failures:
            self.event(EventKind.FAILED, content_type, u.target.version, reason=reason, step="download")
            return
        c.blocked[u.target.version] = reason
        c.update = None
        self.event(EventKind.FAILED, content_type, u.target.version, reason=reason, step="download", final=True)

    def announce(self, content_type: str) -> None:
        c = self.state.of(content_type)
        u = c.update
        assert u is not None
        u.intent_id = self.event(EventKind.INTENT, content_type, u.target.version, release=u.release,
                                 lkg=c.lkg.version if c.lkg else None)
        u.step = "intent"

    def activate(self, content_type: str) -> None:
        c = self.state.of(content_type)
        u = c.update
        assert u is not None
        u.boots = 1  # the boot counter goes up before the content loads
        c.active = u.target
        u.step = "trial"
        self.event(EventKind.ACTIVATED, content_type, u.target.version, release=u.release)

    def commit(self, content_type: str, keep: int) -> None:
        c = self.state.of(content_type)
        u = c.update
        assert u is not None
        c.commit(u.target, keep=keep)
        self.event(EventKind.HEALTHY, content_type, u.target.version, release=u.release, boots=u.boots,
                   probe="simulated probe passed")

    def revert(self, content_type: str, leaving: str, back: VersionRef | None, reason: str, kind: EventKind) -> None:
        """Leave ``leaving`` for ``back`` (None: no content); ``leaving`` is never tried again."""
        c = self.state.of(content_type)
        boots = c.update.boots if c.update is not None and c.update.target.version == leaving else 0
        c.reverted(leaving, back, reason)
        self.event(kind, content_type, leaving, reason=reason, to=back.version if back else None, boots=boots)


def stopped_asking(answer: dict[str, Any], content_type: str, version: str) -> bool:
    """Whether the server stopped asking for ``version`` (while its intent was being sent)."""
    still = (answer.get("desired") or {}).get(content_type) or {}
    revoked = (answer.get("revoked") or {}).get(content_type) or {}
    return bool(still.get("version") != version or still.get("rollback_from") or revoked)


def recalled(answer: dict[str, Any], content_type: str, version: str) -> bool:
    """Whether the server revoked or rolled back ``version`` (while it was in trial)."""
    revoked = (answer.get("revoked") or {}).get(content_type) or {}
    desired = (answer.get("desired") or {}).get(content_type) or {}
    return bool(revoked.get("version") == version or desired.get("rollback_from") == version)
