"""How long each role's signed metadata stays valid: one typed config with conservative defaults.

Short lives bound a freeze attack (a server, or someone in the path, serving stale metadata so an
agent never learns of a newer version or a revocation): once the timestamp expires, agents refuse
everything until a fresh one is signed. The online roles are re-signed by the server
(:meth:`TrustRepository.refresh_timestamp <ringfence.trust.repository.TrustRepository.refresh_timestamp>`
runs periodically); root and top-level targets are signed offline and renewed by a rotation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class Expiries:
    """Lifetime of each role's metadata from the moment it is signed."""

    root: timedelta = timedelta(days=365)
    targets: timedelta = timedelta(days=365)
    releases: timedelta = timedelta(days=30)
    snapshot: timedelta = timedelta(days=7)
    timestamp: timedelta = timedelta(days=1)

    def __post_init__(self) -> None:
        for name in ("root", "targets", "releases", "snapshot", "timestamp"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"Expiries.{name} must be positive, not {getattr(self, name)}")
