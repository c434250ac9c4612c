"""The ``ringfence`` console script. ``agent run`` goes straight to the agent's own lean entry
point (the endpoint process should not carry the operator CLI's libraries for months); every other
command, and ``agent run --help``, goes to the typer application."""

from __future__ import annotations

import sys
import types
from typing import Any


def main() -> None:
    args = sys.argv[1:]
    if args[:2] == ["agent", "run"] and not {"--help", "-h"} & set(args):
        _lean()
        from ringfence.agent.daemon import main as agent_main

        raise SystemExit(agent_main(args[2:]))
    from ringfence.cli.main import main as cli_main

    cli_main()


class _NotLoaded:
    """Stands in for python-tuf's urllib3 fetcher in the agent process."""

    def __init__(self, *_: Any, **__: Any) -> None:
        raise RuntimeError("the agent fetches TUF metadata through ringfence.trust.fetchers.HttpxFetcher")


def _lean() -> None:
    """Keep out of the endpoint process what it never uses (it runs for months on every machine).

    * httpx imports its own command line (click, rich, pygments) when those are installed, as they
      are with Ringfence's: a None entry makes that import fail, which httpx expects.
    * python-tuf's updater imports its urllib3 fetcher (urllib3, about 2 MB) even for a caller that
      brings its own fetcher, as the agent always does: a module with a placeholder stands in.
    """
    if "httpx" not in sys.modules:
        sys.modules["httpx._main"] = None  # type: ignore[assignment]
    if "tuf.ngclient" not in sys.modules:
        stub = types.ModuleType("tuf.ngclient.urllib3_fetcher", "not loaded: the agent brings its own fetcher")
        stub.Urllib3Fetcher = _NotLoaded  # type: ignore[attr-defined]
        sys.modules[stub.__name__] = stub
