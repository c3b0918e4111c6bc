"""The polling schedule: growth, cap, deterministic jitter, Retry-After."""

import itertools

from hypothesis import given
from hypothesis import strategies as st

from shared.schedule import PollingPolicy, backoff_seconds, next_wait_seconds, poll_wait_seconds

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


def detection(policy: PollingPolicy, duration: float, seed: str) -> tuple[int, float]:
    """Polls made and delay until a run of `duration` seconds is seen finished."""
    elapsed, polls = 0.0, 0
    while elapsed < duration:
        elapsed += poll_wait_seconds(policy, elapsed, polls, seed)
        polls += 1
    return polls, elapsed - duration


def test_polling_waits_grow_with_elapsed_time_between_the_bounds() -> None:
    no_jitter = PollingPolicy(2.0, 30.0, 1.5, jitter=0.0)
    assert poll_wait_seconds(no_jitter, 0, 0, "s") == 2.0
    assert poll_wait_seconds(no_jitter, 10, 3, "s") == 5.0
    assert poll_wait_seconds(no_jitter, 600, 9, "s") == 30.0
    assert poll_wait_seconds(no_jitter, 10, 3, "s", retry_after=45) == 45


@given(
    st.floats(min_value=0.1, max_value=8 * 3600),
    st.text(min_size=1, max_size=12),
    st.sampled_from(
        [PollingPolicy(2, 30, 1.5), PollingPolicy(1, 60, 1.25), PollingPolicy(5, 120, 2.0)]
    ),
)
def test_a_run_is_seen_within_the_documented_bound(
    duration: float, seed: str, policy: PollingPolicy
) -> None:
    polls, delay = detection(policy, duration, seed)
    bound = min(max(policy.initial_seconds, (policy.multiplier - 1) * duration), policy.max_seconds)
    assert delay <= bound + 0.002
    assert polls >= 1
