"""The fleet simulator's invariants: hosts are conserved, caps hold, a seed decides everything,
scenarios are validated with field and line, and the built-in scenarios tell the story they are
meant to (Ringfence stops the 2024 update within its canary; a global push does not)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ringfence.core.errors import InvalidInput
from ringfence.core.plan import parse_plan
from ringfence.plans import default_plan
from ringfence.sim.peers import STRATEGIES, PeerRun, _poisson_limit
from ringfence.sim.result import RunResult
from ringfence.sim.ringfence import RingfenceRun
from ringfence.sim.run import build_fleet, compare, run_plan
from ringfence.sim.scenario import ScenarioError, load_scenario, parse_scenario
from ringfence.sim.world import CRASH_SEEN, FAILURE, HEALTHY, Offer, World

SMALL = 30_000


def invariants(r: RunResult) -> None:
    assert 0 <= r.crashed <= r.exposed <= r.hosts
    assert r.auto_recovered + r.manual_repair <= r.crashed
    for curve in (r.exposed_curve, r.crashed_curve, r.recovered_curve):
        assert all(a <= b for a, b in itertools.pairwise(curve))  # counts of "ever" never fall
    assert r.exposed_curve[-1] == r.exposed and r.crashed_curve[-1] == r.crashed


def test_ringfence_stops_the_2024_update_in_its_first_wave_and_every_crashed_host_recovers() -> None:
    scenario = load_scenario("crowdstrike-2024").scaled(SMALL)
    r = run_plan(scenario, None, seed=3)
    invariants(r)
    assert r.halted and r.phase == "rolled_back"
    assert 0 < r.crashed <= 100
    assert r.manual_repair == 0 and r.auto_recovered == r.crashed  # the crash-loop guard, no server needed
    assert r.first_failure_to_halt_s is not None and r.first_failure_to_halt_s <= 60
    assert r.history[2]["intent"] == "halt" and r.history[2]["wave"] == 0


def test_a_global_push_crashes_every_online_windows_host_and_leaves_them_for_hands_on_repair() -> None:
    scenario = load_scenario("crowdstrike-2024").scaled(SMALL)
    fleet = build_fleet(scenario, 3)
    push = next(s for s in STRATEGIES if s.name == "global-push")
    r = PeerRun(scenario, fleet, push, np.random.default_rng([3, 1])).run(3)
    invariants(r)
    windows = int((fleet.platform == fleet.platforms.index("windows")).sum())
    assert r.crashed > windows // 3  # everyone online at 04:09 UTC, and more as they wake
    assert r.manual_repair > r.crashed // 2
    assert r.halted and r.halt_reason == "reverted by the vendor"


def test_a_good_update_reaches_99_percent_of_online_hosts_within_the_hour_without_a_halt() -> None:
    scenario = load_scenario("good-update").scaled(SMALL)
    r = run_plan(scenario, None, seed=3)
    invariants(r)
    assert not r.halted and r.phase == "completed" and r.crashed == 0
    assert r.time_to_99pct_s is not None and r.time_to_99pct_s <= 3600


def test_waves_never_exceed_their_caps() -> None:
    scenario = load_scenario("good-update").scaled(SMALL)
    plan = default_plan(scenario.category)
    fleet = build_fleet(scenario, 5)
    run = RingfenceRun(scenario, fleet, plan, np.random.default_rng(5))
    run.run(5)
    world = run.world
    for index, cohort in enumerate(run.table):
        in_wave = world.wave == index
        if cohort.total_cap is not None:
            assert in_wave.sum() <= cohort.total_cap
        if cohort.stratum_caps is not None:
            counts = np.bincount(run.stratum[in_wave], minlength=len(run.strata))
            for code, name in enumerate(run.strata):
                assert counts[code] <= (cohort.cap(name) or 0), (index, name)
    assert (world.wave[np.isfinite(world.admitted)] >= 0).all()


def test_a_seed_decides_everything() -> None:
    scenario = load_scenario("subtle-regression").scaled(10_000)
    first = [r.as_dict(curves=True) for r in compare(scenario, seed=11)]
    second = [r.as_dict(curves=True) for r in compare(scenario, seed=11)]
    for a, b in zip(first, second, strict=True):
        a.pop("wall_s"), b.pop("wall_s")
        assert a == b
    other = [r.as_dict() for r in compare(scenario, seed=12)]
    assert [r["exposed"] for r in other] != [r["exposed"] for r in first]


SCENARIO = """\
name: broken
horizon: 2h
fleet:
  regions: {eu: {share: 1, utc_offset: 1}}
  platforms:
    windows: {hosts: 100, workstation_share: 2}
