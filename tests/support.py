"""Test helpers: a real ``ringfence`` server process and devices that speak the agent API.

``ServerProcess`` runs the console script exactly as an operator would (``ringfence init``,
then ``ringfence server``) in a temporary data dir, on SQLite or on a PostgreSQL URL.
``Device`` is a minimal agent-API client: enroll, check in, report events.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import free_port

RINGFENCE = [sys.executable, "-m", "ringfence"]


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

    def __init__(self, data_dir: Path, database_url: str | None = None, poll_interval: float = 1.0) -> None:
        self.data_dir = data_dir
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
             "--poll-interval", str(self.poll_interval)],
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
