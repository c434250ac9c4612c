"""``ringfence sim run`` and ``sim compare`` as a person or a script runs them: the JSON contract
on the last line, the plot, and scenario errors that name the field and the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import run_cli

pytestmark = pytest.mark.e2e

CONTRACT = {"hosts", "exposed", "crashed", "auto_recovered", "manual_repair", "first_failure_to_halt_s",
            "time_to_99pct_s", "halted", "wall_s"}


def test_sim_run_replays_2024_and_prints_the_contract_as_its_last_line(tmp_path: Path) -> None:
    plot = tmp_path / "run.png"
    proc = run_cli("sim", "run", "crowdstrike-2024", "--hosts", "50000", "--seed", "7", "--json", "--plot", str(plot),
                   check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) >= CONTRACT
    assert result["hosts"] == 50_000 and result["halted"] is True
    assert 0 < result["crashed"] <= 100 and result["manual_repair"] == 0
    assert result["time_to_99pct_s"] is None  # a bad update: nobody should get it
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sim_compare_lists_every_strategy_on_the_same_fleet(tmp_path: Path) -> None:
    plan = Path(__file__).resolve().parents[2] / "examples" / "plans" / "rapid-content.yaml"
    proc = run_cli("sim", "compare", "good-update", "--hosts", "20000", "--plan", str(plan), "--json", check=True)
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["strategy"] for r in results] == [
        "ringfence", "global-push", "appconfig-all-at-once", "appconfig-linear-20pct-6min",
        "appconfig-canary-10pct-20min", "argo-canary", "flagger"]
    for r in results:
        assert set(r) >= CONTRACT and r["hosts"] == 20_000 and r["crashed"] == 0 and not r["halted"]
        assert r["time_to_99pct_s"] is not None
    assert results[0]["time_to_99pct_s"] <= 3600


def test_a_bad_scenario_file_names_field_and_line(tmp_path: Path) -> None:
    scenario = tmp_path / "mine.yaml"
    scenario.write_text("name: mine\nfleet:\n  regions: {eu: {share: -1}}\n  platforms: {windows: {hosts: 10}}\n")
    proc = run_cli("sim", "run", str(scenario))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {scenario}:3: fleet.regions.eu.share: Input should be greater than 0"
    assert run_cli("sim", "compare", "no-such-scenario").returncode == 2
