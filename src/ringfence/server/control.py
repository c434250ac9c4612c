"""Background control: loading rollout views for the snapshot, and the reconciler that drives
every rollout through the engine on a fixed tick.

Exactly one reconciler acts at a time. On PostgreSQL the leader holds a session-level advisory
lock on a dedicated connection (another node keeps trying and takes over when the connection
drops); on SQLite the server process already holds the data directory's lock file, so it is the
leader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ringfence.analysis.verdicts import Verdict, VerdictPhase
from ringfence.core.assignment import RolloutView
from ringfence.core.clock import Clock, utc
from ringfence.core.errors import Conflict, RingfenceError
from ringfence.core.plan import Plan
from ringfence.core.rollout import ACTIVE_PHASES, Phase
from ringfence.engine.reconciler import EngineLimits, Observations, error_since, step
from ringfence.server.metrics import Metrics
from ringfence.server.snapshot import LoadedViews, Revoked
from ringfence.store import policies
from ringfence.store.alerts import on_judge_error
from ringfence.store.db import Database
from ringfence.store.releases import (
    apply_intent,
    baseline_target,
    content_type_names,
    release_plan,
    release_target,
    rollout_state,
)
from ringfence.store.schema import HistoryRow, ReleaseRow
from ringfence.store.telemetry import load_admissions, load_placebos, load_trials, load_watched, observe

log = logging.getLogger("ringfence.reconciler")

ADVISORY_LOCK_KEY = 0x52494E47  # "RING"
_TICKED_PHASES = (Phase.DRAFT.value, Phase.ROLLING.value, Phase.ROLLING_BACK.value)


def load_views(db: Database, known_admissions: Collection[str]) -> LoadedViews:
    """Read what the snapshot needs. Admissions are read only for rollouts the snapshot does not
    hold yet (its own copy is newer than the database's). Channel policies come along, with the
    pinned versions' targets and, for content types some policy delays, the completed releases
    a delay picks from."""
    with db.session() as s:
        views: dict[str, RolloutView] = {}
        admissions: dict[str, dict[str, tuple[int, str]]] = {}
        placebos: dict[str, dict[str, tuple[int, str, datetime, bool]]] = {}
        trials: dict[str, dict[str, bool]] = {}
        watched: dict[str, set[str]] = {}
        live = [p.value for p in ACTIVE_PHASES]
        for row in s.scalars(select(ReleaseRow).where(ReleaseRow.phase.in_(live))):
            views[row.content_type] = RolloutView(
                release_id=row.id, content_type=row.content_type, target=release_target(s, row),
                baseline=baseline_target(s, row.content_type), phase=Phase(row.phase), wave=row.wave,
                plan=release_plan(row), salt=row.salt, table=(),
            )
            if row.id not in known_admissions:
                admissions[row.id] = load_admissions(s, row.id)
                placebos[row.id] = load_placebos(s, row.id)
                trials[row.id] = load_trials(s, row.id)
                watched[row.id] = load_watched(s, row.id)
        baselines = {ct: baseline_target(s, ct) for ct in content_type_names(s)}
        by_version: dict[tuple[str, str], str] = {}
        newest_phase: dict[tuple[str, str], str] = {}
        for rid, ct, version, phase in s.execute(
                select(ReleaseRow.id, ReleaseRow.content_type, ReleaseRow.version, ReleaseRow.phase)
                .order_by(ReleaseRow.created_at, ReleaseRow.id)):
            by_version[(ct, version)] = rid
            newest_phase[(ct, version)] = phase
        revoked: dict[str, dict[str, Revoked]] = {}
        for (ct, version), phase in newest_phase.items():
            if phase in _REVOKED_PHASES:
                rid = by_version[(ct, version)]
                revoked.setdefault(ct, {})[version] = Revoked(rid, phase, _rollback_reason(s, rid))
        book = policies.load_book(s)
        kinds = policies.categories(s)
        gone = {ct: set(versions) for ct, versions in revoked.items()}
        general = policies.general_history(s, policies.content_types_with_delays(book, kinds), gone)
        pinned = policies.pinned_targets(s, book, by_version)
        marker = rollouts_marker(s)
    return LoadedViews(views, baselines, admissions, by_version, marker, revoked, placebos, categories=kinds,
                       policies=book, pinned=pinned, general=general, trials=trials, watched=watched)


_REVOKED_PHASES = (Phase.ROLLING_BACK.value, Phase.ROLLED_BACK.value)


def _rollback_reason(s: Session, release_id: str) -> str:
    reason = s.scalar(select(HistoryRow.reason).where(HistoryRow.release_id == release_id,
                                                      HistoryRow.to_phase == Phase.ROLLING_BACK.value)
                      .order_by(HistoryRow.at.desc()).limit(1))
    return reason or "the release was rolled back"


def rollouts_marker(s: Session) -> tuple[int, int]:
    """Changes whenever any release is created or changes phase or wave (every transition bumps
    its revision), and whenever a channel policy is set or cleared (so does every policy change):
    how a node notices what another node did."""
    count, revisions = s.execute(select(func.count(), func.coalesce(func.sum(ReleaseRow.revision), 0))).one()
    policy_rows, policy_revisions = policies.policies_marker(s)
    return int(count) + policy_rows, int(revisions) + policy_revisions


class Leadership:
    """Who may run the reconciler. SQLite: always this process (it owns the data dir)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._conn: Any = None

    def acquire(self) -> bool:
        if self._db.is_sqlite:
            return True
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT 1"))
                return True
            except Exception:
                log.warning("lost the reconciler lock's connection; trying to take it again")
                self.release()
        try:
            conn = self._db.engine.connect()
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY}).scalar()
            conn.commit()
        except Exception as exc:
            log.warning("cannot ask for the reconciler lock: %s", exc)
            return False
        if got:
            self._conn = conn
            log.info("this node now runs the reconciler")
            return True
        conn.close()
        return False

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # closing a dead connection
                self._conn.close()
            self._conn = None


