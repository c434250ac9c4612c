"""The Ringfence endpoint agent, as a library: ``Agent(AgentConfig(...)).run()``.

The command ``ringfence agent run`` is a thin wrapper over this; tests and the simulator's live
mode embed it directly (with their own transport, clock and probes).
"""

from ringfence.agent.agent import Agent, AgentError
from ringfence.agent.answers import HashOnly, Verifier
from ringfence.agent.config import (
    AgentConfig,
    ContentTypeSpec,
    ProbeSpec,
    default_attributes,
    load_attributes,
    load_config,
)
from ringfence.agent.probes import CallableProbe, CommandProbe, HttpProbe, Probe, ProbeResult
from ringfence.agent.signed import SignedDelivery
from ringfence.agent.transport import HttpTransport, Transport

__all__ = [
    "Agent", "AgentConfig", "AgentError", "CallableProbe", "CommandProbe", "ContentTypeSpec", "HashOnly",
    "HttpProbe", "HttpTransport", "Probe", "ProbeResult", "ProbeSpec", "SignedDelivery", "Transport",
    "Verifier",
    "default_attributes", "load_attributes", "load_config",
]
