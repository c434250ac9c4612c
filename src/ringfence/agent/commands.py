"""Running the programs an agent is configured with (install scripts, health commands).

Each runs in its own process group, so a timeout stops everything it started — a slow install
script must not keep running while the rollback runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Finished:
    returncode: int
    output: str  # the tail of stderr (or stdout when stderr is empty), whole lines


class TimedOut(Exception):
    pass


def run(argv: tuple[str, ...], env: dict[str, str], timeout: float) -> Finished:
    """Run ``argv`` to completion or until ``timeout`` (then the whole group is killed and
    :class:`TimedOut` raised). OSError when it cannot start."""
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise TimedOut from None
    return Finished(proc.returncode, last_lines((stderr or stdout).decode(errors="replace")))


def last_lines(text: str, limit: int = 300) -> str:
    """The end of ``text``, at most ``limit`` characters, starting at a line boundary."""
    text = text.strip()
    if len(text) <= limit:
        return text
    tail = text[-limit:]
    cut = tail.find("\n")
    return tail[cut + 1:] if 0 <= cut < len(tail) - 1 else tail
