"""Every network operation of the agent has a wall-clock deadline that holds while bytes trickle:
the TUF refresh, the verification of an artifact and the start-up revocation check, over real HTTP
(``http.server`` in a thread) serving a real TUF repository. The transport's own exchanges
(check-in, download) are in ``test_transport.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from ringfence.agent.signed import RepositoryUnreachable, SignedDelivery
from ringfence.trust import NotPublished, TrustClient, Unreachable
from ringfence.trust.fetchers import HttpxFetcher
from tests.unit.agent.conftest import Reply, Seen, TinyServer
from tests.unit.trust.conftest import World, make_world


class Repository:
    """``world``'s repository over HTTP at ``{url}/tuf``; the files named in ``drip`` trickle one
    byte a second."""

    def __init__(self, world: World, server: TinyServer) -> None:
        self.world, self.url = world, f"{server.url}/tuf"
        self.drip: set[str] = set()
        server.fallback = self._serve

    def _serve(self, seen: Seen) -> Reply:
        kind, _, name = seen.path.removeprefix("/tuf/").partition("/")
        name = unquote(name)
        try:
            data = (self.world.repository.metadata_bytes(name) if kind == "metadata"
                    else self.world.repository.target_bytes(name))
        except NotPublished:
            return Reply(404, b"not published")
        return Reply(200, data, drip_s=1.0 if name in self.drip else 0.0)


@pytest.fixture
def repository(tmp_path: Path, http_server: TinyServer) -> Iterator[Repository]:
    yield Repository(make_world(tmp_path), http_server)


def delivery(repository: Repository, tmp_path: Path, timeout: float) -> SignedDelivery:
    return SignedDelivery(tmp_path / "agent-tuf", repository.world.shipped_root, repository.url,
                          HttpxFetcher(timeout=timeout), startup_fetcher=HttpxFetcher(timeout=timeout))


def test_the_repository_over_http_answers_when_nothing_trickles(repository: Repository, tmp_path: Path) -> None:
    assert delivery(repository, tmp_path, timeout=5).revoked(budget_s=5) == {}


def test_a_refresh_against_a_trickling_timestamp_gives_up_at_the_fetchers_timeout(repository: Repository,
                                                                                  tmp_path: Path) -> None:
    repository.drip.add("timestamp.json")  # several hundred bytes: minutes at one a second
    client = TrustClient(tmp_path / "client", repository.world.shipped_root, repository.url,
                         HttpxFetcher(timeout=2))
    with pytest.raises(Unreachable, match=r"timestamp\.json"):
        client.refresh()


def test_a_call_gives_up_at_its_budget_however_long_each_download_may_take(repository: Repository,
                                                                           tmp_path: Path) -> None:
    repository.drip.add("timestamp.json")
    client = TrustClient(tmp_path / "client", repository.world.shipped_root, repository.url,
                         HttpxFetcher(timeout=600))
    with pytest.raises(Unreachable, match=r"timestamp\.json"):
        client.revocations(budget_s=1.5)


def test_the_start_up_revocation_check_gives_up_within_its_budget(repository: Repository, tmp_path: Path) -> None:
    repository.drip.add("timestamp.json")
    with pytest.raises(RepositoryUnreachable, match=r"timestamp\.json"):
        delivery(repository, tmp_path, timeout=600).revoked(budget_s=1.5)


def test_a_repository_that_never_answers_is_unreachable_within_the_budget(silent_url: str, repository: Repository,
                                                                         tmp_path: Path) -> None:
    signed = SignedDelivery(tmp_path / "agent-tuf", repository.world.shipped_root, f"{silent_url}/tuf",
                            HttpxFetcher(timeout=600), startup_fetcher=HttpxFetcher(timeout=600))
    with pytest.raises(RepositoryUnreachable):
        signed.revoked(budget_s=1.0)
