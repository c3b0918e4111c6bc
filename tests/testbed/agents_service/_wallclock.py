"""A clock that follows real time, for running the service as a standalone process."""

from __future__ import annotations

from datetime import UTC, datetime


class WallClock:
    """Same reading interface as VirtualClock, but it moves on its own."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def timestamp(self) -> float:
        return self.now().timestamp()
