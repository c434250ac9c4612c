"""Cohorts: bucketing, thresholds, water-filled caps, and the invariants of the module docstring
(stable membership, monotone growth, never above a cap, late joiners)."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringfence.core.cohorts import Admissions, WaveCohort, _allot, _fraction, admit, bucket, canary_limit, cohort_table
from ringfence.core.models import DeviceAttributes, stratum_key
from ringfence.core.plan import Cap, Gates, Plan, Selector, Wave, parse_plan

PLATFORMS = ("windows", "macos", "linux")
REGIONS = ("eu-west", "us-east", "ap-south", "sa-east")
NO_ADMISSIONS = Admissions(by_stratum={}, by_wave={})
PROPERTY = settings(max_examples=150, deadline=None)


def wave(name: str, share: float | None = None, total: int | None = None, per_stratum: int | None = None,
         selector: Selector | None = None) -> Wave:
    return Wave(name=name, selector=selector or Selector(), share=share, cap=Cap(total, per_stratum),
                soak=timedelta(minutes=1), gates=Gates())


def plan_of(*waves: Wave, strata: tuple[str, ...] = ("platform", "region")) -> Plan:
    return Plan(name="p", waves=waves, strata=strata)


def grid(per_cell: int, platforms: tuple[str, ...] = PLATFORMS, regions: tuple[str, ...] = REGIONS
         ) -> dict[DeviceAttributes, int]:
    return {DeviceAttributes(platform=p, region=r): per_cell for p in platforms for r in regions}


# -- bucket ----------------------------------------------------------------------------------


@PROPERTY
@given(salt=st.text(max_size=20), device_id=st.text(max_size=40))
def test_bucket_is_deterministic_and_in_unit_interval(salt: str, device_id: str) -> None:
    b = bucket(salt, device_id)
    assert 0.0 <= b < 1.0
    assert bucket(salt, device_id) == b


def test_bucket_of_the_largest_hash_is_still_below_one() -> None:
    # Dividing 2**64 - 1 by 2**64 in floating point gives exactly 1.0: such a device would sit
    # above every threshold, even share 1.0, and never be admitted.
    assert _fraction(2**64 - 1) < 1.0
    assert _fraction(0) == 0.0


@PROPERTY
@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_fraction_is_monotone_and_below_one(a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    assert 0.0 <= _fraction(lo) <= _fraction(hi) < 1.0


def test_bucket_separates_salt_from_device_id() -> None:
    assert bucket("ab", "c") != bucket("a", "bc")


def test_bucket_is_roughly_uniform() -> None:
    """Chi-square over 20 bins and a Kolmogorov-Smirnov distance, on a fixed set of ids (so the
    test is deterministic), with limits far beyond what a uniform hash produces."""
    n, bins = 20_000, 20
    for salt in ("rollout-1", "release-42"):
        values = sorted(bucket(salt, f"device-{i}") for i in range(n))
        counts = Counter(int(v * bins) for v in values)
        expected = n / bins
        chi2 = sum((counts.get(b, 0) - expected) ** 2 / expected for b in range(bins))
        assert chi2 < 50.0, chi2  # 19 degrees of freedom: p(chi2 >= 50) ~ 1e-4
        ks = max(max((i + 1) / n - v, v - i / n) for i, v in enumerate(values))
        assert ks < 1.95 / math.sqrt(n), ks  # KS critical value at p = 0.001


def test_buckets_of_different_salts_are_uncorrelated() -> None:
    ids = [f"device-{i}" for i in range(5000)]
    xs = [bucket("release-a", i) for i in ids]
    ys = [bucket("release-b", i) for i in ids]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    r = cov / math.sqrt(sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys))
    assert abs(r) < 0.05


# -- cohort_table and water-filling ------------------------------------------------------------


def test_uncapped_wave_threshold_is_its_share_everywhere() -> None:
    (cohort,) = cohort_table(plan_of(wave("w", share=0.25)), grid(100))
    assert set(cohort.thresholds) == {f"{p}/{r}" for p in PLATFORMS for r in REGIONS}
    assert set(cohort.thresholds.values()) == {0.25}
    assert cohort.default_threshold == 0.25
    assert cohort.threshold("beos/moon") == 0.25
    assert cohort.stratum_caps is None
    assert cohort.cap("windows/eu-west") is None
    assert cohort.total_cap is None


def test_a_total_cap_is_spread_over_every_stratum() -> None:
    (cohort,) = cohort_table(plan_of(wave("canary", total=100)), grid(500))
    caps = cohort.stratum_caps
    assert caps is not None
    assert len(caps) == 12
    assert sum(caps.values()) == 100
    assert min(caps.values()) >= 8
    assert max(caps.values()) - min(caps.values()) <= 1
    assert all(cohort.threshold(k) > 0 for k in caps)
    assert cohort.total_cap == 100


def test_per_stratum_cap_limits_the_spread() -> None:
    (cohort,) = cohort_table(plan_of(wave("canary", total=100, per_stratum=5)), grid(500))
    assert cohort.stratum_caps is not None
    assert set(cohort.stratum_caps.values()) == {5}


def test_small_strata_give_their_unused_share_to_the_others() -> None:
    population = {
        DeviceAttributes(platform="linux", region="eu-west"): 2,
        DeviceAttributes(platform="macos", region="eu-west"): 3,
        DeviceAttributes(platform="windows", region="eu-west"): 1000,
        DeviceAttributes(platform="windows", region="us-east"): 1000,
    }
    (cohort,) = cohort_table(plan_of(wave("canary", total=100)), population)
    caps = cohort.stratum_caps
    assert caps is not None
    assert caps["linux/eu-west"] == 2
    assert caps["macos/eu-west"] == 3
    assert caps["windows/eu-west"] + caps["windows/us-east"] == 95
    assert abs(caps["windows/eu-west"] - caps["windows/us-east"]) <= 1


def test_a_cap_smaller_than_the_strata_count_serves_strata_in_sorted_order() -> None:
    caps = _allot(3, None, {"e": 10, "c": 10, "a": 10, "d": 10, "b": 10})
    assert caps == {"a": 1, "b": 1, "c": 1, "d": 0, "e": 0}


def test_strata_outside_the_selector_get_nothing() -> None:
    w = wave("win", share=1.0, total=30, selector=Selector(include={"platform": ("windows",)}))
    (cohort,) = cohort_table(plan_of(w), grid(50))
    assert cohort.stratum_caps is not None
    assert set(cohort.thresholds) == {f"windows/{r}" for r in REGIONS}
    assert set(cohort.stratum_caps) == {f"windows/{r}" for r in REGIONS}
    assert sum(cohort.stratum_caps.values()) == 30
    assert cohort.cap("linux/eu-west") == 0
    assert cohort.threshold("linux/eu-west") == 0.0


def test_capped_thresholds_ask_at_least_the_cap_and_never_above_the_share() -> None:
    (loose, tight) = cohort_table(plan_of(wave("a", share=0.5, per_stratum=10), wave("b", share=0.01, per_stratum=10)),
                                  grid(1000))
    for key in loose.thresholds:
        assert 10 / 1000 <= loose.threshold(key) <= 0.5
        assert tight.threshold(key) == 0.01


def test_strata_with_no_devices_are_ignored() -> None:
    population = {DeviceAttributes(platform="windows", region="eu-west"): 0,
                  DeviceAttributes(platform="linux", region="eu-west"): 4}
    (cohort,) = cohort_table(plan_of(wave("a", total=10)), population)
    assert set(cohort.thresholds) == {"linux/eu-west"}


@PROPERTY
@given(
    counts=st.dictionaries(st.text("abcdefgh", min_size=1, max_size=3), st.integers(0, 200), max_size=12),
    total=st.none() | st.integers(1, 600),
    per_stratum=st.none() | st.integers(1, 120),
)
def test_allot_water_fills(counts: dict[str, int], total: int | None, per_stratum: int | None) -> None:
    allotted = _allot(total, per_stratum, counts)
    assert set(allotted) == set(counts)
    limit = {k: min(n, per_stratum) if per_stratum is not None else n for k, n in counts.items()}
    if total is None:
        assert all(allotted[k] == (per_stratum if per_stratum is not None else counts[k]) for k in counts)
        return
    assert all(0 <= allotted[k] <= limit[k] for k in counts)
    assert sum(allotted.values()) == min(total, sum(limit.values()))
    # Max-min fair: a stratum that could take more is never more than one device behind another.
    for k in counts:
        if allotted[k] < limit[k]:
            assert all(allotted[j] <= allotted[k] + 1 for j in counts), allotted


# -- strategies for the invariants ------------------------------------------------------------

attrs_st = st.builds(
    DeviceAttributes,
    platform=st.sampled_from(PLATFORMS),
    region=st.sampled_from(REGIONS[:3]),
    tags=st.sampled_from([frozenset(), frozenset({"internal"})]),
)
selector_st = st.one_of(
    st.just(Selector()),
    st.lists(st.sampled_from(PLATFORMS), min_size=1, max_size=2, unique=True).map(
        lambda ps: Selector(include={"platform": tuple(ps)})),
    st.just(Selector(include={"tags": ("internal",)})),
    st.just(Selector(include={"region": ("eu-*", "us-*")}, exclude={"platform": ("linux",)})),
)
share_st = st.floats(min_value=0.0, max_value=1.0, exclude_min=True)


@st.composite
def plans(draw: st.DrawFn, max_waves: int = 4) -> Plan:
    waves = []
    for i in range(draw(st.integers(1, max_waves))):
        share = draw(st.none() | share_st)
        total = draw(st.none() | st.integers(1, 40))
        per = draw(st.none() | st.integers(1, 12))
        if share is None and total is None and per is None:
            share = 1.0
        waves.append(wave(f"w{i}", share=share, total=total, per_stratum=per, selector=draw(selector_st)))
    strata = draw(st.sampled_from([("platform", "region"), ("platform",), ("region",)]))
    return plan_of(*waves, strata=strata)


@st.composite
def capped_plans(draw: st.DrawFn) -> Plan:
    """Plans whose waves all have a cap small enough to bind on a fleet of a few hundred."""
    waves = []
    for i in range(draw(st.integers(1, 4))):
        share = draw(st.sampled_from([None, 0.05, 0.3, 1.0]))
        total = draw(st.none() | st.integers(1, 25))
        per = draw(st.integers(1, 8)) if total is None else draw(st.none() | st.integers(1, 8))
        waves.append(wave(f"w{i}", share=share, total=total, per_stratum=per, selector=draw(selector_st)))
    strata = draw(st.sampled_from([("platform", "region"), ("platform",), ("region",)]))
    return plan_of(*waves, strata=strata)


populations = st.dictionaries(attrs_st, st.integers(0, 80), max_size=10)


@st.composite
def admission_counters(draw: st.DrawFn, plan: Plan, strata: list[str]) -> Admissions:
    by_stratum: dict[tuple[int, str], int] = {}
    by_wave: dict[int, int] = {}
    for index in range(len(plan.waves)):
        for key in strata:
            n = draw(st.integers(0, 15))
            if n:
                by_stratum[(index, key)] = n
                by_wave[index] = by_wave.get(index, 0) + n
    return Admissions(by_stratum=by_stratum, by_wave=by_wave)


def strata_of(plan: Plan, population: Mapping[DeviceAttributes, int], extra: DeviceAttributes) -> list[str]:
    return sorted({stratum_key(a, plan.strata) for a in [*population, extra]})


# -- stable membership ------------------------------------------------------------------------


@PROPERTY
@given(data=st.data(), plan=plans(), population=populations, attrs=attrs_st,
       salt=st.text(max_size=8), device_id=st.text(min_size=1, max_size=12))
def test_stable_membership(data: st.DataObject, plan: Plan, population: dict[DeviceAttributes, int],
                           attrs: DeviceAttributes, salt: str, device_id: str) -> None:
    admissions = data.draw(admission_counters(plan, strata_of(plan, population, attrs)))
    current = data.draw(st.integers(0, len(plan.waves) - 1))
    table = cohort_table(plan, population)
    first = admit(plan, table, attrs, bucket(salt, device_id), current, admissions)
    # Same inputs, recomputed from scratch (population listed in another order): same answer.
    rebuilt = cohort_table(plan, dict(reversed(list(population.items()))))
    assert rebuilt == table
    assert admit(plan, rebuilt, attrs, bucket(salt, device_id), current, admissions) == first
    assert admit(plan, table, attrs, bucket(salt, device_id), current, admissions) == first


# -- monotone growth --------------------------------------------------------------------------


@PROPERTY
@given(shares=st.lists(share_st, min_size=2, max_size=6), population=populations,
       salt=st.text(max_size=8))
def test_uncapped_cumulative_waves_only_grow(shares: list[float], population: dict[DeviceAttributes, int],
                                             salt: str) -> None:
    plan = plan_of(*(wave(f"w{i}", share=s) for i, s in enumerate(sorted(shares))))
    table = cohort_table(plan, population)
    fleet = [(f"d{i}", a) for i, a in enumerate(a for a in population for _ in range(3))]
    previous: set[str] = set()
    for k in range(len(plan.waves)):
        admissible = {d for d, a in fleet if admit(plan, table, a, bucket(salt, d), k, NO_ADMISSIONS) is not None}
        assert previous <= admissible
        previous = admissible


@PROPERTY
@given(data=st.data(), plan=plans(max_waves=5), population=populations, attrs=attrs_st,
       position=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_admissible_at_wave_k_stays_admissible_at_k_plus_one(
    data: st.DataObject, plan: Plan, population: dict[DeviceAttributes, int], attrs: DeviceAttributes,
    position: float,
) -> None:
    admissions = data.draw(admission_counters(plan, strata_of(plan, population, attrs)))
    table = cohort_table(plan, population)
    results = [admit(plan, table, attrs, position, k, admissions) for k in range(len(plan.waves))]
    for now, later in itertools.pairwise(results):
        if now is not None:
            assert later == now
    # Asking beyond the last wave behaves like the last wave.
    assert admit(plan, table, attrs, position, len(plan.waves) + 3, admissions) == results[-1]


# -- never above a cap ------------------------------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(plan=st.one_of(plans(), capped_plans()),
       fleet=st.dictionaries(attrs_st, st.integers(1, 60), min_size=1, max_size=8),
       rnd=st.randoms(use_true_random=False), salt=st.text(max_size=8))
def test_a_fleet_checking_in_never_pushes_a_wave_past_its_caps(
    plan: Plan, fleet: dict[DeviceAttributes, int], rnd: random.Random, salt: str
) -> None:
    """A random fleet checks in in random order while the rollout advances, devices join late and
    the table is rebuilt now and then; the caller keeps admission counters as the server does."""
    devices = [(f"device-{i}", a) for i, a in enumerate(a for a, n in fleet.items() for _ in range(n))]
    rnd.shuffle(devices)
    cut = rnd.randint(0, len(devices))
    present, late = devices[:cut], devices[cut:]
    population: Counter[DeviceAttributes] = Counter(a for _, a in present)
    table = cohort_table(plan, population)
    by_stratum: Counter[tuple[int, str]] = Counter()
    by_wave: Counter[int] = Counter()
    admitted: dict[str, int] = {}
    current = 0
    for _ in range(4 * len(devices)):
        roll = rnd.random()
        if roll < 0.08 and current + 1 < len(plan.waves):
            current += 1
        elif roll < 0.2 and late:
            joiner = late.pop()
            present.append(joiner)
            population[joiner[1]] += 1
        elif roll < 0.25:
            table = cohort_table(plan, population)
        elif present:
            device_id, attrs = rnd.choice(present)
            if device_id in admitted:
                continue
            position = bucket(salt, device_id)
            index = admit(plan, table, attrs, position, current, Admissions(by_stratum, by_wave))
            if index is None:
                continue
            key = stratum_key(attrs, plan.strata)
            assert index <= current
            assert plan.waves[index].selector.matches(attrs)
            assert position < table[index].threshold(key)
            stratum_cap = table[index].cap(key)
            assert stratum_cap is None or by_stratum[(index, key)] < stratum_cap
            admitted[device_id] = index
            by_stratum[(index, key)] += 1
            by_wave[index] += 1
    for (index, _key), n in by_stratum.items():
        per = plan.waves[index].cap.per_stratum
        assert per is None or n <= per
    for index, n in by_wave.items():
        total = plan.waves[index].cap.total
        assert total is None or n <= total
    assert sum(by_wave.values()) == len(admitted)


def test_the_rapid_content_canary_fills_every_platform_region() -> None:
    """A canary of 100 over 12 platform x region strata reaches every one of them, and no more."""
    path = Path(__file__).resolve().parents[2] / "examples" / "plans" / "rapid-content.yaml"
    plan = parse_plan(path.read_text())
    canary = 1
    assert plan.waves[canary].cap == Cap(total=100, per_stratum=10)
    fleet = [(f"{p}-{r}-{i}", DeviceAttributes(platform=p, region=r)) for p in PLATFORMS for r in REGIONS
             for i in range(400)]
    table = cohort_table(plan, Counter(a for _, a in fleet))
    by_stratum: Counter[tuple[int, str]] = Counter()
    by_wave: Counter[int] = Counter()
    for device_id, attrs in fleet:
        index = admit(plan, table, attrs, bucket("release-1", device_id), canary, Admissions(by_stratum, by_wave))
        if index is not None:
            by_stratum[(index, stratum_key(attrs, plan.strata))] += 1
            by_wave[index] += 1
    assert by_wave == {canary: 100}
    per_stratum = [by_stratum[(canary, f"{p}/{r}")] for p in PLATFORMS for r in REGIONS]
    assert min(per_stratum) >= 8
    assert max(per_stratum) <= 9


# -- late joiners -----------------------------------------------------------------------------


@PROPERTY
@given(shares=st.lists(share_st, min_size=1, max_size=6), position=st.floats(0.0, 1.0, exclude_max=True),
       data=st.data())
def test_a_late_joiner_lands_in_the_wave_its_bucket_belongs_to(shares: list[float], position: float,
                                                               data: st.DataObject) -> None:
    shares.sort()
    plan = plan_of(*(wave(f"w{i}", share=s) for i, s in enumerate(shares)))
    current = data.draw(st.integers(0, len(shares) - 1))
    table = cohort_table(plan, {})  # the device's stratum did not exist when the table was built
    expected = next((i for i, s in enumerate(shares[: current + 1]) if position < s), None)
    assert admit(plan, table, DeviceAttributes(platform="windows", region="eu-west"), position, current,
                 NO_ADMISSIONS) == expected


@PROPERTY
@given(data=st.data(), plan=plans(max_waves=5), population=populations, attrs=attrs_st,
       position=st.floats(0.0, 1.0, exclude_max=True))
def test_a_late_joiner_skips_a_full_wave_for_the_next_with_room(
    data: st.DataObject, plan: Plan, population: dict[DeviceAttributes, int], attrs: DeviceAttributes,
    position: float,
) -> None:
    population = {**population, attrs: population.get(attrs, 0) + 1}
    table = cohort_table(plan, population)
    key = stratum_key(attrs, plan.strata)
    last = len(plan.waves) - 1
    home = admit(plan, table, attrs, position, last, NO_ADMISSIONS)
    if home is None:
        return
    # The rollout is past that wave now; the joiner still lands in it while it has room.
    current = data.draw(st.integers(home, last))
    assert admit(plan, table, attrs, position, current, NO_ADMISSIONS) == home
    cohort: WaveCohort = table[home]
    if cohort.cap(key) is None and cohort.total_cap is None:
        return
    # Fill the home wave: the joiner goes to the next wave that would take it and has room.
    full = Admissions(
        by_stratum={(home, key): cohort.cap(key) or 0},
        by_wave={home: cohort.total_cap if cohort.total_cap is not None else 0},
        healthy={key: 1_000_000},  # canaried: only the caps decide here
    )
    landed = admit(plan, table, attrs, position, current, full)
    later = [i for i in range(home + 1, current + 1)
             if plan.waves[i].selector.matches(attrs) and position < table[i].threshold(key)
             and (table[i].cap(key) is None or table[i].cap(key) != 0)
             and table[i].total_cap != 0]
    assert landed == (later[0] if later else None)


def test_late_joiner_of_a_new_stratum_waits_for_a_capped_table_rebuild() -> None:
    plan = plan_of(wave("canary", total=10), wave("rest", share=1.0))
    known = grid(50, regions=("eu-west",))
    table = cohort_table(plan, known)
    newcomer = DeviceAttributes(platform="windows", region="mars-1")
    # Capped canary: an unknown stratum's allotment is unknown, so nobody there is asked yet...
    assert admit(plan, table, newcomer, 0.0, 0, NO_ADMISSIONS) is None
    # ...but the uncapped wave asks it at the plain share.
    assert admit(plan, table, newcomer, 0.0, 1, NO_ADMISSIONS) == 1
    rebuilt = cohort_table(plan, {**known, newcomer: 50})
    assert admit(plan, rebuilt, newcomer, 0.0, 0, NO_ADMISSIONS) == 0


def test_a_full_canary_sends_the_joiner_to_the_next_wave() -> None:
    plan = plan_of(wave("canary", total=1), wave("half", share=0.5))
    population = grid(20, platforms=("windows",), regions=("eu-west",))
    table = cohort_table(plan, population)
    attrs = DeviceAttributes(platform="windows", region="eu-west")
    assert admit(plan, table, attrs, 0.001, 1, NO_ADMISSIONS) == 0
    full = Admissions(by_stratum={(0, "windows/eu-west"): 1}, by_wave={0: 1}, healthy={"windows/eu-west": 1})
    assert admit(plan, table, attrs, 0.001, 1, full) == 1
    assert admit(plan, table, attrs, 0.001, 0, full) is None
    assert admit(plan, table, attrs, 0.7, 1, full) is None
    # Until the canary's device confirmed health, nobody else of its stratum is exposed.
    unproven = Admissions(by_stratum={(0, "windows/eu-west"): 1}, by_wave={0: 1})
    assert admit(plan, table, attrs, 0.001, 1, unproven) is None


# -- canary before crowd, in-flight window ------------------------------------------------------

def test_a_stratum_new_in_a_later_wave_is_capped_to_its_canary_size() -> None:
    """A region offline during the canary (or added since) appears in wave 2: it gets its
    canary's allotment and no more until one of those confirms health."""
    plan = plan_of(wave("canary", per_stratum=3), wave("tenth", share=0.1), wave("everyone", share=1.0))
    population = grid(200, platforms=("windows",), regions=("eu-west", "ap-south"))
    table = cohort_table(plan, population)
    assert canary_limit(table, "windows/ap-south") == (0, 3)
    attrs = DeviceAttributes(platform="windows", region="ap-south")
    by_stratum: Counter[tuple[int, str]] = Counter()
    by_wave: Counter[int] = Counter()
    healthy: Counter[str] = Counter({"windows/eu-west": 3})  # the other region was canaried
    admitted = []
    for i in range(200):
        index = admit(plan, table, attrs, bucket("r", f"late-{i}"), 2,
                      Admissions(by_stratum, by_wave, healthy=healthy))
        if index is not None:
            admitted.append(index)
            by_stratum[(index, "windows/ap-south")] += 1
            by_wave[index] += 1
    assert len(admitted) == 3  # the canary's size, although wave 2 asks for everyone
    healthy["windows/ap-south"] = 3
    more = admit(plan, table, attrs, bucket("r", "late-x"), 2, Admissions(by_stratum, by_wave, healthy=healthy))
    assert more is not None  # canaried now: the crowd may follow


