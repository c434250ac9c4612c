"""The ``ringfence`` console script. ``agent run`` goes straight to the agent's own lean entry
point (the endpoint process should not carry the operator CLI's libraries for months); every other
command, and ``agent run --help``, goes to the typer application."""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:2] == ["agent", "run"] and not {"--help", "-h"} & set(args):
        from ringfence.agent.daemon import main as agent_main

        raise SystemExit(agent_main(args[2:]))
    from ringfence.cli.main import main as cli_main

    cli_main()
