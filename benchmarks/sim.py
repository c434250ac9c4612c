"""The fleet simulator against its targets: speed and memory at real scale, how wall time grows
with the fleet, Ringfence's default plan on the 2024 replay and on a good update, and every
strategy side by side on both.

Every measurement runs in a fresh process (this script re-invoked with ``--worker``), so its
peak memory is its own (``wait4`` rusage of that child) and nothing is cached between runs.

    python benchmarks/sim.py                 # everything (several minutes on 2 cores)
    python benchmarks/sim.py --quick         # scaling up to 1M hosts, comparison at 1M
    python benchmarks/sim.py --json          # only the JSON line

The last line printed is one JSON object: ``crowdstrike_full`` (wall, peak RSS, result),
``scaling`` (hosts -> wall), ``targets`` (each with value, target, met), ``compare``
(scenario -> one result per strategy), and ``plots`` (PNG paths).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
FULL = 10_495_000  # the crowdstrike-2024 fleet


def worker(args: argparse.Namespace) -> int:
    """One run in this process; prints its result as JSON."""
    from ringfence.sim.run import compare, run_plan
    from ringfence.sim.scenario import load_scenario

    scenario = load_scenario(args.worker)
    if args.hosts and args.hosts != scenario.fleet_spec().hosts:
        scenario = scenario.scaled(args.hosts)
    began = time.perf_counter()
    if args.compare:
        from ringfence.sim.plot import plot_runs

        results = compare(scenario, args.seed)
        out: Any = [r.as_dict() for r in results]
        if args.plot:
            plot_runs(results, Path(args.plot), f"{scenario.name}, {scenario.fleet_spec().hosts:,} hosts")
    else:
        out = run_plan(scenario, None, args.seed).as_dict()
    print(json.dumps({"wall_s": time.perf_counter() - began, "result": out}))
    return 0


def measure(scenario: str, hosts: int, seed: int, compare: bool = False, plot: str = "") -> dict[str, Any]:
    """Run one worker; its wall time (whole process, imports included) and peak RSS."""
    cmd = [sys.executable, __file__, "--worker", scenario, "--hosts", str(hosts), "--seed", str(seed)]
    if compare:
        cmd.append("--compare")
    if plot:
        cmd += ["--plot", plot]
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began
    out = proc.stdout.read() if proc.stdout else ""
    if status != 0:
        raise SystemExit(f"worker failed ({status}): {' '.join(cmd)}")
    data = json.loads(out.strip().splitlines()[-1])
    return {"hosts": hosts, "process_wall_s": round(wall, 2), "run_wall_s": round(data["wall_s"], 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "result": data["result"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="scaling up to 1M hosts; comparisons at 1M")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--hosts", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--compare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plot", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)

    def say(text: str) -> None:
        if not args.json:
            print(text, flush=True)

    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seed": args.seed}
    sizes = [10_000, 100_000, 1_000_000] + ([] if args.quick else [FULL])
    report["scaling"] = []
    for hosts in sizes:
        m = measure("crowdstrike-2024", hosts, args.seed)
        report["scaling"].append({k: m[k] for k in ("hosts", "process_wall_s", "run_wall_s", "peak_rss_mb")})
        say(f"crowdstrike-2024 @ {hosts:>10,} hosts: {m['process_wall_s']:6.1f} s wall (run {m['run_wall_s']:.1f} s), "
            f"peak {m['peak_rss_mb']:,.0f} MB")
        if hosts == FULL:
            report["crowdstrike_full"] = m
    good_hosts = 1_000_000 if args.quick else FULL
    good = measure("good-update", good_hosts, args.seed)
    say(f"good-update @ {good_hosts:,} hosts: {good['process_wall_s']:.1f} s wall, peak {good['peak_rss_mb']:,.0f} MB")
    report["good_update"] = good
    full = report.get("crowdstrike_full") or measure("crowdstrike-2024", sizes[-1], args.seed)
    bad = full["result"]
    targets = {
        "crowdstrike_wall_s": (full["process_wall_s"], "<= 60", full["process_wall_s"] <= 60),
        "crowdstrike_peak_rss_mb": (full["peak_rss_mb"], "<= 4096", full["peak_rss_mb"] <= 4096),
        "crowdstrike_crashed": (bad["crashed"], "<= 100", bad["crashed"] <= 100),
        "crowdstrike_manual_repair": (bad["manual_repair"], "= 0", bad["manual_repair"] == 0),
        "crowdstrike_first_failure_to_halt_s": (bad["first_failure_to_halt_s"], "<= 60",
                                                bad["first_failure_to_halt_s"] is not None
                                                and bad["first_failure_to_halt_s"] <= 60),
        "good_update_time_to_99pct_s": (good["result"]["time_to_99pct_s"], "<= 3600",
                                        good["result"]["time_to_99pct_s"] is not None
                                        and good["result"]["time_to_99pct_s"] <= 3600),
        "good_update_halted": (good["result"]["halted"], "false", not good["result"]["halted"]),
    }
    report["targets"] = {k: {"value": v, "target": t, "met": ok} for k, (v, t, ok) in targets.items()}
    for k, (v, t, ok) in targets.items():
        say(f"target {k}: {v} ({t}): {'met' if ok else 'MISSED'}")
    report["compare"], report["plots"] = {}, {}
    compare_hosts = 1_000_000 if args.quick else FULL
    for scenario in ("crowdstrike-2024", "good-update"):
        plot = str(ROOT / "results" / f"sim-compare-{scenario}.png")
        m = measure(scenario, compare_hosts, args.seed, compare=True, plot=plot)
        report["compare"][scenario] = {"hosts": compare_hosts, "process_wall_s": m["process_wall_s"],
                                       "results": m["result"]}
        report["plots"][scenario] = plot
        say(f"\n{scenario} @ {compare_hosts:,} hosts ({m['process_wall_s']:.0f} s):")
        say(f"{'strategy':30} {'exposed':>10} {'crashed':>10} {'auto-rec':>10} {'manual':>10} {'halt s':>8} "
            f"{'99% min':>8}")
        for r in m["result"]:
            halt = "-" if r["first_failure_to_halt_s"] is None else f"{r['first_failure_to_halt_s']:.0f}"
            t99 = "-" if r["time_to_99pct_s"] is None else f"{r['time_to_99pct_s'] / 60:.0f}"
            say(f"{r['strategy']:30} {r['exposed']:>10,} {r['crashed']:>10,} {r['auto_recovered']:>10,} "
                f"{r['manual_repair']:>10,} {halt:>8} {t99:>8}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
