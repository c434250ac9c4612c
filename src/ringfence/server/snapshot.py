"""The in-memory fleet snapshot that answers check-ins without touching the database.

It holds every device's credential hash and attributes, the population counted per distinct
attribute set, one :class:`RolloutView` per content type with an active rollout (or the
baseline), and each active rollout's admissions. All mutation happens on the event loop thread
(check-in handlers are ``async`` and never await while deciding), so no lock is needed.

Channel policies (:mod:`ringfence.core.policy`) are held here too, with what a held device's
answer needs (pinned targets, the completed releases a delay picks from). A device's policy is
resolved per check-in from its tenant and tags (a few dictionary lookups); the population a
rollout's cohort table is built from (held devices left out, early ones as channel ``early``)
is recounted from the distinct attribute sets only when devices or policies change.

Reads from the database (:meth:`load`) run in a worker thread and are installed with
:meth:`install_views`; admissions of a rollout already in memory are kept, because the memory
copy is a superset of what has been flushed.
"""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from ringfence.core.assignment import Decision, RolloutView, Target, decide
from ringfence.core.cohorts import Admissions, admit, bucket, cohort_table
from ringfence.core.models import (
    DEFAULT_STRATA,
    FAILURE_KINDS,
    REVERT_KINDS,
    Category,
    DeviceAttributes,
    EventKind,
    stratum_key,
)
from ringfence.core.policy import (
    ChannelPolicy,
    GeneralRelease,
    Holding,
    PolicyBook,
    effective_attributes,
    held_decision,
    joins_now,
    rollout_population,
)
from ringfence.core.rollout import Phase
from ringfence.store.access import DeviceRecord, hash_secret


@dataclass(slots=True)
class DeviceState:
    credential_hash: str
    attributes: DeviceAttributes
    versions: dict[str, str] = field(default_factory=dict)
    checkin_seq: int = 0  # the highest check-in sequence number accepted (0: none sent yet)


@dataclass(slots=True)
class RolloutAdmissions:
    """Who a rollout admitted: device -> wave, plus the counters caps are checked against, and
    per stratum how many admitted devices are still in trial (the in-flight window) and how many
    confirmed health (canary before crowd). A trial is decided by the device's first ``healthy``,
    failure or revert event for the release."""

    waves: dict[str, int] = field(default_factory=dict)
    by_stratum: Counter[tuple[int, str]] = field(default_factory=Counter)
    by_wave: Counter[int] = field(default_factory=Counter)
    strata: dict[str, str] = field(default_factory=dict)
    decided: set[str] = field(default_factory=set)
    in_trial: Counter[str] = field(default_factory=Counter)
    healthy: Counter[str] = field(default_factory=Counter)

    def add(self, device_id: str, wave: int, stratum: str) -> None:
        if device_id in self.waves:
            return
        self.waves[device_id] = wave
        self.strata[device_id] = stratum
        self.by_stratum[(wave, stratum)] += 1
        self.by_wave[wave] += 1
        if device_id not in self.decided:
            self.in_trial[stratum] += 1

    def remove(self, device_id: str, stratum: str) -> None:
        wave = self.waves.pop(device_id, None)
        if wave is not None:
            self.strata.pop(device_id, None)
            self.by_stratum[(wave, stratum)] -= 1
            self.by_wave[wave] -= 1
            if device_id not in self.decided:
                self.in_trial[stratum] -= 1

    def decide(self, device_id: str, healthy: bool) -> None:
        """The device's trial ended (first decision only)."""
        stratum = self.strata.get(device_id)
        if stratum is None or device_id in self.decided:
            return
        self.decided.add(device_id)
        self.in_trial[stratum] -= 1
        if healthy:
            self.healthy[stratum] += 1

    def view(self) -> Admissions:
        return Admissions(by_stratum=self.by_stratum, by_wave=self.by_wave, in_trial=self.in_trial,
                          healthy=self.healthy)


