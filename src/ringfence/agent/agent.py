"""The endpoint agent: enrol, check in, and take every update through the same lifecycle.

    check in -> desired version differs -> download by hash -> verify (sha256, then TUF when a
      trusted root is configured; no downgrade without a signed revocation) -> stage
      -> intent in the journal (fsync) -> intent sent and acknowledged -> switch atomically
      -> trial (boot counter written before the content loads; probe; heartbeats)
      -> commit (LKG := new; ``healthy``) or roll back (restore LKG; ``rolled_back``)

At start-up, before any content loads: an unclean previous exit is reported as ``crash``; a
trial whose boot counter reached ``boot_limit`` is reverted to the LKG (``auto_reverted``)
without the server; then the server is asked, with a short timeout, whether the version about
to load was revoked, and if so the agent reverts first (with a trusted root the signed
revocations are read first; the rules are in :mod:`ringfence.agent.signed`). An unreachable
server never stops the agent from running its last-known-good content.

Guarantees, whatever step a crash interrupts: the device runs either a version that ran here
before or the new version fully committed (the journal records each step before acting, and
recovery finishes or undoes it); every event reaches the server once it is reachable (the
outbox is durable and the server deduplicates by event id).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from ringfence.agent.answers import Desired, HashOnly, Verifier, parse_desired, revocations
from ringfence.agent.appliers import Applier, ApplyFailed, CommandApplier, ContentApplier
from ringfence.agent.config import AgentConfig, ContentTypeSpec, default_attributes
from ringfence.agent.durable import write_atomic
from ringfence.agent.journal import ContentState, Journal, JournalError, State, Update, VersionRef, summary
from ringfence.agent.lifecycle import next_delay
from ringfence.agent.probes import Probe, ProbeResult, describe_exit, probe_for
from ringfence.agent.signed import Downgrades, RepositoryUnreachable, Revoked, SignedDelivery, Unverified
from ringfence.agent.transport import (
    DownloadTooLarge,
    HttpTransport,
    Rejected,
    Transport,
    Unauthorized,
    Unreachable,
)
from ringfence.agent.workload import Workload
from ringfence.core.clock import Clock, SystemClock
from ringfence.core.errors import InvalidInput
from ringfence.trust import HttpxFetcher, TrustError

log = logging.getLogger("ringfence.agent")

KILL_AT_ENV = "RINGFENCE_AGENT_KILL_AT"
"""Test-only: the name of a lifecycle step at which the agent kills itself with SIGKILL."""

HOST_CRASH_EXIT = 70
MAX_EVENTS_PER_CHECKIN = 100
CHECKIN_BLOCK = 1000  # check-in sequence numbers reserved per journal write


class AgentError(Exception):
    """The agent cannot run as configured (no state directory, enrolment refused, ...)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Agent:
    """One agent over one state directory. ``run()`` is the daemon; ``start()``, ``tick()`` and
    ``shutdown()`` are its parts, for embedding."""

    def __init__(self, config: AgentConfig, *, transport: Transport | None = None, clock: Clock | None = None,
                 sleep: Callable[[float], None] | None = None, probes: dict[str, Probe] | None = None,
                 verifier: Verifier | None = None, signed: SignedDelivery | None = None) -> None:
        self.config = config
        self.state_dir = config.state_dir
        self.transport: Transport = transport or HttpTransport(config.server, timeout=config.request_timeout_s)
        self.clock = clock or SystemClock()
        self.sleep = sleep or time.sleep
        self.verifier: Verifier = verifier or HashOnly()
        self._probes = dict(probes or {})
        self._appliers: dict[str, Applier] = {}
        self._journal: Journal | None = None
        self._lock_fd: int | None = None
        self.credential: str | None = None
        self.workload: Workload | None = None
        self.poll_interval_s = 30.0
        self.stopping = threading.Event()
        self._attributes = {**default_attributes(), **config.attributes}
        self._attributes_sent = False
        self._checkin: int | None = None  # the last check-in sequence number used in this process
        self._failures = 0  # consecutive unreachable check-ins, for the backoff
        self._rng = random.Random()  # the check-in jitter (seeded from the system: agents differ)
        self._workload_restarts = 0
        self._workload_restart_at = 0.0
        self._kill_at = os.environ.get(KILL_AT_ENV, "")
        self.last_answer: dict[str, Any] | None = None
        self.signed = signed
        self._tuf_fetchers: list[HttpxFetcher] = []  # made here: they carry the credential, closed at shutdown
        self._downgrades: Downgrades | None = None if signed is None else Downgrades(signed)

    # -- state -----------------------------------------------------------------------------
    @property
    def journal(self) -> Journal:
        if self._journal is None:
            raise AgentError("the agent has not started")
        return self._journal

    @property
    def state(self) -> State:
        return self.journal.state

    def _save(self) -> None:
        self.journal.save()

    def _fault(self, step: str) -> None:
        """Test-only fault injection: die here, as hard as a power cut."""
        if self._kill_at == step:
            log.warning("fault injection: killed at %s", step)
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)

    def _applier(self, content_type: str) -> Applier:
        applier = self._appliers.get(content_type)
        if applier is None:
            spec = self.config.spec(content_type)
            root = self.state_dir / "content"
            if spec.applier == "command" and spec.commands is not None:
                applier = CommandApplier(root, content_type, spec.commands, spec.unpack)
            else:
                applier = ContentApplier(root, content_type, spec.unpack)
            self._appliers[content_type] = applier
        return applier

    def _event(self, kind: str, content_type: str, version: str, **details: Any) -> str:
        event_id = self.state.next_event_id()
        self.state.queue({"id": event_id, "kind": kind, "content_type": content_type, "version": version,
                          "at": self.clock.now().isoformat(), "details": details})
        return event_id

    # -- start-up --------------------------------------------------------------------------
    def start(self) -> None:
        """Open the state directory, run the crash-loop guard and the revocation check, then
        load content. Nothing is loaded before both checks ran."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            (self.state_dir / "downloads").mkdir(exist_ok=True)
            (self.state_dir / "run").mkdir(exist_ok=True)
        except OSError as exc:
            raise AgentError(f"cannot use the state directory {self.state_dir}: {exc.strerror}") from exc
        self._lock()
        self._journal = self._open_journal()
        self._load_credential()
        self._open_signed()
        state = self.state
        unclean = not state.clean_exit
        state.boot += 1
        state.clean_exit = False
        if unclean:
            for content_type, c in state.content.items():
                running = c.update.target if c.update is not None and c.update.switched else c.active
                if running is not None:
                    log.warning("the last run of %s %s ended uncleanly: reporting a crash", content_type,
                                running.version)
                    self._event("crash", content_type, running.version, reason="unclean exit found at start-up",
                                boot=state.boot - 1)
        resume = self._guard()
        self._save()
        self._revocation_check()
        self._start_workload()
        for content_type in resume:
            c = state.of(content_type)
            if c.update is not None and c.update.step == "trial":
                self._trial(content_type, load=False)  # the workload just loaded it

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _lock(self) -> None:
        fd = os.open(self.state_dir / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise AgentError(f"another agent is running on {self.state_dir}") from None
        self._lock_fd = fd

    def _open_journal(self) -> Journal:
        try:
            return Journal.open(self.state_dir)
        except JournalError as exc:
            # Both slots damaged. Keep them for a person, and start from what the disk shows is
            # switched in: that version was running, which is the best evidence left.
            stamp = int(time.time())
            for name in ("journal.a.json", "journal.b.json"):
                with contextlib.suppress(OSError):
                    os.replace(self.state_dir / name, self.state_dir / f"{name}.damaged-{stamp}")
            log.error("%s; starting over from the versions switched in on disk", exc)
            # Event ids are "<boot>-<seq>"; the lost counters restart above any used before.
            journal = Journal(self.state_dir, State(boot=stamp), 0)
            content_root = self.state_dir / "content"
            if content_root.is_dir():
                for entry in content_root.iterdir():
                    content_type = entry.name.replace("+", "/")
                    try:
                        version = self._applier(content_type).current()
                    except InvalidInput:
                        continue  # not a directory the agent made
                    if version is not None:
                        marker = (entry / "versions" / version / ".ringfence-version").read_text().strip()
                        ref = VersionRef(version, marker)
                        journal.state.content[content_type] = ContentState(active=ref, lkg=ref)
            journal.state.clean_exit = True
            return journal

    def _guard(self) -> list[str]:
        """The crash-loop guard. Returns the content types whose trial resumes after loading."""
        resume: list[str] = []
        for content_type, c in self.state.content.items():
            u = c.update
            if u is None:
                continue
            if u.step == "reverting":
                self._finish_revert(content_type)
            elif u.switched and u.boots >= self.config.boot_limit:
                reason = (f"crash-loop guard: {content_type} {u.target.version} was booted {u.boots} times "
                          f"without passing its trial")
                log.error("%s; reverting to %s before loading content", reason,
                          c.lkg.version if c.lkg else "no content")
                self._revert(content_type, u.target.version, c.lkg, reason, "auto_reverted", load=False)
            elif u.switched:
                applier = self._applier(content_type)
                if applier.current() != u.target.version:
                    try:  # the crash came between the journal and the switch: switch now
                        applier.activate(u.target)
                    except ApplyFailed as exc:
                        self._revert(content_type, u.target.version, c.lkg, f"activation failed: {exc}",
                                     "rolled_back", load=False)
                        continue
                c.active = u.target
                u.step = "trial"
                u.boots += 1  # before the content loads: saved by start() before anything is loaded
                log.info("%s %s is in trial: boot %d of at most %d", content_type, u.target.version, u.boots,
                         self.config.boot_limit)
                resume.append(content_type)
        return resume

    def _revocation_check(self) -> None:
        """Before anything loads: leave every active version that is revoked. With a trusted root
        the signed revocations come first and decide; the server's unsigned answer is asked
        within what is left of the same budget (all of it without a trusted root)."""
        versions = {ct: c.active.version for ct, c in self.state.content.items() if c.active is not None}
        if not versions or self.credential is None:
            return
        budget = self.config.revocation_timeout_s
        deadline = time.monotonic() + budget
        trust = "off"
        if self.signed is not None:
            try:
                signed = self.signed.revoked(budget)
            except RepositoryUnreachable as exc:
                log.warning("signed revocation check skipped (%s); asking the server without a signature", exc)
                trust = "unreachable"
            except Unverified as exc:
                log.error("SIGNED REVOCATIONS DO NOT VERIFY: %s; only versions in trial may be reverted on the "
                          "server's unsigned word", exc)
                trust = "bad"
            else:
                self._honour_signed(signed, at_start=True)
                return
        left = deadline - time.monotonic()
        if left <= 0.05:
            log.warning("revocation check skipped (the %gs budget ran out); going on with the local decision", budget)
            return
        try:
            answer = self.transport.revocations(self.credential, versions, left)
        except (Unreachable, Rejected) as exc:
            log.warning("revocation check skipped (%s); going on with the local decision", exc)
            return
        revoked = answer.get("revoked") or {}
        if trust == "bad":  # the unsigned answer may not make the device leave a committed version
            revoked = {ct: info for ct, info in revoked.items() if ct in self.state.content
                       and not self.state.content[ct].committed(str((info or {}).get("version", "")))}
        self._honour_revocations(revoked, at_start=True, checked=True)

    def _honour_signed(self, signed: Revoked, *, at_start: bool = False) -> None:
        """Leave every active version the signed revocations list."""
        revoked = {ct: {"version": c.active.version, "reason": signed[ct][c.active.version]}
                   for ct, c in self.state.content.items()
                   if c.active is not None and c.active.version in signed.get(ct, {})}
        gone = {ct: set(versions) for ct, versions in signed.items()}
        self._honour_revocations(revoked, at_start=at_start, gone=gone, checked=True)

    def _honour_revocations(self, revoked: dict[str, Any], *, at_start: bool = False,
                            gone: dict[str, set[str]] | None = None, checked: bool = False) -> None:
        """Leave the revoked versions the device runs. Unless ``checked``, leaving a committed
        version needs the signed revocations to agree (when a trusted root is configured)."""
        for r in revocations(self.state, revoked, at_start=at_start, gone=gone):
            if not checked and not self._may_leave(r.content_type, r.version, r.back):
                continue
            log.warning("%s %s %s; reverting to %s", r.content_type, r.version, r.reason,
                        r.back.version if r.back else "none")
            self._revert(r.content_type, r.version, r.back, r.reason, "recalled")

    def _may_leave(self, content_type: str, leaving: str, back: VersionRef | None) -> bool:
        """Whether the server's unsigned word may move the device from ``leaving`` to ``back``
        (the rule: :meth:`Downgrades.leave`). A refusal is reported to the server once; an
        unreachable repository defers the decision to the next check-in."""
        if self._downgrades is None:
            return True
        verdict = self._downgrades.leave(content_type, self.state.of(content_type), leaving,
                                         back.version if back else None)
        if verdict.outcome == "later":
            log.warning("%s: leaving %s waits for the signed revocations (%s)", content_type, leaving, verdict.reason)
        elif verdict.outcome == "refused" and verdict.report:
            log.error("%s: %s (the server asks for it again; the signed revocations do not list it)", content_type,
                      verdict.reason)
            self._event("failed", content_type, leaving, reason=verdict.reason, step="verify")
            self._save()
        elif verdict.outcome == "refused":
            log.warning("%s: %s (yet); asking again at the next check-in", content_type, verdict.reason)
        return verdict.outcome == "go"

    def _open_signed(self) -> None:
        """Signed delivery: required when a trusted root is configured. The TUF metadata cache
        lives in the state directory, so a rotation followed once stays followed."""
        root = self.config.trusted_root
        if self.signed is not None:
            return
        if root is None:
            log.warning("no trusted root configured (--trusted-root or trust: {root: FILE}): artifacts are "
                        "checked against the sha256 the server names, not verified with TUF")
            return
        base = f"{self.config.server.rstrip('/')}/v1/tuf"
        # One HTTP client (one TLS context with its CA bundle) for the agent API and the repository.
        shared = self.transport.client if isinstance(self.transport, HttpTransport) else None
        fetchers = [HttpxFetcher(shared, credential=self.credential, timeout=self.config.request_timeout_s),
                    HttpxFetcher(shared, credential=self.credential, timeout=self.config.revocation_timeout_s)]
        try:
            self.signed = SignedDelivery(self.state_dir / "tuf", root, base, fetchers[0], fetchers[1])
            self._downgrades = Downgrades(self.signed)
        except (TrustError, OSError) as exc:
            for fetcher in fetchers:
                fetcher.close()
            self._unlock()
            why = exc.message if isinstance(exc, TrustError) else (exc.strerror or str(exc))
            raise AgentError(f"cannot use the trusted root {root}: {why}") from exc
        self._tuf_fetchers = fetchers
        log.info("signed delivery: every artifact is verified with TUF from the root %s", root)

    def _load_credential(self) -> None:
        path = self.state_dir / "credential.json"
        try:
            raw = json.loads(path.read_text())
            self.credential = str(raw["credential"])
            self.state.device_id = str(raw["device_id"])
        except FileNotFoundError:
            self.credential = None
        except (ValueError, KeyError, OSError) as exc:
            raise AgentError(f"the credential file {path} is damaged ({exc}); remove it to enroll again") from exc

    def enroll(self) -> None:
        """Trade the enrolment token for a device credential, kept in the state directory with
        mode 0600."""
        if self.credential is not None:
            return
        token = self.config.enroll_token
        if not token:
            raise AgentError("this agent is not enrolled: give --enroll-token", exit_code=2)
        try:
            answer = self.transport.enroll(token, self._attributes)
        except Unauthorized as exc:
            raise AgentError(f"enrolment refused: {exc.message}", exit_code=3) from exc
        except Rejected as exc:
            raise AgentError(f"enrolment refused: {exc.message}", exit_code=2) from exc
        write_atomic(self.state_dir / "credential.json", json.dumps(
            {"device_id": answer["device_id"], "credential": answer["credential"], "server": self.config.server,
             "tenant": answer.get("tenant")}).encode(), 0o600)
        self.credential = str(answer["credential"])
        for fetcher in self._tuf_fetchers:
            fetcher.credential = self.credential
        self.state.device_id = str(answer["device_id"])
        self.poll_interval_s = float(answer.get("poll_interval_s", self.poll_interval_s))
        self._save()
        log.info("enrolled as device %s", self.state.device_id)

    # -- the loop --------------------------------------------------------------------------
    def run(self, *, once: bool = False) -> None:
        """The daemon: start, then check in forever (or once), then shut down cleanly."""
        self.start()
        try:
            while not self.stopping.is_set():
                reached = self.tick()
                if once:
                    if not reached:
                        raise AgentError("the server could not be reached", exit_code=6)
                    break
                self._idle(self._next_delay(reached))
        finally:
            self.shutdown()

    def tick(self) -> bool:
        """One check-in and whatever it asks for. False when the server was unreachable."""
        try:
            self.enroll()
        except Unreachable as exc:
            log.warning("enrolment: server unreachable (%s)", exc)
            self._failures += 1
            return False
        answer = self.exchange()
        if answer is None:
            return False
        self.apply(answer)
        return True

    def _next_delay(self, reached: bool) -> float:
        if reached:
            self._failures = 0
        return next_delay(self.config, reached, self.poll_interval_s, self._failures, self._rng)

    def _idle(self, seconds: float) -> None:
        """Wait for the next check-in, watching the workload meanwhile."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set():
            self._watch_workload()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.stopping.wait(min(0.5, left))

    def shutdown(self) -> None:
        if self._journal is None:
            return
        if self.workload is not None:
            self.workload.stop()
        self.state.clean_exit = True
        with contextlib.suppress(JournalError):
            self._save()
        for fetcher in self._tuf_fetchers:
            fetcher.close()
        self._unlock()
        self._journal = None

    # -- talking to the server -------------------------------------------------------------
    def exchange(self) -> dict[str, Any] | None:
        """One check-in carrying the outbox. Acknowledged events leave the outbox. None when
        the server cannot be reached."""
        if self.credential is None:
            return None
        state = self.state
        body: dict[str, Any] = {
            "sequence": self._next_checkin(),
            "versions": {ct: (c.active.version if c.active else "") for ct, c in sorted(state.content.items())},
            "events": state.outbox[:MAX_EVENTS_PER_CHECKIN],
        }
        if not self._attributes_sent:
            body["attributes"] = self._attributes
        try:
            try:
                answer = self.transport.checkin(self.credential, body, self.config.request_timeout_s)
            except Rejected as exc:
                if not self._resume_numbering(exc):
                    raise
                body["sequence"] = self._next_checkin()
                answer = self.transport.checkin(self.credential, body, self.config.request_timeout_s)
        except Unreachable as exc:
            self._failures += 1
            log.warning("check-in failed: %s", exc)
            return None
        except Unauthorized as exc:
            self._failures += 1
            log.error("check-in refused: %s", exc.message)
            return None
        except Rejected as exc:
            self._failures += 1
            log.error("check-in rejected: %s", exc)
            return None
        self._failures = 0
        self._attributes_sent = True
        if state.acknowledge({str(i) for i in answer.get("acked", [])}):
            self._save()
        interval = answer.get("poll_interval_s")
        if isinstance(interval, int | float) and interval > 0:
            self.poll_interval_s = float(interval)
        self.last_answer = answer
        return answer

    def _resume_numbering(self, exc: Rejected) -> bool:
        """After a lost journal the agent's check-in numbers start again below what the server
        has seen; the server's refusal names the last one, and numbering resumes above it (the
        server still refuses anything not newer). True when the check-in should be sent again."""
        last = exc.details.get("last")
        if exc.code != "replayed_checkin" or not isinstance(last, int) or last < (self._checkin or 0):
            return False
        log.warning("the server has seen check-in %d of this device: numbering resumes above it", last)
        self.state.checkins_reserved = last
        self._checkin = None
        return True

    def _next_checkin(self) -> int:
        """The next check-in's sequence number, increasing across restarts so the server can
        refuse a replayed check-in. Numbers are reserved in blocks in the journal (one write per
        block, not per check-in); a restart skips the rest of its block."""
        if self._checkin is None or self._checkin >= self.state.checkins_reserved:
            start = self.state.checkins_reserved if self._checkin is None else self._checkin
            self.state.checkins_reserved = start + CHECKIN_BLOCK
            self._save()
            self._checkin = start
        self._checkin += 1
        return self._checkin

    def apply(self, answer: dict[str, Any]) -> None:
        """Act on a check-in answer: revocations first, then rollbacks, then updates."""
        if self._downgrades is not None:
            self._downgrades.next_answer()
        self._honour_revocations(answer.get("revoked") or {})
        for content_type, raw in sorted((answer.get("desired") or {}).items()):
            if self.stopping.is_set():
                return  # shutting down: start nothing new
            desired = parse_desired(content_type, raw)
            if desired is None:
                continue
            c = self.state.of(content_type)
            if desired.rollback_from is not None:
                self._follow_rollback(c, desired)
                continue
            if desired.version is None:
                continue
            if c.active is not None and c.active.version == desired.version:
                if c.update is not None and not c.update.switched and c.update.target.version != desired.version:
                    self._cancel(content_type, "the server no longer asks for it")
                continue
            if desired.version in c.blocked:
                log.debug("%s %s failed here before (%s); staying on %s", content_type, desired.version,
                          c.blocked[desired.version], c.active.version if c.active else "none")
                continue
            if c.active is not None and c.refused.get(desired.version) == c.active.version:
                log.debug("%s %s would be a downgrade from %s, refused before; staying", content_type,
                          desired.version, c.active.version)
                continue
            self._update(desired)

    def _follow_rollback(self, c: ContentState, desired: Desired) -> None:
        leaving = desired.rollback_from
        assert leaving is not None
        if c.update is not None and c.update.target.version == leaving and not c.update.switched:
            self._cancel(desired.content_type, "the server rolled the release back")
        if c.active is None or c.active.version != leaving:
            return
        back = c.way_back(leaving, {leaving})
        if not self._may_leave(desired.content_type, leaving, back):
            return
        self._revert(desired.content_type, leaving, back, "the server rolled the release back", "recalled")

    # -- the update lifecycle --------------------------------------------------------------
    def _update(self, desired: Desired) -> None:
        content_type = desired.content_type
        assert desired.version is not None
        ref = VersionRef(desired.version, desired.sha256)
        c = self.state.of(content_type)
        if c.update is not None and c.update.switched:
            return  # a trial is running (it resumes at start-up); never start a second switch
        if c.update is None or c.update.target != ref:
            if c.update is not None:
                log.info("%s: %s replaces the pending update to %s", content_type, ref.version,
                         c.update.target.version)
            c.update = Update(target=ref, release=desired.release, size=desired.size,
                              started_at=self.clock.now().isoformat())
            self._save()
        u = c.update
        applier = self._applier(content_type)
        if u.step == "download":
            # With signed delivery, a copy staged here earlier counts only if it was verified then.
            if not applier.has(ref) or (self.signed is not None and ref.version not in c.seqs):
                blob = self._download(desired, u)
                if blob is None:
                    return
                self._fault("downloaded")
                try:
                    applier.stage(ref, blob)
                except ApplyFailed as exc:
                    log.error("%s", exc)
                    self._event("failed", content_type, ref.version, reason=str(exc), step="stage")
                    self._save()
                    return
                finally:
                    with contextlib.suppress(OSError):
                        blob.unlink()
            elif self._downgrade(content_type, u) != "go":
                return
            u.step = "staged"
            self._save()
            self._fault("staged")
        if u.step == "staged":
            u.intent_id = self._event("intent", content_type, ref.version, release=desired.release,
                                      lkg=c.lkg.version if c.lkg else None)
            u.step = "intent"
            self._save()
            self._fault("intent-journaled")
        if u.step != "intent" or self.stopping.is_set():
            return
        if not u.intent_acked:
            acked = self._await_ack(desired, u)
            if self.state.of(content_type).update is not u:
                return  # cancelled while waiting
            if acked:
                u.intent_acked = True
                self._save()
                self._fault("intent-acked")
            elif desired.require_intent_ack:
                log.warning("%s %s: the intent was not acknowledged within %gs; staying on %s and trying later",
                            content_type, ref.version, desired.intent_ack_timeout_s,
                            c.active.version if c.active else "no content")
                return
            else:
                log.warning("%s %s: activating without an acknowledged intent, as the plan allows", content_type,
                            ref.version)
        self._activate(content_type, u)

    def _download(self, desired: Desired, u: Update) -> Path | None:
        content_type, ref = desired.content_type, u.target
        limit = self.config.max_download_bytes
        if desired.size > limit:
            self._give_up(content_type, u, f"the artifact is {desired.size} bytes; this agent accepts at most {limit}")
            return None
        assert self.credential is not None
        part = self.state_dir / "downloads" / f"{ref.sha256}.part"
        try:
            self.transport.download(self.credential, desired.url, part, desired.size,
                                    self.config.download_timeout_s)
        except Unreachable as exc:
            log.warning("download of %s %s interrupted (%s); it resumes at the next check-in", content_type,
                        ref.version, exc)
            return None
        except (DownloadTooLarge, Rejected) as exc:
            with contextlib.suppress(OSError):
                part.unlink()
            self._bad_download(content_type, u, str(exc))
            return None
        except OSError as exc:
            with contextlib.suppress(OSError):
                part.unlink()
            log.error("download of %s %s failed on disk: %s; retrying at the next check-in", content_type,
                      ref.version, exc)
            u.disk_errors += 1
            if u.disk_errors == 1:  # say it once: a full disk is this device's problem, not the version's
                self._event("failed", content_type, ref.version, reason=f"download: {exc.strerror or exc}",
                            step="download")
            self._save()
            return None
        digest = hashlib.sha256()
        size = 0
        with open(part, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        if size != desired.size or digest.hexdigest() != ref.sha256:
            part.unlink()
            self._bad_download(content_type, u, f"hash mismatch: expected {ref.sha256} ({desired.size} bytes), "
                                                f"got {digest.hexdigest()} ({size} bytes)")
            return None
        if self.signed is not None and not self._verify_signed(content_type, u, part):
            return None
        try:
            self.verifier.verify(content_type, ref, part)
        except ValueError as exc:
            part.unlink()
            self._give_up(content_type, u, f"verification failed: {exc}")
            return None
        blob = part.with_suffix("")
        os.replace(part, blob)
        return blob

    def _verify_signed(self, content_type: str, u: Update, part: Path) -> bool:
        """TUF, after the sha256 check and before staging: the bytes must be the signed target,
        and not older than the active version unless that one is revoked. False: stop here
        (refused and reported, or to be tried again at the next check-in)."""
        assert self.signed is not None
        version = u.target.version
        try:
            signed = self.signed.verify(content_type, version, part)
        except RepositoryUnreachable as exc:  # the bytes stay: the next check-in only asks the repository
            log.warning("%s %s: cannot be verified yet (%s); trying again at the next check-in", content_type,
                        version, exc)
            return False
        except Unverified as exc:
            part.unlink()
            self._bad_download(content_type, u, str(exc))
            return False
        self.state.of(content_type).seqs[version] = signed.seq
        verdict = self._downgrade(content_type, u)
        if verdict == "refused":
            part.unlink()
        elif verdict == "later":
            self._save()  # the seq just learned
        return verdict == "go"

    def _downgrade(self, content_type: str, u: Update) -> Literal["go", "refused", "later"]:
        """Before staging (the target's signed seq is known), the rule of
        :meth:`Downgrades.update`. A refusal is a ``failed`` event, once: the device stays, and
        the same request is declined quietly while the active version stays."""
        if self._downgrades is None:
            return "go"
        c = self.state.of(content_type)
        target = u.target.version
        verdict = self._downgrades.update(content_type, c, target)
        if verdict.outcome == "go" and verdict.reason:
            log.info("%s: %s", content_type, verdict.reason)
        elif verdict.outcome == "later":
            log.warning("%s: %s may be older than %s and the signed revocations cannot be read (%s); trying "
                        "again at the next check-in", content_type, target, c.active.version if c.active else "-",
                        verdict.reason)
        elif verdict.outcome == "refused":
            log.error("%s: %s", content_type, verdict.reason)
            c.refused[target] = c.active.version if c.active else ""
            c.update = None
            self._event("failed", content_type, target, reason=verdict.reason, step="verify")
            self._save()
        return verdict.outcome

    def _bad_download(self, content_type: str, u: Update, reason: str) -> None:
        u.download_failures += 1
        log.error("%s %s: %s (attempt %d of %d)", content_type, u.target.version, reason, u.download_failures,
                  self.config.max_download_failures)
        if u.download_failures >= self.config.max_download_failures:
            self._give_up(content_type, u, reason)
            return
        self._event("failed", content_type, u.target.version, reason=reason, step="download")
        self._save()

    def _give_up(self, content_type: str, u: Update, reason: str) -> None:
        c = self.state.of(content_type)
        c.blocked[u.target.version] = reason
        c.update = None
        self._event("failed", content_type, u.target.version, reason=reason, step="download", final=True)
        self._save()
        log.error("%s %s will not be tried again here: %s", content_type, u.target.version, reason)

    def _cancel(self, content_type: str, why: str) -> None:
        c = self.state.of(content_type)
        if c.update is None or c.update.switched:
            return
        log.info("%s: update to %s cancelled: %s", content_type, c.update.target.version, why)
        c.update = None
        self._save()

    def _await_ack(self, desired: Desired, u: Update) -> bool:
        """Send the intent (it rides on check-ins) until acknowledged or the plan's timeout."""
        deadline = time.monotonic() + desired.intent_ack_timeout_s
        pause = 0.25
        while True:
            if all(e["id"] != u.intent_id for e in self.state.outbox):
                return True  # events leave the outbox only when the server acknowledged them
            answer = self.exchange()
            if answer is not None:
                if all(e["id"] != u.intent_id for e in self.state.outbox):
                    return True
                still = (answer.get("desired") or {}).get(desired.content_type) or {}
                revoked = (answer.get("revoked") or {}).get(desired.content_type) or {}
                if still.get("version") != u.target.version or still.get("rollback_from") or revoked:
                    self._cancel(desired.content_type, "the server changed its answer while the intent was sent")
                    return False
            if time.monotonic() + pause > deadline or self.stopping.is_set():
                return False
            self.sleep(pause)
            pause = min(pause * 2, 5.0)

    def _activate(self, content_type: str, u: Update) -> None:
        c = self.state.of(content_type)
        u.step = "activating"
        u.boots = 1  # the boot counter goes up before the content loads
        self._save()
        self._fault("activating")
        try:
            self._applier(content_type).activate(u.target)
        except ApplyFailed as exc:
            self._revert(content_type, u.target.version, c.lkg, f"activation failed: {exc}", "rolled_back")
            return
        self._fault("switched")
        c.active = u.target
        u.step = "trial"
        self._event("activated", content_type, u.target.version, release=u.release)
        self._save()
        self._fault("activated")
        log.info("%s %s activated; trial for %gs", content_type, u.target.version,
                 self.config.spec(content_type).trial_s)
        self._trial(content_type)

    def _trial(self, content_type: str, *, load: bool = True) -> None:
        """Load the version and watch it: the workload must keep running and the probe must pass
        at the end of the trial. Heartbeats go out meanwhile."""
        c = self.state.of(content_type)
        u = c.update
        assert u is not None
        spec = self.config.spec(content_type)
        if load:
            self._reload(content_type)
        self._fault("loaded")
        started = time.monotonic()
        next_beat = started
        probe = self._probe(content_type, spec)
        while True:
            failure = self._workload_failure(content_type)
            if failure is not None:
                self._revert(content_type, u.target.version, c.lkg, failure, "rolled_back")
                return
            now = time.monotonic()
            if now >= next_beat:
                self._event("heartbeat", content_type, u.target.version, trial_s=round(now - started, 1))
                self._save()
                answer = self.exchange()
                if answer is not None:
                    revoked = (answer.get("revoked") or {}).get(content_type) or {}
                    desired = (answer.get("desired") or {}).get(content_type) or {}
                    if revoked.get("version") == u.target.version or desired.get("rollback_from") == u.target.version:
                        self._revert(content_type, u.target.version, c.lkg, "the server rolled the release back "
                                     "during the trial", "recalled")
                        return
                next_beat = now + self.config.heartbeat_s
            if now - started >= spec.trial_s:
                result = probe.check() if probe is not None else ProbeResult(True, "no probe configured")
                self._fault("probed")
                if result.ok:
                    self._commit(content_type, result.reason)
                else:
                    self._revert(content_type, u.target.version, c.lkg, f"health probe failed: {result.reason}",
                                 "rolled_back")
                return
            if self.stopping.is_set():
                return  # the journal keeps the trial; the next start resumes it
            self.sleep(min(0.1, spec.trial_s))

    def _commit(self, content_type: str, reason: str) -> None:
        c = self.state.of(content_type)
        u = c.update
        assert u is not None
        spec = self.config.spec(content_type)
        c.commit(u.target, keep=spec.keep)
        self._event("healthy", content_type, u.target.version, release=u.release, boots=u.boots, probe=reason)
        self._save()
        self._fault("committed")
        log.info("%s %s committed: it is the last-known-good now", content_type, u.target.version)
        self._applier(content_type).prune(c.keep())
        self.exchange()

    def _revert(self, content_type: str, leaving: str, back: VersionRef | None, reason: str, kind: str,
                *, load: bool = True) -> None:
        """Leave ``leaving`` for ``back`` (None: no content). Recorded before the switch, so a
        crash in the middle is finished at the next start."""
        c = self.state.of(content_type)
        u = c.update
        target = u.target if u is not None and u.target.version == leaving else (
            c.active if c.active is not None and c.active.version == leaving else VersionRef(leaving, ""))
        c.update = Update(target=target, release=u.release if u else None, size=0, step="reverting",
                          boots=u.boots if u else 0, revert_to=back, revert_kind=kind, reason=reason)
        self._save()
        self._fault("reverting")
        self._finish_revert(content_type, load=load)

    def _finish_revert(self, content_type: str, *, load: bool = False) -> None:
        c = self.state.of(content_type)
        u = c.update
        assert u is not None
        assert u.step == "reverting"
        back = u.revert_to
        try:
            self._applier(content_type).activate(back, rollback=True)
        except ApplyFailed as exc:
            log.critical("%s: cannot return to %s: %s; retrying at the next start", content_type,
                         back.version if back else "no content", exc)
            self._event("failed", content_type, u.target.version, reason=f"rollback failed: {exc}", step="revert")
            self._save()
            return
        self._fault("switched-back")
        leaving = u.target.version
        c.reverted(leaving, back, u.reason)
        self._event(u.revert_kind or "rolled_back", content_type, leaving, reason=u.reason,
                    to=back.version if back else None, boots=u.boots)
        self._save()
        self._fault("reverted")
        log.warning("%s: left %s for %s: %s", content_type, leaving, back.version if back else "no content",
                    u.reason)
        if load:
            self._reload(content_type)

    # -- workload and probes ---------------------------------------------------------------
    def _start_workload(self) -> None:
        spec = self.config.workload
        if spec is None:
            return
        self.workload = Workload(spec, self._applier(spec.content_type).content_path, self.state_dir / "run",
                                 platform=str(self._attributes.get("platform", "")))
        self.workload.start()
        self._workload_restart_at = 0.0

    def _reload(self, content_type: str) -> None:
        """Load a newly switched version: the workload that consumes it restarts."""
        if self.workload is not None and self.workload.spec.content_type == content_type:
            self.workload.start()

    def _workload_failure(self, content_type: str) -> str | None:
        """During a trial: why the workload that consumes ``content_type`` died, if it did. A
        workload that takes the host down takes the agent with it, here and now."""
        w = self.workload
        if w is None or w.spec.content_type != content_type:
            return None
        code = w.exit_code()
        if code is None:
            return None
        reason = f"{w.name} exited with {describe_exit(code)} during the trial"
        if w.spec.crash == "host":
            self._host_crash(reason)
        tail = w.log_tail(200)
        return f"{reason}: {tail}" if tail else reason

    def _host_crash(self, reason: str) -> None:
        log.critical("%s; it takes the machine down with it", reason)
        logging.shutdown()
        os._exit(HOST_CRASH_EXIT)

    def _watch_workload(self) -> None:
        """Outside a trial: a workload that exits is a crash of the version it runs. It is
        reported and restarted with a growing delay."""
        w = self.workload
        if w is None or w.running or self._journal is None:
            return
        code = w.exit_code()
        if code is None or time.monotonic() < self._workload_restart_at:
            return
        reason = f"{w.name} exited with {describe_exit(code)}"
        if w.spec.crash == "host":
            self._host_crash(reason)
        c = self.state.of(w.spec.content_type)
        if c.active is not None:
            self._event("crash", w.spec.content_type, c.active.version, reason=reason)
            self._save()
        self._workload_restarts += 1
        delay = min(60.0, 2.0 ** min(self._workload_restarts, 6))
        self._workload_restart_at = time.monotonic() + delay
        log.error("%s; restarting it (next restart no sooner than %gs)", reason, delay)
        w.start()

    def _probe(self, content_type: str, spec: ContentTypeSpec) -> Probe | None:
        return self._probes.get(content_type) or probe_for(
            spec.probe, content_type, self._applier(content_type).content_path, self.workload)

    # -- reporting -------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {**summary(self.state), "poll_interval_s": self.poll_interval_s}
