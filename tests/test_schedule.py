"""The polling schedule: growth, cap, deterministic jitter, Retry-After."""

import itertools

from hypothesis import given
from hypothesis import strategies as st

from shared.schedule import PollingPolicy, backoff_seconds, next_wait_seconds

POLICY = PollingPolicy(initial_seconds=2.0, max_seconds=30.0, multiplier=1.5, jitter=0.1)


def test_waits_grow_by_the_multiplier_until_the_cap() -> None:
    no_jitter = PollingPolicy(2.0, 30.0, 1.5, jitter=0.0)
    waits = [backoff_seconds(no_jitter, step, "sub") for step in range(10)]
    assert waits[:4] == [2.0, 3.0, 4.5, 6.75]
    assert waits[-1] == 30.0
    assert all(b >= a for a, b in itertools.pairwise(waits))


@given(st.text(min_size=1, max_size=40), st.integers(min_value=0, max_value=500))
def test_jitter_is_stable_and_bounded(seed: str, step: int) -> None:
    first = backoff_seconds(POLICY, step, seed)
    assert first == backoff_seconds(POLICY, step, seed)
    ceiling = min(POLICY.initial_seconds * POLICY.multiplier ** min(step, 64), POLICY.max_seconds)
    assert ceiling * (1 - POLICY.jitter) - 0.001 <= first <= ceiling


def test_jitter_spreads_instances_started_together() -> None:
    waits = {backoff_seconds(POLICY, 20, f"instance-{i}") for i in range(50)}
    assert len(waits) > 40


def test_retry_after_stretches_but_never_shortens_the_wait() -> None:
    base = next_wait_seconds(POLICY, 0, "s")
    assert next_wait_seconds(POLICY, 0, "s", retry_after=45) == 45
    assert next_wait_seconds(POLICY, 0, "s", retry_after=0.5) == base
