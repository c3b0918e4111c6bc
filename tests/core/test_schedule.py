"""The polling schedule: growth, cap, deterministic jitter, Retry-After."""

import itertools

from hypothesis import given
from hypothesis import strategies as st

from shared.core.schedule import (
    PollingPolicy,
    backoff_seconds,
    next_wait_seconds,
    poll_wait_seconds,
)

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


def test_polling_jitter_shifts_the_schedule_without_shortening_later_waits() -> None:
    no_jitter = PollingPolicy(2.0, 30.0, 1.5, jitter=0.0)
    first_waits = {poll_wait_seconds(POLICY, 0.0, 0, f"instance-{i}") for i in range(50)}
    assert len(first_waits) > 40
    assert all(2.0 * (1 - POLICY.jitter) - 0.001 <= w <= 2.0 for w in first_waits)
    for elapsed, step in ((3.0, 1), (40.0, 6), (5000.0, 200)):
        assert poll_wait_seconds(POLICY, elapsed, step, "s") == poll_wait_seconds(
            no_jitter, elapsed, step, "s"
        )


def test_instances_started_together_stay_apart_at_the_cap() -> None:
    def poll_instants(seed: str, count: int) -> list[float]:
        elapsed, instants = 0.0, []
        for step in range(count):
            elapsed += poll_wait_seconds(POLICY, elapsed, step, seed)
            instants.append(round(elapsed, 3))
        return instants

    later = [poll_instants(f"instance-{i}", 40)[-1] for i in range(50)]
    # The first wait's shift (up to 0.2 s) grows with the ramp, then holds at the cap.
    assert max(later) - min(later) > 10 * POLICY.jitter * POLICY.initial_seconds
    assert len(set(later)) > 40


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


def test_the_readme_schedule_table_matches_the_schedule() -> None:
    from pathlib import Path

    from bench.schedules import RelaySchedule, simulate
    from bench.workload import format_duration
    from shared.adapters.settings import DEFAULT_FAST_PATH_SECONDS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in readme.splitlines()
        if line.startswith("| ") and line.count("|") == 5
    ]
    table = {row[0]: row for row in rows}
    no_jitter = PollingPolicy(2.0, 30.0, 1.5, jitter=0.0)
    for duration in (3.0, 15.0, 60.0, 300.0, 3600.0, 7200.0):
        row = table[format_duration(duration)]
        plain = simulate(RelaySchedule(no_jitter), duration, "readme")
        fast = simulate(
            RelaySchedule(no_jitter, fast_path_seconds=DEFAULT_FAST_PATH_SECONDS),
            duration,
            "readme",
        )
        assert (int(row[1]), int(row[2])) == (plain.polls, fast.polls), row
