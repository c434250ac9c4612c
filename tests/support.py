"""Test helpers: a real ``ringfence`` server process and devices that speak the agent API.

``ServerProcess`` runs the console script exactly as an operator would (``ringfence init``,
then ``ringfence server``) in a temporary data dir, on SQLite or on a PostgreSQL URL.
``Device`` is a minimal agent-API client: enroll, check in, report events.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx

from tests.conftest import free_port

RINGFENCE = [sys.executable, "-m", "ringfence"]
UNVALIDATED = "rollout mechanics only, no validation"  # content types the tests register without a definition
# Servers of tests about rollout mechanics start releases without approvals; the change-management
# tests run with the defaults (``approvals=""``).
NO_APPROVALS = "rapid-response=0,system-critical=0,software=0,configuration=0"


def run_cli(*args: str, env: dict[str, str] | None = None, check: bool = False,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``ringfence ARGS`` as a child process and capture its output."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([*RINGFENCE, *args], capture_output=True, text=True, env=full_env, timeout=timeout,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"ringfence {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


class ServerProcess:
    """``ringfence init`` + ``ringfence server`` in ``data_dir``; ``url`` and ``token`` once started."""

    def __init__(self, data_dir: Path, database_url: str | None = None, poll_interval: float = 1.0,
                 approvals: str = NO_APPROVALS) -> None:
        self.data_dir = data_dir
        self.approvals = approvals
        self.env: dict[str, str] = {}
        if database_url is not None:
            self.env["RINGFENCE_DATABASE_URL"] = database_url
        self.poll_interval = poll_interval
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"

    def init(self) -> str:
        out = run_cli("init", "--data-dir", str(self.data_dir), "--json", env=self.env, check=True)
        self.token = json.loads(out.stdout)["admin_token"]
        return self.token

    def start(self, timeout: float = 30) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*RINGFENCE, "server", "--data-dir", str(self.data_dir), "--port", str(self.port),
             "--poll-interval", str(self.poll_interval), "--approvals", self.approvals],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server did not answer within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flush."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    def cli_env(self) -> dict[str, str]:
        return {**self.env, "RINGFENCE_SERVER": self.url, "RINGFENCE_TOKEN": self.token}


def until(check: Any, what: str, timeout: float = 60) -> Any:
    """Poll ``check`` until it returns something true (and return that): waiting for an event the
    server shows (a phase, a tick counter), never for a guessed duration; ``timeout`` only bounds
    a server that stopped."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)
    return value


