"""The FastAPI application: routes, the one error shape, and the runtime's lifecycle."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

import ringfence
from ringfence.core.clock import Clock
from ringfence.server import (
    admin_api,
    agent_api,
    alerts_api,
    audit_api,
    change_api,
    dashboard,
    errors,
    metrics,
    policy_api,
    trust_api,
)
from ringfence.server.config import ServerConfig
from ringfence.server.runtime import Runtime


def create_app(config: ServerConfig, clock: Clock | None = None) -> FastAPI:
    runtime = Runtime(config, clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="Ringfence control plane",
        version=ringfence.__version__,
        description="Safe progressive delivery of updates to large fleets of endpoints.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    errors.install(app)
    app.include_router(agent_api.router)  # first: check-ins are most of the traffic
    app.include_router(admin_api.router)
    app.include_router(change_api.router)
    app.include_router(audit_api.router)
    app.include_router(trust_api.router)
    app.include_router(policy_api.router)
    app.include_router(alerts_api.router)
    app.include_router(metrics.router)  # GET /metrics for Prometheus, out of the API's schema
    app.include_router(dashboard.router)  # the pages at / and /ui/, out of the API's schema

    @app.get("/healthz", tags=["meta"])
    async def healthz() -> dict[str, str]:
        """Liveness: answers without touching the database (also the benchmarks' baseline)."""
        return {"status": "ok"}

    @app.get("/v1/server", tags=["meta"])
    async def server_info(request: Request, _: admin_api.Reader) -> dict[str, Any]:
        rt: Runtime = request.app.state.runtime
        return {
            "version": ringfence.__version__,
            "database": rt.db.engine.dialect.name,
            "devices": len(rt.snapshot.devices),
            "active_rollouts": {ct: v.release_id for ct, v in rt.snapshot.views.items()},
            # what check-ins are answered from right now (the snapshot follows the database)
            "rollout_phases": {v.release_id: v.phase.value for v in rt.snapshot.views.values()},
            "write_queue": rt.batcher.depth,
            "reconciler": {"ticks": rt.reconciler.ticks, "last_tick_s": rt.reconciler.last_tick_s,
                           "errors": rt.reconciler.errors},
        }

    return app
