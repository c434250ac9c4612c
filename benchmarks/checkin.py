"""Check-in throughput of a real ``ringfence server``, side by side with its trivial ``/healthz``.

What it does, per backend (SQLite in a temporary data dir, PostgreSQL in a scratch database):

1. ``ringfence init --data-dir D --json`` and ``ringfence server --data-dir D --port P`` (the
   console script, exactly as an operator runs it), bound to 127.0.0.1.
2. Through the admin API: a content type, a baseline release (1.0.0, completed) and a rolling
   release (1.1.0, one wave at share 0.5 with a one-day soak, so it stays rolling and keeps
   admitting); N devices enrolled over platforms, OS versions and regions; two warm-up passes so
   every device has checked in, been admitted or not, and reported what it runs.
3. Alternating measurements of the same server with the same client and concurrency:
   ``healthz, checkin, healthz, checkin, ...`` (``--rounds`` each). Check-ins are steady-state
   (``{"versions": {...}, "events": []}``); a fraction (``--event-fraction``) carries one
   ``intent`` or ``healthy`` event, which the server acknowledges only after a durable write.
4. Medians over rounds of requests/s, p50 and p99 latency, the checkin/healthz ratio, and the
   CPU used by the server process, the load processes and the whole machine (to tell whether the
   load generator, not the server, is the bottleneck). A table, or one JSON object (``--json``).

Load comes from separate worker processes (``--procs``), each running ``--concurrency / procs``
keep-alive HTTP/1.1 connections on loopback. The default client (``--client raw``) is a minimal
asyncio HTTP/1.1 client on uvloop, cheap enough not to starve the server of CPU; ``--client
httpx`` uses ``httpx.AsyncClient`` instead (heavier per request; compare the two to see the
client's cost). Every loop is bounded by ``--max-requests`` and by time; the server is stopped,
the scratch database dropped and the data dir removed at the end, also on errors and Ctrl-C.

``--py-spy FILE`` (needs ``py-spy`` on PATH or in the venv; not a project dependency) adds one
extra check-in measurement per backend with py-spy attached to the server, writes the collapsed
stacks to ``FILE.<backend>.txt`` and prints the hottest functions. Its figures are not part of
the medians (sampling costs CPU on the same cores).

Run ``python benchmarks/checkin.py --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import resource
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CONTENT_TYPE = "bench/rules"
BASELINE_VERSION = "1.0.0"
ROLLING_VERSION = "1.1.0"
BASELINE_PLAN = """\
name: bench-baseline
waves:
  - name: everyone
    share: 1.0
    soak: 0s
"""
ROLLING_PLAN = """\
name: bench-half
description: one wave at half the fleet; a long soak keeps it rolling for the whole benchmark
strata: [platform, region]
waves:
  - name: half
    share: 0.5
    soak: 1d