@dataclass(slots=True)
class RolloutPlacebos:
    """A rollout's placebo devices: control devices asked to come back within the trial timeout,
    one per exposed device of the same wave and stratum (see :mod:`ringfence.analysis.tallies`)."""

    asked: dict[str, datetime] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)
    by_stratum: Counter[tuple[int, str]] = field(default_factory=Counter)

    def add(self, device_id: str, wave: int, stratum: str, at: datetime, seen: bool = False) -> None:
        if device_id in self.asked:
            return
        self.asked[device_id] = at
        self.by_stratum[(wave, stratum)] += 1
        if seen:
            self.seen.add(device_id)


@dataclass(frozen=True, slots=True)
class PlaceboStep:
    """What a check-in does about placebos: ask the device (``wave``/``stratum`` set), note that it
    came back (``seen``), and how soon to come back (``return_in_s``: None leaves the interval)."""

    release_id: str
    wave: int | None = None
    stratum: str | None = None
    seen: bool = False
    return_in_s: float | None = None


@dataclass(frozen=True, slots=True)
class Revoked:
    """A version devices must leave (and must not load at start-up): its release was rolled
    back."""

    release_id: str
    phase: str
    reason: str


@dataclass(frozen=True, slots=True)
class LoadedViews:
    """What :meth:`FleetSnapshot.load`-style readers fetch from the database."""

    views: dict[str, RolloutView]  # content type -> active rollout (table left empty)
    baselines: dict[str, Target | None]  # content type -> baseline
    admissions: dict[str, dict[str, tuple[int, str]]]  # release id -> device -> (wave, stratum)
    releases_by_version: dict[tuple[str, str], str]  # (content type, version) -> newest release id
    marker: tuple[int, int] = (0, 0)  # see control.rollouts_marker
    revoked: dict[str, dict[str, Revoked]] = field(default_factory=dict)  # content type -> version -> why
    placebos: dict[str, dict[str, tuple[int, str, datetime, bool]]] = field(default_factory=dict)  # release -> ...
    categories: dict[str, Category] = field(default_factory=dict)  # content type -> category
    policies: PolicyBook = field(default_factory=PolicyBook)
    pinned: dict[tuple[str, str], Target] = field(default_factory=dict)  # (content type, version) -> target
    general: dict[str, tuple[GeneralRelease, ...]] = field(default_factory=dict)  # content type -> completed
    trials: dict[str, dict[str, bool]] = field(default_factory=dict)  # release -> decided device -> healthy
    watched: dict[str, set[str]] = field(default_factory=dict)  # release -> devices heard from since its start


