"""Poll schedules (ours and the baselines) and a deterministic poll-schedule simulator.

Each strategy yields the instants of its status checks, as integer microseconds after the run
started (the relay's timers are whole microseconds too, so the simulation is exact). A run of
duration D is detected by the first check at or after D; a finite schedule that ends before
then gave up. Ours uses `shared.core.schedule.poll_wait_seconds`, the function the orchestrator
calls; the simulator's results are checked against the real orchestrator's polls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal, Protocol

from shared.core.schedule import PollingPolicy, poll_wait_seconds
from shared.http.api import idempotent_submission_id, key_caller

MICROS = 1_000_000
DEFAULT_POLICY = PollingPolicy(initial_seconds=2.0, max_seconds=30.0, multiplier=1.5, jitter=0.1)
# The classic Durable monitor gives up at an expiry; ours defaults to a 6 h deadline too.
MONITOR_EXPIRY_SECONDS = 6 * 3600

Deployment = Literal["durable", "in-process"]


def to_micros(seconds: float) -> int:
    """Whole microseconds, rounded as `timedelta(seconds=...)` rounds them."""
    return timedelta(seconds=seconds) // timedelta(microseconds=1)


class Strategy(Protocol):
    @property
    def key(self) -> str: ...

    @property
    def label(self) -> str: ...

    @property
    def deployment(self) -> Deployment: ...

    def poll_offsets(self, seed: str) -> Iterator[int]:
        """Check instants (us after the run started), ascending; finite if it gives up."""
        ...


@dataclass(frozen=True)
class RelaySchedule:
    """The relay's schedule: wait = (multiplier - 1) x elapsed within [initial, max], jittered.

    With `fast_path_seconds` > 0 the start activity follows the run's stream for that long: a
    run ending inside the window is seen at once with no poll, and the schedule goes on from
    the window's end as if it had been polling since the run started (as the orchestrator
    anchors it after a fallback).
    """

    policy: PollingPolicy = DEFAULT_POLICY
    key: str = "ours"
    label: str = "ours (2 s, x1.5, cap 30 s)"
    deployment: Deployment = "durable"
    fast_path_seconds: float = 0.0

    def poll_offsets(self, seed: str) -> Iterator[int]:
        elapsed_us, step = to_micros(self.fast_path_seconds), 0
        while True:
            # Exactly what the orchestrator computes: elapsed = (now - anchor).total_seconds().
            wait = poll_wait_seconds(self.policy, elapsed_us / MICROS, step, seed)
            elapsed_us += to_micros(wait)
            step += 1
            yield elapsed_us


@dataclass(frozen=True)
class FixedInterval:
    """A check every `interval` seconds, the first at `first` seconds; at most `max_polls`."""

    key: str
    label: str
    deployment: Deployment
    interval: float
    first: float
    max_polls: int | None = None

    def poll_offsets(self, seed: str) -> Iterator[int]:
        polls = 0
        at = to_micros(self.first)
        step = to_micros(self.interval)
        while self.max_polls is None or polls < self.max_polls:
            yield at
            polls += 1
            at += step


@dataclass(frozen=True)
class WaitList:
    """A check at `first`, then after each wait in `waits` (a finite schedule)."""

    key: str
    label: str
    deployment: Deployment
    first: float
    waits: tuple[float, ...]

    def poll_offsets(self, seed: str) -> Iterator[int]:
        at = to_micros(self.first)
        yield at
        for wait in self.waits:
            at += to_micros(wait)
            yield at


def fixed_one_second() -> FixedInterval:
    """`runs.create_and_process`: sleep(polling_interval=1) then GET, until a final status."""
    return FixedInterval(
        key="fixed-1s",
        label="fixed 1 s (create_and_process)",
        deployment="in-process",
        interval=1.0,
        first=1.0,
    )


def durable_monitor_60s() -> FixedInterval:
    """The Durable monitor sample: check at once, then a 60 s timer, until a 6 h expiry."""
    return FixedInterval(
        key="monitor-60s",
        label="Durable monitor, fixed 60 s",
        deployment="durable",
        interval=60.0,
        first=0.0,
        max_polls=MONITOR_EXPIRY_SECONDS // 60 + 1,
    )


@dataclass
class _VirtualSleep:
    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


TENACITY_RECIPE = (
    "@retry(wait=wait_exponential(multiplier=2, min=1, max=60), stop=stop_after_attempt(30), "
    "retry=retry_if_result(still running)) around runs.get, called right after runs.create"
)


def tenacity_waits(attempts_seen: int | None = None) -> tuple[float, ...]:
    """The waits tenacity's own Retrying loop sleeps for the recipe, on a never-ending run.

    The recipe's wait/stop objects run inside tenacity's Retrying (virtual sleep), so the
    schedule is tenacity's, not a re-implementation: [2, 4, 8, 16, 32, 60, 60, ...], 29 waits.
    """
    import tenacity

    sleep = _VirtualSleep()
    retrying = tenacity.Retrying(
        wait=tenacity.wait_exponential(multiplier=2, min=1, max=60),
        stop=tenacity.stop_after_attempt(30),
        retry=tenacity.retry_if_result(lambda finished: not finished),
        sleep=sleep,
    )
    with contextlib.suppress(tenacity.RetryError):
        retrying(lambda: False)
    return tuple(sleep.sleeps)


def tenacity_recipe() -> WaitList:
    return WaitList(
        key="tenacity",
        label="tenacity exp. backoff (2..60 s, 30 tries)",
        deployment="in-process",
        first=0.0,
        waits=tenacity_waits(),
    )


def tenacity_detects(duration: float) -> tuple[int, float | None]:
    """Run the recipe itself (tenacity's Retrying) against a run of `duration` seconds.

    Returns (polls, detected-after seconds or None when it gave up). Used to cross-check the
    WaitList simulation of the same recipe.
    """
    import tenacity

    sleep = _VirtualSleep()
    polls = 0

    def poll() -> bool:
        nonlocal polls
        polls += 1
        return sleep.now >= duration

    retrying = tenacity.Retrying(
        wait=tenacity.wait_exponential(multiplier=2, min=1, max=60),
        stop=tenacity.stop_after_attempt(30),
        retry=tenacity.retry_if_result(lambda finished: not finished),
        sleep=sleep,
    )
    try:
        retrying(poll)
    except tenacity.RetryError:
        return polls, None
    return polls, sleep.now


def tenacity_available() -> bool:
    try:
        import tenacity  # noqa: F401
    except ImportError:
        return False
    return True


def baselines(*, with_tenacity: bool = True) -> list[Strategy]:
    found: list[Strategy] = [fixed_one_second()]
    if with_tenacity:
        found.append(tenacity_recipe())
    found.append(durable_monitor_60s())
    return found


@dataclass(frozen=True)
class Outcome:
    """How one strategy fared on one run."""

    polls: int
    detected_us: int | None  # check that saw the end, us after the start; None: gave up
    last_us: int  # the last check made (the detection, or where the schedule gave up)

    @property
    def gave_up(self) -> bool:
        return self.detected_us is None

    def delay(self, duration: float) -> float | None:
        if self.detected_us is None:
            return None
        return (self.detected_us - to_micros(duration)) / MICROS


def simulate(strategy: Strategy, duration: float, seed: str) -> Outcome:
    end_us = to_micros(duration)
    window = getattr(strategy, "fast_path_seconds", 0.0)
    if window > 0 and end_us <= to_micros(window):
        return Outcome(0, end_us, end_us)  # seen on the stream as it ends
    polls, last = 0, 0
    for at in strategy.poll_offsets(seed):
        polls, last = polls + 1, at
        if at >= end_us:
            return Outcome(polls, at, at)
    return Outcome(polls, None, last)


# The function key the test bed's host hands out (devhost/functions_host/host.py).
BENCH_FUNCTION_KEY = "test-function-key"


def submission_id_for(idempotency_key: str) -> str:
    """The submission id POST /api/runs derives from an Idempotency-Key sent with the bed's
    function key (checked against the app's own answer in every benchmark run, so a change
    there fails loudly)."""
    return idempotent_submission_id(key_caller(BENCH_FUNCTION_KEY), idempotency_key)


def delay_bound(policy: PollingPolicy, duration: float) -> float:
    """The documented worst case: max(initial, (multiplier - 1) x duration), capped."""
    return min(max(policy.initial_seconds, (policy.multiplier - 1) * duration), policy.max_seconds)
