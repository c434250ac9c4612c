"""What one endpoint agent costs, and how fast it follows the server, on loopback.

Measures a real ``python -m ringfence agent run`` process (what users run) against a real
``ringfence server`` (SQLite in a temporary data dir) on 127.0.0.1, with TUF verification on
(the agent's ``trust: root:`` is the root ``ringfence init`` made; ``--no-tuf`` leaves it out):

* **idle RSS and CPU**: ``VmRSS`` from ``/proc/<pid>/status`` and utime+stime from
  ``/proc/<pid>/stat`` over ``--idle-seconds``, while nothing is pending (no update in flight,
  outbox empty, the last release completed). CPU is a percentage of one core, at the server's
  ``--poll-interval`` (which sets how often an idle agent checks in); the CPU milliseconds per
  check-in are reported too, to scale to another interval.
* **bytes per idle check-in**: the agent talks to the server through a small asyncio TCP proxy in
  this process that splits both directions into HTTP/1.1 messages and counts their bytes, headers
  included (what crosses the wire; TCP/IP overhead not included). Request and response bytes of the
  ``POST /v1/agent/checkin`` exchanges completed in the idle window, per check-in.
* **assign to commit**: with the agent idle on the previous version, a release of a new version
  (one wave, share 1.0) is started, and the wall time from the ``start`` call returning to the
  agent's journal showing the version committed (``lkg``) is measured by reading the journal
  every 20 ms; likewise to the journal showing it switched in (``active``). ``--rounds`` rounds,
  one new version each. Each round starts after a random pause of 0 to one poll interval, so the
  wait for the agent's next check-in is sampled fairly rather than always a full interval. The
  proxy's records split each round into: told (the first check-in answer naming the new
  version), downloaded, intent acknowledged, activated, committed.

  Rounds use ``soak: 1s`` with ``gates: {min_devices: 1}``: the release completes once the device
  announced its intent, so the next round can start (a content type has one active release at a
  time); the agent's path is the same as under a long soak.

If the CLI agent's idle RSS is above the 40 MB target (or with ``--embedded always``) the same
state directory is then run by the agent embedded as a library (``python -c`` that imports
``ringfence.agent`` and runs ``Agent(load_config(...)).run()``, without the typer/rich command
line), which takes one update and is measured idle the same way.

Human-readable progress goes to stderr. The last line of stdout is one JSON object (with
``--json``, the only line). Exits non-zero with the agent's and the server's log tails when
something fails. Linux only (``/proc``).

    python benchmarks/agent.py --rounds 5 --idle-seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

CONTENT_TYPE = "bench/agent"
TARGET_RSS_MB = 40.0
TARGET_CHECKIN_BYTES = 1024
JOURNAL_POLL_S = 0.02
ARTIFACT_REPEAT = 128  # the artifact is a ~4 KiB text file

FIRST_PLAN = """\
name: bench-first
waves:
  - name: everyone
    share: 1.0
    soak: 1s
"""
# Completes as soon as the device announced its intent (and 1 s passed), so the next round can
# start a new release of the same content type.
ROUND_PLAN = """\
name: bench-round
waves:
  - name: everyone
    share: 1.0
    soak: 1s
    gates: {min_devices: 1}
"""
AGENT_CONFIG = """\
heartbeat: 1s
content_types:
  default:
    trial: {trial}  # seconds
"""
# The agent as a library: what `ringfence agent run` does, without the typer/rich command line.
EMBEDDED = """\
import logging, signal, sys
from pathlib import Path
from ringfence.agent import Agent, load_config
from ringfence.logs import configure
configure("text")
logging.getLogger("httpx").setLevel(logging.WARNING)
settings = load_config(Path(sys.argv[4]), server=sys.argv[1], state_dir=Path(sys.argv[2]),
                       enroll_token=sys.argv[3] or None)
agent = Agent(settings)
def _stop(signum, frame):
    agent.stopping.set()