def test_the_in_flight_window_holds_admissions_until_trials_are_decided() -> None:
    plan = parse_plan("name: p\nwaves:\n  - {name: all, share: 1.0, soak: 1m, gates: {max_in_trial: 2}}\n")
    attrs = DeviceAttributes(platform="linux", region="eu-west")
    table = cohort_table(plan, {attrs: 10})
    key = stratum_key(attrs, plan.strata)
    busy = Admissions(by_stratum={(0, key): 2}, by_wave={0: 2}, in_trial={key: 2})
    assert admit(plan, table, attrs, 0.5, 0, busy) is None
    one_done = Admissions(by_stratum={(0, key): 2}, by_wave={0: 2}, in_trial={key: 1})
    assert admit(plan, table, attrs, 0.5, 0, one_done) == 0


@pytest.mark.parametrize("current", [0, 1])
def test_selector_keeps_other_devices_out(current: int) -> None:
    plan = plan_of(wave("internal", share=1.0, selector=Selector(include={"tags": ("internal",)})),
                   wave("none-yet", share=0.0001))
    table = cohort_table(plan, grid(10))
    insider = DeviceAttributes(platform="linux", region="eu-west", tags=frozenset({"internal"}))
    outsider = DeviceAttributes(platform="linux", region="eu-west")
    assert admit(plan, table, insider, 0.99, current, NO_ADMISSIONS) == 0
    assert admit(plan, table, outsider, 0.99, current, NO_ADMISSIONS) is None


def test_a_capped_wave_after_a_wider_share_still_adds_devices() -> None:
    plan = plan_of(wave("tenth", share=0.1), wave("capped-half", share=0.5, total=15))
    fleet = [f"device-{i}" for i in range(300)]
    attrs = DeviceAttributes(platform="windows", region="eu-west")
    table = cohort_table(plan, {attrs: len(fleet)})
    by_stratum: Counter[tuple[int, str]] = Counter()
    by_wave: Counter[int] = Counter()
    for device_id in fleet:
        index = admit(plan, table, attrs, bucket("r", device_id), 1,
                      Admissions(by_stratum, by_wave, healthy={"windows/eu-west": 1}))
        if index is not None:
            by_stratum[(index, "windows/eu-west")] += 1
            by_wave[index] += 1
    assert by_wave[0] > 15  # the first wave took its 10 %...
    assert by_wave[1] == 15  # ...and the capped wave should add its 15 (it adds 0)
