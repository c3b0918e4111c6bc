"""I/O behind small interfaces: settings, SDK clients, the Agents service, Event Grid, logging.

`AgentsBackend` and `EventPublisher` (agents_backend.py) are what the activities call; the
azure-ai-agents SDK (azure_agents.py) and Event Grid (eventgrid.py) implement them.
"""

from .agents_backend import AgentsBackend, EventPublisher, agents_backend, event_publisher
from .clients import close_clients, get_clients
from .observability import bind_log_fields, configure_telemetry, install_log_fields, log_fields
from .runtime import on_reset, reset_worker_state
from .settings import Settings, SettingsError, get_settings, load_settings

__all__ = [
    "AgentsBackend",
    "EventPublisher",
    "Settings",
    "SettingsError",
    "agents_backend",
    "bind_log_fields",
    "close_clients",
    "configure_telemetry",
    "event_publisher",
    "get_clients",
    "get_settings",
    "install_log_fields",
    "load_settings",
    "log_fields",
    "on_reset",
    "reset_worker_state",
]