"""
PLATFORMS = (("windows", 0.6, ("10", "11")), ("macos", 0.25, ("14", "15")), ("linux", 0.15, ("22.04", "24.04")))
REGIONS = ("us-east", "us-west", "eu-west", "eu-central", "ap-south", "ap-northeast")
GOAL_RPS = 5000.0
GOAL_RATIO = 0.5
DEFAULT_PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def log(msg: str) -> None:
    sys.stderr.write(f"[checkin-bench {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------------------------
# Machine and process accounting
# ---------------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
                break
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "cpu_model": cpu_model or platform.processor(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15 of stat)


def postgres_backend_pids(admin_url: str, database: str) -> list[int]:
    """Process ids of the PostgreSQL backends connected to ``database`` (the server's pool), so
    their CPU can be told apart from other users of the same PostgreSQL."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)).fetchall()
    return [int(r[0]) for r in rows]


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0, 0.0
    values = [float(v) for v in first]
    idle = values[3] + (values[4] if len(values) > 4 else 0.0)
    total = sum(values[:8])
    return total - idle, total


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ringfence_command() -> list[str]:
    script = Path(sys.executable).with_name("ringfence")
    if script.exists():
        return [str(script)]
    found = shutil.which("ringfence")
    if found is None:
        raise SystemExit("cannot find the `ringfence` console script; activate the project's virtualenv")
    return [found]


# ---------------------------------------------------------------------------------------------
# Server under test
# ---------------------------------------------------------------------------------------------
class Server:
    """``ringfence init`` + ``ringfence server`` on 127.0.0.1, stopped by :meth:`stop`."""

    def __init__(self, data_dir: Path, database_url: str | None) -> None:
        self.data_dir = data_dir
        self.env = dict(os.environ)
        self.env.pop("RINGFENCE_DATABASE_URL", None)
        self.pg_database = database_url.rsplit("/", 1)[1] if database_url is not None else ""
        if database_url is not None:
            self.env["RINGFENCE_DATABASE_URL"] = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"

    def init(self) -> None:
        out = subprocess.run([*ringfence_command(), "init", "--data-dir", str(self.data_dir), "--json"],
                             capture_output=True, text=True, env=self.env, timeout=120, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"ringfence init failed ({out.returncode}): {out.stderr.strip()}")
        self.token = json.loads(out.stdout)["admin_token"]

    def start(self, timeout: float = 60) -> None:
        import httpx

        with self.log_path.open("ab") as logf:
            self.proc = subprocess.Popen(
                [*ringfence_command(), "server", "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
                 "--port", str(self.port), "--poll-interval", "60",
                 "--approvals", "rapid-response=0"],  # the benchmark measures check-ins, not approvals
                stdout=logf, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"server did not answer within {timeout}s:\n{self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def scratch_postgres(admin_url: str) -> Iterator[str]:
    """A fresh database on the PostgreSQL server of ``admin_url``; dropped afterwards."""
    import psycopg

    name = f"rf_bench_{secrets.token_hex(5)}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    log(f"created PostgreSQL database {name}")
    base, _, _ = admin_url.rpartition("/")
    server_url = base.replace("postgresql://", "postgresql+psycopg://", 1) + "/" + name
    try:
        yield server_url
    finally:
        try:
            with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            log(f"dropped PostgreSQL database {name}")
        except Exception as exc:
            log(f"WARNING: could not drop database {name}: {exc}")


# ---------------------------------------------------------------------------------------------
# Fleet set-up through the API
# ---------------------------------------------------------------------------------------------
@dataclass
class Fleet:
    credentials: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=list)  # what each device runs (after warm-up)
    rolling_release: str = ""


def _device_attributes(rng: random.Random) -> dict[str, Any]:
    r = rng.random()
    acc = 0.0
    name, versions = PLATFORMS[-1][0], PLATFORMS[-1][2]
    for plat, weight, vers in PLATFORMS:
        acc += weight
        if r < acc:
            name, versions = plat, vers
            break
    return {"platform": name, "os_version": rng.choice(versions), "arch": rng.choice(("x86_64", "arm64")),
            "region": rng.choice(REGIONS), "agent_version": "7.2.0"}


def setup_fleet(server: Server, devices: int, enroll_concurrency: int, seed: int) -> Fleet:
    import httpx

    fleet = Fleet()
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"},
                      timeout=60) as c:
        def call(method: str, path: str, **kw: Any) -> Any:
            r = c.request(method, path, **kw)
            if r.status_code >= 400:
                raise RuntimeError(f"{method} {path} -> {r.status_code}: {r.text}")
            return r.json()

        def release(version: str, plan: str) -> str:
            blob = f"ringfence benchmark artifact {version}\n".encode() * 64
            call("POST", "/v1/artifacts", params={"content_type": CONTENT_TYPE, "version": version}, content=blob)
            rel = call("POST", "/v1/releases", json={"content_type": CONTENT_TYPE, "version": version, "plan": plan,
                                                     "plan_origin": f"bench-{version}.yaml"})
            release_id: str = rel["release"]
            call("POST", f"/v1/rollouts/{release_id}/start", json={"reason": "benchmark"})
            return release_id

        def wait_phase(release_id: str, phase: str, timeout: float = 60) -> None:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if call("GET", f"/v1/releases/{release_id}")["phase"] == phase:
                    return
                time.sleep(0.2)
            raise RuntimeError(f"release {release_id} did not reach {phase} within {timeout}s")

        call("POST", "/v1/content-types", json={"name": CONTENT_TYPE, "category": "rapid-response",
                                                "unvalidated_reason": "benchmark of check-ins only"})
        enroll_token = call("POST", "/v1/enroll-tokens", json={"tenant": "default"})["token"]
        # A baseline completes only on confirmed health: one witness device takes it first.
        witness = c.post("/v1/agent/enroll", json=_device_attributes(random.Random(seed - 1)),
                         headers={"Authorization": f"Bearer {enroll_token}"}).json()["credential"]
        baseline = release(BASELINE_VERSION, BASELINE_PLAN)
        deadline = time.monotonic() + 60
        while True:
            answer = c.post("/v1/agent/checkin", json={"versions": {}, "events": []},
                            headers={"Authorization": f"Bearer {witness}"}).json()
            if answer["desired"].get(CONTENT_TYPE, {}).get("version") == BASELINE_VERSION:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the witness device was never offered {BASELINE_VERSION}")
            time.sleep(0.2)
        c.post("/v1/agent/checkin", headers={"Authorization": f"Bearer {witness}"},
               json={"versions": {CONTENT_TYPE: BASELINE_VERSION},
                     "events": [_event("intent", BASELINE_VERSION), _event("healthy", BASELINE_VERSION)]})
        wait_phase(baseline, "completed")

    t0 = time.monotonic()
    fleet.credentials = asyncio.run(_enroll_all(server.url, enroll_token, devices, enroll_concurrency, seed))
    log(f"enrolled {devices} devices in {time.monotonic() - t0:.1f}s")

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"},
                      timeout=60) as c:
        r = c.post("/v1/artifacts", params={"content_type": CONTENT_TYPE, "version": ROLLING_VERSION},
                   content=b"ringfence benchmark artifact 1.1.0\n" * 64)
        r.raise_for_status()
        r = c.post("/v1/releases", json={"content_type": CONTENT_TYPE, "version": ROLLING_VERSION,
                                         "plan": ROLLING_PLAN, "plan_origin": "bench-half.yaml"})
        r.raise_for_status()
        fleet.rolling_release = r.json()["release"]
        r = c.post(f"/v1/rollouts/{fleet.rolling_release}/start", json={"reason": "benchmark"})
        r.raise_for_status()
        if r.json()["phase"] != "rolling":
            raise RuntimeError(f"the rolling release is {r.json()['phase']}, not rolling")
    time.sleep(2.5)  # let the population refresh rebuild cohort tables for the enrolled fleet

    t0 = time.monotonic()
    fleet.versions = asyncio.run(_warm_up(server.url, fleet.credentials, enroll_concurrency))
    admitted = sum(v == ROLLING_VERSION for v in fleet.versions)
    log(f"warm-up check-ins done in {time.monotonic() - t0:.1f}s: {admitted} of {devices} devices admitted to "
        f"{ROLLING_VERSION} ({admitted / max(devices, 1):.0%}), the rest on baseline {BASELINE_VERSION}")
    return fleet


