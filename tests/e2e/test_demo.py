"""``ringfence demo --headless --json`` as a real process: the README's first command tells its
story and leaves nothing behind.

Given a fresh machine state (a temporary data directory), 300 simulated agents and 2 real ones:
a good release completes; the 2024 file, started through the emergency path, halts in its first
wave with a capped blast radius, the devices it crashed revert, and the rollback completes. The
last line on stdout is one JSON object saying so; progress went to stderr; afterwards no process
of the demo is running and its temporary data directory is gone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.support import run_cli

pytestmark = pytest.mark.e2e

DEVICES = 300
REAL_AGENTS = 2


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain ``text`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


def test_the_demo_tells_the_story_headless_and_leaves_nothing_running() -> None:
    # When the demo runs headless with JSON output
    proc = run_cli("demo", "--headless", "--json", "--devices", str(DEVICES), "--real-agents", str(REAL_AGENTS),
                   "--seed", "2024", timeout=280)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-6000:]}\nstdout:\n{proc.stdout[-2000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])

    # Then the good release completed and the bad one was halted in its first wave and rolled back
    assert result["ok"] is True
    assert result["problems"] == []
    assert result["good_release_phase"] == "completed"
    assert result["bad_release_phase"] in ("halted", "rolled_back")
    assert result["bad_halted_wave"] == "canary"
    assert result["bad_halted_by"] == "reconciler"
    # through the emergency path, past the validators that failed it
    assert {"contract", "matrix"} <= set(result["bad_validation_failed"])
    assert result["bad_emergency"]["approved_by"] == "oncall-approver"
    assert result["bad_emergency"]["started_by"] == "release-engineer"

    # And devices failed, reverted, and the halt came within seconds of the first failure
    assert result["bad_failed"] >= 1
    assert result["bad_reverted"] >= 1
    assert result["bad_self_reverted"] >= 1  # the crash-loop guard, before any rollback
    assert result["first_failure_to_halt_s"] is not None
    assert 0 <= result["first_failure_to_halt_s"] < 60

    # And the blast radius was capped: a canary of a few devices per stratum, not the fleet
    assert result["devices"] == DEVICES + REAL_AGENTS
    assert 1 <= result["bad_exposed"] <= result["devices"] // 5

    # And the real agents took part: the Windows one crashed on the 21st field and came back
    agents = {a["platform"]: a for a in result["real_agents"]}
    assert set(agents) == {"windows", "linux"}
    assert agents["windows"]["host_crashes"] >= 1
    assert all(a["running"] == "291.1" for a in agents.values())
    assert result["fleet"]["versions"] == {"sensor/ipc-templates": {"291.1": DEVICES}}

    # And progress went to stderr; nothing of the demo is left running, its data directory is gone
    assert "HALTED" in proc.stderr
    assert result["data_dir_removed"] is True
    assert not Path(result["data_dir"]).exists()
    assert processes_mentioning(result["data_dir"]) == []
