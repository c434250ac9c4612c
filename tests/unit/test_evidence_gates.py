"""Evidence, never elapsed time: a property over random report delays and check-in orders.

A small fleet checks in on its own clocks; each admitted device's reports (intent, then
``healthy`` or a failure, or nothing at all) reach the control plane after delays of seconds to
hours. The harness is only bookkeeping: admissions go through :func:`ringfence.core.assignment.decide`
(caps, the in-flight window, canary before crowd), the rollout moves only on the actions of
:func:`ringfence.engine.reconciler.step` passed through the rules, exactly as the server and the
simulator drive them.

* A release that crashes every device that loads it never has more devices exposed than the
  canary adds, however its reports are delayed or lost.
* A good release always completes once its reports have arrived.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from ringfence.core.assignment import RolloutView, Target, decide
from ringfence.core.cohorts import Admissions, admit, bucket, canary_limit, cohort_table
from ringfence.core.models import DeviceAttributes, stratum_key
from ringfence.core.plan import parse_plan
from ringfence.core.rollout import Intent, Phase, RolloutState, transition
from ringfence.engine.reconciler import Observations, StratumProgress, step

PLAN = parse_plan("""
name: property
waves:
  - name: canary
    max_devices: {per_stratum: 2}
    soak: 5m
    gates: {failure_budget: 0, min_healthy: 2, max_in_trial: 2}
  - name: half
    share: 0.5
    soak: 5m
    gates: {failure_budget: 0, max_in_trial: 3}
  - name: everyone
    share: 1.0
    soak: 5m
    gates: {failure_budget: 0, max_in_trial: 4}
