"""The trust layer's exception tree. Every message names what failed: the file or key, the role
and version, or the target path::

    TrustError                 (a RingfenceError)
     ├── KeyDirError           a key directory: missing or unreadable key, threshold above the
     │                         number of keys, init over a directory that is not empty       -> 400
     ├── PublishError          the repository refused offline-signed metadata (does not chain,
     │                         wrong version, expired, an online key it does not hold) or a
     │                         target it cannot accept                                         -> 400
     ├── NotPublished          no such metadata or target file is served                      -> 404
     ├── BadMetadata           client: metadata tampered, expired, rolled back, or not signed by
     │                         the keys its delegator names
     ├── BadTarget             client: a target the signed metadata does not list, or bytes
     │                         whose length or hashes differ from the signed ones
     └── Unreachable           client: the transfer failed (no answer, timeout, HTTP error)

The server-side leaves also derive from :class:`~ringfence.core.errors.InvalidInput` or
:class:`~ringfence.core.errors.NotFound`, so the server's one error shape maps them to 400 and 404
without a table of its own. The client-side leaves are what an agent decides on: ``BadMetadata``
and ``BadTarget`` mean "do not install, report"; ``Unreachable`` means "try again later".
"""

from __future__ import annotations

from ringfence.core.errors import InvalidInput, NotFound, RingfenceError


class TrustError(RingfenceError):
    """Base of every error raised by :mod:`ringfence.trust`."""

    code = "trust_error"


class KeyDirError(TrustError, InvalidInput):
    code = "key_dir"


class PublishError(TrustError, InvalidInput):
    code = "publish_refused"


class NotPublished(TrustError, NotFound):
    code = "not_published"


class BadMetadata(TrustError):
    code = "bad_metadata"


class BadTarget(TrustError):
    code = "bad_target"


class Unreachable(TrustError):
    code = "unreachable"
