"""Device timelines -> per-stratum tallies and the failure sequence the hazard test reads.

A :class:`Track` is what the server (or the simulator) knows about one device during one
rollout: since when it is watched, when it announced its intent (joined the exposed arm), when it
last confirmed health, when it was last heard from, and its first reported failure. From it,
:func:`outcome` derives the device's failure, **silence included**:

* an exposed device with no ``healthy`` within the trial timeout has failed at
  ``exposed_at + trial_timeout`` ("silent after activation" — the 2024 signature: a machine that
  crashes while loading never says anything again);
* any device, exposed or control, not heard from for ``silence_after`` has failed at
  ``last_heard + silence_after``. Silence counts in both arms, so an outage that silences a whole
  region hits exposed and control alike and cancels out of the hazard ratio.

A failure before the device's exposure belongs to the control arm; from the exposure on, to the
exposed arm. A device leaves the risk set at its first failure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Outcome:
    failed_at: datetime | None
    cause: str  # event kind, "silent-after-activation" or "silent"; "" when it did not fail
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
    if track.exposed_at is not None and (track.healthy_at is None or track.healthy_at < track.exposed_at):
        deadline = track.exposed_at + silence.trial_timeout
        if deadline <= now:
            candidates.append((deadline, "silent-after-activation"))
    heard = max((t for t in (track.last_heard, track.healthy_at, track.exposed_at) if t is not None),
                default=track.since)
    if heard + silence.silence_after <= now:
        candidates.append((heard + silence.silence_after, "silent"))
    if not candidates:
        return Outcome(None, "", track.exposed_at is not None)
    at, cause = min(candidates)
    return Outcome(at, cause, track.exposed_at is not None and at >= track.exposed_at)


@dataclass(slots=True)
class ArmTally:
    devices: int = 0
    failures: int = 0
    device_hours: float = 0.0
    silent: int = 0  # failures that were silence
    healthy: int = 0  # exposed devices that confirmed health

    def as_dict(self) -> dict[str, float | int]:
        return {"devices": self.devices, "failures": self.failures, "device_hours": round(self.device_hours, 3),
                "silent": self.silent, "healthy": self.healthy}


@dataclass(slots=True)
class StratumData:
    """Everything the judges see about one stratum."""

    stratum: str
    exposed: ArmTally
    control: ArmTally
    steps: list[RiskStep]


def tally(tracks: Iterable[Track], now: datetime, silence: Silence) -> dict[str, StratumData]:
    """Per stratum: the two arms' tallies and the time-ordered failures with their risk sets."""
    by_stratum: dict[str, list[Track]] = defaultdict(list)
    for track in tracks:
        by_stratum[track.stratum].append(track)
    return {stratum: _stratum(stratum, group, now, silence) for stratum, group in sorted(by_stratum.items())}


def _hours(delta: timedelta) -> float:
    return max(delta.total_seconds(), 0.0) / 3600.0


def _stratum(stratum: str, tracks: list[Track], now: datetime, silence: Silence) -> StratumData:
    exposed, control = ArmTally(), ArmTally()
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
            if track.healthy_at is not None and track.healthy_at >= switch:
                exposed.healthy += 1
        if result.failed_at is not None:
            bucket = exposed if result.exposed else control
            bucket.failures += 1
            if result.cause.startswith("silent"):
                bucket.silent += 1
            changes.append((result.failed_at, 1, "fail", result.exposed))
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
    return StratumData(stratum, exposed, control, steps)
