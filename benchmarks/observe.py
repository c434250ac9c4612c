"""How long one reconciler look at a rollout (``store.telemetry.observe``) takes as a rollout
grows: the reconciler runs it for every rolling rollout on every tick (<= 1 s).

Builds a rollout in a scratch database (SQLite file, or a scratch PostgreSQL database), with
``--devices`` admitted devices spread over two waves, each with an intent event and 2 % with a
crash, plus as many devices never exposed (the control arm), then times ``observe()``
``--repeat`` times without and with the health judges (which read every device of the exposed
strata) and prints the medians (table, or ``--json``).

    python benchmarks/observe.py --backend both --devices 20000 100000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ringfence.core.models import Category, EventKind
from ringfence.core.rollout import Intent
from ringfence.store.access import upsert
from ringfence.store.db import Database
from ringfence.store.releases import apply_intent, create_artifact, create_content_type, create_release
from ringfence.store.schema import DeviceRow, ReleaseRow
from ringfence.store.telemetry import Admission, Event, observe, record_admissions, record_events

T0 = datetime(2024, 7, 19, 4, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
PLAN = "name: two\nwaves:\n  - name: half\n    share: 0.5\n    soak: 1h\n  - name: all\n    share: 1.0\n    soak: 1h\n"


def build(db: Database, devices: int) -> str:
    with db.session() as s:
        create_content_type(s, "bench/content", Category.RAPID_RESPONSE, actor="bench", now=T0,
                            unvalidated_reason="benchmark of the judges only")
        create_artifact(s, content_type="bench/content", version="1", sha256="a" * 64, size=1, actor="bench", now=T0)
        release_id = create_release(s, content_type="bench/content", version="1", plan_source=PLAN, actor="bench",
                                    now=T0).id
        for intent in (Intent.PREPARE, Intent.START, Intent.ADVANCE):
            apply_intent(s, release_id, intent, actor="bench", reason="bench", now=T0)
    batch = 5_000
    for start in range(0, 2 * devices, batch):
        ids = [uuid.uuid4().hex for _ in range(min(batch, 2 * devices - start))]
        with db.session() as s:
            upsert(s, DeviceRow, [
                {"id": d, "credential_hash": "x" * 64, "tenant": "default", "platform": f"p{i % 3}",
                 "region": f"r{i % 4}", "tags": [], "enrolled_at": T0, "last_seen_at": T0 + timedelta(minutes=50)}
                for i, d in enumerate(ids)], keys=("id",))
        if start >= devices:
            continue  # the control arm: enrolled, never exposed
        with db.session() as s:
            record_admissions(s, [Admission(release_id, d, i % 2, f"p{i % 3}/r{i % 4}", T0)
                                  for i, d in enumerate(ids)])
            events = [Event(d, f"i-{d}", release_id, "bench/content", "1", EventKind.INTENT, f"p{i % 3}/r{i % 4}",
                            T0, T0, {}) for i, d in enumerate(ids)]
            events += [Event(d, f"c-{d}", release_id, "bench/content", "1", EventKind.CRASH, f"p{i % 3}/r{i % 4}",
                             T0 + timedelta(minutes=1), T0 + timedelta(minutes=1), {})
                       for i, d in enumerate(ids) if i % 50 == 0]
            record_events(s, events)
    return release_id


def time_observe(db: Database, release_id: str, repeat: int) -> dict[str, Any]:
    samples: dict[bool, list[float]] = {False: [], True: []}
    obs = judged = None
    for _ in range(repeat):
        for with_judges in (False, True):  # side by side, alternating
            started = time.perf_counter()
            with db.session() as s:
                row = s.get(ReleaseRow, release_id)
                assert row is not None
                if with_judges:
                    judged = observe(s, row, NOW)
                else:
                    obs = observe(s, row)
            samples[with_judges].append(time.perf_counter() - started)
    assert obs is not None
    assert judged is not None
    return {"median_ms": statistics.median(samples[False]) * 1000, "min_ms": min(samples[False]) * 1000,
            "judged_median_ms": statistics.median(samples[True]) * 1000, "verdicts": len(judged.verdicts),
            "exposed": obs.exposed_devices, "wave_exposed": obs.wave_exposed, "failed": obs.failed_devices}


def run(backend: str, devices: int, repeat: int, pg_admin: str) -> dict[str, Any]:
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            db = Database(f"sqlite:///{Path(tmp) / 'bench.db'}")
            db.migrate()
            release_id = build(db, devices)
            result = time_observe(db, release_id, repeat)
            db.dispose()
            return result
    name = f"rf_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_admin, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        db = Database(make_url(pg_admin).set(database=name).render_as_string(hide_password=False))
        db.migrate()
        release_id = build(db, devices)
        with db.engine.connect() as conn:  # as autovacuum would, so the planner has statistics
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
        result = time_observe(db, release_id, repeat)
        db.dispose()
        return result
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--devices", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--pg-admin-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = []
    for backend in backends:
        for n in args.devices:
            result = {"backend": backend, "devices": n, **run(backend, n, args.repeat, args.pg_admin_url)}
            results.append(result)
            if not args.json:
                print(f"{backend:10} {n:>8} devices  observe() median {result['median_ms']:8.1f} ms, with judges "
                      f"{result['judged_median_ms']:8.1f} ms ({result['verdicts']} verdicts)  "
                      f"(min {result['min_ms']:.1f}; exposed {result['exposed']}, wave {result['wave_exposed']}, "
                      f"failed {result['failed']})", flush=True)
    if args.json:
        json.dump(results, sys.stdout, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
