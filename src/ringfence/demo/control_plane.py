"""The demo's control plane: ``ringfence init`` and ``ringfence server`` as child processes over
one SQLite data directory, exactly as an operator starts them, and a small client of its API
that acts as several people.

The server runs in its own process (and its own session, so a Ctrl-C reaches the demo, which
stops everything in order): it gets a core of its own instead of sharing the demo's interpreter
with hundreds of simulated agents, and it serves the dashboard at ``/`` like any server.
:meth:`ControlPlane.stop` is synchronous and idempotent, so it can run again from any
``finally``: SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from ringfence.demo.errors import ApiRefused, InvalidInput, Unavailable

RINGFENCE = [sys.executable, "-m", "ringfence"]
_STOP_GRACE_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def child_env() -> dict[str, str]:
    """The environment of the demo's children: SQLite in the data directory, whatever the shell
    says about PostgreSQL, and no credentials of another server."""
    drop = {"RINGFENCE_DATABASE_URL", "RINGFENCE_SERVER", "RINGFENCE_TOKEN", "RINGFENCE_ENROLL_TOKEN"}
    return {k: v for k, v in os.environ.items() if k not in drop}


class ControlPlane:
    """``ringfence init`` + ``ringfence server`` in ``data_dir``; ``url``, ``admin_token`` and
    ``trusted_root`` once :meth:`start` returned."""

    def __init__(self, data_dir: Path, port: int, poll_interval_s: float) -> None:
        self.data_dir = data_dir
        self.port = port
        self.poll_interval_s = poll_interval_s
        self.url = f"http://127.0.0.1:{port}"
        self.admin_token = ""
        self.trusted_root: Path | None = None
        self.log_path = data_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, timeout_s: float) -> None:
        await asyncio.to_thread(self._init)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*RINGFENCE, "server", "--data-dir", str(self.data_dir), "--port", str(self.port),
                 "--poll-interval", str(self.poll_interval_s)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=child_env(),
                start_new_session=True)
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise Unavailable(f"the server exited with {self.proc.returncode}: {self.log_tail()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"{self.url}/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise Unavailable(f"the server did not answer at {self.url} within {timeout_s:.0f}s: {self.log_tail()}")

    def _init(self) -> None:
        if (self.data_dir / "ringfence.db").exists():
            raise InvalidInput(f"{self.data_dir} already holds a Ringfence database; give the demo a new or empty "
                               "--data-dir", field="data_dir", value=str(self.data_dir))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([*RINGFENCE, "init", "--data-dir", str(self.data_dir), "--json"], capture_output=True,
                              text=True, env=child_env(), timeout=120, check=False)
        if done.returncode != 0:
            raise Unavailable(f"ringfence init failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        result = json.loads(done.stdout)
        self.admin_token = str(result["admin_token"])
        if result.get("trusted_root"):
            self.trusted_root = Path(result["trusted_root"])

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(empty server log)"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the grace period; nothing when it is not running."""
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen[bytes] | None, grace_s: float = _STOP_GRACE_S) -> int | None:
    """End a child the demo started: SIGTERM, then SIGKILL once ``grace_s`` has passed."""
    if proc is None:
        return None
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(grace_s)
    return proc.returncode


class Api:
    """The admin API as the demo's people: each call names who makes it (a key of ``tokens``)."""

    def __init__(self, url: str, admin_token: str) -> None:
        self.tokens: dict[str, str] = {"admin": admin_token}
        self._http = httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(120, connect=10))

    async def close(self) -> None:
        await self._http.aclose()

    async def call(self, who: str, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None,
                   content: bytes | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        if content is not None:
            headers["Content-Type"] = "application/octet-stream"
        try:
            response = await self._http.request(method, path, json=body, params=params, content=content,
                                                 headers=headers)
        except httpx.TransportError as exc:
            raise Unavailable(f"{method} {path}: the server did not answer ({type(exc).__name__}: {exc})") from None
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                message, reply = str(error["message"]), dict(error.get("details") or {})
            except (ValueError, KeyError, TypeError):
                message, reply = response.text[:300], {}
            raise ApiRefused(f"{method} {path} as {who}: {response.status_code}: {message}", response.status_code,
                             reply=reply)
        result: dict[str, Any] = response.json()
        return result

    async def identity(self, role: str, name: str) -> None:
        """A token for a person (or service account) with ``role``, kept under ``name``."""
        created = await self.call("admin", "POST", "/v1/tokens", body={"role": role, "name": name})
        self.tokens[name] = str(created["token"])

    async def status(self, release: str) -> dict[str, Any]:
        return await self.call("admin", "GET", f"/v1/rollouts/{release}")
