"""The durable engine's state in a local JSON file, for the wall-clock runner.

`make start` without Core Tools runs the app on the development host (`python -m
devhost.start`); the real host keeps its task hub in Azure Storage (Azurite locally), so
orchestrations survive a restart. Here the engine's state (instances with their histories and
queued messages, activity work items, timers) is written to one JSON file after every
committed change, atomically (a temporary file in the same folder, then `os.replace`), and
loaded when the host starts. Tests keep the in-memory default (no file).

A step that was running when the process died was not committed: its messages are still
queued, its work item still listed, so it runs again after the restart (at-least-once, as
with Azure Storage queues).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .durable_engine import DurableEngine


class DurableStateFile:
    """Loads an engine's state from `path` and saves it after each commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.saves = 0

    def load(self) -> dict[str, Any] | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        state: dict[str, Any] = json.loads(text)
        return state

    def attach(self, engine: DurableEngine) -> int:
        """Load the saved state (if any) into `engine`, then save after each of its commits.

        Returns how many instances were loaded. The state of another task hub (hubName in
        host.json) is not loaded: a new hub starts empty, as in Azure Storage.
        """
        state = self.load()
        loaded = 0
        if state is not None and state.get("hubName") == engine.hub_name:
            engine.import_state(state)
            loaded = len(state["instances"])

        def save() -> None:
            self.write(engine.export_state())

        engine.on_commit = save
        save()
        return loaded

    def write(self, state: dict[str, Any]) -> None:
        """Write atomically: a reader (or the next start) sees the old file or the new one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=self.path.name, suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(state, handle, separators=(",", ":"))
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self.saves += 1
