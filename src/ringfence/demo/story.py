"""The story the demo tells, step by step, through the public API as three people would.

``admin`` sets up (identities, the content type, an enrolment token); ``release-engineer``
pushes artifacts, creates releases, starts and rolls back rollouts; ``oncall-approver`` approves
— never their own release, as the server insists. Then:

1. **A good release** (``good.json`` as 291.1): validation passes, one approval by somebody
   other than its author, a normal start, and the plan's waves (canary of 3 devices per
   platform x region, then 25 %, then everyone) to ``completed``.
2. **The 2024 file** (``bad-field-count.json`` as 291.2): the contract and matrix validators
   fail it and the start gate refuses it; the on-call approver gives an emergency approval and
   the release engineer starts it through the emergency path, as a person under pressure would.
   The Windows machines that load it crash; the rollout **halts in its first wave** on its own;
   the crashed machines' crash-loop guard reverts them without the server; then the release
   engineer rolls the release back and the exposed machines that did not crash return too.

Every wait is bounded: a step that does not happen in time is written into the outcome's
``problems`` and the story goes on as far as it can, so the summary always says what happened.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ringfence.demo.control_plane import Api
from ringfence.demo.errors import ApiRefused
from ringfence.demo.lab import Lab
from ringfence.demo.outcome import Outcome, first_failure_at, halt_of, seconds_between
from ringfence.demo.settings import BAD_VERSION, CONTENT_TYPE, GOOD_VERSION, DemoSettings, Examples
from ringfence.sim.live import LiveFleet

RELEASER = "release-engineer"
APPROVER = "oncall-approver"
_POLL_S = 0.5


class Narrator(Protocol):
    """Where the story says what it does: ``step`` for a line that stays, ``status`` for the
    line that changes while something is awaited."""

    def step(self, text: str) -> None: ...

    def status(self, text: str) -> None: ...


class Story:
    def __init__(self, api: Api, settings: DemoSettings, examples: Examples, narrator: Narrator,
                 outcome: Outcome) -> None:
        self.api = api
        self.settings = settings
        self.examples = examples
        self.say = narrator
        self.outcome = outcome

    # -- the cast and the stage ------------------------------------------------------------------
    async def prepare(self) -> str:
        """Two more people, the content type with its definition, and an enrolment token (returned)."""
        await self.api.identity("releaser", RELEASER)
        await self.api.identity("approver", APPROVER)
        self.say.step(f"people: admin, {RELEASER} (releaser) and {APPROVER} (approver)")
        definition = self.examples.definition
        await self.api.call("admin", "POST", "/v1/content-types", body={
            "name": CONTENT_TYPE, "category": "rapid-response",
            "definition": definition.read_text(encoding="utf-8"), "definition_dir": str(definition.parent)})
        self.say.step(f"content type {CONTENT_TYPE} (rapid-response), validated against {definition.name}: "
                      "schema, contract, fuzz and the platform matrix with the sample sensor")
        token = await self.api.call("admin", "POST", "/v1/enroll-tokens", body={"tenant": "default"})
        return str(token["token"])

    async def enrolled(self, fleet: LiveFleet, lab: Lab) -> None:
        want = len(fleet.devices) + len(lab.machines)

        async def count() -> int:
            found = await self.api.call("admin", "GET", "/v1/devices", params={"limit": 1})
            return int(found["total"])

        deadline = time.monotonic() + self.settings.startup_timeout_s + want / 50
        seen = 0
        while time.monotonic() < deadline:
            seen = await count()
            self.say.status(f"enrolling: {seen} of {want} devices")
            if seen >= want:
                break
            await asyncio.sleep(_POLL_S)
        else:
            self.outcome.problems.append(f"only {seen} of {want} devices enrolled in time")
        self.say.step(f"fleet: {seen} devices enrolled ({len(fleet.devices)} simulated over "
                      f"{_strata(fleet)} strata, {len(lab.machines)} real agents in the lab)")

    # -- act one: a good release -------------------------------------------------------------------
    async def good_release(self) -> bool:
        """Push, validate, approve, start, complete. True when it completed."""
        o = self.outcome
        status = await self._release(self.examples.good.read_bytes(), GOOD_VERSION)
        release = o.good_release = status["release"]
        self._validation(status)
        await self.api.call(APPROVER, "POST", f"/v1/releases/{release}/approve",
                            body={"reason": "reviewed: validation passed, plan is the standard demo plan"})
        self.say.step(f"{APPROVER} approved {release} (the author may not approve their own release)")
        await self.api.call(RELEASER, "POST", f"/v1/rollouts/{release}/start", body={"reason": "weekly content"})
        started = time.monotonic()
        self.say.step(f"{RELEASER} started {release}: {GOOD_VERSION} to the fleet in waves")
        final = await self._until(release, "good", lambda s: s["phase"] != "rolling",
                                  self.settings.release_timeout_s)
        o.good_release_phase = final["phase"]
        if final["phase"] != "completed":
            return False
        o.good_release_s = round(time.monotonic() - started, 1)
        self.say.step(f"good release completed in {o.good_release_s:.0f}s: every wave soaked, "
                      f"{final['totals']['failed']} devices failed")
        return True

    async def settled_on(self, fleet: LiveFleet, lab: Lab, version: str) -> None:
        """Until every device runs ``version`` and nothing is in flight (bounded: late ones may
        still be in their trial when the next release starts, which is fine)."""
        deadline = time.monotonic() + self.settings.settle_timeout_s
        on = lab_on = 0
        while time.monotonic() < deadline:
            report = fleet.report()
            on = report["versions"].get(CONTENT_TYPE, {}).get(version, 0)
            lab_on = sum(1 for m in lab.report() if m["running"] == version)
            self.say.status(f"fleet settling: {on + lab_on} of {len(fleet.devices) + len(lab.machines)} run "
                            f"{version}")
            if on == len(fleet.devices) and lab_on == len(lab.machines) and not report["in_flight"]:
                break
            await asyncio.sleep(_POLL_S)
        self.say.step(f"fleet settled: {on + lab_on} of {len(fleet.devices) + len(lab.machines)} devices run {version} "
                      "(committed after their trial)")

    # -- act two: the 2024 file --------------------------------------------------------------------
    async def bad_release(self, fleet: LiveFleet, lab: Lab) -> None:
        o = self.outcome
        status = await self._release(self.examples.bad.read_bytes(), BAD_VERSION)
        release = o.bad_release = status["release"]
        self._validation(status)
        try:
            await self.api.call(RELEASER, "POST", f"/v1/rollouts/{release}/start", body={"reason": "routine"})
        except ApiRefused as refused:
            if refused.status != 409:
                raise
            self.say.step(f"the start gate refuses it: {_gate(refused)}")
        else:
            o.problems.append("the start gate let a release that failed validation start without the emergency "
                              "path")
        await self.api.call(APPROVER, "POST", f"/v1/releases/{release}/approve", body={
            "emergency": True, "reason": "on call: new named-pipe attack in the wild, detection cannot wait"})
        await self.api.call(RELEASER, "POST", f"/v1/rollouts/{release}/start", body={
            "emergency": True, "reason": "ship the named-pipe detection now; the validators must be wrong"})
        self.say.step(f"{APPROVER} gave an emergency approval and {RELEASER} started {release} through the "
                      "emergency path, past the failed validation (kept in its history, status and audit log)")
        status = await self.api.status(release)
        o.bad_emergency = status.get("emergency")

        status = await self._until(release, "bad", lambda s: s["phase"] != "rolling", self.settings.halt_timeout_s)
        o.bad_release_phase = status["phase"]
        halt = halt_of(status)
        if halt is None:
            o.problems.append(f"the bad release was not halted within {self.settings.halt_timeout_s:.0f}s "
                              f"(phase {status['phase']}, wave {status['wave_name']})")
            self._bad_totals(status)
            return
        wave = halt.get("from_wave")
        o.bad_halted_wave = status["waves"][wave if isinstance(wave, int) else status["wave"]]["name"]
        o.bad_halted_by, o.bad_halt_reason = halt["actor"], halt["reason"]
        o.first_failure_to_halt_s = seconds_between(
            await asyncio.to_thread(first_failure_at, self._data_dir(), release), halt["at"])
        self.say.step(f"HALTED by the {halt['actor']} in wave {o.bad_halted_wave!r}, "
                      f"{_seconds(o.first_failure_to_halt_s)} after the first failure: {halt['reason']}")

        status = await self._self_reverted(release, fleet, lab)
        o.bad_failed, o.bad_self_reverted = status["totals"]["failed"], status["totals"]["reverted"]
        self.say.step(f"{o.bad_failed} devices failed; {o.bad_self_reverted} of them reverted by themselves "
                      "(crash-loop guard: back to the last-known-good after 2 boots, no server needed)")

        await self.api.call(RELEASER, "POST", f"/v1/rollouts/{release}/rollback",
                            body={"reason": f"halted in the canary: crashes on windows; back to {GOOD_VERSION}"})
        self.say.step(f"{RELEASER} rolled {release} back: every exposed device returns to {GOOD_VERSION}")
        status = await self._until(release, "bad", lambda s: s["phase"] == "rolled_back",
                                   self.settings.rollback_timeout_s)
        if status["phase"] != "rolled_back":
            o.problems.append(f"the rollback was not confirmed within {self.settings.rollback_timeout_s:.0f}s "
                              f"(phase {status['phase']})")
        o.bad_release_phase = status["phase"]
        self._bad_totals(status)
        self.say.step(f"rolled back: {o.bad_exposed} exposed of {o.devices} devices, {o.bad_failed} failed, "
                      f"{o.bad_reverted} back on {GOOD_VERSION}")

    async def _self_reverted(self, release: str, fleet: LiveFleet, lab: Lab) -> dict[str, Any]:
        """Until every device that failed has reverted by itself and no machine is mid-crash
        (the same twice in a row); bounded by ``settle_timeout_s``."""
        deadline = time.monotonic() + self.settings.settle_timeout_s
        previous: tuple[int, int] | None = None
        status = await self.api.status(release)
        while time.monotonic() < deadline:
            t = status["totals"]
            now = (t["failed"], t["reverted"])
            rebooting = sum(1 for m in lab.machines if m.reboot_at is not None)
            self.say.status(f"crashed machines recovering: {t['reverted']} of {t['failed']} failed devices "
                            f"reverted" + (f", {rebooting} lab machines rebooting" if rebooting else ""))
            calm = t["failed"] >= 1 and t["reverted"] >= t["failed"] and not rebooting and \
                not fleet.report()["in_flight"]
            if calm and now == previous:
                break
            previous = now if calm else None
            await asyncio.sleep(1.0)
            status = await self.api.status(release)
        return status

    def _bad_totals(self, status: dict[str, Any]) -> None:
        t = status["totals"]
        self.outcome.bad_exposed = t["exposed"]
        waves = status.get("waves") or []
        if waves:
            self.outcome.bad_first_wave = waves[0]["name"]
            self.outcome.bad_canary_admitted = waves[0]["admitted"]
            self.outcome.bad_beyond_canary = t["admitted"] - waves[0]["admitted"]
        self.outcome.bad_reverted = t["reverted"]
        if self.outcome.bad_failed == 0:
            self.outcome.bad_failed = t["failed"]

    # -- helpers ----------------------------------------------------------------------------------
    async def _release(self, data: bytes, version: str) -> dict[str, Any]:
        """Push ``data`` as ``version`` and create its release with the demo plan (the server
        validates it against the content type's definition on the way)."""
        await self.api.call(RELEASER, "POST", "/v1/artifacts", content=data, params={
            "content_type": CONTENT_TYPE, "version": version, "sha256": hashlib.sha256(data).hexdigest()})
        self.say.status(f"{version}: validating (schema, contract, fuzz, platform matrix)")
        plan = self.examples.plan
        return await self.api.call(RELEASER, "POST", "/v1/releases", body={
            "content_type": CONTENT_TYPE, "version": version, "plan": plan.read_text(encoding="utf-8"),
            "plan_origin": f"examples/plans/{plan.name}"})

    def _validation(self, status: dict[str, Any]) -> None:
        validation = status.get("validation") or {}
        results = validation.get("results", [])
        failed = [r for r in results if r["status"] != "passed"]
        name = f"{status['release']} ({status['version']})"
        if not failed:
            self.say.step(f"{name}: validation passed ({len(results)} results)")
            return
        self.outcome.bad_validation_failed = sorted({r["validator"] for r in failed})
        self.say.step(f"{name}: validation FAILED ({len(failed)} of {len(results)} results):")
        for validator in self.outcome.bad_validation_failed:
            mine = [r for r in failed if r["validator"] == validator]
            where = f" ({len(mine)} targets)" if len(mine) > 1 else ""
            self.say.step(f"  {validator}{where}: {_short(mine[0]['message'])}")

    async def _until(self, release: str, label: str, done: Callable[[dict[str, Any]], bool],
                     timeout_s: float) -> dict[str, Any]:
        """Poll the rollout until ``done``; say each wave and phase change. Returns the last status."""
        deadline = time.monotonic() + timeout_s
        seen: tuple[str, int] | None = None
        while True:
            status = await self.api.status(release)
            if (status["phase"], status["wave"]) != seen and seen is not None:
                self.say.step(f"{label} {status['version']}: {status['phase']}, wave {status['wave'] + 1} of "
                              f"{len(status['waves'])} ({status['wave_name']})")
            seen = (status["phase"], status["wave"])
            t = status["totals"]
            self.say.status(f"{label} {status['version']} {status['phase']} in {status['wave_name']}: "
                            f"{t['exposed']} exposed, {t['healthy']} healthy, {t['failed']} failed, "
                            f"{t['reverted']} reverted")
            if done(status) or time.monotonic() >= deadline:
                return status
            await asyncio.sleep(_POLL_S)

    def _data_dir(self) -> Path:
        return Path(self.outcome.data_dir)


def _strata(fleet: LiveFleet) -> int:
    return len({(d.profile.platform, d.profile.region) for d in fleet.devices})


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}s"


def _gate(refused: ApiRefused) -> str:
    """What keeps the gate closed, in a line: the failed validators and the other problems
    (the full sentences are in the validation results above)."""
    checks = [str(c) for c in refused.reply.get("checks") or []]
    others = [str(p) for key in ("freezes", "approvals") for p in refused.reply.get(key) or []]
    if not checks and not others:
        return refused.message.split(": ", 2)[-1]
    failed = sorted({c.split(":", 1)[0] for c in checks})
    return "; ".join(([f"validation failed ({', '.join(failed)})"] if failed else []) + others)


def _short(text: str, limit: int = 140) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


__all__ = ["APPROVER", "RELEASER", "Narrator", "Story"]