signal.signal(signal.SIGTERM, _stop)
signal.signal(signal.SIGINT, _stop)
logging.getLogger("ringfence.bench").info("embedded agent: %d modules loaded", len(sys.modules))
agent.run()
"""
IMPORT_PROBE = """\
import sys
{imports}
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
print(len(sys.modules), rss)
"""


class BenchError(Exception):
    """The benchmark cannot go on; the message says why."""


def log(msg: str) -> None:
    sys.stderr.write(f"[agent-bench {time.strftime('%H:%M:%S')}] {msg}\n")
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
    return {"machine": platform.machine(), "platform": platform.platform(), "nproc": os.cpu_count(),
            "cpu_model": cpu_model or platform.processor(), "memory_gib": round(mem_kib / 1024 / 1024, 1)}


_TICK = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15 of stat)


def process_cpu_exact_s(pid: int) -> float | None:
    """CPU seconds of a process from the scheduler's nanosecond counters (all its threads), or
    None without schedstat. utime+stime advance in clock ticks (10 ms here), too coarse for an
    idle process over a short window."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and its parts, the peak (VmHWM), and PSS (shared pages split between processes), in MB
    (MiB)."""
    out: dict[str, float] = {}
    keys = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "RssShmem": "shmem", "VmHWM": "peak"}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in keys:
            out[keys[key]] = int(line.split()[1]) / 1024
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["pss"] = int(line.split()[1]) / 1024
    return out


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
        raise BenchError("cannot find the `ringfence` console script; activate the project's virtualenv")
    return [found]


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 20) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout``. Returns the exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


# ---------------------------------------------------------------------------------------------
# Server under test, and the admin API
# ---------------------------------------------------------------------------------------------
class Server:
    """``ringfence init`` + ``ringfence server`` on 127.0.0.1 (SQLite in ``data_dir``)."""

    def __init__(self, data_dir: Path, poll_interval: float) -> None:
        self.data_dir = data_dir
        self.poll_interval = poll_interval
        self.env = dict(os.environ)
        self.env.pop("RINGFENCE_DATABASE_URL", None)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / "server.log"

    def start(self, timeout: float = 60) -> None:
        out = subprocess.run([*ringfence_command(), "init", "--data-dir", str(self.data_dir), "--json"],
                             capture_output=True, text=True, env=self.env, timeout=120, check=False)
        if out.returncode != 0:
            raise BenchError(f"ringfence init failed ({out.returncode}): {out.stderr.strip()}")
        self.token = json.loads(out.stdout)["admin_token"]
        with self.log_path.open("ab") as logf:
            self.proc = subprocess.Popen(
                [*ringfence_command(), "server", "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
                 "--port", str(self.port), "--poll-interval", str(self.poll_interval),
                 "--approvals", "rapid-response=0"],  # the benchmark measures agents, not approvals
                stdout=logf, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"the server exited with {self.proc.returncode}:\n{tail(self.log_path)}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise BenchError(f"the server did not answer within {timeout}s:\n{tail(self.log_path)}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        stop_process(self.proc)


class Admin:
    """The operator's side, over the admin API."""

    def __init__(self, server: Server) -> None:
        self.http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"},
                                 timeout=30)

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise BenchError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if r.status_code >= 400:
            raise BenchError(f"{method} {path} -> {r.status_code}: {r.text}")
        return r.json()

    def content_type(self, name: str) -> None:
        self.call("POST", "/v1/content-types", json={"name": name, "category": "rapid-response",
                                                    "unvalidated_reason": "benchmark of the agent only"})

    def enroll_token(self) -> str:
        token: str = self.call("POST", "/v1/enroll-tokens", json={"tenant": "default"})["token"]
        return token

    def release(self, version: str, data: bytes, plan: str) -> str:
        """Push the artifact and create the release (not started); returns its id."""
        self.call("POST", "/v1/artifacts", content=data, headers={"Content-Type": "application/octet-stream"},
                  params={"content_type": CONTENT_TYPE, "version": version,
                          "sha256": hashlib.sha256(data).hexdigest()})
        release: str = self.call("POST", "/v1/releases", json={"content_type": CONTENT_TYPE, "version": version,
                                                               "plan": plan})["release"]
        return release

    def start(self, release: str) -> dict[str, Any]:
        status: dict[str, Any] = self.call("POST", f"/v1/rollouts/{release}/start", json={"reason": "benchmark"})
        return status

    def status(self, release: str) -> dict[str, Any]:
        status: dict[str, Any] = self.call("GET", f"/v1/rollouts/{release}")
        return status


