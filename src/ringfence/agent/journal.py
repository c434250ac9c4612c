"""The agent's durable local state: what runs, what ran before, what is being tried, and the
events the server has not acknowledged yet.

Invariants:

* Every change the update lifecycle depends on is written *before* the action it announces
  (the intent before the switch, the boot counter before content loads) and is durable when
  :meth:`Journal.save` returns.
* The journal lives in two slots written alternately, each with a generation number and a
  checksum. A write torn by a crash can damage only the slot being written; :meth:`Journal.open`
  takes the valid slot with the highest generation, so the previous state survives intact.
* Nothing here talks to the network or decides anything: the updater does.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ringfence.agent.durable import write_atomic

log = logging.getLogger("ringfence.agent")

FORMAT = 1
MAX_OUTBOX = 1000
_SLOTS = ("journal.a.json", "journal.b.json")


class JournalError(Exception):
    """The journal cannot be read or written (both slots damaged, or the disk refuses)."""


@dataclass(frozen=True, slots=True)
class VersionRef:
    """One version of one content type, as the agent holds it on disk."""

    version: str
    sha256: str

    def as_dict(self) -> dict[str, str]:
        return {"version": self.version, "sha256": self.sha256}

    @staticmethod
    def from_dict(raw: dict[str, Any] | None) -> VersionRef | None:
        return None if raw is None else VersionRef(str(raw["version"]), str(raw["sha256"]))


# The steps of an update, in order. ``activating`` and ``trial`` mean the new version may be
# switched in, so a restart must run the crash-loop guard before loading anything.
# ``reverting`` records a return to an earlier version before the switch happens, so a crash in
# the middle of it is finished at the next start rather than undone.
STEPS = ("download", "staged", "intent", "activating", "trial", "reverting")


@dataclass(slots=True)
class Update:
    """An update in flight: the target, how far it got, and how often it has been booted."""

    target: VersionRef
    release: str | None
    size: int
    step: str = "download"
    boots: int = 0
    intent_id: str | None = None
    intent_acked: bool = False
    download_failures: int = 0
    disk_errors: int = 0
    started_at: str = ""
    revert_to: VersionRef | None = None
    revert_kind: str = ""
    reason: str = ""

    @property
    def switched(self) -> bool:
        return self.step in ("activating", "trial")


@dataclass(slots=True)
class ContentState:
    """Per content type. ``active`` is what is switched in; ``lkg`` the last version that passed
    its trial here; ``history`` older committed versions, newest first (the way back when the
    LKG itself is revoked); ``blocked`` versions that failed here and must not be retried.

    With signed delivery: ``seqs`` the signed ``seq`` of each version held here (what a downgrade
    is judged by); ``refused`` versions the server asked for that would have been a downgrade
    from the active version, each with that version (the refusal stands while it stays active)."""

    active: VersionRef | None = None
    lkg: VersionRef | None = None
    history: list[VersionRef] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)
    update: Update | None = None
    seqs: dict[str, int] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    def way_back(self, leaving: str, revoked: set[str] | frozenset[str] = frozenset()) -> VersionRef | None:
        """The newest committed version other than ``leaving`` that is not revoked or blocked."""
        for ref in ([self.lkg] if self.lkg else []) + self.history:
            if ref.version != leaving and ref.version not in revoked and ref.version not in self.blocked:
                return ref
        return None

    def committed(self, version: str) -> bool:
        """Whether ``version`` passed its trial here and is the last-known-good (not a version
        still in trial)."""
        in_trial = self.update is not None and self.update.switched and self.update.target.version == version
        return self.lkg is not None and self.lkg.version == version and not in_trial

    def commit(self, ref: VersionRef, keep: int) -> None:
        """``ref`` passed its trial: it becomes the LKG, the old LKG the newest way back."""
        if self.lkg is not None and self.lkg != ref:
            self.history.insert(0, self.lkg)
        self.history = [h for h in self.history if h != ref][:keep]
        self.lkg = ref
        self.active = ref
        self.update = None
        self._settled()

    def reverted(self, leaving: str, back: VersionRef | None, reason: str) -> None:
        """The device left ``leaving`` for ``back``; ``leaving`` is never tried again here."""
        self.active = back
        if self.lkg is not None and self.lkg.version == leaving:
            self.lkg = back
        self.history = [h for h in self.history if h.version != leaving and h != back]
        self.blocked[leaving] = reason
        self.update = None
        self._settled()

    def _settled(self) -> None:
        """The active version changed: refusals made against the old one lapse, and only the
        versions kept on disk keep their signed seq."""
        self.refused = {}
        keep = self.keep()
        self.seqs = {v: s for v, s in self.seqs.items() if v in keep}

    def keep(self) -> set[str]:
        """Versions that must stay on disk: the active one and every way back."""
        refs = [self.active, self.lkg, *self.history]
        if self.update is not None:
            refs.append(self.update.target)
        return {r.version for r in refs if r is not None}


@dataclass(slots=True)
class State:
    device_id: str | None = None
    boot: int = 0
    clean_exit: bool = True
    seq: int = 0
    checkins_reserved: int = 0  # check-in sequence numbers up to this one may have been used
    content: dict[str, ContentState] = field(default_factory=dict)
    outbox: list[dict[str, Any]] = field(default_factory=list)

    def of(self, content_type: str) -> ContentState:
        if content_type not in self.content:
            self.content[content_type] = ContentState()
        return self.content[content_type]

    def next_event_id(self) -> str:
        self.seq += 1
        return f"{self.boot}-{self.seq}"

    def queue(self, event: dict[str, Any]) -> None:
        """Add an event to the outbox. When it is full the oldest heartbeats go first, then the
        oldest events: the newest news about a version matters most."""
        self.outbox.append(event)
        while len(self.outbox) > MAX_OUTBOX:
            beat = next((i for i, e in enumerate(self.outbox) if e["kind"] == "heartbeat"), 0)
            dropped = self.outbox.pop(beat)
            log.warning("outbox full: dropped event %s (%s)", dropped["id"], dropped["kind"])

    def acknowledge(self, ids: set[str]) -> bool:
        before = len(self.outbox)
        self.outbox = [e for e in self.outbox if e["id"] not in ids]
        return len(self.outbox) != before


def summary(state: State) -> dict[str, Any]:
    """What the agent holds, as ``ringfence agent run --once --json`` prints it."""
    return {
        "device_id": state.device_id,
        "boot": state.boot,
        "content": {ct: {
            "active": c.active.version if c.active else None,
            "lkg": c.lkg.version if c.lkg else None,
            "previous": [h.version for h in c.history],
            "blocked": dict(c.blocked),
            "update": None if c.update is None else {"version": c.update.target.version, "step": c.update.step,
                                                     "boots": c.update.boots},
        } for ct, c in sorted(state.content.items())},
        "outbox": len(state.outbox),
    }


def _encode(state: State, generation: int) -> bytes:
    body = {
        "format": FORMAT, "generation": generation, "device_id": state.device_id, "boot": state.boot,
        "clean_exit": state.clean_exit, "seq": state.seq, "outbox": state.outbox,
        "checkins_reserved": state.checkins_reserved,
        "content": {ct: {
            "active": c.active.as_dict() if c.active else None,
            "lkg": c.lkg.as_dict() if c.lkg else None,
            "history": [h.as_dict() for h in c.history],
            "blocked": c.blocked,
            "seqs": c.seqs,
            "refused": c.refused,
            "update": None if c.update is None else {
                **asdict(c.update), "target": c.update.target.as_dict(),
                "revert_to": c.update.revert_to.as_dict() if c.update.revert_to else None},
        } for ct, c in state.content.items()},
    }
    payload = json.dumps(body, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(payload.encode()).hexdigest()
    return json.dumps({"sha256": digest, "body": body}, sort_keys=True, separators=(",", ":")).encode()


def _decode(raw: bytes) -> tuple[int, State]:
    doc = json.loads(raw)
    body = doc["body"]
    payload = json.dumps(body, sort_keys=True, separators=(",", ":"))
    if hashlib.sha256(payload.encode()).hexdigest() != doc["sha256"]:
        raise ValueError("checksum mismatch")
    if body["format"] != FORMAT:
        raise ValueError(f"unknown journal format {body['format']!r}")
    content: dict[str, ContentState] = {}
    for ct, c in body["content"].items():
        update = None
        if c["update"] is not None:
            u = dict(c["update"])
            target = VersionRef.from_dict(u.pop("target"))
            assert target is not None
            update = Update(target=target, revert_to=VersionRef.from_dict(u.pop("revert_to")), **u)
        content[ct] = ContentState(
            active=VersionRef.from_dict(c["active"]), lkg=VersionRef.from_dict(c["lkg"]),
            history=[VersionRef(h["version"], h["sha256"]) for h in c["history"]],
            blocked=dict(c["blocked"]), update=update,
            # absent from journals written before signed delivery
            seqs={str(v): int(n) for v, n in c.get("seqs", {}).items()}, refused=dict(c.get("refused", {})))
    state = State(device_id=body["device_id"], boot=int(body["boot"]), clean_exit=bool(body["clean_exit"]),
                  seq=int(body["seq"]), content=content, outbox=list(body["outbox"]),
                  checkins_reserved=int(body.get("checkins_reserved", 0)))  # absent before numbered check-ins
    return int(body["generation"]), state


class Journal:
    """Two-slot durable state file. Load with :meth:`open`, change :attr:`state`, then
    :meth:`save`."""

    def __init__(self, directory: Path, state: State, generation: int) -> None:
        self.directory = directory
        self.state = state
        self.generation = generation

    @classmethod
    def open(cls, directory: Path) -> Journal:
        """Load the newest intact slot. No slot at all is a fresh agent; slots that exist but
        are all damaged are an error the caller must handle (it must not pretend nothing ran)."""
        found: list[tuple[int, State]] = []
        damaged: list[str] = []
        for name in _SLOTS:
            path = directory / name
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                continue
            try:
                found.append(_decode(raw))
            except (ValueError, KeyError, TypeError, AssertionError) as exc:
                damaged.append(name)
                log.warning("journal slot %s is damaged (%s)", path, exc)
        if found:
            generation, state = max(found, key=lambda pair: pair[0])
            return cls(directory, state, generation)
        if damaged:
            raise JournalError(f"every journal slot in {directory} is damaged: {', '.join(damaged)}")
        return cls(directory, State(), 0)

    def save(self) -> None:
        self.generation += 1
        try:
            write_atomic(self.directory / _SLOTS[self.generation % 2], _encode(self.state, self.generation), 0o600)
        except OSError as exc:
            self.generation -= 1
            raise JournalError(f"cannot write the journal in {self.directory}: {exc}") from exc