class Reconciler:
    def __init__(self, db: Database, clock: Clock, limits: EngineLimits, interval_s: float,
                 on_change: Callable[[], Awaitable[None]], judge_interval_s: float = 2.0,
                 on_phase: Callable[[str, Phase], None] | None = None, metrics: Metrics | None = None,
                 reach: Callable[[str, datetime], int | None] | None = None) -> None:
        self._db = db
        self._reach = reach
        self._error_since: dict[str, datetime] = {}  # release -> since when a judge has been in error
        self._metrics = metrics
        self._clock = clock
        self._limits = limits
        self._interval = interval_s
        self._judge_interval = judge_interval_s
        self._on_change = on_change
        self._on_phase = on_phase
        self._moved: list[tuple[str, Phase]] = []  # transitions of the last tick, for on_phase
        self._wake = asyncio.Event()
        self._failures_arrived = False
        # release -> (judged at, how long judging took, the rollout's revision then, verdicts)
        self._verdicts: dict[str, tuple[float, float, int, tuple[Verdict, ...]]] = {}
        self.leadership = Leadership(db)
        self.ticks = 0
        self.last_tick_s = 0.0
        self.errors = 0

    def wake(self) -> None:
        """Failure events were just stored: tick now, and judge afresh (call on the loop)."""
        self._failures_arrived = True
        self._wake.set()

    def tick(self) -> int:
        """One pass over every rollout that may move on its own; returns how many changed."""
        started = time.perf_counter()
        fresh, self._failures_arrived = self._failures_arrived, False
        with self._db.session() as s:
            ids = list(s.scalars(select(ReleaseRow.id).where(ReleaseRow.phase.in_(_TICKED_PHASES))))
        for gone in set(self._verdicts) - set(ids):
            del self._verdicts[gone]
        for gone in set(self._error_since) - set(ids):
            del self._error_since[gone]
        changed = 0
        for release_id in ids:
            changed += self._reconcile(release_id, fresh)
        self.ticks += 1
        self.last_tick_s = time.perf_counter() - started
        if self._metrics is not None:
            self._metrics.reconciler_tick_seconds.observe(self.last_tick_s)
        return changed

    def _reconcile(self, release_id: str, fresh: bool = False) -> int:
        """One look at one rollout. The judges read every device of the exposed strata, so they
        run when failures arrived or ``judge_interval_s`` has passed; in between the engine sees
        their last verdicts."""
        now = self._clock.now()
        try:
            with self._db.session() as s:
                row = s.get(ReleaseRow, release_id)
                if row is None:
                    return 0
                state = rollout_state(row)
                judged_at, cost, revision, cached = self._verdicts.get(release_id, (-math.inf, 0.0, -1, ()))
                # At least judge_interval_s apart, and never more than a fifth of the time (a large
                # fleet's look costs seconds); failures arriving, or any transition (a resume
                # starts the judges afresh), always trigger a look.
                if (fresh or revision != row.revision
                        or time.monotonic() - judged_at >= max(self._judge_interval, 4 * cost)):
                    began = time.monotonic()
                    obs = observe(s, row, now)
                    if self._metrics is not None:
                        self._metrics.judge_evaluations.inc()
                    self._verdicts[release_id] = (time.monotonic(), time.monotonic() - began, row.revision,
                                                  obs.verdicts)
                else:
                    obs = replace(observe(s, row), verdicts=cached)
                plan = release_plan(row)
                obs = self._evidence(s, row, plan, obs, now)
                actions = step(state, plan, obs, now, self._limits)
                for action in actions[:1]:  # one transition per tick; the next tick sees its effect
                    moved = apply_intent(s, release_id, action.intent, actor="reconciler", reason=action.reason,
                                         now=now, details=action.details, expected_revision=row.revision)
                    self._moved.append((release_id, moved.to_phase))
                    log.info("release %s: %s (%s)", release_id, action.intent.value, action.reason)
                    return 1
        except Conflict as exc:
            log.info("release %s: %s", release_id, exc.message)
        except RingfenceError as exc:
            self.errors += 1
            log.error("release %s: reconciling failed: %s", release_id, exc.message)
        return 0

    def _evidence(self, s: Session, row: ReleaseRow, plan: Plan, obs: Observations, now: datetime) -> Observations:
        """What the engine needs besides the tables: since when a judge has been in error (the
        first look that found one also alerts), and, for a soaked wave that exposed nobody, how
        many devices it could still reach."""
        if row.phase != Phase.ROLLING.value:
            self._error_since.pop(row.id, None)
            return obs
        previous = self._error_since.get(row.id)
        since = error_since(previous, obs.verdicts, now)
        if since is None:
            self._error_since.pop(row.id, None)
        else:
            self._error_since[row.id] = since
            if previous is None:
                on_judge_error(s, row, [v for v in obs.verdicts if v.phase is VerdictPhase.ERROR], now)
        obs = replace(obs, error_since=since)
        started = row.wave_started_at
        soaked = started is not None and now - utc(started) >= plan.waves[row.wave].soak
        if obs.wave_exposed == 0 and soaked and self._reach is not None:
            obs = replace(obs, wave_reach=self._reach(row.id, now))
        return obs

    async def run(self) -> None:
        while True:
            try:
                leader = await asyncio.to_thread(self.leadership.acquire)
                changed = await asyncio.to_thread(self.tick) if leader else 0
                moved, self._moved = self._moved, []
                if self._on_phase is not None:
                    for release_id, phase in moved:  # check-ins see a halt now, before the reload
                        self._on_phase(release_id, phase)
                if changed:
                    await self._on_change()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors += 1
                log.exception("reconciler tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
