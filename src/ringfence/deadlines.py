"""HTTP exchanges bounded by one wall-clock deadline, as the agent needs them.

httpx bounds each phase of a request (connect, write, every read) and a read timeout starts
again with every byte received, so a server that sends one byte a second can hold a request for
as long as it likes. Here the exchange runs on a worker thread that hands each piece of the body
over as it arrives; the caller waits for pieces only until the deadline, then gives up with
:class:`DeadlineExceeded` (an ``httpx.TimeoutException``, so callers that already treat timeouts
as "unreachable" need nothing new). The worker's own phase timeouts are cut to what is left of the
deadline when it starts, and it stops at the next piece once the caller has gone, so it outlives
the caller by at most one read timeout.

``time.monotonic()`` is the clock: deadlines survive the wall clock being set.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

_PUT_POLL_S = 0.05  # how often a worker blocked on a full hand-over looks whether the caller left
_QUEUE = 16  # pieces in hand-over at most (back-pressure on a fast server and a slow disk)


class DeadlineExceeded(httpx.TimeoutException):
    """The exchange did not finish by its deadline."""


class Exchange:
    """One request whose answer is read piece by piece before ``deadline``. Use as a context
    manager (leaving it lets the worker go); :attr:`response` holds the status and headers."""

    def __init__(self, client: httpx.Client, request: httpx.Request, deadline: float) -> None:
        self._client, self._request, self._deadline = client, request, deadline
        self._pieces: queue.Queue[tuple[str, Any]] = queue.Queue(_QUEUE)
        self._gone = threading.Event()
        left = max(deadline - time.monotonic(), 0.001)
        timeouts = dict(request.extensions.get("timeout") or {})
        request.extensions["timeout"] = {phase: left if value is None else min(value, left)
                                         for phase, value in {"connect": None, "read": None, "write": None,
                                                              "pool": None, **timeouts}.items()}
        self._worker = threading.Thread(target=self._work, name="ringfence-http", daemon=True)
        self._worker.start()
        kind, value = self._next()
        if kind == "error":
            raise value
        self.response: httpx.Response = value

    def __enter__(self) -> Exchange:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._gone.set()

    def pieces(self) -> Iterator[bytes]:
        """The body (decoded as httpx decodes it), as it arrives; :class:`DeadlineExceeded`
        when the deadline passes first."""
        while True:
            kind, value = self._next()
            if kind == "piece":
                yield value
            elif kind == "end":
                return
            else:
                raise value

    def read(self) -> bytes:
        """The whole body, before the deadline."""
        return b"".join(self.pieces())

    # -- the two sides -------------------------------------------------------------------------
    def _next(self) -> tuple[str, Any]:
        left = self._deadline - time.monotonic()
        try:
            if left > 0:
                return self._pieces.get(timeout=left)
        except queue.Empty:
            pass
        self.close()
        raise DeadlineExceeded(f"{self._request.method} {self._request.url}: no complete answer within the "
                               f"deadline", request=self._request)

    def _work(self) -> None:
        try:
            response = self._client.send(self._request, stream=True)
        except Exception as exc:  # handed to the caller, who raises it
            self._put(("error", exc))
            return
        try:
            if not self._put(("head", response)):
                return
            for piece in response.iter_bytes():
                if not self._put(("piece", piece)):
                    return
            self._put(("end", None))
        except Exception as exc:
            self._put(("error", exc))
        finally:
            response.close()

    def _put(self, item: tuple[str, Any]) -> bool:
        """Hand ``item`` over; False once the caller has gone."""
        while not self._gone.is_set():
            with contextlib.suppress(queue.Full):
                self._pieces.put(item, timeout=_PUT_POLL_S)
                return True
        return False


def within(seconds: float) -> float:
    """The deadline ``seconds`` from now."""
    return time.monotonic() + seconds
