"""Device timelines -> per-stratum tallies, the failure sequence the hazard test reads, and the
placebo pairs the silence test reads.

A :class:`Track` is what the server (or the simulator) knows about one device during one
rollout: since when it is watched, when it announced its intent (joined the exposed arm), when it
last confirmed health, when it was last heard from, its first reported failure, and — for a
placebo device — when it was asked to come back and when it did. From it:

* :func:`outcome` derives the device's failure for the hazard test: its first loud failure, or
  **silence** — any device, exposed or control, not heard from for ``silence_after`` has failed
  at ``last_heard + silence_after``. Silence counts in both arms alike, so an outage that
  silences a whole region cancels out of the hazard ratio. A failure before the device's
  exposure belongs to the control arm; from the exposure on, to the exposed arm. A device leaves
  the risk set at its first failure.
* an exposed device with no ``healthy`` (and no loud failure) within the trial timeout is
  **silent after activation** — the 2024 signature: a machine that crashes while loading never
  says anything again. Such silence is not symmetric between the arms (a control device has no
  trial to confirm), so it is not a hazard-test failure; it is compared with **placebo** devices
  instead: control devices of the same stratum asked, as the wave goes on, to come back within
  the same timeout. The k-th exposed device of a stratum is paired with its k-th placebo device;
  a pair is decided once both timeouts have passed (see :func:`ringfence.analysis.hazard.sign_log_e`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ringfence.analysis.hazard import RiskStep


@dataclass(frozen=True, slots=True)
class Track:
    device_id: str
    stratum: str
    since: datetime  # watched from (the rollout's start, or the device's first sighting if later)
    exposed_at: datetime | None = None
    healthy_at: datetime | None = None
    last_heard: datetime | None = None
    failed_at: datetime | None = None  # first failure the device reported
    failure: str = ""  # its kind
    placebo_at: datetime | None = None  # asked to come back (a placebo trial) at
    placebo_seen_at: datetime | None = None  # came back (first contact after the placebo's minimum wait)


@dataclass(frozen=True, slots=True)
class Outcome:
    failed_at: datetime | None
    cause: str  # event kind, or "silent"; "" when it did not fail
    exposed: bool  # which arm the failure (or the device now) belongs to


@dataclass(frozen=True, slots=True)
class Silence:
    """When no news is bad news."""

    trial_timeout: timedelta  # an exposed device must confirm health within this
    silence_after: timedelta  # k times the poll interval


def outcome(track: Track, now: datetime, silence: Silence) -> Outcome:
    candidates: list[tuple[datetime, str]] = []
    if track.failed_at is not None and track.failed_at <= now:
        candidates.append((track.failed_at, track.failure or "failed"))
    heard = max((t for t in (track.last_heard, track.healthy_at, track.exposed_at) if t is not None),
                default=track.since)
    if heard + silence.silence_after <= now:
        candidates.append((heard + silence.silence_after, "silent"))
    if not candidates:
        return Outcome(None, "", track.exposed_at is not None)
    at, cause = min(candidates)
    return Outcome(at, cause, track.exposed_at is not None and at >= track.exposed_at)


def silent_after_activation(track: Track, now: datetime, silence: Silence) -> bool | None:
    """Whether an exposed device stayed silent through its trial: no ``healthy`` and no loud
    failure by ``exposed_at + trial_timeout``. None while that deadline is still ahead (or for a
    device that is not exposed)."""
    if track.exposed_at is None:
        return None
    deadline = track.exposed_at + silence.trial_timeout
    if deadline > now:
        return None
    confirmed = track.healthy_at is not None and track.exposed_at <= track.healthy_at <= deadline
    loud = track.failed_at is not None and track.exposed_at <= track.failed_at <= deadline
    return not (confirmed or loud)


def placebo_silent(track: Track, now: datetime, silence: Silence) -> bool | None:
    """The same question for a placebo device: did it come back within the trial timeout?"""
    if track.placebo_at is None:
        return None
    deadline = track.placebo_at + silence.trial_timeout
    if deadline > now:
        return None
    return track.placebo_seen_at is None or track.placebo_seen_at > deadline


@dataclass(slots=True)
class Pairs:
    """Exposed devices paired with placebo devices, by the order they started."""

    exposed_only: int = 0  # discordant: only the exposed device stayed silent
    placebo_only: int = 0  # discordant: only the placebo device did
    both: int = 0
    neither: int = 0
    waiting: int = 0  # exposed devices whose pair is not decided yet (or who have no placebo)

    def as_dict(self) -> dict[str, int]:
        return {"exposed_only_silent": self.exposed_only, "placebo_only_silent": self.placebo_only,
                "both_silent": self.both, "neither_silent": self.neither, "waiting": self.waiting}

    def add(self, other: Pairs) -> None:
        self.exposed_only += other.exposed_only
        self.placebo_only += other.placebo_only
        self.both += other.both
        self.neither += other.neither
        self.waiting += other.waiting


def pair(tracks: list[Track], now: datetime, silence: Silence) -> Pairs:
    # Only devices exposed while watched: after a resume, those exposed before it had their
    # trials judged already, and the placebos asked since belong to the devices exposed since.
    exposed = sorted((t for t in tracks if t.exposed_at is not None and t.exposed_at >= t.since),
                     key=lambda t: (t.exposed_at, t.device_id))
    placebos = sorted((t for t in tracks if t.placebo_at is not None), key=lambda t: (t.placebo_at, t.device_id))
    pairs = Pairs(waiting=max(len(exposed) - len(placebos), 0))
    for e, p in zip(exposed, placebos, strict=False):
        a, b = silent_after_activation(e, now, silence), placebo_silent(p, now, silence)
        if a is None or b is None:
            pairs.waiting += 1
        elif a and not b:
            pairs.exposed_only += 1
        elif b and not a:
            pairs.placebo_only += 1
        elif a:
            pairs.both += 1
        else:
            pairs.neither += 1
    return pairs


@dataclass(slots=True)
class ArmTally:
    devices: int = 0
    failures: int = 0
    device_hours: float = 0.0
    silent: int = 0  # failures that were silence (not heard from for ``silence_after``)
    healthy: int = 0  # exposed devices that confirmed health
    unconfirmed: int = 0  # exposed devices silent after activation (no health, no failure in the trial)
    heard_since: int = 0  # control devices heard from since the first unconfirmed device's deadline

    def as_dict(self) -> dict[str, float | int]:
        return {"devices": self.devices, "failures": self.failures, "device_hours": round(self.device_hours, 3),
                "silent": self.silent, "healthy": self.healthy, "unconfirmed": self.unconfirmed}


@dataclass(slots=True)
class StratumData:
    """Everything the judges see about one stratum."""

    stratum: str
    exposed: ArmTally
    control: ArmTally
    steps: list[RiskStep]
    pairs: Pairs = field(default_factory=Pairs)


def tally(tracks: Iterable[Track], now: datetime, silence: Silence) -> dict[str, StratumData]:
    """Per stratum: the two arms' tallies and the time-ordered failures with their risk sets."""
    by_stratum: dict[str, list[Track]] = defaultdict(list)
    for track in tracks:
        by_stratum[track.stratum].append(track)
    return {stratum: _stratum(stratum, group, now, silence) for stratum, group in sorted(by_stratum.items())}


