"""PNG plots of simulated runs: hosts exposed, crashed and recovered over time, one line per
strategy. Counts span from tens to millions, so the axes are logarithmic."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ringfence.sim.result import RunResult


def plot_runs(results: Sequence[RunResult], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    panels = (("exposed_curve", "hosts exposed"), ("crashed_curve", "hosts crashed (ever)"),
              ("recovered_curve", "crashed hosts running again"))
    fig, axes = plt.subplots(1, 3, figsize=(16, 5), sharex=True)
    # Show the hours in which something happens (at least one, at most the horizon).
    last = max((_last_change(r) for r in results), default=60.0)
    x_max = min(max(60.0, last * 1.25), max(r.minutes[-1] for r in results)) / 60
    for ax, (attr, label) in zip(axes, panels, strict=True):
        for r in results:
            hours = [m / 60 for m in r.minutes]
            values = [max(v, 0.8) for v in getattr(r, attr)]  # log axis: zero drawn just below 1
            style = {"linewidth": 2.5, "color": "black"} if r.strategy.startswith("ringfence") else {"linewidth": 1.3}
            ax.plot(hours, values, label=r.strategy, **style)
        ax.set_yscale("log")
        ax.set_ylim(0.8, max(r.hosts for r in results) * 1.5)
        ax.set_title(label)
        ax.set_xlabel("hours since the release")
        ax.set_xlim(0, x_max)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def _last_change(r: RunResult) -> float:
    """The last minute at which any of the run's curves moves."""
    last = 0.0
    for curve in (r.exposed_curve, r.crashed_curve, r.recovered_curve):
        for i in range(1, len(curve)):
            if curve[i] != curve[i - 1]:
                last = max(last, r.minutes[i])
    return last