class FleetSnapshot:
    def __init__(self) -> None:
        self.devices: dict[str, DeviceState] = {}
        self.population: Counter[DeviceAttributes] = Counter()
        self.views: dict[str, RolloutView] = {}
        self.baselines: dict[str, Target | None] = {}
        self.admissions: dict[str, RolloutAdmissions] = {}
        self.placebos: dict[str, RolloutPlacebos] = {}
        self.watched: dict[str, set[str]] = {}  # release -> devices heard from since it started
        self.releases_by_version: dict[tuple[str, str], str] = {}
        self.revoked: dict[str, dict[str, Revoked]] = {}
        self.categories: dict[str, Category] = {}
        self.policies = PolicyBook()
        self.pinned: dict[tuple[str, str], Target] = {}
        self.general: dict[str, tuple[GeneralRelease, ...]] = {}
        self._populations: dict[str, Mapping[DeviceAttributes, int]] = {}  # content type -> rollout population
        self.population_changed = False
        self.marker: tuple[int, int] = (-1, -1)
        self._content_types: tuple[str, ...] | None = None
        self._reach: tuple[tuple[str, int, int, int, int], int] | None = None  # wave_reach's last answer
        self.unadmitted_logged: set[tuple[str, str]] = set()  # (device, release) reported on unadmitted

    # -- devices -------------------------------------------------------------------------
    def load_devices(self, records: Iterable[DeviceRecord]) -> None:
        for record in records:
            self.add_device(record)
        self.population_changed = False

    def add_device(self, record: DeviceRecord) -> None:
        old = self.devices.get(record.id)
        if old is not None:
            self.population[old.attributes] -= 1
        self.devices[record.id] = DeviceState(record.credential_hash, record.attributes, checkin_seq=max(
            record.checkin_seq, old.checkin_seq if old is not None else 0))
        self.population[record.attributes] += 1
        self.population_changed = True

    def authenticate(self, credential: str) -> str | None:
        """The device id a credential (``<device id>.<secret>``) belongs to, or None."""
        device_id, _, _ = credential.partition(".")
        state = self.devices.get(device_id)
        if state is None or not hmac.compare_digest(state.credential_hash, hash_secret(credential)):
            return None
        return device_id

    def update_attributes(self, device_id: str, attrs: DeviceAttributes) -> bool:
        """Record new self-reported attributes; True when they changed."""
        state = self.devices[device_id]
        if state.attributes == attrs:
            return False
        self.population[state.attributes] -= 1
        if self.population[state.attributes] <= 0:
            del self.population[state.attributes]
        self.population[attrs] += 1
        state.attributes = attrs
        self.population_changed = True
        return True

    def update_versions(self, device_id: str, versions: dict[str, str]) -> dict[str, str]:
        """Record reported versions; returns only those that changed."""
        state = self.devices[device_id]
        changed = {ct: v for ct, v in versions.items() if state.versions.get(ct) != v}
        state.versions.update(changed)
        return changed

    # -- rollouts ------------------------------------------------------------------------
    def install_views(self, loaded: LoadedViews) -> None:
        for release_id, admitted in loaded.admissions.items():
            if release_id not in self.admissions:
                entry = RolloutAdmissions()
                for device_id, (wave, stratum) in admitted.items():
                    entry.add(device_id, wave, stratum)
                for device_id, healthy in loaded.trials.get(release_id, {}).items():
                    entry.decide(device_id, healthy)
                self.admissions[release_id] = entry
        for release_id, asked in loaded.placebos.items():
            if release_id not in self.placebos:
                placebos = self.placebos[release_id] = RolloutPlacebos()
                for device_id, (wave, stratum, at, seen) in asked.items():
                    placebos.add(device_id, wave, stratum, at, seen)
        for release_id, heard in loaded.watched.items():
            self.watched.setdefault(release_id, set()).update(heard)
        live = {v.release_id for v in loaded.views.values()}
        for known in (self.admissions, self.placebos, self.watched):
            for release_id in [r for r in known if r not in live]:
                del known[release_id]
        self.categories = loaded.categories
        self.policies = loaded.policies
        self.pinned = loaded.pinned
        self.general = loaded.general
        self._populations = {}
        self.views = {ct: self._with_table(v) for ct, v in loaded.views.items()}
        self.baselines = loaded.baselines
        self.releases_by_version = loaded.releases_by_version
        self.revoked = loaded.revoked
        self.marker = loaded.marker
        self._content_types = None
        self.population_changed = False

    def set_phase(self, release_id: str, phase: Phase) -> None:
        """A transition just committed (the full reload follows): answer check-ins by it now."""
        self.views = {ct: replace(v, phase=phase) if v.release_id == release_id else v for ct, v in self.views.items()}

    def refresh_tables(self) -> None:
        """Recompute cohort thresholds after the fleet changed (devices joined or moved)."""
        self._populations = {}
        self.views = {ct: self._with_table(v) for ct, v in self.views.items()}
        self.population_changed = False

    def _with_table(self, view: RolloutView) -> RolloutView:
        if view.phase is not Phase.ROLLING:
            return view
        return replace(view, table=cohort_table(view.plan, self._population_for(view.content_type)))

    def _population_for(self, content_type: str) -> Mapping[DeviceAttributes, int]:
        """The devices a rollout of ``content_type`` may admit, as its policies leave them."""
        if not self.policies:
            return self.population
        counted = self._populations.get(content_type)
        if counted is None:
            category = self.categories.get(content_type)
            counted = self.population if category is None else rollout_population(
                self.population, self.policies, category, content_type)
            self._populations[content_type] = counted
        return counted

    def policy(self, attrs: DeviceAttributes, content_type: str) -> ChannelPolicy | None:
        """The channel policy that governs a device for ``content_type``; None: the default."""
        if not self.policies:
            return None
        category = self.categories.get(content_type)
        found = self.policies.resolve(attrs.tenant, attrs.tags, category) if category is not None else None
        return found.for_content_type(content_type) if found is not None else None

    def decide(self, device_id: str, content_type: str, now: datetime) -> tuple[Decision, str | None]:
        """What the device should run for ``content_type``; the second value is the stratum
        when this decision admits it (the caller must persist that before answering). A device
        its policy holds back (paused, pinned, delayed, outside its windows) is never admitted."""
        view = self.views.get(content_type)
        state = self.devices[device_id]
        policy = self.policy(state.attributes, content_type)
        if policy is not None and not joins_now(policy, now):
            entry = self.admissions.get(view.release_id) if view is not None else None
            holding = Holding(
                baseline=self.baselines.get(content_type),
                pinned=self.pinned.get((content_type, policy.version)) if policy.version is not None else None,
                history=self.general.get(content_type, ()), revoked=self.revoked.get(content_type, {}))
            wave = entry.waves.get(device_id) if entry is not None else None
            return held_decision(policy, view, wave, state.versions.get(content_type), now, holding), None
        if view is None:
            return Decision(self.baselines.get(content_type)), None
        attrs = effective_attributes(state.attributes, policy)
        admitted = self.admissions.get(view.release_id)
        if admitted is None:
            admitted = self.admissions[view.release_id] = RolloutAdmissions()
        decision = decide(view, device_id, attrs, admitted.waves.get(device_id), admitted.view())
        if decision.admit_wave is None:
            return decision, None
        stratum = stratum_key(attrs, view.plan.strata)
        admitted.add(device_id, decision.admit_wave, stratum)
        return decision, stratum

    def placebo(self, device_id: str, content_type: str, now: datetime, poll_interval_s: float) -> PlaceboStep | None:
        """Placebo bookkeeping for a device this check-in did not admit. A control device becomes a
        placebo while its stratum has fewer placebos than exposed-to-be devices in the current
        wave; it is asked to come back after the plan's ``placebo_after`` (the answer's interval
        is shortened when the usual one is longer), and its first check-in after that is noted."""
        view = self.views.get(content_type)
        if view is None or view.phase is not Phase.ROLLING:
            return None
        placebos = self.placebos.get(view.release_id)
        if placebos is None:
            placebos = self.placebos[view.release_id] = RolloutPlacebos()
        wait = view.plan.health.placebo_wait.total_seconds()
        asked = placebos.asked.get(device_id)
        if asked is not None:
            if device_id in placebos.seen:
                return None
            left = wait - (now - asked).total_seconds()
            if left <= 0:
                placebos.seen.add(device_id)
                return PlaceboStep(view.release_id, seen=True)
            return PlaceboStep(view.release_id, return_in_s=_return_in(left, poll_interval_s))
        admitted = self.admissions.get(view.release_id)
        if admitted is None or device_id in admitted.waves:
            return None
        state = self.devices[device_id]
        policy = self.policy(state.attributes, content_type)
        if policy is not None and not policy.joins_rollouts:
            return None  # held back by its policy: not part of the rollout's population
        attrs = effective_attributes(state.attributes, policy)
        stratum = stratum_key(attrs, view.plan.strata)
        key = (view.wave, stratum)
        if admitted.by_stratum[key] <= placebos.by_stratum[key]:
            return None
        if state.versions.get(content_type) == view.target.version:
            return None  # already runs the version (some other way): not a control device
        if not any(w.selector.matches(attrs) for w in view.plan.waves):
            return None  # no wave could select it: not a fair comparison
        placebos.add(device_id, view.wave, stratum, now)
        return PlaceboStep(view.release_id, view.wave, stratum, return_in_s=_return_in(wait, poll_interval_s))

    def first_sightings(self, device_id: str) -> list[str]:
        """The live rollouts this check-in is the device's first since they started (the judges
        count it at risk from then on): rollouts any wave of which could select it."""
        first: list[str] = []
        for view in self.views.values():
            heard = self.watched.get(view.release_id)
            if heard is None:
                heard = self.watched[view.release_id] = set()
            if device_id in heard:
                continue
            heard.add(device_id)
            attrs = self.devices[device_id].attributes
            if any(w.selector.matches(attrs) for w in view.plan.waves):
                first.append(view.release_id)
        return first

    def note_event(self, device_id: str, release_id: str | None, kind: EventKind) -> bool:
        """Count a trial's end for the in-flight window. False when the event is about a live
        rollout that never admitted the device: it speaks of something it was not offered."""
        if release_id is None:
            return True
        entry = self.admissions.get(release_id)
        if entry is None:
            return True  # not a live rollout (or not yet loaded): nothing to count here
        if device_id not in entry.waves:
            return False
        if kind is EventKind.HEALTHY:
            entry.decide(device_id, True)
        elif kind in FAILURE_KINDS or kind in REVERT_KINDS:
            entry.decide(device_id, False)
        return True

    def wave_reach(self, release_id: str, now: datetime) -> int | None:
        """How many devices not yet admitted the rollout's current wave (or an earlier one)
        could still take, by its thresholds and caps alone (not the in-flight window): 0 means
        the wave has nobody new to prove itself on. Walks the devices, so the reconciler asks
        only about a wave that exposed nobody. None when the rollout is not held here."""
        view = next((v for v in self.views.values() if v.release_id == release_id), None)
        if view is None or view.phase is not Phase.ROLLING or not view.table:
            return None
        admitted = self.admissions.get(release_id) or RolloutAdmissions()
        key = (release_id, view.wave, len(admitted.waves), len(self.devices), id(view.table))
        if self._reach is not None and self._reach[0] == key:
            return self._reach[1]
        # Copies, so a check-in changing them on the loop thread cannot break the walk.
        counts = Admissions(by_stratum=Counter(admitted.by_stratum), by_wave=Counter(admitted.by_wave),
                            healthy=Counter(admitted.healthy))
        waves = dict(admitted.waves)
        reach = 0
        for device_id, state in list(self.devices.items()):
            if device_id in waves:
                continue
            policy = self.policy(state.attributes, view.content_type)
            if policy is not None and not joins_now(policy, now):
                continue
            attrs = effective_attributes(state.attributes, policy)
            if admit(view.plan, view.table, attrs, bucket(view.salt, device_id), view.wave, counts) is not None:
                reach += 1
        self._reach = (key, reach)
        return reach

    def forget_admission(self, release_id: str, device_id: str, stratum: str) -> None:
        """Undo an admission whose write failed: the device was not told, so it must not count."""
        entry = self.admissions.get(release_id)
        if entry is not None:
            entry.remove(device_id, stratum)

    def content_types(self) -> tuple[str, ...]:
        """Content types a device gets an answer for, sorted (cached until the views change)."""
        if self._content_types is None:
            self._content_types = tuple(sorted(set(self.views) | {ct for ct, t in self.baselines.items()
                                                                   if t is not None}))
        return self._content_types

    def release_for(self, content_type: str, version: str) -> str | None:
        view = self.views.get(content_type)
        if view is not None and view.target.version == version:
            return view.release_id
        return self.releases_by_version.get((content_type, version))

    def stratum_of(self, device_id: str, content_type: str) -> str:
        view = self.views.get(content_type)
        strata = view.plan.strata if view is not None else DEFAULT_STRATA
        attrs = self.devices[device_id].attributes
        return stratum_key(effective_attributes(attrs, self.policy(attrs, content_type)), strata)



def _return_in(left_s: float, poll_interval_s: float) -> float | None:
    """The interval that brings a device back just after ``left_s``: agents jitter their interval
    by up to 10 %, so ask for 15 % more (never more than the usual interval)."""
    ask = left_s * 1.15 + 1.0
    return ask if ask < poll_interval_s else None