def _hours(delta: timedelta) -> float:
    return max(delta.total_seconds(), 0.0) / 3600.0


def _unconfirmed(track: Track, result: Outcome, now: datetime, silence: Silence) -> bool:
    """Exposed, silent since its activation, and not yet counted as a (silence) failure."""
    switch = track.exposed_at
    if switch is None or (result.failed_at is not None and result.exposed):
        return False
    if (track.healthy_at is not None and track.healthy_at >= switch) or (
            track.failed_at is not None and track.failed_at >= switch):
        return False
    return bool(silent_after_activation(track, now, silence))


def _stratum(stratum: str, tracks: list[Track], now: datetime, silence: Silence) -> StratumData:
    exposed, control = ArmTally(), ArmTally()
    deadlines: list[datetime] = []
    # Sweep events: (time, order, kind, arm). At equal times, entries come before failures and
    # failures before exits, so a failing device is in its risk set when it fails.
    changes: list[tuple[datetime, int, str, bool]] = []
    for track in tracks:
        result = outcome(track, now, silence)
        end = result.failed_at or now
        start = track.since
        if track.exposed_at is not None and track.exposed_at < start:
            start = track.exposed_at
        switch = track.exposed_at if track.exposed_at is not None else None
        if switch is None or switch > end:
            control.devices += 1
            control.device_hours += _hours(end - start)
            changes.append((start, 0, "enter", False))
            changes.append((end, 2, "leave", False))
        else:
            exposed.devices += 1
            if switch > start:
                control.device_hours += _hours(switch - start)
                changes.append((start, 0, "enter", False))
                changes.append((switch, 2, "leave", False))
            exposed.device_hours += _hours(end - switch)
            changes.append((switch, 0, "enter", True))
            changes.append((end, 2, "leave", True))
            exposed.healthy += track.healthy_at is not None and track.healthy_at >= switch
            if _unconfirmed(track, result, now, silence):
                exposed.unconfirmed += 1
                deadlines.append(switch + silence.trial_timeout)
        if result.failed_at is not None:
            bucket = exposed if result.exposed else control
            bucket.failures += 1
            if result.cause.startswith("silent"):
                bucket.silent += 1
            changes.append((result.failed_at, 1, "fail", result.exposed))
    if deadlines:
        first = min(deadlines)
        control.heard_since = sum(1 for t in tracks if t.exposed_at is None and t.last_heard is not None
                                  and t.last_heard >= first)
    return StratumData(stratum, exposed, control, _risk_steps(changes), pair(tracks, now, silence))


def _risk_steps(changes: list[tuple[datetime, int, str, bool]]) -> list[RiskStep]:
    changes.sort(key=lambda c: (c[0], c[1]))
    at_risk = {True: 0, False: 0}
    steps: list[RiskStep] = []
    tie: tuple[datetime, int, int, int, int] | None = None  # time, failures by arm, risk sets
    for at, _, kind, arm in changes:
        if tie is not None and (kind != "fail" or at != tie[0]):
            steps.append(RiskStep(tie[1], tie[2], tie[3], tie[4]))
            tie = None
        if kind == "enter":
            at_risk[arm] += 1
        elif kind == "leave":
            at_risk[arm] -= 1
        elif tie is None:
            tie = (at, int(arm), int(not arm), at_risk[True], at_risk[False])
        else:
            tie = (at, tie[1] + int(arm), tie[2] + int(not arm), tie[3], tie[4])
    if tie is not None:
        steps.append(RiskStep(tie[1], tie[2], tie[3], tie[4]))
    return steps