faults:
  - select: {platform: [beos]}
    kind: crash-on-load
  - kind: meltdown
outages:
  - {region: eu, at: soon, duration: 1h}
colour: blue
"""


def test_scenario_errors_name_every_field_and_line() -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(SCENARIO, "broken.yaml")
    problems = {(p.field, p.line) for p in caught.value.problems}
    assert ("fleet.platforms.windows.workstation_share", 6) in problems
    assert ("faults.1.kind", 10) in problems
    assert ("outages.0.at", 12) in problems
    assert ("colour", 13) in problems
    assert str(caught.value).startswith("broken.yaml:")
    fixed = SCENARIO.replace("workstation_share: 2", "workstation_share: 0.5").replace("at: soon", "at: 10m")
    with pytest.raises(ScenarioError, match=r"faults\[0\]\.select\.platform 'beos' is not a platform"):
        parse_scenario(fixed.replace("  - kind: meltdown\n", "").replace("colour: blue\n", ""))
    with pytest.raises(InvalidInput, match=r"no scenario 'nowhere\.yaml'"):
        load_scenario("nowhere.yaml")


FAULT_FLEET = """
name: {name}
horizon: 6h
fleet:
  internal_hosts: 0
  regions: {{eu: {{share: 1.0}}}}
  platforms:
    windows: {{hosts: 4000, workstation_share: 0.0, os_versions: {{"11": 1.0}}, arches: {{x86_64: 0.75, arm64: 0.25}}}}
faults:
  - select: {{platform: [windows], arch: [arm64]}}
    kind: crash-on-load
    boot_loop: true
    silent: {silent}
agents:
  lost_reports: {lost}
