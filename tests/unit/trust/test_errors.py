"""The trust layer's error tree is pinned: every python-tuf error lands on one of the client's
three leaves, and the server-side leaves map onto the one HTTP error shape."""

from __future__ import annotations

import pytest
from tuf.api import exceptions
from tuf.api.serialization import DeserializationError

from ringfence.server.errors import status_of
from ringfence.trust import BadMetadata, BadTarget, KeyDirError, NotPublished, PublishError, TrustError, Unreachable
from tests.unit.trust.conftest import World

PYTHON_TUF_ERRORS = [
    *sorted((cls for cls in vars(exceptions).values()
             if isinstance(cls, type) and issubclass(cls, Exception) and cls.__module__ == exceptions.__name__),
            key=lambda cls: cls.__name__),
    DeserializationError,
]


@pytest.mark.parametrize("error", PYTHON_TUF_ERRORS, ids=lambda cls: cls.__name__)
def test_every_python_tuf_error_is_translated(world: World, error: type[Exception]) -> None:
    client = world.client()
    raised = error("from python-tuf", 500) if issubclass(error, exceptions.DownloadHTTPError) else error("x")
    transfer = issubclass(error, exceptions.DownloadError) and error is not exceptions.DownloadLengthMismatchError
    expected = Unreachable if transfer else BadMetadata  # more bytes than signed is bad data, not a transfer

    with pytest.raises(expected), client._translated():
        raise raised


def test_the_tree_has_one_root_and_server_leaves_map_to_http_statuses() -> None:
    for leaf in (KeyDirError, PublishError, NotPublished, BadMetadata, BadTarget, Unreachable):
        assert issubclass(leaf, TrustError)
    assert status_of(KeyDirError("x")) == 400
    assert status_of(PublishError("x")) == 400
    assert status_of(NotPublished("x")) == 404
    assert {cls.code for cls in (KeyDirError, PublishError, NotPublished, BadMetadata, BadTarget, Unreachable)} == {
        "key_dir", "publish_refused", "not_published", "bad_metadata", "bad_target", "unreachable"}
