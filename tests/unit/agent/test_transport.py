"""HttpTransport against a real HTTP server (``http.server`` in a thread): the error each answer
becomes, what the agent sends, and downloads that resume with a Range request."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringfence.agent.transport import DownloadTooLarge, HttpTransport, Rejected, Unauthorized, Unreachable
from tests.unit.agent.conftest import Handler, Reply, Seen, TinyServer

ARTIFACT = bytes(range(256)) * 800  # 204,800 bytes: several of the transport's 64 KiB chunks
CHECKIN = "/v1/agent/checkin"
BLOB = "/v1/agent/artifacts/abc"


def error(status: int, code: str, message: str) -> Reply:
    body = {"error": {"status": status, "code": code, "message": message, "details": {"field": "x"}}}
    return Reply(status, json.dumps(body).encode(), {"content-type": "application/json"})


@pytest.fixture
def transport(http_server: TinyServer) -> Iterator[HttpTransport]:
    t = HttpTransport(http_server.url + "/", timeout=5)
    yield t
    t.close()


# -- requests ---------------------------------------------------------------------------------

def test_checkin_sends_the_credential_and_body_and_parses_the_answer(http_server: TinyServer,
                                                                     transport: HttpTransport) -> None:
    answer = {"acked": ["1-1"], "poll_interval_s": 30, "desired": {"a": {"version": "2"}}}
    http_server.route("POST", CHECKIN, Reply(200, json.dumps(answer).encode(), {"content-type": "application/json"}))

    got = transport.checkin("cred-123", {"versions": {"a": "1"}, "events": []}, timeout=5)

    assert got == answer
    (seen,) = http_server.requests
    assert seen.path == CHECKIN  # the trailing "/" of the server URL is not doubled
    assert seen.headers["authorization"] == "Bearer cred-123"
    assert seen.headers["user-agent"] == "ringfence-agent"
    assert json.loads(seen.body) == {"versions": {"a": "1"}, "events": []}


def test_enroll_and_revocations_use_their_routes(http_server: TinyServer, transport: HttpTransport) -> None:
    http_server.route("POST", "/v1/agent/enroll", Reply(200, b'{"device_id": "d1", "credential": "c1"}'))
    http_server.route("POST", "/v1/agent/revocations", Reply(200, b'{"revoked": {}}'))

    assert transport.enroll("enrol-tok", {"platform": "linux"}) == {"device_id": "d1", "credential": "c1"}
    assert transport.revocations("c1", {"a": "3"}, timeout=2) == {"revoked": {}}

    enroll, revocations = http_server.requests
    assert enroll.headers["authorization"] == "Bearer enrol-tok"
    assert json.loads(enroll.body) == {"platform": "linux"}
    assert json.loads(revocations.body) == {"versions": {"a": "3"}}


@pytest.mark.parametrize("status", [500, 502, 503, 408, 429])
def test_server_trouble_is_unreachable(http_server: TinyServer, transport: HttpTransport, status: int) -> None:
    http_server.route("POST", CHECKIN, error(status, "busy", "try later"))

    with pytest.raises(Unreachable, match=str(status)):
        transport.checkin("c", {}, timeout=5)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_credential_is_unauthorized_with_the_servers_code_and_message(
        http_server: TinyServer, transport: HttpTransport, status: int) -> None:
    http_server.route("POST", CHECKIN, error(status, "credential_revoked", "this device was retired"))

    with pytest.raises(Unauthorized) as caught:
        transport.checkin("c", {}, timeout=5)

    assert (caught.value.status, caught.value.code, caught.value.message) == (
        status, "credential_revoked", "this device was retired")


def test_a_bad_request_is_rejected_not_unauthorized(http_server: TinyServer, transport: HttpTransport) -> None:
    http_server.route("POST", CHECKIN, error(400, "invalid_input", "versions.a: not a version"))

    with pytest.raises(Rejected) as caught:
        transport.checkin("c", {}, timeout=5)

    assert type(caught.value) is Rejected
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        400, "invalid_input", "versions.a: not a version")
    assert str(caught.value) == "400 invalid_input: versions.a: not a version"


def test_a_rejection_without_the_error_shape_keeps_the_body_text(http_server: TinyServer,
                                                                 transport: HttpTransport) -> None:
    http_server.route("POST", CHECKIN, Reply(404, b"<html>not here</html>"))

    with pytest.raises(Rejected) as caught:
        transport.checkin("c", {}, timeout=5)

    assert (caught.value.status, caught.value.code, caught.value.message) == (404, "error", "<html>not here</html>")


@pytest.mark.parametrize("body", [b"<html>captive portal</html>", b"[1, 2]", b""])
def test_a_success_status_without_a_json_object_is_unreachable(http_server: TinyServer, transport: HttpTransport,
                                                               body: bytes) -> None:
    http_server.route("POST", CHECKIN, Reply(200, body))

    with pytest.raises(Unreachable, match="not a JSON object"):
        transport.checkin("c", {}, timeout=5)


def test_a_closed_port_is_unreachable(closed_url: str) -> None:
    transport = HttpTransport(closed_url, timeout=2)
    try:
        with pytest.raises(Unreachable, match="ConnectError"):
            transport.checkin("c", {}, timeout=2)
        with pytest.raises(Unreachable):
            transport.download("c", BLOB, Path("/nonexistent-dir/never-written.part"), limit=10, timeout=2)
    finally:
        transport.close()


def test_a_server_that_never_answers_is_unreachable_at_the_timeout(silent_url: str) -> None:
    transport = HttpTransport(silent_url, timeout=5)
    try:
        with pytest.raises(Unreachable, match=r"ReadTimeout|DeadlineExceeded"):
            transport.checkin("c", {}, timeout=0.3)
    finally:
        transport.close()


# A minute of bytes at one a second: each read returns within httpx's read timeout, so only a
# deadline on the whole exchange ends these before the body is complete.
DRIP = Reply(200, b'{"acked": [], "poll_interval_s": 30, "desired": {}, "pad": "' + b"." * 8 + b'"}', drip_s=1.0)


def test_a_check_in_answered_one_byte_a_second_gives_up_at_its_timeout(http_server: TinyServer,
                                                                        transport: HttpTransport) -> None:
    http_server.route("POST", CHECKIN, DRIP)
    with pytest.raises(Unreachable, match="DeadlineExceeded"):
        transport.checkin("c", {}, timeout=1.5)


def test_a_download_that_trickles_gives_up_at_its_timeout_and_keeps_what_arrived(
        http_server: TinyServer, transport: HttpTransport, tmp_path: Path) -> None:
    http_server.route("GET", BLOB, Reply(200, ARTIFACT[:60], drip_s=1.0))
    part = tmp_path / "a.part"
    with pytest.raises(Unreachable, match="DeadlineExceeded"):
        transport.download("c", BLOB, part, limit=len(ARTIFACT), timeout=1.5)
    kept = part.read_bytes()
    assert len(kept) < 60 and ARTIFACT.startswith(kept)  # resumed from there next time


# -- downloads --------------------------------------------------------------------------------

def serve_artifact(*, honour_range: bool) -> Handler:
    def handler(seen: Seen) -> Reply:
        match = re.fullmatch(r"bytes=(\d+)-", seen.headers.get("range", ""))
        if match and honour_range:
            start = int(match.group(1))
            if start >= len(ARTIFACT):
                return Reply(416, b"", {"content-range": f"bytes */{len(ARTIFACT)}"})
            return Reply(206, ARTIFACT[start:],
                         {"content-range": f"bytes {start}-{len(ARTIFACT) - 1}/{len(ARTIFACT)}"})
        return Reply(200, ARTIFACT)
    return handler


def test_download_writes_the_artifact(http_server: TinyServer, transport: HttpTransport, tmp_path: Path) -> None:
    http_server.route("GET", BLOB, serve_artifact(honour_range=True))
    part = tmp_path / "abc.part"

    transport.download("cred-9", BLOB, part, limit=len(ARTIFACT), timeout=5)

    assert part.read_bytes() == ARTIFACT
    (seen,) = http_server.requests
    assert seen.headers["authorization"] == "Bearer cred-9"
    assert "range" not in seen.headers


def test_download_takes_an_absolute_url_as_given(http_server: TinyServer, tmp_path: Path) -> None:
    http_server.route("GET", BLOB, serve_artifact(honour_range=True))
    transport = HttpTransport("http://127.0.0.1:9", timeout=5)  # not where the artifact is
    try:
        transport.download("c", http_server.url + BLOB, tmp_path / "x.part", limit=len(ARTIFACT), timeout=5)
    finally:
        transport.close()

    assert (tmp_path / "x.part").read_bytes() == ARTIFACT


def test_download_resumes_where_the_part_file_stops(http_server: TinyServer, transport: HttpTransport,
                                                    tmp_path: Path) -> None:
    http_server.route("GET", BLOB, serve_artifact(honour_range=True))
    part = tmp_path / "abc.part"
    have = 70_001
    part.write_bytes(ARTIFACT[:have])

    transport.download("c", BLOB, part, limit=len(ARTIFACT), timeout=5)

    assert part.read_bytes() == ARTIFACT
    (seen,) = http_server.requests
    assert seen.headers["range"] == f"bytes={have}-"


def test_a_server_ignoring_range_makes_the_download_start_over(http_server: TinyServer, transport: HttpTransport,
                                                               tmp_path: Path) -> None:
    http_server.route("GET", BLOB, serve_artifact(honour_range=False))
    part = tmp_path / "abc.part"
    part.write_bytes(ARTIFACT[:1000])

    transport.download("c", BLOB, part, limit=len(ARTIFACT), timeout=5)

    assert part.read_bytes() == ARTIFACT  # not the first 1000 bytes twice
    assert http_server.requests[0].headers["range"] == "bytes=1000-"


def test_a_complete_part_file_is_left_alone_on_416(http_server: TinyServer, transport: HttpTransport,
                                                   tmp_path: Path) -> None:
    http_server.route("GET", BLOB, serve_artifact(honour_range=True))
    part = tmp_path / "abc.part"
    part.write_bytes(ARTIFACT)

    transport.download("c", BLOB, part, limit=len(ARTIFACT), timeout=5)

    assert part.read_bytes() == ARTIFACT


def test_a_body_over_the_limit_is_too_large(http_server: TinyServer, transport: HttpTransport,
                                            tmp_path: Path) -> None:
    http_server.route("GET", BLOB, serve_artifact(honour_range=True))
    part = tmp_path / "abc.part"

    with pytest.raises(DownloadTooLarge, match=str(len(ARTIFACT) - 1)):
        transport.download("c", BLOB, part, limit=len(ARTIFACT) - 1, timeout=5)

    assert part.stat().st_size <= len(ARTIFACT) - 1  # never more than the limit on disk


def test_a_resumed_body_counts_the_bytes_already_held_against_the_limit(
        http_server: TinyServer, transport: HttpTransport, tmp_path: Path) -> None:
    http_server.route("GET", BLOB, serve_artifact(honour_range=True))
    part = tmp_path / "abc.part"
    part.write_bytes(ARTIFACT[:150_000])

    with pytest.raises(DownloadTooLarge):
        transport.download("c", BLOB, part, limit=200_000, timeout=5)


@pytest.mark.parametrize(("reply", "error_type"), [
    (Reply(404, b'{"error": {"status": 404, "code": "not_found", "message": "no such artifact"}}'), Rejected),
    (Reply(401, b'{"error": {"status": 401, "code": "unauthorized", "message": "who?"}}'), Unauthorized),
    (Reply(503, b"overloaded"), Unreachable),
])
def test_download_errors(http_server: TinyServer, transport: HttpTransport, tmp_path: Path, reply: Reply,
                         error_type: type[Exception]) -> None:
    http_server.route("GET", BLOB, reply)
    part = tmp_path / "abc.part"
    part.write_bytes(b"held")

    with pytest.raises(error_type):
        transport.download("c", BLOB, part, limit=100, timeout=5)

    assert part.read_bytes() == b"held"  # an error answer is never written into the artifact


def test_download_rejection_carries_the_servers_code(http_server: TinyServer, transport: HttpTransport,
                                                     tmp_path: Path) -> None:
    http_server.route("GET", BLOB, error(404, "not_found", "no such artifact"))

    with pytest.raises(Rejected) as caught:
        transport.download("c", BLOB, tmp_path / "abc.part", limit=100, timeout=5)

    assert (caught.value.code, caught.value.message) == ("not_found", "no such artifact")
    assert not (tmp_path / "abc.part").exists()
