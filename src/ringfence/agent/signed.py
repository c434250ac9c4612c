"""Signed delivery, as the agent uses it: what the TUF repository vouches for, and the rules the
agent applies with it. The trust workflow itself is :class:`ringfence.trust.TrustClient`'s; this
module turns its answers into the agent's decisions.

Errors, by what the agent does about them::

    SignedDeliveryError
    ├── Unverified          the repository does not vouch for this (bytes it does not sign, metadata
    │                       that fails to verify, a signed entry naming another content type or
    │                       version, an unreadable revocation document): refuse, report
    └── RepositoryUnreachable  the repository could not be asked in time: try again later

The rules (the agent enforces them whenever a trusted root is configured):

* **Every artifact is a signed target.** After the sha256 check and before anything is staged,
  the downloaded bytes must be what the repository signs as ``target_path(content_type,
  version)``, and the signed custom fields must name that content type and version. A refusal
  counts like a corrupt download; an unreachable repository is retried at the next check-in.
* **No downgrade without a signed revocation.** Moving from the active version A to a version
  whose signed ``seq`` is lower than A's, or leaving a committed A for an older version (a
  rollback, a revocation), needs the signed ``revocations.json`` to list A. Leaving a version
  that is still in its trial is never a downgrade: the device returns to what it committed.
  Local decisions (crash-loop guard, failed probe) need no signature.
* **Start-up.** The signed revocations are read first, within the start-up budget; when they
  verify they are the whole answer (every active version they list is left before loading). If
  the repository is unreachable, the server's unsigned answer is asked within what is left of
  the budget and honoured as before. If the repository answers with something that fails to
  verify, that is logged as an error and the unsigned answer may only revert versions in trial,
  never a committed one.
* **Check-ins.** The server's unsigned ``revoked`` and ``rollback_from`` still revert a version
  in trial at once. To leave a committed version for an older one the signed revocations must
  list it; when they do not, the device stays, and says so with a ``failed`` event once the
  server has asked on two check-ins in a row (the first may fall between a rollback and the
  re-signing of ``revocations.json``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from tuf.ngclient.fetcher import FetcherInterface

from ringfence.agent.journal import ContentState
from ringfence.trust import BadMetadata, BadTarget, TrustClient, target_path
from ringfence.trust import Unreachable as TrustUnreachable

Revoked = dict[str, dict[str, str]]
"""Signed revocations: content type -> version -> reason."""

UNCONFIRMED_STRIKES = 2
"""Answers in a row in which the server asks the device to leave a committed version that the
signed revocations do not list, before the refusal is reported (the first may come in the moment
between a rollback and the re-signing of ``revocations.json``)."""


class SignedDeliveryError(Exception):
    """Base of the errors of this module; the message names what failed, prefixed ``TUF: ``."""


class Unverified(SignedDeliveryError):
    pass


class RepositoryUnreachable(SignedDeliveryError):
    pass


@dataclass(frozen=True, slots=True)
class SignedArtifact:
    """What the repository signs for one artifact: ``seq`` orders a content type's artifacts
    (higher is newer)."""

    content_type: str
    version: str
    seq: int


class SignedDelivery:
    """The agent's view of the TUF repository.

    Args:
        metadata_dir: the TUF client's cache of verified metadata. It lives in the agent's state
            directory, so root and key rotations followed once stay followed across restarts.
        trusted_root: the root shipped with the agent.
        base_url: the repository (``{server}/v1/tuf``).
        fetcher: how to reach it for check-ins.
        startup_fetcher: how to reach it for the start-up revocation check (a shorter timeout);
            ``fetcher`` when None.

    Raises:
        BadMetadata: ``trusted_root`` is not a root signed by its own threshold.
        OSError: ``trusted_root`` cannot be read.
    """

    def __init__(self, metadata_dir: Path, trusted_root: Path | bytes, base_url: str, fetcher: FetcherInterface,
                 startup_fetcher: FetcherInterface | None = None) -> None:
        self._dir = metadata_dir
        self._root = trusted_root if isinstance(trusted_root, bytes) else trusted_root.read_bytes()
        self._base = base_url
        self._startup = startup_fetcher or fetcher
        self._client = TrustClient(metadata_dir, self._root, base_url, fetcher)

    def verify(self, content_type: str, version: str, path: Path) -> SignedArtifact:
        """Check the bytes in ``path`` against the signed target of ``content_type`` ``version``.

        Raises:
            Unverified: not signed, different bytes, bad metadata, or a signed entry that names
                something else or has no ``seq``.
            RepositoryUnreachable: the repository could not be reached.
        """
        name = target_path(content_type, version)
        try:
            info = self._client.verify(name, path)
        except (BadTarget, BadMetadata) as exc:
            raise Unverified(f"TUF: {exc.message}") from None
        except TrustUnreachable as exc:
            raise RepositoryUnreachable(f"TUF: {exc.message}") from None
        custom = info.custom if isinstance(info.custom, Mapping) else {}
        signed_type, signed_version, seq = custom.get("content_type"), custom.get("version"), custom.get("seq")
        if (signed_type, signed_version) != (content_type, version):
            raise Unverified(f"TUF: target {name!r} is signed as {signed_type} {signed_version}, not as "
                             f"{content_type} {version}")
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise Unverified(f"TUF: target {name!r} carries no signed seq")
        return SignedArtifact(content_type, version, seq)

    def revoked(self, budget_s: float | None = None) -> Revoked:
        """The signed revocations. ``budget_s``: give up after this long, however slowly the
        repository answers (through the start-up fetcher).

        Raises:
            Unverified: the metadata or the document fails to verify, or is malformed.
            RepositoryUnreachable: the repository could not be reached (in time).
        """
        client = self._client if budget_s is None else TrustClient(self._dir, self._root, self._base, self._startup)
        try:
            return parse_revocations(client.revocations(budget_s=budget_s))
        except (BadTarget, BadMetadata) as exc:
            raise Unverified(f"TUF: {exc.message}") from None
        except TrustUnreachable as exc:
            raise RepositoryUnreachable(f"TUF: {exc.message}") from None


def parse_revocations(doc: Mapping[str, Any]) -> Revoked:
    """``{"revoked": {content_type: {version: {"reason": ...}}}}`` as content type -> version ->
    reason.

    Raises:
        Unverified: the document does not have that shape (it is signed, so this is the
            release process's bug, and nothing in it can be relied on).
    """
    revoked = doc.get("revoked", {})
    if not isinstance(revoked, Mapping):
        raise Unverified("TUF: revocations.json: 'revoked' is not an object")
    out: Revoked = {}
    for content_type, versions in revoked.items():
        if not isinstance(versions, Mapping):
            raise Unverified(f"TUF: revocations.json: revoked[{content_type!r}] is not an object")
        out[str(content_type)] = {
            str(version): str((info.get("reason") if isinstance(info, Mapping) else None) or "rolled back")
            for version, info in versions.items()}
    return out


def is_downgrade(active_seq: int | None, target_seq: int | None) -> bool:
    """Whether moving from a version signed with ``active_seq`` to one signed with ``target_seq``
    goes back in time. Unknown is not a downgrade for an unknown active version (nothing to
    compare with), and is one for an unknown target (nothing proves it newer)."""
    if active_seq is None:
        return False
    return target_seq is None or target_seq < active_seq


def downgrade_refusal(content_type: str, active: str, target: str | None, revoked: Revoked) -> str | None:
    """Why leaving ``active`` for the older ``target`` (None: no content) is refused, or None
    when the signed revocations list ``active``."""
    if active in revoked.get(content_type, {}):
        return None
    return f"downgrade from {active} to {target if target is not None else 'no content'} refused: {active} is " \
           f"not revoked"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the signed revocations make of a move. ``go``: make it (``reason``, when set, says
    why it was not judged). ``refused``: stay; ``reason`` is the refusal, ``report`` says whether
    to tell the server now. ``later``: the repository could not be asked; ``reason`` says why."""

    outcome: Literal["go", "refused", "later"]
    reason: str = ""
    report: bool = False


class RevocationSource(Protocol):
    """Where :class:`Downgrades` reads the signed revocations (a :class:`SignedDelivery`)."""

    def revoked(self, budget_s: float | None = None) -> Revoked: ...


class Downgrades:
    """Judges the moves the server asks for against the signed revocations: a new version
    (:meth:`update`) and leaving a version for the way back (:meth:`leave`). The revocations are
    read at most once per check-in answer, and only when a move goes back in time; revocations
    that do not verify prove nothing revoked."""

    def __init__(self, signed: RevocationSource, strikes: int = UNCONFIRMED_STRIKES) -> None:
        self.signed = signed
        self.strikes = strikes
        self._revoked: Revoked | None = None
        self._problem = ""  # why the revocations read for this answer prove nothing
        self._unconfirmed: dict[tuple[str, str], int] = {}  # (content type, version) -> answers in a row
        self._struck: set[tuple[str, str]] = set()  # of them, those counted for the current answer

    def next_answer(self) -> None:
        """A new check-in answer: the revocations are read again when needed."""
        self._revoked, self._problem = None, ""
        self._struck.clear()

    def update(self, content_type: str, c: ContentState, target: str) -> Verdict:
        """Moving from ``c.active`` to ``target`` (whose signed seq is in ``c.seqs``): refused
        when older, unless the signed revocations list the active version."""
        if c.active is None or c.active.version == target:
            return Verdict("go")
        active = c.active.version
        if c.seqs.get(active) is None:
            return Verdict("go", f"no signed seq is known for the active {active} (it came before signed "
                                 f"delivery): {target} is not judged as a downgrade")
        if not is_downgrade(c.seqs.get(active), c.seqs.get(target)):
            return Verdict("go")
        revoked = self._read()
        if isinstance(revoked, Verdict):
            return revoked
        refusal = downgrade_refusal(content_type, active, target, revoked)
        if refusal is None:
            return Verdict("go", f"{target} is older than {active}, which the signed revocations list")
        return Verdict("refused", refusal + self._problem, report=True)

    def leave(self, content_type: str, c: ContentState, leaving: str, back: str | None) -> Verdict:
        """Leaving ``leaving`` for ``back`` (None: no content) on the server's unsigned word.
        Always for a version in trial or a move forward; for a committed version going back, only
        when the signed revocations list it. ``report`` is set once, on the answer that makes
        :attr:`strikes` in a row."""
        if not c.committed(leaving) or not is_downgrade(c.seqs.get(leaving), c.seqs.get(back) if back else None):
            return Verdict("go")
        revoked = self._read()
        if isinstance(revoked, Verdict):
            return revoked
        key = (content_type, leaving)
        refusal = downgrade_refusal(content_type, leaving, back, revoked)
        if refusal is None:
            self._unconfirmed.pop(key, None)
            return Verdict("go")
        counted = key not in self._struck  # asked twice in one answer (revoked and rollback_from): one strike
        if counted:
            self._struck.add(key)
            self._unconfirmed[key] = self._unconfirmed.get(key, 0) + 1
        return Verdict("refused", refusal + self._problem,
                       report=counted and self._unconfirmed[key] == self.strikes)

    def _read(self) -> Revoked | Verdict:
        if self._revoked is None:
            try:
                self._revoked = self.signed.revoked()
            except RepositoryUnreachable as exc:
                return Verdict("later", str(exc))
            except Unverified as exc:
                self._revoked, self._problem = {}, f" (the signed revocations do not verify: {exc})"
        return self._revoked
