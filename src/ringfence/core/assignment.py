"""Assignment: what should this device run? A pure function of an active rollout, the device,
and the rollout's admissions so far.

* ``rolling``: an admitted device runs the new version; another one is admitted if a wave up to
  the current one has room for it (:func:`ringfence.core.cohorts.admit`).
* ``paused`` / ``halted``: nobody new is admitted; exposed devices keep the new version.
* ``rolling_back``: an exposed device goes back to its own last-known-good version (the decision
  names the version it leaves, and the baseline as the fallback for a device that kept none);
  everybody else runs the baseline.
* ``rolled_back``: the rollout is over; everybody runs the baseline.
* no active rollout: the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringfence.core.cohorts import Admissions, WaveCohort, admit, bucket
from ringfence.core.models import DeviceAttributes
from ringfence.core.plan import Plan
from ringfence.core.rollout import Phase


@dataclass(frozen=True, slots=True)
class Target:
    """A version a device should run, and where to get it."""

    content_type: str
    version: str
    sha256: str
    size: int
    release_id: str | None


@dataclass(frozen=True, slots=True)
class RolloutView:
    release_id: str
    content_type: str
    target: Target
    baseline: Target | None
    phase: Phase
    wave: int
    plan: Plan
    salt: str
    table: tuple[WaveCohort, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    target: Target | None
    admit_wave: int | None = None  # set when this decision admits the device to that wave
    rollback_from: str | None = None  # set when the device must leave this version for its LKG


def decide(
    view: RolloutView,
    device_id: str,
    attrs: DeviceAttributes,
    admitted_wave: int | None,
    admissions: Admissions,
) -> Decision:
    if view.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK):
        if admitted_wave is not None:
            return Decision(view.baseline, rollback_from=view.target.version)
        return Decision(view.baseline)
    if admitted_wave is not None:
        return Decision(view.target)
    if view.phase is not Phase.ROLLING:
        return Decision(view.baseline)
    wave = admit(view.plan, view.table, attrs, bucket(view.salt, device_id), view.wave, admissions)
    if wave is None:
        return Decision(view.baseline)
    return Decision(view.target, admit_wave=wave)
