"""Change a running bed's app settings the way Azure does: new values, then a new worker process.

Settings are read once per worker process (shared/adapters/settings.py), so a change takes effect when
the worker restarts, as it does in Azure when app settings change. Some values are known only
once the bed runs (the id of the agent it created), hence a change rather than a new bed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from shared.adapters.clients import close_clients
from tests.relay_bed import RelayBed


def _restart(bed: RelayBed) -> None:
    bed.host.run_on_worker(close_clients())
    bed.host.restart_worker()


@contextmanager
def changed_settings(bed: RelayBed, **values: str | None) -> Iterator[RelayBed]:
    """App settings changed (None: removed) while the block runs, restored after it."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _restart(bed)
        yield bed
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _restart(bed)
