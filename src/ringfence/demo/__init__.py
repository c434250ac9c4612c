"""``ringfence demo``: the whole system at work on one machine, in a few minutes.

A control plane on SQLite in a temporary data directory (``ringfence init`` and
``ringfence server``, as child processes); the example content type ``sensor/ipc-templates``
with its definition; a fleet of simulated agents in this process speaking the agent API over
real HTTP (:mod:`ringfence.sim.live`), a few hundred to a few thousand spread over platforms and
regions; and a few real ``ringfence agent run`` processes supervising the sample sensor. Then
:mod:`~ringfence.demo.story`: a good release completes, and the 2024 file, pushed through the
emergency path past its failed validation, halts in its first wave, the machines it crashed
revert by themselves, and a rollback returns the rest. :class:`~ringfence.demo.outcome.Outcome`
holds the numbers.

Modules: ``settings`` (one typed config, the example files), ``control_plane`` (server process
and API client), ``lab`` (the real agents, rebooted when their sensor takes them down),
``story`` (the steps), ``outcome`` (the numbers and whether the story was told), ``run`` (start
everything, tell the story, stop everything in order).
"""

from ringfence.demo.outcome import Outcome, untold
from ringfence.demo.run import Stage, run_demo, stop_all
from ringfence.demo.settings import DemoSettings, Examples

__all__ = ["DemoSettings", "Examples", "Outcome", "Stage", "run_demo", "stop_all", "untold"]