async def _enroll_all(url: str, token: str, n: int, concurrency: int, seed: int) -> list[str]:
    import httpx

    rng = random.Random(seed)
    bodies = [_device_attributes(rng) for _ in range(n)]
    out: list[str] = [""] * n
    next_index = 0

    async with httpx.AsyncClient(base_url=url, timeout=60,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker() -> None:
            nonlocal next_index
            while next_index < n:
                i = next_index
                next_index += 1
                r = await client.post("/v1/agent/enroll", json=bodies[i],
                                      headers={"Authorization": f"Bearer {token}"})
                if r.status_code != 201:
                    raise RuntimeError(f"enroll -> {r.status_code}: {r.text}")
                out[i] = r.json()["credential"]

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


async def _warm_up(url: str, credentials: list[str], concurrency: int) -> list[str]:
    """Every device checks in twice: once to learn (and be admitted to) its desired version,
    once reporting it runs that version, so measured check-ins are steady state."""
    import httpx

    versions: list[str] = [""] * len(credentials)
    async with httpx.AsyncClient(base_url=url, timeout=60,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        for pass_no in range(2):
            next_index = 0

            async def worker(pass_no: int = pass_no) -> None:
                nonlocal next_index
                while next_index < len(credentials):
                    i = next_index
                    next_index += 1
                    reported = {CONTENT_TYPE: versions[i]} if pass_no else {}
                    r = await client.post("/v1/agent/checkin", json={"versions": reported, "events": []},
                                          headers={"Authorization": f"Bearer {credentials[i]}"})
                    if r.status_code != 200:
                        raise RuntimeError(f"warm-up check-in -> {r.status_code}: {r.text}")
                    desired = r.json()["desired"].get(CONTENT_TYPE)
                    if desired is None:
                        raise RuntimeError(f"warm-up check-in had no desired version: {r.text}")
                    versions[i] = desired["version"]

            await asyncio.gather(*(worker() for _ in range(concurrency)))
    return versions


# ---------------------------------------------------------------------------------------------
# Load worker (a separate process: ``checkin.py --worker``; spec on stdin, result in a JSON file)
# ---------------------------------------------------------------------------------------------
def _checkin_body(version: str, event: dict[str, Any] | None) -> bytes:
    body = {"versions": {CONTENT_TYPE: version}, "events": [event] if event else []}
    return json.dumps(body, separators=(",", ":")).encode()


def _event(kind: str, version: str) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "kind": kind, "content_type": CONTENT_TYPE, "version": version,
            "at": datetime.now(UTC).isoformat()}


class _Load:
    """The request loops of one worker process."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.host: str = spec["host"]
        self.port: int = spec["port"]
        self.endpoint: str = spec["endpoint"]
        self.devices: list[tuple[str, str]] = [(d[0], d[1]) for d in spec["devices"]]
        self.concurrency: int = spec["concurrency"]
        self.event_fraction: float = spec["event_fraction"]
        self.max_requests: int = spec["max_requests"]
        self.rng = random.Random(spec["seed"])
        self.sent = 0
        # Latencies of the 200 responses completed inside the measured window:
        self.latencies_us: list[int] = []  # steady-state check-ins (and every healthz)
        self.event_latencies_us: list[int] = []  # check-ins that carried an event
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.events_sent = 0
        self.window_cpu_s = float("nan")
        self.measure_from = 0.0
        self.measure_until = 0.0
        self.stop_at = 0.0
        self._healthz = (f"GET /healthz HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                         "User-Agent: ringfence-bench\r\n\r\n").encode()
        self._steady_bodies = [_checkin_body(v, None) for _, v in self.devices]
        self._event_kinds: dict[int, int] = {}

    def _body(self, index: int) -> tuple[bytes, bool]:
        """(JSON body, carries an event) for the next check-in of device ``index``."""
        if self.event_fraction > 0 and self.rng.random() < self.event_fraction:
            n = self._event_kinds.get(index, 0)
            self._event_kinds[index] = n + 1
            kind = "intent" if n % 2 == 0 else "healthy"
            return _checkin_body(self.devices[index][1], _event(kind, self.devices[index][1])), True
        return self._steady_bodies[index], False

    def _raw_request(self, index: int) -> tuple[bytes, bool]:
        if self.endpoint == "healthz":
            return self._healthz, False
        body, with_event = self._body(index)
        self.events_sent += with_event
        cred = self.devices[index][0]
        head = (f"POST /v1/agent/checkin HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"User-Agent: ringfence-bench\r\nAuthorization: Bearer {cred}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        return head + body, with_event

    def _slot_devices(self, slot: int) -> Iterator[int]:
        """Device indexes for connection ``slot``: a disjoint stride, so (with at least as many
        devices as connections) a device never has two check-ins in flight, as a real agent."""
        n = len(self.devices)
        own = list(range(slot, n, self.concurrency)) or [slot % max(n, 1)]
        while True:
            yield from own

    def _record(self, started: float, done: float, status: int, with_event: bool) -> None:
        self.statuses[status] += 1
        if status == 200 and self.measure_from <= done < self.measure_until:
            (self.event_latencies_us if with_event else self.latencies_us).append(int((done - started) * 1e6))

    def _take(self) -> bool:
        if self.sent >= self.max_requests or time.monotonic() >= self.stop_at:
            return False
        self.sent += 1
        return True

    async def raw_connection(self, slot: int) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        devices = self._slot_devices(slot)
        try:
            while self._take():
                request, with_event = self._raw_request(next(devices))
                started = time.monotonic()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                close = False
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    lname = name.strip().lower()
                    if lname == b"content-length":
                        length = int(value)
                    elif lname == b"connection" and value.strip().lower() == b"close":
                        close = True
                    elif lname == b"transfer-encoding":
                        raise RuntimeError("chunked responses are not supported by the raw client")
                if length:
                    await reader.readexactly(length)
                self._record(started, time.monotonic(), status, with_event)
                if close:
                    writer.close()
                    reader, writer = await asyncio.open_connection(self.host, self.port)
        finally:
            writer.close()

    async def httpx_connection(self, client: Any, slot: int) -> None:
        devices = self._slot_devices(slot)
        while self._take():
            index = next(devices)
            started = time.monotonic()
            with_event = False
            if self.endpoint == "healthz":
                r = await client.get("/healthz")
            else:
                body, with_event = self._body(index)
                self.events_sent += with_event
                r = await client.post("/v1/agent/checkin", content=body, headers={
                    "Authorization": f"Bearer {self.devices[index][0]}", "Content-Type": "application/json"})
            self._record(started, time.monotonic(), r.status_code, with_event)

    async def run(self, start_at: float) -> None:
        warmup = float(self.spec["warmup_s"])
        duration = float(self.spec["duration_s"])
        self.measure_from = start_at + warmup
        self.measure_until = self.measure_from + duration
        self.stop_at = self.measure_until
        hard_deadline = self.measure_until + float(self.spec["grace_s"])
        delay = start_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        meter = asyncio.ensure_future(self._meter())
        if self.spec["client"] == "httpx":
            import httpx

            limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
            async with httpx.AsyncClient(base_url=f"http://{self.host}:{self.port}", limits=limits,
                                         timeout=30, headers={"User-Agent": "ringfence-bench"}) as client:
                await self._gather([self.httpx_connection(client, i) for i in range(self.concurrency)],
                                   hard_deadline)
        else:
            await self._gather([self.raw_connection(i) for i in range(self.concurrency)], hard_deadline)
        meter.cancel()

    async def _meter(self) -> None:
        """CPU seconds this process spends inside the measured window."""
        await asyncio.sleep(max(0.0, self.measure_from - time.monotonic()))
        u0 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.sleep(max(0.0, self.measure_until - time.monotonic()))
        u1 = resource.getrusage(resource.RUSAGE_SELF)
        self.window_cpu_s = (u1.ru_utime - u0.ru_utime) + (u1.ru_stime - u0.ru_stime)

    async def _gather(self, coros: list[Any], hard_deadline: float) -> None:
        tasks = [asyncio.ensure_future(c) for c in coros]
        done, pending = await asyncio.wait(tasks, timeout=max(0.1, hard_deadline - time.monotonic()))
        for t in pending:
            t.cancel()
            self.errors["cancelled at the hard deadline"] += 1
        for t in done:
            exc = t.exception()
            if exc is not None:
                self.errors[f"{type(exc).__name__}: {exc}"[:200]] += 1


def worker_main() -> None:
    """``checkin.py --worker``: read a spec line, say ready, wait for go, run, write the result file."""
    spec = json.loads(sys.stdin.readline())
    loop_name = "asyncio"
    if spec["client"] == "raw":
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            loop_name = "uvloop"
        except ImportError:
            pass
    load = _Load(spec)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    go = json.loads(sys.stdin.readline())
    asyncio.run(load.run(float(go["start_at"])))
    result = {
        "latencies_us": load.latencies_us, "event_latencies_us": load.event_latencies_us, "sent": load.sent,
        "statuses": {str(k): v for k, v in load.statuses.items()}, "errors": dict(load.errors),
        "events_sent": load.events_sent, "cpu_s": load.window_cpu_s, "loop": loop_name,
        "wall_s": time.monotonic() - float(go["start_at"]),
    }
    out = Path(spec["result_path"])
    tmp = out.with_suffix(".part")
    tmp.write_text(json.dumps(result))
    tmp.replace(out)
    sys.stdout.write("done\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# One measurement: spawn workers, run them together, collect
# ---------------------------------------------------------------------------------------------
def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return float(sorted_values[rank])


def measure(server: Server, fleet: Fleet, endpoint: str, args: argparse.Namespace, round_no: int,
            profile_out: Path | None = None) -> dict[str, Any]:
    db_pids = postgres_backend_pids(args.pg_admin_url, server.pg_database) if server.pg_database else []

    def db_cpu() -> float:
        return sum(process_cpu_s(pid) for pid in db_pids)
    procs = max(1, args.procs)
    per_proc = [args.concurrency // procs + (1 if i < args.concurrency % procs else 0) for i in range(procs)]
    devices = list(zip(fleet.credentials, fleet.versions, strict=True))
    workers: list[subprocess.Popen[str]] = []
    watchdog_s = args.warmup + args.duration + args.grace + 60
    timer: threading.Timer | None = None
    spy: subprocess.Popen[bytes] | None = None
    scratch = tempfile.TemporaryDirectory(prefix="rf-bench-load-")
    try:
        for i, conc in enumerate(per_proc):
            if conc == 0:
                continue
            spec = {
                "host": "127.0.0.1", "port": server.port, "endpoint": endpoint, "client": args.client,
                "devices": devices[i::procs], "concurrency": conc, "event_fraction": args.event_fraction,
                "max_requests": max(1, args.max_requests // procs), "warmup_s": args.warmup,
                "duration_s": args.duration, "grace_s": args.grace, "seed": args.seed * 1000 + round_no * 10 + i,
                "result_path": str(Path(scratch.name) / f"worker-{i}.json"),
            }
            p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            workers.append(p)
            assert p.stdin is not None
            p.stdin.write(json.dumps(spec) + "\n")
            p.stdin.flush()

        def _kill_all() -> None:
            for w in workers:
                if w.poll() is None:
                    w.kill()

        timer = threading.Timer(watchdog_s, _kill_all)
        timer.daemon = True
        timer.start()
        for w in workers:
            assert w.stdout is not None
            if w.stdout.readline().strip() != "ready":
                raise WorkerFailed("a load worker did not start")
        start_at = time.monotonic() + 0.3
        for w in workers:
            assert w.stdin is not None
            w.stdin.write(json.dumps({"start_at": start_at}) + "\n")
            w.stdin.flush()
        if profile_out is not None:
            spy = _start_py_spy(server.pid, profile_out, args.warmup + args.duration)
        # CPU accounting over the measured window only (after the warm-up).
        time.sleep(max(0.0, start_at + args.warmup - time.monotonic()))
        server_cpu0, db_cpu0, (busy0, total0) = process_cpu_s(server.pid), db_cpu(), machine_cpu()
        time.sleep(max(0.0, start_at + args.warmup + args.duration - time.monotonic()))
        server_cpu1, db_cpu1, (busy1, total1) = process_cpu_s(server.pid), db_cpu(), machine_cpu()
        results = []
        for i, w in enumerate(workers):
            assert w.stdout is not None
            line = w.stdout.readline().strip()
            w.wait(30)
            path = Path(scratch.name) / f"worker-{i}.json"
            if line != "done" or w.returncode != 0 or not path.exists():
                raise WorkerFailed(f"load worker {i} exited with {w.returncode} without a result")
            results.append(json.loads(path.read_text()))
        if spy is not None:
            spy.wait(args.warmup + args.duration + 60)
    finally:
        if timer is not None:
            timer.cancel()
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait(10)
        if spy is not None and spy.poll() is None:
            spy.terminate()
            spy.wait(10)
        scratch.cleanup()

    steady = sorted(x for r in results for x in r["latencies_us"])
    with_event = sorted(x for r in results for x in r["event_latencies_us"])
    latencies = sorted(steady + with_event)
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for r in results:
        statuses.update(r["statuses"])
        errors.update(r["errors"])
    ncpu = os.cpu_count() or 1
    non_200 = sum(v for k, v in statuses.items() if k != "200")
    if not server.alive():
        raise RuntimeError(f"the server died during the {endpoint} measurement:\n{server.log_tail()}")
    busy = (busy1 - busy0) / (total1 - total0) if total1 > total0 else float("nan")
    server_cores = (server_cpu1 - server_cpu0) / args.duration
    client_cores = sum(r["cpu_s"] for r in results) / args.duration
    db_cores = (db_cpu1 - db_cpu0) / args.duration
    return {
        "endpoint": endpoint, "round": round_no,
        "rps": len(latencies) / args.duration,
        "p50_ms": percentile(latencies, 0.50) / 1000, "p99_ms": percentile(latencies, 0.99) / 1000,
        "steady_p50_ms": percentile(steady, 0.50) / 1000, "steady_p99_ms": percentile(steady, 0.99) / 1000,
        "event_p50_ms": percentile(with_event, 0.50) / 1000, "event_p99_ms": percentile(with_event, 0.99) / 1000,
        "requests": len(latencies), "event_requests": len(with_event), "non_200": non_200,
        "statuses": dict(statuses), "client_errors": dict(errors),
        "server_cpu_cores": server_cores, "client_cpu_cores": client_cores, "db_cpu_cores": db_cores,
        "machine_busy": busy,
        "server_cpu_us_per_request": server_cores * 1e6 * args.duration / max(len(latencies), 1),
        # CPU used by anything else on the machine during the window: noise from other work.
        "other_cpu_cores": busy * ncpu - server_cores - client_cores - db_cores,
        "machine_cores": ncpu, "loop": results[0]["loop"] if results else "",
    }


class WorkerFailed(RuntimeError):
    """A load worker ended without a result (the server may be fine)."""


def measure_with_retry(server: Server, fleet: Fleet, endpoint: str, args: argparse.Namespace,
                       round_no: int) -> dict[str, Any]:
    """One measurement; a load worker that dies (e.g. killed from outside on a shared machine)
    gets one more try, and the retry is recorded in the result."""
    try:
        return measure(server, fleet, endpoint, args, round_no)
    except WorkerFailed as exc:
        if not server.alive():
            raise
        log(f"WARNING: {exc}; repeating this measurement once")
        result = measure(server, fleet, endpoint, args, round_no)
        result["retried_after"] = str(exc)
        return result


# ---------------------------------------------------------------------------------------------
# Optional profile of the server (py-spy)
# ---------------------------------------------------------------------------------------------
def _py_spy() -> str | None:
    candidate = Path(sys.executable).with_name("py-spy")
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


def _start_py_spy(pid: int, out: Path, seconds: float) -> subprocess.Popen[bytes]:
    """Sample the server with ``--gil``: only the thread holding the GIL is recorded, so the
    samples show what the one core the server can use is spent on."""
    exe = _py_spy()
    assert exe is not None
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "200", "--duration", str(int(seconds) + 1),
                             "--format", "raw", "--threads", "--gil", "--nonblocking", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# Where a sample's time goes: the deepest frame matching one of these decides (checked leaf first).
_PROFILE_BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ringfence: assignment (snapshot.decide, cohorts)", ("decide (ringfence/", "ringfence/core/cohorts",
                                                          "ringfence/core/assignment", "ringfence/core/models",
                                                          "ringfence/core/plan")),
    ("ringfence: authenticate (sha256 of the credential)", ("authenticate (", "hash_secret (")),
    ("ringfence: write batcher, loop side", ("ringfence/server/ingest.py",)),
    ("ringfence: rest of the check-in handler", ("ringfence/server/agent_api.py", "ringfence/server/snapshot.py",
                                                 "ringfence/server/auth.py", "ringfence/core/clock.py")),
    ("DB writes and reconciler (worker threads)", ("sqlalchemy/", "psycopg/", "sqlite3", "ringfence/store/",
                                                   "ringfence/server/control.py")),
    ("fastapi: read body, JSON decode, pydantic validation", ("request_body_to_args", "Request.json",
                                                             "Request.body", "Request.stream",
                                                             "_should_embed_body_fields", "solve_dependencies",
                                                             "_validate_value_with_model_field", "validate_python",
                                                             "ModelField.validate", "json/decoder", "loads (json")),
    ("fastapi: serialize and render the response", ("serialize_response", "Response.render", "Response.__init__",
                                                    "dump_json", "serialize_json", "jsonable_encoder",
                                                    "init_headers", "json/encoder")),
    ("uvicorn: socket write of the response", ("RequestResponseCycle.send (",)),
    ("starlette/fastapi: route matching", ("_match (", "matches (", "_handle_selected", "Router.__call__",
                                           "get_route_path", "Route.handle")),
    ("fastapi: endpoint dispatch", ("fastapi/routing.py",)),
    ("middleware stack (starlette, fastapi, uvicorn proxy headers)", ("Middleware", "wrap_app_handling_exceptions",
                                                                      "FastAPI.__call__", "Starlette.__call__",
                                                                      "starlette/_exception_handler",
                                                                      "fastapi/telemetry", "contextlib.py")),
    ("uvicorn: HTTP parsing and protocol", ("uvicorn/",)),
    ("starlette: request/header data structures", ("starlette/",)),
    ("thread pool hand-off", ("concurrent/futures", "to_thread", "threading.py")),
    ("asyncio/uvloop internals", ("asyncio/",)),
)


def _bucket(frames: list[str]) -> str:
    if not frames:
        return "no Python frame (uvloop/httptools C code, GC)"
    for frame in reversed(frames):
        short = _short(frame)
        for name, markers in _PROFILE_BUCKETS:
            if any(m in short for m in markers):
                return name
    return "other"


def summarise_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """From py-spy's collapsed stacks (``--gil --threads``): how GIL time splits between the
    event loop and worker threads, where it goes by area, and the top self-time functions of
    the event loop, each as % of all samples."""
    rows: list[tuple[bool, list[str], int]] = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        rows.append(("MainThread" in frames[0], frames[1:], int(count)))
    total = sum(n for _, _, n in rows)
    if not total:
        return {"samples": 0}
    buckets: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    loop = 0
    for is_loop, frames, n in rows:
        buckets[_bucket(frames)] += n
        if is_loop:
            loop += n
            if frames:
                self_time[_short(frames[-1])] += n

    def pct(n: int) -> float:
        return round(100 * n / total, 1)

    return {
        "samples": total, "event_loop_pct": pct(loop), "worker_threads_pct": pct(total - loop),
        "areas": [(k, pct(n)) for k, n in buckets.most_common()],
        "self": [(k, pct(n)) for k, n in self_time.most_common(top)],
    }


def _short(frame: str) -> str:
    """``func (path/to/site-packages/pkg/mod.py:123)`` -> ``func (pkg/mod.py)``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{name} ({file})"


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    keys = ("rps", "p50_ms", "p99_ms", "steady_p50_ms", "steady_p99_ms", "event_p50_ms", "event_p99_ms",
            "server_cpu_cores", "server_cpu_us_per_request", "client_cpu_cores", "db_cpu_cores", "other_cpu_cores",
            "machine_busy")
    return {
        **{k: med(k) for k in keys}, "non_200": sum(r["non_200"] for r in rounds),
        "client_errors": sum(sum(r["client_errors"].values()) for r in rounds),
        "rounds": rounds,
    }


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"rf-bench-{backend}-"))
    server: Server | None = None
    try:
        with contextlib.ExitStack() as stack:
            db_url = stack.enter_context(scratch_postgres(args.pg_admin_url)) if backend == "postgresql" else None
            server = Server(tmp / "data", db_url)
            server.data_dir.mkdir()
            stack.callback(server.stop)
            server.init()
            server.start()
            log(f"{backend}: server pid {server.pid} on {server.url}")
            fleet = setup_fleet(server, args.devices, args.setup_concurrency, args.seed)
            rounds: dict[str, list[dict[str, Any]]] = {"healthz": [], "checkin": []}
            for round_no in range(args.rounds):
                for endpoint in ("healthz", "checkin"):
                    r = measure_with_retry(server, fleet, endpoint, args, round_no)
                    rounds[endpoint].append(r)
                    log(f"{backend} round {round_no + 1}/{args.rounds} {endpoint:8s} {r['rps']:8.0f} req/s  "
                        f"p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:7.2f} ms  server {r['server_cpu_cores']:.2f} "
                        f"cores  load {r['client_cpu_cores']:.2f} cores  machine {r['machine_busy']:.0%}  "
                        f"non-200 {r['non_200']}")
            profile: dict[str, Any] | None = None
            if args.py_spy is not None:
                out = Path(f"{args.py_spy}.{backend}.txt").resolve()
                log(f"{backend}: profiling one more check-in measurement with py-spy -> {out}")
                prof_round = measure(server, fleet, "checkin", args, args.rounds, profile_out=out)
                if out.exists():
                    profile = summarise_profile(out)
                    profile["measurement"] = {k: prof_round[k] for k in ("rps", "p50_ms", "p99_ms")}
                    profile["raw_file"] = str(out)
            health, check = summarise(rounds["healthz"]), summarise(rounds["checkin"])
            ratio = check["rps"] / health["rps"] if health["rps"] else float("nan")
            result = {
                "healthz": health, "checkin": check, "ratio": ratio,
                "goal": {"checkin_rps": GOAL_RPS, "ratio": GOAL_RATIO,
                         "met": check["rps"] >= GOAL_RPS and ratio >= GOAL_RATIO},
                "devices": args.devices,
                "admitted": sum(v == ROLLING_VERSION for v in fleet.versions),
            }
            if profile is not None:
                result["profile"] = profile
            return result
    except BaseException:
        if server is not None:
            log(f"{backend}: server log tail:\n{server.log_tail()}")
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fmt(value: float | None, spec: str) -> str:
    if value is None or math.isnan(value):
        return "-".rjust(int(spec.split(".", maxsplit=1)[0]))
    return format(value, spec)


