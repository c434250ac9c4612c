"""A live fleet: hundreds to thousands of simulated agents in one process, speaking the real agent
protocol to a real server over HTTP.

The offline simulator models a fleet in arrays against the engine; this fleet models it against
the server itself, so the two can be checked against each other and a demo can show a real control
plane at work. Each device is a :class:`~ringfence.sim.live_agent.SimulatedDevice` (the agent's
state and transitions) driven by one asyncio task here, which does what the agent's loop does::

    check in -> desired version differs -> download by URL, verify sha256 and size as it streams
      -> ``intent`` sent on check-ins until the server acknowledges it -> ``activated``
      -> trial: heartbeats every ``heartbeat_s`` for ``trial_s`` -> ``healthy``

Faults (:class:`~ringfence.sim.live_agent.FaultKind`) show as the version loads:

* ``crash``: the host goes down ``crash_after_s`` after loading and is back ``reboot_s`` later.
  Each start reports ``crash``; once the version has been booted ``boot_limit`` times, the
  crash-loop guard returns to the LKG before loading anything and reports ``auto_reverted``,
  without the server.
* ``silent``: the host goes down the same way and never comes back. It says nothing again: only
  silence tells (the 2024 signature).
* ``probe``: the trial's health probe fails: ``probe_failed``, then back to the LKG with
  ``rolled_back``. (The agent folds both into one ``rolled_back`` naming the probe; the server
  counts failed devices, not events, so its tallies agree.)

Devices obey the server as the agent does: ``rollback_from`` (back to the LKG, ``rolled_back``),
``revoked`` (leave the version; also asked at every start, before loading), and
``poll_interval_s`` with +-10 % jitter, which is all a placebo device needs.

Guarantees: a device activates a version only once the server acknowledged its intent (unless the
plan allows otherwise), and every event it queued reaches the server once the server answers —
unless its device went silent. Time is real, as the server's is; :class:`FleetConfig` scales it
down. All devices share one HTTP connection pool of ``max_connections``.

Errors that stop a fleet from starting::

    LiveFleetError
    ├── ServerUnreachable   the server did not answer the first enrolment
    └── EnrolmentRefused    the server refused the enrolment token
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from ringfence.agent.answers import Desired, parse_desired
from ringfence.agent.journal import Update
from ringfence.agent.lifecycle import next_delay
from ringfence.agent.transport import Rejected, TransportError, Unauthorized, Unreachable, answer, classify
from ringfence.core.clock import Clock, SystemClock
from ringfence.core.errors import InvalidInput
from ringfence.core.models import EventKind
from ringfence.sim.live_agent import (
    DeviceProfile,
    FaultKind,
    FaultModel,
    FaultSpec,
    SimulatedDevice,
    recalled,
    spread,
    stopped_asking,
)

__all__ = ["DeviceProfile", "EnrolmentRefused", "FaultKind", "FaultModel", "FaultSpec", "FleetConfig",
           "FleetCounters", "LiveFleet", "LiveFleetError", "ServerUnreachable", "SimulatedDevice", "spread"]

log = logging.getLogger("ringfence.sim.live")


class LiveFleetError(Exception):
    """The fleet cannot start; the message says why in one line."""


class ServerUnreachable(LiveFleetError):
    pass


class EnrolmentRefused(LiveFleetError):
    pass


class _HostCrash(Exception):
    """The simulated host went down: the device's task unwinds to its power switch."""

    def __init__(self, kind: FaultKind) -> None:
        super().__init__(kind.value)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """The agents' settings, with the real agent's defaults; shorten the times to speed a fleet
    up. ``poll_bounds_s`` clamps the interval the server asks for (jitter is applied after);
    ``ramp_s`` spreads the devices' first start so they do not all arrive at once."""

    trial_s: float = 10.0
    heartbeat_s: float = 5.0
    poll_bounds_s: tuple[float, float] = (1.0, 3600.0)
    jitter: float = 0.1
    boot_limit: int = 2
    crash_after_s: float = 0.0  # a crash comes this long after loading (at most half-way through the trial)
    reboot_s: float = 2.0
    ramp_s: float = 1.0
    request_timeout_s: float = 10.0
    revocation_timeout_s: float = 2.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    max_download_bytes: int = 1 << 30
    max_download_failures: int = 3
    keep: int = 3
    max_connections: int = 16
    keepalive_s: float = 2.0  # idle connections close this soon: before the server closes them (uvicorn: 5 s)

    def __post_init__(self) -> None:
        low, high = self.poll_bounds_s
        checks = [("trial_s", self.trial_s > 0, "positive"), ("heartbeat_s", self.heartbeat_s > 0, "positive"),
                  ("poll_bounds_s", 0 < low <= high, "a positive minimum no larger than the maximum"),
                  ("jitter", 0 <= self.jitter < 1, "in [0, 1)"), ("boot_limit", self.boot_limit >= 1, "at least 1"),
                  ("crash_after_s", self.crash_after_s >= 0, "zero or more"),
                  ("reboot_s", self.reboot_s >= 0, "zero or more"), ("ramp_s", self.ramp_s >= 0, "zero or more"),
                  ("request_timeout_s", self.request_timeout_s > 0, "positive"),
                  ("max_connections", self.max_connections >= 1, "at least 1"),
                  ("keepalive_s", self.keepalive_s >= 0, "zero or more")]
        for name, ok, requirement in checks:
            if not ok:
                value = getattr(self, name)
                raise InvalidInput(f"{name} must be {requirement}, not {value!r}", field=name, value=value)


