"""`ringfence demo --headless --json` on an idle machine and with every core busy.

The demo's own check (``ringfence.demo.outcome.untold``) passes only when the good release
completed and the bad one halted in its canary with nobody exposed beyond it. Slowness must stop
exposure, never safety: this runs the demo ``--runs`` times idle and ``--runs`` times while
``--burners`` processes spin on the CPU (default: one per core), alternating, and reports every
run's outcome and the medians.

    python benchmarks/demo_load.py --runs 3 [--burners 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RINGFENCE = [sys.executable, "-m", "ringfence"]


def _burn(stop_at: float) -> None:
    while time.monotonic() < stop_at:
        pass


def one_run(burners: int, timeout_s: float) -> dict[str, Any]:
    procs: list[multiprocessing.Process] = []
    stop_at = time.monotonic() + timeout_s
    for _ in range(burners):
        p = multiprocessing.Process(target=_burn, args=(stop_at,), daemon=True)
        p.start()
        procs.append(p)
    began = time.monotonic()
    try:
        done = subprocess.run([*RINGFENCE, "demo", "--headless", "--json"], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    finally:
        for p in procs:
            p.terminate()
            p.join(5)
    wall = time.monotonic() - began
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    outcome: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    return {"burners": burners, "exit": done.returncode, "wall_s": round(wall, 1), "ok": outcome.get("ok", False),
            "good_release_phase": outcome.get("good_release_phase"),
            "bad_release_phase": outcome.get("bad_release_phase"),
            "bad_halted_wave": outcome.get("bad_halted_wave"), "bad_exposed": outcome.get("bad_exposed"),
            "bad_canary_admitted": outcome.get("bad_canary_admitted"),
            "bad_beyond_canary": outcome.get("bad_beyond_canary"), "bad_failed": outcome.get("bad_failed"),
            "first_failure_to_halt_s": outcome.get("first_failure_to_halt_s"),
            "good_release_s": outcome.get("good_release_s"), "problems": outcome.get("problems", ["no outcome"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per condition (idle, loaded)")
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 2, help="CPU-bound processes when loaded")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per demo run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    for i in range(args.runs * 2):
        burners = args.burners if i % 2 else 0
        run = one_run(burners, args.timeout)
        runs.append(run)
        print(f"run {i + 1}: burners {burners}: ok {run['ok']}, bad halted in {run['bad_halted_wave']!r} with "
              f"{run['bad_exposed']} exposed ({run['bad_beyond_canary']} beyond the canary's "
              f"{run['bad_canary_admitted']}), {run['wall_s']} s", file=sys.stderr)
    summary: dict[str, Any] = {}
    for name, burners in (("idle", 0), ("loaded", args.burners)):
        mine = [r for r in runs if r["burners"] == burners]
        summary[name] = {
            "runs": len(mine), "ok": sum(bool(r["ok"]) for r in mine),
            "median_wall_s": statistics.median(r["wall_s"] for r in mine),
            "median_bad_exposed": statistics.median(r["bad_exposed"] or 0 for r in mine),
            "max_beyond_canary": max(r["bad_beyond_canary"] or 0 for r in mine),
            "median_first_failure_to_halt_s": statistics.median(
                r["first_failure_to_halt_s"] for r in mine if r["first_failure_to_halt_s"] is not None)
            if any(r["first_failure_to_halt_s"] is not None for r in mine) else None,
        }
    report = {"runs": runs, "summary": summary, "cpus": os.cpu_count(), "python": sys.version.split()[0],
              "cwd": str(Path.cwd())}
    if args.json:
        print(json.dumps(report))
    else:
        for name, s in summary.items():
            print(f"{name:7} ok {s['ok']}/{s['runs']}  wall {s['median_wall_s']} s  bad exposed "
                  f"{s['median_bad_exposed']}  beyond canary (max) {s['max_beyond_canary']}  first failure -> halt "
                  f"{s['median_first_failure_to_halt_s']} s")
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
