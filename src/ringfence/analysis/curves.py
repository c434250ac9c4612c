"""Failure curves: per stratum, the share of exposed and of control devices that had failed, at
evenly spaced moments of a rollout — what the dashboard draws next to the judges' verdicts.

The curves read the same :class:`~ringfence.analysis.tallies.Track` timelines as the judges and
take each device's failure from :func:`~ringfence.analysis.tallies.outcome` (a loud failure or
silence), so a chart never disagrees with the tallies. At moment ``t`` a device is in the
exposed arm once it announced its intent (``exposed_at <= t``) and in the control arm while it is
watched and not yet exposed; a failure counts in the arm the device was in when it failed. The
curves are cumulative: a device that failed stays failed.

Guarantees: at every point ``failed <= devices`` in both arms, and every count only grows from
one point to the next in the exposed arm. Work is ``O(n log n)`` in the tracks plus
``O(points log n)``: cheap enough to draw on every refresh of the page.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from ringfence.analysis.tallies import Silence, Track, outcome


@dataclass(frozen=True, slots=True)
class CurvePoint:
    at_s: float  # seconds after the curve's start
    exposed: int
    exposed_failed: int
    control: int
    control_failed: int

    def as_list(self) -> list[float | int]:
        return [round(self.at_s, 3), self.exposed, self.exposed_failed, self.control, self.control_failed]


@dataclass(frozen=True, slots=True)
class StratumCurve:
    stratum: str
    points: tuple[CurvePoint, ...]


def failure_curves(tracks: Iterable[Track], start: datetime, end: datetime, silence: Silence,
                   points: int = 40) -> list[StratumCurve]:
    """One curve per stratum (sorted by name), each of ``points`` moments from ``start`` to
    ``end`` inclusive (one moment when they coincide). Failures are judged as of ``end``."""
    if points < 1:
        raise ValueError("a curve needs at least one point")
    span = max((end - start).total_seconds(), 0.0)
    moments = [span] if span == 0 or points == 1 else [span * i / (points - 1) for i in range(points)]
    by_stratum: dict[str, list[Track]] = defaultdict(list)
    for track in tracks:
        by_stratum[track.stratum].append(track)
    return [StratumCurve(stratum, _curve(group, start, end, silence, moments))
            for stratum, group in sorted(by_stratum.items())]


def _curve(tracks: list[Track], start: datetime, end: datetime, silence: Silence,
           moments: list[float]) -> tuple[CurvePoint, ...]:
    def offset(at: datetime) -> float:
        return (at - start).total_seconds()

    watched: list[float] = []  # every device, from when it is watched
    exposed: list[float] = []  # exposed devices, from their intent
    exposed_failed: list[float] = []  # failures in the exposed arm
    control_failed: list[float] = []  # failures in the control arm ...
    control_failed_then_exposed: list[float] = []  # ... of devices exposed later (they leave the arm then)
    for track in tracks:
        watched.append(offset(min(track.since, track.exposed_at or track.since)))
        result = outcome(track, end, silence)
        if track.exposed_at is not None:
            exposed.append(offset(track.exposed_at))
        if result.failed_at is None:
            continue
        if result.exposed:
            exposed_failed.append(offset(result.failed_at))
        else:
            control_failed.append(offset(result.failed_at))
            if track.exposed_at is not None:
                control_failed_then_exposed.append(offset(track.exposed_at))
    for column in (watched, exposed, exposed_failed, control_failed, control_failed_then_exposed):
        column.sort()
    out = []
    for t in moments:
        n_exposed = bisect_right(exposed, t)
        out.append(CurvePoint(
            at_s=t, exposed=n_exposed, exposed_failed=bisect_right(exposed_failed, t),
            control=bisect_right(watched, t) - n_exposed,
            control_failed=bisect_right(control_failed, t) - bisect_right(control_failed_then_exposed, t)))
    return tuple(out)
