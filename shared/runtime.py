"""Per-process state of the worker, and how to drop it (a new process starts without it)."""

from __future__ import annotations

from .clients import reset_clients
from .settings import reset_settings
from .subscriber.dedup import reset_tables


def reset_worker_state() -> None:
    reset_settings()
    reset_clients()
    reset_tables()
