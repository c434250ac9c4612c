"""``ringfence agent run``: the agent as a long-running process.

The console script sends ``agent run`` here before it imports the rest of the command line (typer,
rich), so the process that runs for months on every endpoint carries only what the agent needs.
The typer command of the same name (for ``--help`` and the command reference) calls
:func:`run_agent` too: one implementation, two front doors.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from ringfence.agent.agent import Agent, AgentError
from ringfence.agent.config import AgentConfig, load_attributes, load_config
from ringfence.agent.journal import Journal, summary
from ringfence.core.errors import RingfenceError

EXIT_INVALID = 2


def run_agent(*, server: str | None, enroll_token: str | None, state_dir: Path, once: bool = False,
              attributes: Path | None = None, config: Path | None = None, log_format: str = "text",
              json_out: bool = False, trusted_root: Path | None = None) -> int:
    """Run the agent until SIGTERM/SIGINT (or one check-in with ``once``); returns the exit code.
    Errors are one line on stderr: ``error: ...``."""
    from ringfence.logs import configure

    if log_format not in ("text", "json"):
        return _fail(f"--log-format must be text or json, not {log_format!r}", EXIT_INVALID)
    if not server:
        return _fail("no server: give --server or set RINGFENCE_SERVER", EXIT_INVALID)
    try:
        base: dict[str, object] = {"server": server, "state_dir": state_dir, "enroll_token": enroll_token}
        if attributes is not None:
            base["attributes"] = load_attributes(attributes)
        if trusted_root is not None:  # wins over the config file's trust.root
            base["trusted_root"] = trusted_root.expanduser().resolve()
        settings = load_config(config, **base) if config is not None else AgentConfig(**base)  # type: ignore[arg-type]
    except RingfenceError as exc:
        return _fail(exc.message, EXIT_INVALID)
    configure(log_format)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise on an endpoint
    agent = Agent(settings)

    def _stop(signum: int, _frame: object) -> None:
        agent.stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        agent.run(once=once)
    except AgentError as exc:
        return _fail(str(exc), exc.exit_code)
    if once and json_out:  # the agent closed its journal: read it again
        print(json.dumps(summary(Journal.open(state_dir).state), indent=2, sort_keys=True))
    return 0


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ringfence agent run",
                                     description="Run the endpoint agent: enroll once, then check in and apply "
                                                 "updates safely.")
    parser.add_argument("--server", default=os.environ.get("RINGFENCE_SERVER"))
    parser.add_argument("--enroll-token", default=os.environ.get("RINGFENCE_ENROLL_TOKEN"))
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--once", action="store_true")
    parser.add_argument("--attributes", type=Path)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--log-format", default="text")
    parser.add_argument("--json", dest="json_out", action="store_true")
    parser.add_argument("--trusted-root", type=Path)
    args = parser.parse_args(argv)
    return run_agent(**vars(args))
