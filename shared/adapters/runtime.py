"""Per-process state of the worker, and how to drop it (a new process starts without it).

The app's own caches (settings, SDK clients) are dropped here; a component with caches of its
own (the sample subscriber's table client) registers a hook, so nothing here depends on it.
"""

from __future__ import annotations

from collections.abc import Callable

from .clients import reset_clients
from .settings import reset_settings

_reset_hooks: list[Callable[[], None]] = []


def on_reset(hook: Callable[[], None]) -> None:
    """Call `hook` whenever the worker's state is dropped (registered once per function)."""
    if hook not in _reset_hooks:
        _reset_hooks.append(hook)


def reset_worker_state() -> None:
    reset_settings()
    reset_clients()
    for hook in _reset_hooks:
        hook()
