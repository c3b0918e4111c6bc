"""Wait schedules: polling anchored to elapsed time, and exponential retry backoff.

Polling waits are `(multiplier - 1) x elapsed`, kept between `initialSeconds` and `maxSeconds`:
as elapsed time grows by the multiplier each poll, so do the waits (exponential backoff), and
a run is never seen later than max(initialSeconds, (multiplier - 1) x its duration) after it
ended, capped at maxSeconds. (Plain `initial x multiplier**n` waits overshoot that bound in
the first polls: the wait after poll n is always more than (multiplier - 1) x elapsed.)

Pure functions of their inputs, so the orchestrator can call them on every replay and get the
same timer fire times (jitter comes from a hash of the instance id and poll number, never from
`random`).

Polling jitter shifts the schedule rather than shortening every wait: only the first wait loses
a hashed fraction (up to `jitter`). Later waits are proportional to elapsed time, so the shift
carries through and grows with the ramp (instances started together stay apart), while no later
wait is cut short: per-wait jitter would cost about jitter/2 more polls at the cap, and the
schedule would lose to a plain fixed interval at that interval's own delay.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PollingPolicy:
    initial_seconds: float
    max_seconds: float
    multiplier: float
    # Fraction of a wait that jitter may shave off, so instances started together spread out
    # (polling: the first wait only; transient retries: every wait).
    jitter: float = 0.1

    def to_dict(self) -> dict[str, float]:
        return {
            "initialSeconds": self.initial_seconds,
            "maxSeconds": self.max_seconds,
            "multiplier": self.multiplier,
            "jitter": self.jitter,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PollingPolicy:
        return cls(
            initial_seconds=float(data["initialSeconds"]),
            max_seconds=float(data["maxSeconds"]),
            multiplier=float(data["multiplier"]),
            jitter=float(data.get("jitter", 0.1)),
        )


@dataclass(frozen=True)
class PollingBounds:
    """What a caller may ask for in `polling`; protects the service and the bill."""

    min_initial_seconds: float = 1.0
    max_initial_seconds: float = 300.0
    max_max_seconds: float = 3600.0
    min_multiplier: float = 1.0
    max_multiplier: float = 4.0


def unit_hash(*parts: object) -> float:
    """A stable number in [0, 1) derived from the parts (same on every machine and replay)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def backoff_seconds(policy: PollingPolicy, step: int, seed: str) -> float:
    """The wait before poll `step` (0-based): initial * multiplier**step, capped, jittered."""
    base = policy.initial_seconds * policy.multiplier ** min(step, 64)
    capped = min(base, policy.max_seconds)
    jittered = capped * (1.0 - policy.jitter * unit_hash(seed, step))
    # Durable timers have millisecond resolution; round so fire times are stable strings.
    return round(max(jittered, 0.001), 3)


def poll_wait_seconds(
    policy: PollingPolicy,
    elapsed_seconds: float,
    step: int,
    seed: str,
    retry_after: float | None = None,
) -> float:
    """The wait before status check `step` (0-based), `elapsed_seconds` after the run started."""
    proportional = (policy.multiplier - 1.0) * max(elapsed_seconds, 0.0)
    base = min(max(policy.initial_seconds, proportional), policy.max_seconds)
    shave = policy.jitter * unit_hash(seed, step) if step == 0 else 0.0
    wait = round(max(base * (1.0 - shave), 0.001), 3)
    if retry_after is not None and retry_after > wait:
        wait = round(retry_after, 3)
    return wait


def next_wait_seconds(
    policy: PollingPolicy, step: int, seed: str, retry_after: float | None = None
) -> float:
    """The wait before the next poll, stretched to honour a service's Retry-After."""
    wait = backoff_seconds(policy, step, seed)
    if retry_after is not None and retry_after > wait:
        wait = round(retry_after, 3)
    return wait


# Transient failures (429, 5xx, timeouts) of the start or publish activities back off on their
# own schedule: quick first retries, then at most a minute apart.
TRANSIENT_RETRY_POLICY = PollingPolicy(
    initial_seconds=2.0, max_seconds=60.0, multiplier=2.0, jitter=0.2
)
# Looking for a response whose create answer was lost, after the relay gave up on the
# submission: it shows only once it has ended, so lookups can be rare.
LOST_RESPONSE_RETRY_POLICY = PollingPolicy(
    initial_seconds=2.0, max_seconds=300.0, multiplier=2.0, jitter=0.2
)
