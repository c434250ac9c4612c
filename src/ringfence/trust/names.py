"""Where an artifact lives in the TUF repository: one name for the server that signs it and the
agent that verifies it. A content type's ``/`` becomes ``~`` (never part of a name), so every
artifact is two path segments, ``sensor~ipc-templates/291.1``, inside the ``releases``
delegation."""

from __future__ import annotations

REVOCATIONS_PATH = "revocations.json"


def target_path(content_type: str, version: str) -> str:
    return f"{content_type.replace('/', '~')}/{version}"
