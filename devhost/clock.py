"""Virtual time shared by the emulated Functions host and the loopback services.

Durable timers fire by advancing this clock, and the loopback Agents service computes run
progress from it, so hours of polling take milliseconds of wall time.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

DEFAULT_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class VirtualClock:
    """A thread-safe clock that only moves when told to."""

    def __init__(self, start: datetime = DEFAULT_EPOCH) -> None:
        if start.tzinfo is None:
            raise ValueError("VirtualClock needs a timezone-aware start")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def timestamp(self) -> float:
        """Seconds since the Unix epoch, as the Agents service reports times."""
        return self.now().timestamp()

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("time does not run backwards")
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now

    def advance_to(self, moment: datetime) -> datetime:
        """Move forward to `moment`; a moment in the past leaves the clock where it is."""
        with self._lock:
            if moment > self._now:
                self._now = moment.astimezone(UTC)
            return self._now


class WallClock:
    """The VirtualClock's reading interface on real time, for standalone (local dev) services."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def timestamp(self) -> float:
        return self.now().timestamp()


class RealTimeClock(VirtualClock):
    """The wall clock where a VirtualClock is expected: for the wall-clock runner
    (`python -m devhost.start`), whose driver fires durable timers when they are really due.

    It cannot be moved: `advance`/`advance_to` (the test drivers' `run_until_complete`,
    `advance`, `advance_to_next_timer`) raise instead of skipping time.
    """

    def __init__(self) -> None:
        super().__init__(datetime.now(UTC))

    def now(self) -> datetime:
        return datetime.now(UTC)

    def advance(self, seconds: float) -> datetime:
        raise RuntimeError("the real-time clock cannot be advanced")

    def advance_to(self, moment: datetime) -> datetime:
        raise RuntimeError("the real-time clock cannot be advanced")
