"""The endpoint process carries what the agent needs and nothing of the operator's command line:
``ringfence agent run``, started the way the console script starts it, as a real process whose
imported modules are listed when it exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CLI_STACK = {"typer", "click", "rich", "pygments", "shellingham"}

LIST_AT_EXIT = """\
import atexit, json, sys
atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))
sys.argv = ["ringfence", "agent", "run", *sys.argv[1:]]
from ringfence.cli.entry import main
main()
"""


def modules_of_agent_run(*args: str) -> tuple[int, set[str]]:
    done = subprocess.run([sys.executable, "-c", LIST_AT_EXIT, *args], capture_output=True, text=True,
                          timeout=120, check=False)
    return done.returncode, set(json.loads(done.stderr.strip().splitlines()[-1]))


def test_agent_run_imports_the_agent_and_trust_stack_and_nothing_of_the_cli(tmp_path: Path) -> None:
    # no server: the agent refuses to start (exit 2) after everything it runs with is imported
    code, modules = modules_of_agent_run("--state-dir", str(tmp_path / "state"))
    assert code == 2
    assert {"ringfence.agent.agent", "ringfence.trust.client", "tuf.ngclient.updater", "httpx"} <= modules
    top = {m.split(".")[0] for m in modules}
    assert not CLI_STACK & top, f"the agent process imported {sorted(CLI_STACK & top)}"
    assert not {m for m in modules if m.startswith("ringfence.cli.") and m != "ringfence.cli.entry"}
    # python-tuf's own fetcher stays out too (the agent brings its own), and so do the trust
    # package's operator and server parts
    assert "urllib3" not in top
    assert not {"ringfence.trust.keys", "ringfence.trust.repository"} & modules


def test_agent_run_help_is_the_cli_and_may_import_it(tmp_path: Path) -> None:
    """The other door, for contrast: ``--help`` goes to the typer application, so the walk above
    would see the CLI stack if the agent's door let it in."""
    _, modules = modules_of_agent_run("--help")
    assert {"typer", "rich"} <= {m.split(".")[0] for m in modules}
