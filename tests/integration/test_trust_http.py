"""TrustClient over real HTTP: a threaded ``http.server`` on a free port serves a repository's
bytes the way the control plane lays them out, behind a bearer credential, and the client's httpx
fetcher carries that credential."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest

from ringfence.core.clock import ManualClock
from ringfence.trust import HttpxFetcher, NotPublished, TrustClient, TrustRepository, Unreachable, init_keys

CREDENTIAL = "device-secret"
ARTIFACT = b"sensor content v291\n" * 100


class _Served:
    def __init__(self, repository: TrustRepository) -> None:
        self.repository = repository
        self.paths: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tuf"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.paths.append(self.path)
                if self.headers.get("authorization") != f"Bearer {CREDENTIAL}":
                    self.send_error(401)
                    return
                kind, _, name = self.path.removeprefix("/tuf/").partition("/")
                try:
                    if kind == "metadata":
                        body = served.repository.metadata_bytes(unquote(name))
                    elif kind == "targets":
                        body = served.repository.target_bytes(unquote(name))
                    else:
                        raise NotPublished(self.path)
                except NotPublished:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[_Served, ManualClock, Path]]:
    keys = tmp_path / "keys"
    clock = ManualClock(datetime.now(UTC))
    init_keys(keys, clock=clock)
    repository = TrustRepository(tmp_path / "repository", keys / "online", clock)
    repository.accept_published(keys / "publish")
    http = _Served(repository)
    thread = threading.Thread(target=http.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield http, clock, keys / "publish" / "1.root.json"
    finally:
        http.server.shutdown()
        http.server.server_close()
        thread.join(timeout=5)


def test_a_client_verifies_over_http_and_follows_a_timestamp_refresh(
        served: tuple[_Served, ManualClock, Path], tmp_path: Path) -> None:
    http, clock, shipped_root = served
    http.repository.add_target("sensor/ipc-templates/291", hashlib.sha256(ARTIFACT).hexdigest(), len(ARTIFACT),
                               {"version": "291"})
    fetcher = HttpxFetcher(credential=CREDENTIAL, timeout=5.0)
    client = TrustClient(tmp_path / "agent", shipped_root, http.url, fetcher)
    try:
        assert client.verify("sensor/ipc-templates/291", ARTIFACT).custom == {"version": "291"}
        assert client.revocations() == {}
        before = client.trusted_versions()["timestamp"]

        clock.advance(timedelta(hours=6))
        http.repository.refresh_timestamp()
        client.refresh()

        assert client.trusted_versions()["timestamp"] == before + 1
        assert "/tuf/metadata/timestamp.json" in http.paths
    finally:
        fetcher.close()


def test_a_wrong_credential_and_a_dead_server_are_unreachable(
        served: tuple[_Served, ManualClock, Path], tmp_path: Path) -> None:
    http, _, shipped_root = served
    fetcher = HttpxFetcher(credential="wrong", timeout=5.0)
    client = TrustClient(tmp_path / "agent", shipped_root, http.url, fetcher)
    try:
        with pytest.raises(Unreachable, match="HTTP 401"):
            client.refresh()
        http.server.shutdown()
        http.server.server_close()
        fetcher.credential = CREDENTIAL
        with pytest.raises(Unreachable, match="transfer failed"):
            client.refresh()
    finally:
        fetcher.close()