def utcnow() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class Device:
    """A device speaking the agent API over HTTP (what the agent does, minus applying content)."""

    base_url: str
    platform: str = "windows"
    region: str = "eu-west"
    os_version: str = "11"
    tags: list[str] = field(default_factory=list)
    credential: str = ""
    device_id: str = ""
    versions: dict[str, str] = field(default_factory=dict)

    def enroll(self, enroll_token: str) -> Device:
        r = httpx.post(f"{self.base_url}/v1/agent/enroll", headers={"Authorization": f"Bearer {enroll_token}"},
                       json={"platform": self.platform, "region": self.region, "os_version": self.os_version,
                             "tags": self.tags}, timeout=30)
        r.raise_for_status()
        self.credential = r.json()["credential"]
        self.device_id = r.json()["device_id"]
        return self

    def checkin(self, events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        r = httpx.post(f"{self.base_url}/v1/agent/checkin", headers={"Authorization": f"Bearer {self.credential}"},
                       json={"versions": self.versions, "events": events or []}, timeout=30)
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    @staticmethod
    def event(kind: str, content_type: str, version: str) -> dict[str, Any]:
        return {"id": uuid.uuid4().hex, "kind": kind, "content_type": content_type, "version": version,
                "at": utcnow()}

    def update(self, content_type: str, *, healthy: bool = True) -> str | None:
        """Check in; if told to run a new version, announce intent, 'activate' it, and report
        healthy (or a crash). Returns the version now running."""
        desired = self.checkin().get("desired", {}).get(content_type)
        if desired is None or desired["version"] == self.versions.get(content_type):
            return self.versions.get(content_type)
        version = desired["version"]
        self.checkin([self.event("intent", content_type, version)])
        if healthy:
            self.versions[content_type] = version
            self.checkin([self.event("healthy", content_type, version)])
        else:
            self.checkin([self.event("crash", content_type, version)])
        return self.versions.get(content_type)


SENSOR_DIR = Path(__file__).resolve().parent.parent / "examples" / "sensor"


class AgentProcess:
    """``ringfence agent run`` as a real OS process over one state directory. Each ``start`` is
    one boot of the machine; ``kill_at`` makes that boot die by SIGKILL at the named lifecycle
    step (the agent's test-only fault hook)."""

    def __init__(self, state_dir: Path, server_url: str, enroll_token: str = "", config: Path | None = None,
                 attributes: dict[str, Any] | None = None) -> None:
        self.state_dir = state_dir
        self.server_url = server_url
        self.enroll_token = enroll_token
        self.config = config
        self.attributes = attributes
        self.proc: subprocess.Popen[bytes] | None = None
        state_dir.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = state_dir.parent / f"{state_dir.name}.log"

    def argv(self, once: bool = False) -> list[str]:
        argv = [*RINGFENCE, "agent", "run", "--server", self.server_url, "--state-dir", str(self.state_dir)]
        if self.enroll_token:
            argv += ["--enroll-token", self.enroll_token]
        if self.config is not None:
            argv += ["--config", str(self.config)]
        if self.attributes is not None:
            path = self.state_dir.parent / f"{self.state_dir.name}.attributes.json"
            path.write_text(json.dumps(self.attributes))
            argv += ["--attributes", str(path)]
        if once:
            argv += ["--once", "--json"]
        return argv

    started: ClassVar[list[AgentProcess]] = []  # every agent a test started, for the clean-up fixture

    def start(self, kill_at: str | None = None, env: dict[str, str] | None = None) -> AgentProcess:
        full_env = {**os.environ, **(env or {})}
        full_env.pop("RINGFENCE_AGENT_KILL_AT", None)
        if kill_at:
            full_env["RINGFENCE_AGENT_KILL_AT"] = kill_at
        with self.log_path.open("ab") as log:
            log.write(f"--- boot (kill_at={kill_at}) ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT, env=full_env)
        AgentProcess.started.append(self)
        return self

    def cleanup(self) -> None:
        """Kill the agent and the workload it supervises, whatever state the test left them in."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        pidfile = self.state_dir / "run" / "workload.pid"
        with contextlib.suppress(OSError, ValueError, KeyError):
            os.killpg(int(json.loads(pidfile.read_text())["pid"]), signal.SIGKILL)

    def wait_exit(self, timeout: float = 60) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the agent did not exit within {timeout}s:\n{self.log()}") from None

    def stop(self) -> int | None:
        """SIGTERM: a clean shutdown."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def journal(self) -> dict[str, Any]:
        """The journal's summary, read from disk (the journal is replaced atomically, so this
        is safe while the agent runs)."""
        from ringfence.agent.journal import Journal, summary

        state = Journal.open(self.state_dir).state
        return {**summary(state), "outbox_kinds": [e["kind"] for e in state.outbox]}

    def current(self, content_type: str) -> str | None:
        """The version switched in on disk (the ``current`` link), or None."""
        link = self.state_dir / "content" / content_type.replace("/", "+") / "current"
        try:
            return Path(os.readlink(link)).name
        except OSError:
            return None

    def wait_for(self, predicate: Any, timeout: float = 60, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = predicate()
            except (OSError, ValueError, KeyError):
                value = None
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log()[-4000:]}")


class Publisher:
    """An operator over the admin API (httpx, no CLI process per call): content types, tokens,
    artifacts, releases and rollout actions."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.http = server.client()

    def _ok(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise AssertionError(f"{response.request.method} {response.request.url} -> {response.status_code}: "
                                 f"{response.text}")
        return response.json()

    def content_type(self, name: str, category: str = "rapid-response") -> None:
        self._ok(self.http.post("/v1/content-types", json={"name": name, "category": category,
                                                                 "unvalidated_reason": UNVALIDATED}))

    def enroll_token(self, tenant: str = "default") -> str:
        token: str = self._ok(self.http.post("/v1/enroll-tokens", json={"tenant": tenant}))["token"]
        return token

    def push(self, content_type: str, version: str, data: bytes) -> dict[str, Any]:
        import hashlib

        params = {"content_type": content_type, "version": version, "sha256": hashlib.sha256(data).hexdigest()}
        result: dict[str, Any] = self._ok(self.http.post(
            "/v1/artifacts", params=params, content=data, headers={"Content-Type": "application/octet-stream"}))
        return result

    def release(self, content_type: str, version: str, data: bytes, plan: str, start: bool = True) -> str:
        self.push(content_type, version, data)
        release_id: str = self._ok(self.http.post("/v1/releases", json={
            "content_type": content_type, "version": version, "plan": plan}))["release"]
        if start:
            self.action(release_id, "start")
        return release_id

    def action(self, release_id: str, action: str, reason: str = "") -> dict[str, Any]:
        result: dict[str, Any] = self._ok(self.http.post(f"/v1/rollouts/{release_id}/{action}",
                                                         json={"reason": reason}))
        return result

    def status(self, release_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._ok(self.http.get(f"/v1/rollouts/{release_id}"))
        return result

    def wait_status(self, release_id: str, check: Any, timeout: float = 30, what: str = "rollout state"
                    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            last = self.status(release_id)
            if check(last):
                return last
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; last status: {json.dumps(last, indent=1)[:3000]}")

    def device(self, device_id: str) -> dict[str, Any]:
        found = self._ok(self.http.get("/v1/devices", params={"limit": 1000}))["devices"]
        return next(d for d in found if d["id"] == device_id)


class LimitedAgentProcess(AgentProcess):
    """An :class:`AgentProcess` whose every boot runs under a file-size limit (``RLIMIT_FSIZE``):
    a disk that takes small writes and refuses a large one (``EFBIG``; Python ignores
    ``SIGXFSZ``, so the write fails instead of killing the process).

    The limit is set by a small Python wrapper that then execs the agent, not by ``preexec_fn``
    (which can deadlock in a parent with threads, as an xdist worker has)."""

    _WRAPPER = ("import os, resource, sys\n"
                "limit = int(sys.argv[1])\n"
                "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n"
                "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])\n")

    def __init__(self, *args: Any, max_file_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_file_bytes = max_file_bytes

    def argv(self, once: bool = False) -> list[str]:
        argv = super().argv(once)
        assert argv[0] == sys.executable
        return [sys.executable, "-c", self._WRAPPER, str(self.max_file_bytes), *argv[1:]]


def server_events(server: ServerProcess, device_id: str | None = None) -> list[dict[str, Any]]:
    """The events the server stored (SQLite data dir), oldest first: what reached it."""
    import sqlite3

    conn = sqlite3.connect(server.data_dir / "ringfence.db", timeout=10)
    try:
        rows = conn.execute("SELECT device_id, event_id, release_id, content_type, version, kind, details "
                            "FROM events ORDER BY id").fetchall()
    finally:
        conn.close()
    return [{"device_id": d, "event_id": e, "release_id": r, "content_type": ct, "version": v, "kind": k,
             "details": json.loads(details) if isinstance(details, str) else details}
            for d, e, r, ct, v, k, details in rows if device_id is None or d == device_id]


class Partition:
    """A TCP relay between an agent and its server: the network, which a test can cut.

    It passes every byte until :meth:`cut_on` arms it with a pattern. The first request whose
    bytes match is not delivered: the relay goes down at that moment, as if the server vanished
    right then, and drops every connection (open or new) until :meth:`heal`.
    """

    def __init__(self, upstream_port: int) -> None:
        import socket
        import threading

        self.upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.tripped = threading.Event()
        self._lock = threading.Lock()
        self._pattern: Any = None
        self._down = False
        self._closed = False
        self._open: set[Any] = set()
        threading.Thread(target=self._accept, daemon=True, name="partition").start()

    def cut_on(self, pattern: bytes) -> None:
        """Go down the moment a request matching the regex ``pattern`` is sent."""
        import re

        with self._lock:
            self._pattern = re.compile(pattern)
            self.tripped.clear()

    def heal(self) -> None:
        with self._lock:
            self._pattern = None
            self._down = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop_all()
        self._listener.close()

    @staticmethod
    def _drop(sock: Any) -> None:
        import contextlib
        import socket

        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def _drop_all(self) -> None:
        for sock in list(self._open):
            self._drop(sock)
        self._open.clear()

    def _accept(self) -> None:
        import socket
        import threading

        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                down = self._down or self._closed
            if down:
                self._drop(client)
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                self._drop(client)
                continue
            server.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._open.update((client, server))
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: Any, sink: Any, upstream: bool) -> None:
        tail = b""
        try:
            while chunk := source.recv(1 << 16):
                if upstream:
                    with self._lock:
                        pattern = self._pattern
                        if self._down or (pattern is not None and pattern.search(tail + chunk)):
                            if not self._down:
                                self._down = True
                                self.tripped.set()
                            self._drop_all()
                            return
                    tail = (tail + chunk)[-4096:]
                sink.sendall(chunk)
        except OSError:
            pass
        with self._lock:
            self._open.discard(source)
            self._open.discard(sink)
        self._drop(source)
        self._drop(sink)


# -- shared by the agent end-to-end tests ------------------------------------------------------
FIRST_PLAN = """
name: first
waves:
  - name: everyone
    share: 1.0
    soak: 1s
"""
# Stays rolling, so a device is admitted to it (and counted) whenever it checks in.
ROLLING_PLAN = """
name: rolling
waves:
  - name: everyone
    share: 1.0
    soak: 1h
    gates: {failure_budget: 100}
"""
# The probe passes when the active content starts with "ok".
PROBED_AGENT_CONFIG = """
heartbeat: 1s
content_types:
  default:
    trial: 1s
    probe:
      command: ["sh", "-c", "grep -q '^ok' \\"$RINGFENCE_CONTENT_DIR/content\\""]
      timeout: 5s
"""


def own_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server for one test (SQLite, agents told to poll every second): every device is offered
    every content type, so agent tests must not share one."""
    proc = ServerProcess(tmp_path / "server", poll_interval=1.0)
    proc.init()
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def silence_halt_heard(reason: str, stratum: str, exposed: int, control: int) -> int:
    """How many control devices a silence halt's reason says were heard from (the judge fails
    once at least half are, so the count depends on when it looked); fails on any other reason."""
    found = re.fullmatch(rf"silence verdict in wave 'canary': {re.escape(stratum)}: no health confirmation or "
                         rf"heartbeat from any of the {exposed} exposed devices while (\d+) of {control} control "
                         r"devices were heard from", reason)
    assert found is not None, reason
    heard = int(found.group(1))
    assert 2 * heard >= control and heard <= control, reason
    return heard


# -- signed delivery (TUF) ---------------------------------------------------------------------
def shipped_root(server: ServerProcess) -> Path:
    """The root ``ringfence init`` made for ``server``: the one agents ship with."""
    return server.data_dir / "keys" / "publish" / "1.root.json"


class TrustedAgentProcess(AgentProcess):
    """An :class:`AgentProcess` started with ``--trusted-root``: every artifact it installs must
    be a TUF target of its server's repository."""

    def __init__(self, *args: Any, trusted_root: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trusted_root = trusted_root

    def argv(self, once: bool = False) -> list[str]:
        return [*super().argv(once), "--trusted-root", str(self.trusted_root)]
