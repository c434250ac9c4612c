"""python-tuf's metadata classes and securesystemslib's signer, imported in one place.

Their public modules (``tuf.api.metadata``, ``securesystemslib.signer``) re-export these names
without an ``__all__`` that mypy can read, and strict mode does not accept implicit re-exports;
the rest of the package imports them from here.
"""

from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]
from tuf.api.metadata import (  # type: ignore[attr-defined]
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Role,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

__all__ = ["CryptoSigner", "DelegatedRole", "Delegations", "MetaFile", "Metadata", "Role", "Root", "Signed",
           "Snapshot", "TargetFile", "Targets", "Timestamp"]