def artifact(version: str) -> bytes:
    return f"ringfence agent benchmark, version {version}\n".encode() * ARTIFACT_REPEAT


# ---------------------------------------------------------------------------------------------
# The byte-counting proxy
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Message:
    """One HTTP/1.1 message as it crossed the proxy."""

    at: float  # time.monotonic() when its last byte arrived
    conn: int
    direction: str  # "c2s" (request) or "s2c" (response)
    start_line: str
    head: bytes
    body: bytes  # the first _KEEP_BODY bytes
    size: int  # head + body (+ chunk framing), as on the wire


_KEEP_BODY = 16384


class HttpSplitter:
    """Splits one direction of one HTTP/1.1 connection into messages as its bytes arrive
    (Content-Length, chunked, or until the connection closes)."""

    def __init__(self, conn: int, direction: str, sink: Callable[[Message], None]) -> None:
        self.conn = conn
        self.direction = direction
        self.sink = sink
        self.buf = bytearray()
        self.head: bytes | None = None
        self.mode = ""  # "length", "chunked" or "close"
        self.length = 0
        self.scan = 0  # chunked: where the next chunk-size line starts

    def feed(self, data: bytes, now: float) -> None:
        self.buf += data
        while self._step(now):
            pass

    def close(self, now: float) -> None:
        if self.head is not None and self.mode == "close":
            self._emit(len(self.buf), now)

    def _frame(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        self.length, self.mode = 0, "length"
        if self.direction == "s2c":
            status = int(lines[0].split()[1])
            if 100 <= status < 200 or status in (204, 304):
                return
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.mode, self.scan = "chunked", len(head)
        elif "content-length" in headers:
            self.length = int(headers["content-length"])
        elif self.direction == "s2c":
            self.mode = "close"

    def _step(self, now: float) -> bool:
        """Consume one message if it is complete; False when more bytes are needed."""
        if self.head is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            self.head = bytes(self.buf[:end + 4])
            self._frame(self.head)
        if self.mode == "length":
            size = len(self.head) + self.length
            if len(self.buf) < size:
                return False
            self._emit(size, now)
            return True
        if self.mode == "chunked":
            while True:
                eol = self.buf.find(b"\r\n", self.scan)
                if eol < 0:
                    return False
                chunk = int(bytes(self.buf[self.scan:eol]).split(b";")[0], 16)
                if chunk == 0:
                    if self.buf[eol + 2:eol + 4] == b"\r\n":
                        size = eol + 4
                    else:
                        trailer_end = self.buf.find(b"\r\n\r\n", eol + 2)
                        if trailer_end < 0:
                            return False
                        size = trailer_end + 4
                    self._emit(size, now)
                    return True
                if len(self.buf) < eol + 2 + chunk + 2:
                    return False
                self.scan = eol + 2 + chunk + 2
        return False  # "close": the message ends with the connection

    def _emit(self, size: int, now: float) -> None:
        assert self.head is not None
        head = self.head
        body = bytes(self.buf[len(head):min(size, len(head) + _KEEP_BODY)])
        start_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        self.sink(Message(now, self.conn, self.direction, start_line, head, body, size))
        del self.buf[:size]
        self.head, self.mode, self.length, self.scan = None, "", 0, 0


@dataclass(frozen=True, slots=True)
class Exchange:
    request: Message
    response: Message | None

    @property
    def is_checkin(self) -> bool:
        return self.request.start_line.startswith("POST /v1/agent/checkin ")


class CountingProxy:
    """127.0.0.1:<port> -> the server, on its own thread and event loop; records every HTTP
    message that passes and counts the raw bytes both ways."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.lock = threading.Lock()
        self.messages: list[Message] = []
        self.raw = {"c2s": 0, "s2c": 0}
        self.connections = 0
        self._ids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run, name="proxy", daemon=True)
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10) or not self.port:
            raise BenchError("the byte-counting proxy did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
        finally:
            self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        async def _shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def _record(self, message: Message) -> None:
        with self.lock:
            self.messages.append(message)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = next(self._ids)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                writer.close()
                return
            with self.lock:
                self.connections += 1
            await asyncio.gather(
                self._pump(reader, up_writer, HttpSplitter(conn, "c2s", self._record)),
                self._pump(up_reader, writer, HttpSplitter(conn, "s2c", self._record)))
        finally:
            self._tasks.discard(task)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, split: HttpSplitter) -> None:
        try:
            while data := await src.read(65536):
                now = time.monotonic()
                with self.lock:
                    self.raw[split.direction] += len(data)
                split.feed(data, now)
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            split.close(time.monotonic())
            dst.close()

    def snapshot(self) -> tuple[list[Message], dict[str, int]]:
        with self.lock:
            return list(self.messages), dict(self.raw)

    def exchanges(self, since: float = 0.0) -> list[Exchange]:
        """Requests completed at or after ``since``, each with its response (HTTP/1.1 without
        pipelining: the n-th response on a connection answers its n-th request)."""
        messages, _ = self.snapshot()
        out: list[Exchange] = []
        by_conn: dict[int, tuple[list[Message], list[Message]]] = {}
        for m in messages:
            requests, responses = by_conn.setdefault(m.conn, ([], []))
            (requests if m.direction == "c2s" else responses).append(m)
        for requests, responses in by_conn.values():
            for i, req in enumerate(requests):
                if req.at >= since:
                    out.append(Exchange(req, responses[i] if i < len(responses) else None))
        out.sort(key=lambda e: e.request.at)
        return out


def redact(head: bytes) -> str:
    """A message head as text, with the bearer secret masked (same length, so same bytes)."""
    text = head.decode("latin-1")
    return re.sub(r"(?im)^(authorization: bearer )(\S+)", lambda m: m.group(1) + "*" * len(m.group(2)), text)


# ---------------------------------------------------------------------------------------------
# The agent under test
# ---------------------------------------------------------------------------------------------
class AgentRun:
    """One agent process over ``state_dir``: ``cli`` (``python -m ringfence agent run``) or
    ``embedded`` (the library, started with ``python -c``)."""

    def __init__(self, mode: str, state_dir: Path, server_url: str, enroll_token: str, config: Path) -> None:
        self.mode = mode
        self.state_dir = state_dir
        self.server_url = server_url
        self.enroll_token = enroll_token
        self.config = config
        self.log_path = state_dir.parent / f"agent-{mode}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def argv(self) -> list[str]:
        if self.mode == "cli":
            return [sys.executable, "-m", "ringfence", "agent", "run", "--server", self.server_url,
                    "--enroll-token", self.enroll_token, "--state-dir", str(self.state_dir),
                    "--config", str(self.config)]
        return [sys.executable, "-c", EMBEDDED, self.server_url, str(self.state_dir), self.enroll_token,
                str(self.config)]

    def start(self) -> None:
        env = dict(os.environ)
        env.pop("RINGFENCE_AGENT_KILL_AT", None)
        with self.log_path.open("ab") as logf:
            self.proc = subprocess.Popen(self.argv(), stdout=logf, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def check(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise BenchError(f"the {self.mode} agent exited with {code}")

    def stop(self) -> int | None:
        return stop_process(self.proc)

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def journal(self) -> dict[str, Any]:
        """The journal's summary (files replaced atomically: safe while the agent runs)."""
        from ringfence.agent.journal import Journal, summary

        journal: dict[str, Any] = summary(Journal.open(self.state_dir).state)
        return journal

    def content(self) -> dict[str, Any]:
        entry: dict[str, Any] = self.journal()["content"].get(CONTENT_TYPE) or {}
        return entry

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            try:
                value = predicate()
            except (OSError, ValueError, KeyError):
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(every)

    def settled_on(self, version: str) -> bool:
        """Nothing in flight, every event acknowledged, ``version`` committed and switched in."""
        journal = self.journal()
        c = journal["content"].get(CONTENT_TYPE) or {}
        return (journal["outbox"] == 0 and c.get("update") is None and c.get("active") == version
                and c.get("lkg") == version)


# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------
@dataclass
class Bench:
    args: argparse.Namespace
    server: Server
    admin: Admin
    proxy: CountingProxy
    rng: random.Random
    version: int = 0  # the newest version released

    def wait_completed(self, release: str, agent: AgentRun, timeout: float = 60) -> None:
        agent.wait_for(lambda: self.admin.status(release)["phase"] == "completed", timeout,
                       f"release {release} to complete", every=0.2)

    def wait_checkins(self, agent: AgentRun, count: int, since: float, timeout: float) -> None:
        """Until ``count`` check-ins were answered after ``since``."""
        def enough() -> bool:
            done = [e for e in self.proxy.exchanges(since) if e.is_checkin and e.response is not None]
            return len(done) >= count

        agent.wait_for(enough, timeout, f"{count} check-ins")

    def first_version(self, agent: AgentRun) -> None:
        self.version = 1
        release = self.admin.release("1", artifact("1"), FIRST_PLAN)
        self.admin.start(release)
        agent.start()
        t0 = time.monotonic()
        agent.wait_for(lambda: agent.settled_on("1"), 60 + self.args.trial, "the agent to enroll and commit 1")
        log(f"agent enrolled and committed version 1 in {time.monotonic() - t0:.2f}s after it started")
        self.wait_completed(release, agent)

    def round(self, agent: AgentRun) -> dict[str, Any]:
        """One update: a new version released, timed until the agent committed it."""
        self.version += 1
        version = str(self.version)
        data = artifact(version)
        sha = hashlib.sha256(data).hexdigest().encode()
        release = self.admin.release(version, data, ROUND_PLAN)
        pause = self.rng.uniform(0, self.args.poll_interval)
        time.sleep(pause)
        agent.check()
        self.admin.start(release)
        t0 = time.monotonic()
        activated = committed = 0.0
        deadline = t0 + 60 + self.args.trial + 3 * self.args.poll_interval
        while not committed:
            now = time.monotonic()
            try:
                c = agent.content()
            except (OSError, ValueError, KeyError):
                c = {}
            if not activated and c.get("active") == version:
                activated = now
            if c.get("lkg") == version:
                committed = now
                activated = activated or now
                break
            if version in (c.get("blocked") or {}):
                raise BenchError(f"the agent refused version {version}: {c['blocked'][version]}")
            agent.check()
            if now > deadline:
                raise BenchError(f"version {version} was not committed within {deadline - t0:.0f}s; journal: {c}")
            time.sleep(JOURNAL_POLL_S)
        sample: dict[str, Any] = {"version": version, "pause_before_start_s": round(pause, 3),
                  "assign_to_activate_s": round(activated - t0, 3), "assign_to_commit_s": round(committed - t0, 3),
                  **self._breakdown(t0, sha)}
        agent.wait_for(lambda: agent.settled_on(version), 30, f"the agent to settle on {version}")
        self.wait_completed(release, agent)
        totals = self.admin.status(release)["totals"]
        sample["server_totals"] = {k: totals[k] for k in ("admitted", "exposed", "activated", "healthy", "failed")}
        return sample

    def _breakdown(self, t0: float, sha: bytes) -> dict[str, float | None]:
        """When the proxy saw: the first answer naming the new version, the end of its download,
        the answer acknowledging the intent. Seconds after ``t0``."""
        told = downloaded = acked = None
        for e in self.proxy.exchanges(t0 - 15):
            if e.response is None or e.response.at < t0:
                continue
            at = round(e.response.at - t0, 3)
            if e.is_checkin:
                if told is None and sha in e.response.body:
                    told = at
                if acked is None and b'"intent"' in e.request.body:
                    acked = at
            elif downloaded is None and e.request.start_line.startswith(f"GET /v1/artifacts/{sha.decode()}"):
                downloaded = at
        return {"told_s": told, "downloaded_s": downloaded, "intent_acked_s": acked}

    def idle(self, agent: AgentRun, version: str) -> dict[str, Any]:
        """RSS, CPU and check-in bytes of an agent with nothing to do, over ``--idle-seconds``."""
        agent.wait_for(lambda: agent.settled_on(version), 30, f"the agent to settle on {version}")
        self.wait_checkins(agent, 2, time.monotonic(), 30 + 3 * self.args.poll_interval)
        log(f"{agent.mode} agent (pid {agent.pid}) idle on version {version}: measuring for "
            f"{self.args.idle_seconds:g}s")
        _, raw0 = self.proxy.snapshot()
        w0, cpu0, exact0 = time.monotonic(), process_cpu_s(agent.pid), process_cpu_exact_s(agent.pid)
        rss: list[float] = []
        while time.monotonic() < w0 + self.args.idle_seconds:
            agent.check()
            rss.append(memory_mb(agent.pid)["rss"])
            time.sleep(min(0.5, max(0.0, w0 + self.args.idle_seconds - time.monotonic())))
        w1, cpu1, exact1 = time.monotonic(), process_cpu_s(agent.pid), process_cpu_exact_s(agent.pid)
        _, raw1 = self.proxy.snapshot()
        mem = memory_mb(agent.pid)
        rss.append(mem["rss"])
        if not agent.settled_on(version):
            raise BenchError(f"the agent was not idle during the window: {agent.journal()}")
        window = [e for e in self.proxy.exchanges(w0) if e.response is not None and e.response.at <= w1]
        checkins = [e for e in window if e.is_checkin]
        if not checkins:
            raise BenchError(f"no check-in in the {w1 - w0:.1f}s idle window; is --poll-interval longer?")
        n = len(checkins)
        req = sum(e.request.size for e in checkins) / n
        resp = sum(e.response.size for e in checkins if e.response is not None) / n
        sample = checkins[-1]
        assert sample.response is not None
        cpu_s = cpu1 - cpu0
        exact = None if exact0 is None or exact1 is None else exact1 - exact0
        return {
            "rss_mb": round(statistics.median(rss), 1), "rss_max_mb": round(max(rss), 1),
            "memory_mb": {k: round(v, 1) for k, v in mem.items()},
            "cpu_percent": round(100 * cpu_s / (w1 - w0), 3), "cpu_s": round(cpu_s, 3),
            "cpu_ms_per_checkin": round(1000 * cpu_s / n, 2),
            "cpu_percent_schedstat": None if exact is None else round(100 * exact / (w1 - w0), 3),
            "cpu_ms_per_checkin_schedstat": None if exact is None else round(1000 * exact / n, 2),
            "window_s": round(w1 - w0, 2), "checkins": n,
            "checkin_request_bytes": round(req, 1), "checkin_response_bytes": round(resp, 1),
            "checkin_bytes": round(req + resp, 1),
            "checkin_body_bytes": {"request": len(sample.request.body), "response": len(sample.response.body)},
            "checkins_with_events": sum(b'"events":[]' not in e.request.body.replace(b" ", b"") for e in checkins),
            "other_requests": [e.request.start_line for e in window if not e.is_checkin],
            "raw_bytes_per_checkin": round(sum(raw1[k] - raw0[k] for k in raw0) / n, 1),
            "connections": len({e.request.conn for e in window}),
            "sample": {"request": redact(sample.request.head) + sample.request.body.decode(errors="replace"),
                       "response": redact(sample.response.head) + sample.response.body.decode(errors="replace")},
        }


def import_cost() -> dict[str, Any]:
    """Modules and RSS right after the imports alone: the interpreter, the agent library, and
    what ``python -m ringfence agent run`` imports."""
    variants = {"python": "pass", "embedded": "import ringfence.agent, ringfence.logs",
                # httpx imports its own command line (rich, pygments, click) when those are installed
                "embedded_without_httpx_cli": "sys.modules['httpx._main'] = None\n"
                                              "import ringfence.agent, ringfence.logs",
                "cli": "import ringfence.cli.main, ringfence.agent, ringfence.logs"}
    out: dict[str, Any] = {}
    for name, imports in variants.items():
        r = subprocess.run([sys.executable, "-c", IMPORT_PROBE.format(imports=imports)], capture_output=True,
                           text=True, timeout=120, check=False)
        if r.returncode != 0:
            raise BenchError(f"import probe {name!r} failed: {r.stderr.strip()}")
        modules, rss_kib = (int(x) for x in r.stdout.split())
        out[name] = {"modules": modules, "rss_mb": round(rss_kib / 1024, 1)}
    return out


def med(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
def measure(args: argparse.Namespace, tmp: Path, agents: list[AgentRun], report: dict[str, Any],
            server: Server, proxy: CountingProxy) -> None:
    server.start()
    log(f"server on {server.url} (poll interval {args.poll_interval:g}s), SQLite in {server.data_dir}")
    proxy.start()
    log(f"byte-counting proxy on {proxy.url}")
    admin = Admin(server)
    try:
        bench = Bench(args, server, admin, proxy, random.Random(args.seed))
        admin.content_type(CONTENT_TYPE)
        token = admin.enroll_token()
        config = tmp / "agent.yaml"
        text = AGENT_CONFIG.format(trial=args.trial)
        if args.tuf:  # every artifact verified against the server's TUF repository, from its shipped root
            root = server.data_dir / "keys" / "publish" / "1.root.json"
            if not root.is_file():
                raise BenchError(f"--tuf: `ringfence init` made no TUF root at {root}")
            text += f"trust:\n  root: {json.dumps(str(root))}\n"
        config.write_text(text)
        report["tuf"] = args.tuf
        cli = AgentRun("cli", tmp / "agent", proxy.url, token, config)
        agents.append(cli)
        bench.first_version(cli)
        report["rss_mb_after_first_version"] = round(memory_mb(cli.pid)["rss"], 1)

        samples = []
        for i in range(args.rounds):
            s = bench.round(cli)
            samples.append(s)
            log(f"round {i + 1}/{args.rounds}: version {s['version']}: told {s['told_s']}s, downloaded "
                f"{s['downloaded_s']}s, intent acked {s['intent_acked_s']}s, activated {s['assign_to_activate_s']}s, "
                f"committed {s['assign_to_commit_s']}s after the start call returned")
        report["samples"] = samples
        for key in ("assign_to_commit_s", "assign_to_activate_s", "told_s", "downloaded_s", "intent_acked_s"):
            report[key if key.startswith("assign") else f"median_{key}"] = med([s[key] for s in samples])

        idle = bench.idle(cli, str(bench.version))
        log(f"cli idle: RSS {idle['rss_mb']} MB, CPU {idle['cpu_percent']}% of a core "
            f"({idle['cpu_ms_per_checkin']} ms per check-in), {idle['checkins']} check-ins of "
            f"{idle['checkin_request_bytes']:.0f} + {idle['checkin_response_bytes']:.0f} bytes")
        report.update({
            "idle_rss_mb": idle["rss_mb"], "idle_cpu_percent": idle["cpu_percent"],
        "idle_cpu_percent_schedstat": idle["cpu_percent_schedstat"],
            "idle_checkin_bytes": idle["checkin_bytes"], "checkin_request_bytes": idle["checkin_request_bytes"],
            "checkin_response_bytes": idle["checkin_response_bytes"], "idle": idle,
        })
        if args.embedded == "always" or (args.embedded == "auto" and idle["rss_mb"] > TARGET_RSS_MB):
            code = cli.stop()
            if code != 0:
                raise BenchError(f"the cli agent exited with {code} on SIGTERM")
            embedded = AgentRun("embedded", cli.state_dir, proxy.url, token, config)
            agents.append(embedded)
            embedded.start()
            log("embedded agent started on the same state directory; one update, then idle")
            s = bench.round(embedded)
            idle_e = bench.idle(embedded, str(bench.version))
            log(f"embedded idle: RSS {idle_e['rss_mb']} MB, CPU {idle_e['cpu_percent']}% of a core")
            idle_e.pop("sample")
            report.update({"idle_rss_mb_embedded": idle_e["rss_mb"], "idle_cpu_percent_embedded":
                           idle_e["cpu_percent"], "embedded": {"idle": idle_e, "round": s}})
        report["imports"] = import_cost()
    finally:
        admin.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Idle RSS/CPU, bytes per idle check-in and assign-to-commit time of one `ringfence agent run` "
                    "process against a real `ringfence server` on 127.0.0.1.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="updates timed from release start to commit")
    p.add_argument("--idle-seconds", type=float, default=20.0, help="length of the idle measurement window")
    p.add_argument("--poll-interval", type=float, default=1.0,
                   help="the server's check-in interval, told to the agent (it clamps it to >= 1s)")
    p.add_argument("--trial", type=float, default=1.0, help="the agent's trial length before it commits")
    p.add_argument("--embedded", choices=("auto", "always", "never"), default="auto",
                   help=f"also measure the agent embedded as a library: auto = when the CLI agent's idle RSS is "
                        f"above {TARGET_RSS_MB:g} MB")
    p.add_argument("--tuf", action=argparse.BooleanOptionalAction, default=True,
                   help="verify every artifact against the server's TUF repository (default: on)")
    p.add_argument("--seed", type=int, default=1, help="seed of the pauses before each round")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, journal, database)")
    p.add_argument("--json", action="store_true", help="print only the JSON line on stdout")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.idle_seconds <= 0 or args.poll_interval <= 0 or args.trial <= 0:
        p.error("--rounds, --idle-seconds, --poll-interval and --trial must be positive")
    if not Path("/proc/self/stat").exists():
        p.error("this benchmark reads /proc: Linux only")
    return args


def print_summary(report: dict[str, Any]) -> None:
    idle = report["idle"]
    print(f"ringfence agent benchmark  {report['date']}  ({report['runtime_s']}s)")
    print(f"poll interval {report['poll_interval_s']:g}s, trial {report['trial_s']:g}s, "
          f"{len(report['samples'])} rounds, idle window {idle['window_s']}s")
    print(f"idle RSS           {report['idle_rss_mb']} MB (cli)  target <= {TARGET_RSS_MB:g} MB"
          + (f"; embedded {report['idle_rss_mb_embedded']} MB" if "idle_rss_mb_embedded" in report else ""))
    print(f"idle CPU           {report['idle_cpu_percent']}% of one core from utime+stime "
          f"({idle['cpu_ms_per_checkin']} ms per check-in); {idle['cpu_percent_schedstat']}% from schedstat "
          f"({idle['cpu_ms_per_checkin_schedstat']} ms per check-in)")
    print(f"idle check-in      {report['idle_checkin_bytes']:.0f} bytes = {report['checkin_request_bytes']:.0f} "
          f"request + {report['checkin_response_bytes']:.0f} response, headers included; target <= "
          f"{TARGET_CHECKIN_BYTES} bytes")
    print(f"assign -> activate {report['assign_to_activate_s']}s median")
    print(f"assign -> commit   {report['assign_to_commit_s']}s median; samples "
          f"{[s['assign_to_commit_s'] for s in report['samples']]}")
    print("sample idle check-in (credential masked):")
    for part in ("request", "response"):
        print("  " + idle["sample"][part].replace("\r\n", "\n  "))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()

    def _terminate(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _terminate)
    tmp = Path(tempfile.mkdtemp(prefix="rf-bench-agent-"))
    (tmp / "data").mkdir()
    server = Server(tmp / "data", args.poll_interval)
    report: dict[str, Any] = {
        "benchmark": "ringfence agent",
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "machine": machine_info(),
        "poll_interval_s": args.poll_interval, "trial_s": args.trial, "idle_seconds": args.idle_seconds,
        "artifact_bytes": len(artifact("1")),
        "targets": {"idle_rss_mb": TARGET_RSS_MB, "idle_checkin_bytes": TARGET_CHECKIN_BYTES},
    }
    agents: list[AgentRun] = []
    proxy = CountingProxy(server.port)
    code = 0
    try:
        measure(args, tmp, agents, report, server, proxy)
    except (BenchError, KeyboardInterrupt, httpx.HTTPError, OSError, ValueError, KeyError) as exc:
        code = 130 if isinstance(exc, KeyboardInterrupt) else 1
        log(f"FAILED: {type(exc).__name__}: {exc}")
        for agent in agents:
            log(f"{agent.mode} agent log ({agent.log_path}), last lines:\n{agent.log_tail()}")
        if server.log_path.exists():
            log(f"server log, last lines:\n{tail(server.log_path)}")
    finally:
        for agent in agents:
            agent.stop()
        server.stop()
        proxy.stop()
        if args.keep or code:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if code:
        return code
    report["runtime_s"] = round(time.monotonic() - started, 1)
    report["targets"]["met"] = {"idle_rss_mb": report["idle_rss_mb"] <= TARGET_RSS_MB,
                                "idle_checkin_bytes": report["idle_checkin_bytes"] <= TARGET_CHECKIN_BYTES}
    report["sample_checkin"] = report["idle"].pop("sample")
    if not args.json:
        print_summary({**report, "idle": {**report["idle"], "sample": report["sample_checkin"]}})
    sys.stdout.write(json.dumps(report, separators=(",", ":")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