""")
EPOCH = datetime(2024, 7, 19, 4, 9, tzinfo=UTC)
REGIONS = ("eu-west", "us-east")
FLEET = [(f"d{i}", DeviceAttributes(platform="windows", region=REGIONS[i % 2])) for i in range(20)]
NEW = Target("sensor/templates", "291", "a" * 64, 41_000, "r-291")
OLD = Target("sensor/templates", "290", "b" * 64, 40_000, "r-290")
TICK_S = 30.0
HORIZON_S = 3 * 24 * 3600.0


@dataclass
class Device:
    poll_s: float
    phase_s: float
    intent_delay_s: float
    report_delay_s: float
    silent: bool


@dataclass
class Control:
    """What the control plane has admitted and heard."""

    state: RolloutState
    admitted: dict[str, tuple[int, str]] = field(default_factory=dict)
    by_stratum: Counter[tuple[int, str]] = field(default_factory=Counter)
    by_wave: Counter[int] = field(default_factory=Counter)
    announced: set[str] = field(default_factory=set)
    healthy: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    most_exposed: int = 0

    def admissions(self) -> Admissions:
        in_trial: Counter[str] = Counter(where for d, (_, where) in self.admitted.items()
                                         if d not in self.healthy and d not in self.failed)
        healthy: Counter[str] = Counter(self.admitted[d][1] for d in self.healthy)
        return Admissions(self.by_stratum, self.by_wave, in_trial=in_trial, healthy=healthy)

    def observations(self, table: tuple, now: datetime) -> Observations:
        progress: dict[str, StratumProgress] = {}
        for key in sorted({where for _, where in self.admitted.values()}):
            mine = [d for d, (_, where) in self.admitted.items() if where == key and d in self.announced]
            healthy = sum(d in self.healthy for d in mine)
            undecided = sum(d not in self.healthy and d not in self.failed for d in mine)
            progress[key] = StratumProgress(len(mine), healthy, undecided)
        wave = self.state.wave
        wave_exposed = sum(1 for d, (w, _) in self.admitted.items() if w == wave and d in self.announced)
        failed = sum(1 for d in self.failed if d in self.announced)
        reach = None
        if wave_exposed == 0:
            caps_only = Admissions(self.by_stratum, self.by_wave, healthy=self.admissions().healthy)
            reach = sum(1 for d, attrs in FLEET if d not in self.admitted and
                        admit(PLAN, table, attrs, bucket("salt", d), wave, caps_only) is not None)
        return Observations(failed_devices=failed, exposed_devices=len(self.announced), wave_exposed=wave_exposed,
                            progress=progress, wave_reach=reach)


def run(devices: list[Device], crashes: bool) -> Control:
    table = cohort_table(PLAN, Counter(a for _, a in FLEET))
    control = Control(RolloutState(Phase.DRAFT, 0, len(PLAN.waves)))
    for intent in (Intent.PREPARE, Intent.START):
        control.state, _ = transition(control.state, intent, actor="test", reason="start", now=EPOCH)
    queue: list[tuple[float, int, str, str]] = []  # (time, order, kind, device)
    order = 0
    for (device_id, _), d in zip(FLEET, devices, strict=True):
        heapq.heappush(queue, (d.phase_s, order, "checkin", device_id))
        order += 1
    heapq.heappush(queue, (TICK_S, order, "tick", ""))
    spec = dict(zip((d for d, _ in FLEET), devices, strict=True))
    attrs_of = dict(FLEET)
    while queue:
        t, _, kind, device_id = heapq.heappop(queue)
        if t > HORIZON_S or control.state.phase is Phase.COMPLETED:
            break
        now = EPOCH + timedelta(seconds=t)
        order += 1
        if kind == "tick":
            for action in step(control.state, PLAN, control.observations(table, now), now)[:1]:
                control.state, _ = transition(control.state, action.intent, actor="reconciler", reason=action.reason,
                                              now=now)
            heapq.heappush(queue, (t + TICK_S, order, "tick", ""))
        elif kind == "checkin":
            d = spec[device_id]
            heapq.heappush(queue, (t + d.poll_s, order, "checkin", device_id))
            view = RolloutView("r-291", "sensor/templates", NEW, OLD, control.state.phase, control.state.wave, PLAN,
                               "salt", table)
            known = control.admitted.get(device_id)
            decision = decide(view, device_id, attrs_of[device_id], known[0] if known else None, control.admissions())
            if decision.admit_wave is None:
                continue
            key = stratum_key(attrs_of[device_id], PLAN.strata)
            control.admitted[device_id] = (decision.admit_wave, key)
            control.by_stratum[(decision.admit_wave, key)] += 1
            control.by_wave[decision.admit_wave] += 1
            control.most_exposed = max(control.most_exposed, len(control.admitted))
            heapq.heappush(queue, (t + d.intent_delay_s, order, "intent", device_id))
            if not (crashes and d.silent):
                heapq.heappush(queue, (t + d.intent_delay_s + d.report_delay_s, order + 1,
                                       "failed" if crashes else "healthy", device_id))
            order += 1
        elif kind == "intent":
            control.announced.add(device_id)
        elif kind == "healthy":
            control.healthy.add(device_id)
        else:
            control.failed.add(device_id)
    return control


DELAY = st.floats(min_value=1.0, max_value=6 * 3600.0)
DEVICES = st.lists(st.builds(Device, poll_s=st.floats(min_value=30.0, max_value=3600.0),
                             phase_s=st.floats(min_value=0.0, max_value=3600.0), intent_delay_s=DELAY,
                             report_delay_s=DELAY, silent=st.booleans()),
                   min_size=len(FLEET), max_size=len(FLEET))


@settings(max_examples=60, deadline=None)
@given(DEVICES)
def test_a_crash_on_load_release_never_gets_past_its_canary(devices: list[Device]) -> None:
    table = cohort_table(PLAN, Counter(a for _, a in FLEET))
    canary = sum(canary_limit(table, f"windows/{r}")[1] for r in REGIONS)
    control = run(devices, crashes=True)
    assert control.most_exposed <= canary
    assert control.state.phase is not Phase.COMPLETED
    assert control.state.wave == 0


@settings(max_examples=60, deadline=None)
@given(DEVICES)
def test_a_good_release_completes_once_its_reports_arrive(devices: list[Device]) -> None:
    control = run(devices, crashes=False)
    assert control.state.phase is Phase.COMPLETED
    assert not control.failed