def print_table(report: dict[str, Any]) -> None:
    cfg = report["config"]
    print(f"ringfence check-in benchmark  {report['date']}")
    m = report["machine"]
    print(f"machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Python {m['python']}")
    print(f"load: {cfg['client']} client, {cfg['procs']} process(es), concurrency {cfg['concurrency']}, "
          f"{cfg['duration']}s per measurement after {cfg['warmup']}s warm-up, {cfg['rounds']} rounds each, "
          f"{cfg['devices']} devices, event fraction {cfg['event_fraction']}")
    print()
    header = (f"{'backend':<10} {'endpoint':<8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'steady p99':>10} "
              f"{'event p50':>9} {'event p99':>9} | {'server':>6} {'us/req':>6} {'load':>5} {'db':>5} {'other':>5} "
              f"{'non-200':>7}")
    print(header)
    print("-" * len(header))
    for backend, res in report["results"].items():
        for endpoint in ("healthz", "checkin"):
            r = res[endpoint]
            print(f"{backend:<10} {endpoint:<8} {r['rps']:>7.0f} {_fmt(r['p50_ms'], '7.2f')} "
                  f"{_fmt(r['p99_ms'], '7.2f')} {_fmt(r['steady_p99_ms'], '10.2f')} "
                  f"{_fmt(r['event_p50_ms'], '9.2f')} {_fmt(r['event_p99_ms'], '9.2f')} | "
                  f"{_fmt(r['server_cpu_cores'], '6.2f')} {_fmt(r['server_cpu_us_per_request'], '6.0f')} "
                  f"{_fmt(r['client_cpu_cores'], '5.2f')} "
                  f"{_fmt(r['db_cpu_cores'], '5.2f')} {_fmt(r['other_cpu_cores'], '5.2f')} {r['non_200']:>7}")
        goal = "MET" if res["goal"]["met"] else "NOT met"
        print(f"{'':<10} ratio checkin/healthz {res['ratio']:.3f}; goal (>= {GOAL_RPS:.0f} check-ins/s and >= "
              f"{GOAL_RATIO}x healthz): {goal}")
    print("medians over rounds. steady = check-ins without events; event = check-ins carrying one event "
          "(acknowledged after a durable write).")
    print("CPU in cores during the measured window: server process (and its CPU microseconds per request), load "
          "processes, the PostgreSQL backends of the server's pool (PostgreSQL runs only), everything else on the "
          "machine (noise from other work, PostgreSQL's own background processes).")
    for backend, res in report["results"].items():
        prof = res.get("profile")
        if not prof or not prof.get("samples"):
            continue
        print(f"\nprofile of {backend} check-ins under py-spy --gil ({prof['samples']} samples at "
              f"{prof['measurement']['rps']:.0f} req/s; raw stacks: {prof['raw_file']}): event loop "
              f"{prof['event_loop_pct']}% of GIL time, worker threads {prof['worker_threads_pct']}%")
        print("  by area:")
        for name, share in prof["areas"]:
            print(f"    {share:5.1f}%  {name}")
        print("  top self time on the event loop:")
        for name, share in prof["self"]:
            print(f"    {share:5.1f}%  {name}")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Measure check-ins/s of a real `ringfence server` against its /healthz, on SQLite and/or "
                    "PostgreSQL, with a separate load process on 127.0.0.1.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    p.add_argument("--devices", type=int, default=5000, help="devices to enroll")
    p.add_argument("--concurrency", type=int, default=64, help="keep-alive connections in total")
    p.add_argument("--procs", type=int, default=1, help="load worker processes (concurrency is split)")
    p.add_argument("--client", choices=("raw", "httpx"), default="raw",
                   help="raw: minimal asyncio HTTP/1.1 keep-alive client on uvloop; httpx: httpx.AsyncClient")
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds per measurement")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each measurement")
    p.add_argument("--rounds", type=int, default=3, help="rounds of (healthz, checkin)")
    p.add_argument("--max-requests", type=int, default=2_000_000, help="request bound per measurement")
    p.add_argument("--grace", type=float, default=10.0, help="seconds after the end before loops are cancelled")
    p.add_argument("--event-fraction", type=float, default=0.02,
                   help="share of check-ins carrying one intent/healthy event")
    p.add_argument("--setup-concurrency", type=int, default=16, help="concurrency of enrolment and warm-up")
    p.add_argument("--pg-admin-url", default=os.environ.get("RINGFENCE_BENCH_PG", DEFAULT_PG_ADMIN),
                   help="PostgreSQL URL used to create and drop the scratch database (env RINGFENCE_BENCH_PG)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--py-spy", metavar="PREFIX", default=None,
                   help="also profile one check-in measurement per backend with py-spy; raw stacks go to "
                        "PREFIX.<backend>.txt")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--table-from", metavar="FILE", default=None,
                   help="print the table of a report saved with --json, and run nothing")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.worker:
        if args.devices < 1 or args.concurrency < 1 or args.rounds < 1 or args.duration <= 0:
            p.error("--devices, --concurrency, --rounds and --duration must be positive")
        if not 0 <= args.event_fraction <= 1:
            p.error("--event-fraction must be between 0 and 1")
        if args.py_spy is not None and _py_spy() is None:
            p.error("--py-spy needs the py-spy program (pip install py-spy)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker_main()
        return 0
    if args.table_from is not None:
        print_table(json.loads(Path(args.table_from).read_text()))
        return 0

    def _terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    report: dict[str, Any] = {
        "benchmark": "ringfence check-in vs healthz",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "config": {k: v for k, v in vars(args).items() if k not in ("worker", "json", "table_from")},
        "results": {},
    }
    try:
        for backend in backends:
            report["results"][backend] = run_backend(backend, args)
    except KeyboardInterrupt:
        log("interrupted; cleaned up")
        return 130
    if args.json:
        sys.stdout.write(json.dumps(_json_safe(report), indent=2) + "\n")
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
