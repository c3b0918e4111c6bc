"""The Durable Functions layer: the orchestrator and the activities it calls."""

from . import activities
from .event_waits import EventWaits
from .orchestrator import relay_orchestrator

__all__ = ["EventWaits", "activities", "relay_orchestrator"]
