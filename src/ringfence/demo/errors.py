"""What stops the demo from telling its story at all.

The demo's own failures are the domain's errors (:mod:`ringfence.core.errors`), so the command
line maps them to its exit codes as it does everywhere::

    RingfenceError
     ├── InvalidInput    a setting, the data directory, the port, or no examples/ to publish  -> 2
     ├── Unavailable     the control plane did not start or stopped answering                -> 6
     └── ApiRefused      the API refused a call the story makes (a bug, or a changed rule)   -> 1

A story that does not end as told (the good release does not complete, the bad one is not
halted) is not an error: the :class:`~ringfence.demo.outcome.Outcome` says what happened instead.
"""

from __future__ import annotations

from typing import Any

from ringfence.core.errors import InvalidInput, RingfenceError, Unavailable

__all__ = ["ApiRefused", "InvalidInput", "Unavailable"]


class ApiRefused(RingfenceError):
    """The server answered a call of the story with an error: ``status`` and its message."""

    code = "api_refused"

    def __init__(self, message: str, status: int, **details: Any) -> None:
        super().__init__(message, status=status, **details)
        self.status = status
        self.reply: dict[str, Any] = details.get("reply") or {}  # the error's ``details``, as the server gave them
