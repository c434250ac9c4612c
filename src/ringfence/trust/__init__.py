"""Signed delivery: every artifact an agent installs, and the revocation list it reads at start-up,
is a TUF target (python-tuf), so a compromised server, mirror or network path cannot make an agent
install something the release process did not sign, nor hold back a newer version or a revocation
for longer than the timestamp's short life.

Three parts, one per place they run:

* :mod:`~ringfence.trust.keys` — offline, on an operator's machine: create and rotate the keys;
  root and top-level targets are signed here and never leave.
* :mod:`~ringfence.trust.repository` — on the server, with the online keys only: sign new
  artifacts into the ``releases`` role, re-sign snapshot and timestamp, serve the metadata.
* :mod:`~ringfence.trust.client` — in the agent: verify downloaded bytes and read revocations,
  starting from the root shipped with the agent.

Errors are one tree, :mod:`~ringfence.trust.errors`.
"""

from typing import TYPE_CHECKING, Any

from ringfence.trust.client import TrustClient
from ringfence.trust.errors import (
    BadMetadata,
    BadTarget,
    KeyDirError,
    NotPublished,
    PublishError,
    TrustError,
    Unreachable,
)
from ringfence.trust.fetchers import HttpxFetcher, LoopbackFetcher
from ringfence.trust.names import REVOCATIONS_PATH, target_path

if TYPE_CHECKING:
    from ringfence.trust.expiries import Expiries
    from ringfence.trust.keys import KeyChange, describe_keys, init_keys, rotate_online, rotate_root
    from ringfence.trust.repository import TrustRepository

# The operator's and the server's parts load when first used: the agent imports this package for
# the client alone, and carries it on every endpoint.
_LAZY = {"Expiries": "expiries", "KeyChange": "keys", "describe_keys": "keys", "init_keys": "keys",
         "rotate_online": "keys", "rotate_root": "keys", "TrustRepository": "repository"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "REVOCATIONS_PATH",
    "BadMetadata",
    "BadTarget",
    "Expiries",
    "HttpxFetcher",
    "KeyChange",
    "KeyDirError",
    "LoopbackFetcher",
    "NotPublished",
    "PublishError",
    "TrustClient",
    "TrustError",
    "TrustRepository",
    "Unreachable",
    "describe_keys",
    "init_keys",
    "rotate_online",
    "rotate_root",
    "target_path",
]