@dataclass(slots=True)
class FleetCounters:
    """Running totals; :meth:`LiveFleet.report` adds what is read off the devices."""

    enrolled: int = 0
    checkins: int = 0
    errors: int = 0  # requests without a usable answer (unreachable, timed out, 5xx, refused)
    refused: int = 0  # of those, answered 4xx: the request will not succeed as sent
    downloads: int = 0  # artifacts downloaded and verified
    crashes: int = 0  # hosts that went down
    events: Counter[str] = field(default_factory=Counter)  # events queued, by kind


class LiveFleet:
    """N simulated agents, one asyncio task each, sharing one HTTP connection pool.

    ``devices`` is a count (spread over platforms and regions by :func:`spread`) or the profiles
    themselves. ``fault`` decides which versions fail where (a :class:`FaultSpec` or any
    :data:`FaultModel`). Use ``await fleet.run(seconds)``, ``async with fleet:``, or
    :meth:`start` / :meth:`stop`; :meth:`report` may be read at any time.

    One process drives on the order of 200 requests a second (the HTTP client's own work
    dominates). Keep ``devices / poll interval`` well below that: a fleet past it stays correct —
    every event still arrives — but checks in later than the server asked.
    """

    def __init__(self, server_url: str, enroll_token: str, devices: int | Sequence[DeviceProfile] = 100, *,
                 fault: FaultModel | None = None, config: FleetConfig | None = None, clock: Clock | None = None,
                 seed: int | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        profiles = spread(devices) if isinstance(devices, int) else list(devices)
        if not profiles:
            raise InvalidInput("a fleet needs at least one device", field="devices", value=0)
        self.server_url = server_url.rstrip("/")
        self.enroll_token = enroll_token
        self.fault = fault
        self.config = config or FleetConfig()
        self.counters = FleetCounters()
        clock = clock or SystemClock()
        self.devices = [SimulatedDevice(p, clock, self.counters.events) for p in profiles]
        self._rng = random.Random(seed)
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._gate: asyncio.Semaphore | None = None
        self._timeout = httpx.Timeout(self.config.request_timeout_s, pool=None)
        self._tasks: list[asyncio.Task[None]] = []
        self._started: float | None = None
        self._stopped: float | None = None

    # -- running ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Enrol the first device (so a wrong URL or token fails here, with its reason), then
        power every device on; each joins after a random delay within ``ramp_s``. A fleet started
        again after :meth:`stop` keeps its devices: each reports the power cut as a crash."""
        if self._http is not None:
            raise RuntimeError("the fleet is already running")
        cfg = self.config
        self._http = httpx.AsyncClient(
            base_url=self.server_url, transport=self._transport, headers={"user-agent": "ringfence-sim-live"},
            # A connection reused just as the server closes it for idling fails the request: let
            # idle connections go first.
            limits=httpx.Limits(max_connections=cfg.max_connections, max_keepalive_connections=cfg.max_connections,
                                keepalive_expiry=cfg.keepalive_s),
            timeout=self._timeout)
        self._gate = asyncio.Semaphore(cfg.max_connections)  # bound to this event loop
        try:
            if self.devices[0].credential is None:
                await self._enroll(self.devices[0])
        except Unauthorized as exc:
            await self._close()
            raise EnrolmentRefused(f"enrolment refused: {exc.message}") from None
        except Rejected as exc:
            await self._close()
            raise LiveFleetError(f"enrolment refused: {exc.message}") from None
        except Unreachable as exc:
            await self._close()
            raise ServerUnreachable(f"cannot reach the Ringfence server at {self.server_url}: {exc}") from None
        self._started, self._stopped = time.monotonic(), None
        self._tasks = [asyncio.create_task(self._life(d, self._rng.uniform(0, cfg.ramp_s) if i else 0.0),
                                           name=f"device-{i}") for i, d in enumerate(self.devices)]
        for task in self._tasks:
            task.add_done_callback(self._died)

    async def stop(self) -> None:
        """Switch every device off at once (what it queued stays queued) and close the pool. A
        device that failed by a bug in the simulation re-raises its error here."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await self._close()
        if self._started is not None and self._stopped is None:
            self._stopped = time.monotonic()
        broken = next((r for r in results if isinstance(r, Exception)), None)
        if broken is not None:
            raise broken

    async def run(self, duration_s: float | None = None) -> dict[str, Any]:
        """Run for ``duration_s`` seconds (None: until cancelled); returns :meth:`report`."""
        await self.start()
        try:
            if duration_s is None:
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(duration_s)
        finally:
            await self.stop()
        return self.report()

    async def __aenter__(self) -> LiveFleet:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _died(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s stopped by an error in the simulation: %r", task.get_name(), task.exception())

    # -- what the fleet did ----------------------------------------------------------------------
    def versions(self) -> dict[str, dict[str, int]]:
        """How many devices run each version, per content type (devices without content left out)."""
        found: defaultdict[str, Counter[str]] = defaultdict(Counter)
        for d in self.devices:
            for ct, version in d.running().items():
                found[ct][version] += 1
        return {ct: dict(sorted(n.items())) for ct, n in sorted(found.items())}

    def report(self) -> dict[str, Any]:
        """The counters as one JSON-ready object. ``crashed`` and ``silent`` count devices; the
        event counts (``auto_reverted``, ``rolled_back``, ``recalled``, ...) count reports queued."""
        c, events = self.counters, self.counters.events
        elapsed = 0.0 if self._started is None else (self._stopped or time.monotonic()) - self._started
        return {
            "devices": len(self.devices), "enrolled": c.enrolled, "checkins": c.checkins, "errors": c.errors,
            "refused": c.refused, "downloads": c.downloads, "crashes": c.crashes,
            "crashed": sum(1 for d in self.devices if d.crashes), "silent": sum(1 for d in self.devices if d.silent),
            "healthy": events["healthy"], "auto_reverted": events["auto_reverted"],
            "rolled_back": events["rolled_back"], "recalled": events["recalled"],
            "probe_failed": events["probe_failed"],
            "in_flight": sum(1 for d in self.devices if d.updating()),
            "outbox": sum(len(d.state.outbox) for d in self.devices),
            "events": dict(sorted(events.items())), "versions": self.versions(), "elapsed_s": round(elapsed, 1),
        }

    # -- one device's life -----------------------------------------------------------------------
    async def _life(self, d: SimulatedDevice, delay: float) -> None:
        """Power on, then check in until switched off; a crash takes the host down and brings it
        back after ``reboot_s`` (a silent one never comes back)."""
        await asyncio.sleep(delay)
        resume = d.boot(self.config.boot_limit)
        while True:
            try:
                await self._start_up(d, resume)
                while True:
                    reached = await self._tick(d)
                    await asyncio.sleep(self._next_delay(d, reached))
            except _HostCrash as crash:
                d.crashes += 1
                self.counters.crashes += 1
                if crash.kind is FaultKind.SILENT:
                    d.silent = True
                    return
                await asyncio.sleep(self.config.reboot_s)
                resume = d.boot(self.config.boot_limit)

    async def _start_up(self, d: SimulatedDevice, resume: list[str]) -> None:
        """The revocation check (short timeout; an unreachable server leaves the local decision),
        then the trials the guard let resume."""
        versions = d.running()
        if versions and d.credential is not None:
            try:
                answer = await self._post("/v1/agent/revocations", d.credential, {"versions": versions},
                                          httpx.Timeout(self.config.revocation_timeout_s, pool=None))
            except TransportError:
                pass
            else:
                d.honour_revocations(answer.get("revoked") or {}, at_start=True)
        for ct in resume:
            u = d.state.of(ct).update
            if u is not None and u.step == "trial":
                await self._trial(d, ct)

    def _next_delay(self, d: SimulatedDevice, reached: bool) -> float:
        return next_delay(self.config, reached, d.poll_interval_s, d.failures, self._rng)

    async def _tick(self, d: SimulatedDevice) -> bool:
        if d.credential is None:
            try:
                await self._enroll(d)
            except TransportError:
                d.failures += 1
                return False
        answer = await self._exchange(d)
        if answer is None:
            return False
        await self._apply(d, answer)
        return True

    async def _apply(self, d: SimulatedDevice, answer: dict[str, Any]) -> None:
        """Revocations first, then rollbacks, then updates (one content type at a time)."""
        d.honour_revocations(answer.get("revoked") or {})
        for ct, raw in sorted((answer.get("desired") or {}).items()):
            desired = parse_desired(ct, raw)
            if desired is None:
                continue
            c = d.state.of(ct)
            if desired.rollback_from is not None:
                d.follow_rollback(desired)
            elif desired.version is None or desired.version in c.blocked:
                continue
            elif c.active is not None and c.active.version == desired.version:
                if c.update is not None and not c.update.switched and c.update.target.version != desired.version:
                    c.update = None  # the server no longer asks for it
            else:
                await self._update(d, desired)

    async def _update(self, d: SimulatedDevice, desired: Desired) -> None:
        ct = desired.content_type
        u = d.begin(desired)
        if u is None:
            return
        if u.step == "download":
            if not d.holds(ct, u.target) and not await self._download(d, desired, u):
                return
            u.step = "staged"
        if u.step == "staged":
            d.announce(ct)
        if not u.intent_acked:
            acked = await self._await_ack(d, desired, u)
            if d.state.of(ct).update is not u:
                return  # cancelled while waiting
            if acked:
                u.intent_acked = True
            elif desired.require_intent_ack:
                return  # stay on what runs; the next check-in tries again
        d.activate(ct)
        await self._trial(d, ct)

    async def _await_ack(self, d: SimulatedDevice, desired: Desired, u: Update) -> bool:
        """Send the intent on check-ins, 0.25 s apart and backing off to 5 s, until acknowledged,
        the server changes its answer, or the plan's timeout passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + desired.intent_ack_timeout_s
        pause = 0.25
        while not d.acknowledged(u.intent_id):
            answer = await self._exchange(d)
            if answer is not None:
                if d.acknowledged(u.intent_id):
                    break
                if stopped_asking(answer, desired.content_type, u.target.version):
                    d.state.of(desired.content_type).update = None
                    return False
            if loop.time() + pause > deadline:
                return False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)
        return True

    async def _trial(self, d: SimulatedDevice, ct: str) -> None:
        """The version is loaded: heartbeats until ``trial_s`` has passed, then the probe decides.
        A crash fault takes the host down partway; the server may roll the version back meanwhile."""
        cfg = self.config
        c = d.state.of(ct)
        u = c.update
        assert u is not None
        version = u.target.version
        fault = self.fault(d.profile, ct, version) if self.fault is not None else None
        loop = asyncio.get_running_loop()
        started = next_beat = loop.time()
        ends = started + cfg.trial_s
        crash_at = started + min(cfg.crash_after_s, cfg.trial_s / 2) if fault in (FaultKind.CRASH,
                                                                                  FaultKind.SILENT) else math.inf
        while True:
            now = loop.time()
            if now >= crash_at:
                raise _HostCrash(fault or FaultKind.CRASH)
            if now >= next_beat:
                d.event(EventKind.HEARTBEAT, ct, version, trial_s=round(now - started, 1))
                answer = await self._exchange(d)
                if answer is not None and recalled(answer, ct, version):
                    d.revert(ct, version, c.lkg, "the server rolled the release back during the trial",
                             EventKind.RECALLED)
                    return
                next_beat = now + cfg.heartbeat_s
            if now >= ends:  # judged by the time before the heartbeat: a slow answer never stretches a trial
                if fault is FaultKind.PROBE:
                    d.event(EventKind.PROBE_FAILED, ct, version, reason="simulated probe failed")
                    d.revert(ct, version, c.lkg, "health probe failed: simulated probe failed",
                             EventKind.ROLLED_BACK)
                else:
                    d.commit(ct, cfg.keep)
                    await self._exchange(d)
                return
            await asyncio.sleep(max(0.0, min(next_beat, ends, crash_at) - loop.time()))

    # -- the wire --------------------------------------------------------------------------------
    async def _post(self, path: str, secret: str, body: dict[str, Any], timeout: httpx.Timeout | None = None
                    ) -> dict[str, Any]:
        """One request of the agent API. Requests wait at the gate rather than in the connection
        pool: the pool's own queue costs time in proportion to its length on every request."""
        assert self._http is not None
        assert self._gate is not None
        try:
            async with self._gate:
                response = await self._http.post(path, json=body, headers={"authorization": f"Bearer {secret}"},
                                                 timeout=timeout or self._timeout)
        except httpx.HTTPError as exc:
            self.counters.errors += 1
            log.debug("%s: %s: %s", path, type(exc).__name__, exc)
            raise Unreachable(f"{path}: {type(exc).__name__}: {exc}") from exc
        try:
            return answer(response.status_code, response.content, path)
        except TransportError as refusal:
            self.counters.errors += 1
            self.counters.refused += isinstance(refusal, Rejected)
            log.debug("%s", refusal)
            raise

    async def _enroll(self, d: SimulatedDevice) -> None:
        answer = await self._post("/v1/agent/enroll", self.enroll_token, d.profile.attributes())
        d.credential = str(answer["credential"])
        d.state.device_id = str(answer["device_id"])
        d.poll_interval_s = float(answer.get("poll_interval_s", d.poll_interval_s))
        self.counters.enrolled += 1

    async def _exchange(self, d: SimulatedDevice) -> dict[str, Any] | None:
        """One check-in carrying the outbox; None when it got no usable answer."""
        if d.credential is None:
            return None
        try:
            answer = await self._post("/v1/agent/checkin", d.credential, d.checkin_body())
        except TransportError:
            d.failures += 1
            return None
        d.answered(answer)
        self.counters.checkins += 1
        return answer

    async def _download(self, d: SimulatedDevice, desired: Desired, u: Update) -> bool:
        """Fetch the artifact by its URL and check its size and sha256 as it streams. An
        interrupted download is tried again at the next check-in; a wrong one counts towards
        giving the version up."""
        assert self._http is not None
        assert self._gate is not None
        assert d.credential is not None
        ct, cfg = desired.content_type, self.config
        if desired.size > cfg.max_download_bytes:
            d.bad_download(ct, f"the artifact is {desired.size} bytes; this agent accepts at most "
                               f"{cfg.max_download_bytes}", max_failures=1)
            return False
        digest, size = hashlib.sha256(), 0
        try:
            async with self._gate, self._http.stream("GET", desired.url, headers={
                    "authorization": f"Bearer {d.credential}"}) as response:
                if response.status_code >= 400:
                    refusal = classify(response.status_code, await response.aread(), desired.url)
                    assert refusal is not None
                    raise refusal
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > desired.size:
                        break
                    digest.update(chunk)
        except (httpx.HTTPError, Unreachable) as exc:
            self.counters.errors += 1
            log.debug("download of %s %s interrupted: %s", ct, u.target.version, exc)
            return False
        except Rejected as exc:
            self.counters.errors += 1
            self.counters.refused += 1
            d.bad_download(ct, str(exc), cfg.max_download_failures)
            return False
        if size != desired.size or digest.hexdigest() != u.target.sha256:
            d.bad_download(ct, f"hash mismatch: expected {u.target.sha256} ({desired.size} bytes), got "
                               f"{digest.hexdigest()} ({size}{'+' if size > desired.size else ''} bytes)",
                           cfg.max_download_failures)
            return False
        self.counters.downloads += 1
        return True