"""


def _world(silent: bool, lost: float = 0.0) -> RingfenceRun:
    scenario = parse_scenario(FAULT_FLEET.format(name="arm64", silent=str(silent).lower(), lost=lost))
    plan = parse_plan("name: p\nstrata: [platform, arch]\nwaves:\n  - {name: all, share: 1.0, soak: 1m}\n",
                      category=scenario.category)
    return RingfenceRun(scenario, build_fleet(scenario, 7), plan, np.random.default_rng(7))


def test_a_fault_selects_by_architecture_and_arch_is_a_stratum() -> None:
    run = _world(silent=True)
    assert run.strata == ["windows/arm64", "windows/x86_64"]
    world = run.world
    arm = world.fleet.arch == world.fleet.arch_names.index("arm64")
    assert (world.fault[arm] == 0).all() and (world.fault[~arm] == -1).all()
    assert 0.2 < arm.mean() < 0.3


def test_silent_changes_what_a_looping_fault_reports() -> None:
    """A loud loop reports its crash after the first reboot; a silent one only once the host
    runs again (the crash-loop guard's revert)."""
    first: dict[bool, float] = {}
    for silent in (True, False):
        run = _world(silent)
        world = run.world
        hosts = np.nonzero(world.fleet.arch == world.fleet.arch_names.index("arm64"))[0][:50]
        world.offer(Offer(hosts, 0.0))
        ev = world.read(world.scenario.horizon)
        reports = ev.time[ev.kind == FAILURE]
        first[silent] = float(reports.min())
    reboot, limit = run.scenario.agents.reboot, run.scenario.agents.boot_limit
    assert first[False] < first[True]
    assert first[True] - first[False] >= (limit - 1) * reboot - run.scenario.agents.report_delay[1]


def test_lost_reports_never_arrive_and_keep_trials_undecided() -> None:
    kept, lost = _world(silent=False, lost=0.0).world, _world(silent=False, lost=0.5).world
    counts = []
    for world in (kept, lost):
        hosts = np.nonzero(world.fleet.arch == world.fleet.arch_names.index("x86_64"))[0][:400]
        world.offer(Offer(hosts, 0.0))
        ev = world.read(world.scenario.horizon)
        counts.append(int((ev.kind == HEALTHY).sum()))
    assert counts[0] == 400
    assert 120 < counts[1] < 280  # about half of the confirmations were lost


def test_other_tools_metrics_see_background_crashes_of_hosts_running_the_update() -> None:
    scenario = load_scenario("good-update").scaled(SMALL)
    scenario = scenario.model_copy(update={"background": scenario.background.model_copy(
        update={"crash_rate": 0.002})})
    fleet = build_fleet(scenario, 4)
    world = World(scenario, fleet, np.random.default_rng(4), "peer", np.zeros(fleet.size, dtype=np.int16))
    world.offer(Offer(np.arange(fleet.size), 0.0))
    ev = world.read(scenario.horizon)
    # no fault, yet the metric saw crashes: those of hosts that crashed anyway while on the update
    assert not np.isfinite(world.crashed).any()
    assert (ev.kind == CRASH_SEEN).sum() > 100
    # ... so the tools' alarms are tuned above that background, and a good update is not reverted
    push = next(s for s in STRATEGIES if s.name == "appconfig-all-at-once")
    run = PeerRun(scenario, fleet, push, np.random.default_rng([4, 1]))
    result = run.run(4)
    assert not result.halted and run.first_seen is None


def test_an_alarm_threshold_sits_above_the_background() -> None:
    assert _poisson_limit(0.0, 1e-4) == 1
    assert _poisson_limit(1.75, 1e-4) == 9  # 10.5M hosts at 1e-5 crashes per host-hour: 1.75 a minute


def test_the_judges_watch_a_host_from_its_first_check_in_since_the_start() -> None:
    """As the server does: a host asleep at the start joins the control arm when it wakes and is
    heard from, and a failure from before that (reported when it comes back) is not counted."""
    scenario = load_scenario("good-update").scaled(SMALL)
    fleet = build_fleet(scenario, 3)
    run = RingfenceRun(scenario, fleet, default_plan(scenario.category), np.random.default_rng(3))
    hosts = np.arange(fleet.size)
    asleep = ~fleet.is_on(np.zeros(fleet.size), hosts)
    assert asleep.any() and (~asleep).any()
    assert (run.entry[asleep] >= fleet.next_on(np.zeros(int(asleep.sum())), hosts[asleep])).all()
    assert (run.entry[~asleep] <= fleet.poll_s[~asleep] * 1.01).mean() > 0.9  # awake: within one poll

    hour = 3600.0
    run._read(run.world.read(hour), hour, hour)
    heard = np.bincount(run.stratum[run.entry <= hour], minlength=len(run.strata))
    assert (run.watched == heard).all() and heard.sum() < fleet.size

    late = int(np.argmax(np.where(np.isfinite(run.entry), run.entry, -1.0)))  # heard from last of all
    before = run.control_failed.copy()
    run._failure(late, float(run.entry[late]), float(run.entry[late]) - 60.0)
    assert not run.has_failed[late] and (run.control_failed == before).all()
    run._failure(late, float(run.entry[late]) + 120, float(run.entry[late]) + 60.0)
    assert run.has_failed[late] and run.control_failed.sum() == before.sum() + 1
