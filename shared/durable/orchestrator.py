"""The relay orchestrator: start the agent run, wait on durable timers, publish one event.

Read top-down, this is the story of one submission: `relay_orchestrator` loops over small
steps (one start attempt, one wait-and-poll, one publish attempt) until the event is out;
after `polls_per_generation` steps it continues as new with its whole state, so history stays
bounded. What to make of each outcome is decided by the pure functions of
`shared.core.decisions`; this module only waits, calls activities and logs.

Deterministic by construction: time comes only from `context.current_utc_datetime`, jitter
from a hash of the instance id, settings from the input. Waits race the timer against the
caller's events (cancel, tool outputs), so both act at once. How caller events are waited for
follows three rules of the runtime (see `EventWaits`): each event name is waited on at most
once per history generation, events are raced only against timers, and the orchestration
continues as new only right after a timer won a race in which every wait was registered, so
no event accepted by the HTTP API is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from datetime import datetime
from typing import Any, cast

from ..contract import (
    CANCEL_ACTIVITY,
    PHASE_DONE,
    PHASE_POLL,
    PHASE_START,
    POLL_ACTIVITY,
    PUBLISH_ACTIVITY,
    START_ACTIVITY,
    SUBMIT_TOOL_OUTPUTS_ACTIVITY,
    Outcome,
    RelayOutput,
    transient,
)
from ..core import decisions as decide
from ..core import giving_up, limits
from ..core.custom_status import bounded_custom_status
from ..core.decisions import Note
from ..core.publishing import after_publish, prepare_publish
from ..core.report import custom_status, final_output
from ..core.schedule import PollingPolicy
from ..core.state import RelayState
from ..core.timefmt import to_iso
from .event_waits import EventWaits

Step = Generator[Any, Any, None]

logger = logging.getLogger("agent_run_relay.orchestrator")


def relay_orchestrator(context: Any) -> Generator[Any, Any, dict[str, Any] | None]:
    """One generation of a submission's orchestration (the input is the carried state)."""
    policy: PollingPolicy | None = None
    try:
        state = RelayState.from_dict(context.get_input())
        # The HTTP starter always stores the effective policy; without one the input is unreadable.
        policy = PollingPolicy.from_dict(cast(dict[str, Any], state.submission["polling"]))
    except Exception as exc:
        state = RelayState.unreadable(context.instance_id, decide.internal_error(exc))
    decide.begin(state, _now(context))
    run = _Orchestration(context, state)
    steps = 0
    while state.phase != PHASE_DONE:
        last_step = steps >= state.polls_per_generation - 1
        if steps >= state.polls_per_generation and run.waits.ready_to_continue:
            # Right after a clean wait: every event of this generation has been applied.
            state.generation += 1
            run.publish_custom_status()
            context.continue_as_new(state.to_dict())
            return None
        phase = state.phase
        try:
            if phase == PHASE_START:
                yield from run.start_step()
            elif phase == PHASE_POLL and policy is not None:
                yield from run.poll_step(policy, last_step)
            else:
                yield from run.publish_step()
        except Exception as exc:
            run.log([(logging.ERROR, "internal error in %s: %r", (phase, exc))])
            decide.fail_step(state, phase, exc, _now(context))
        steps += 1
    run.publish_custom_status()
    return _encode(final_output(state))


def _encode(output: RelayOutput) -> dict[str, Any]:
    """The orchestration's output as the JSON the Durable runtime stores."""
    return dict(output)


def _now(context: Any) -> datetime:
    moment: datetime = context.current_utc_datetime
    return moment


class _Orchestration:
    """One generation's context, state and event waits, and the steps that use them."""

    def __init__(self, context: Any, state: RelayState) -> None:
        self.context = context
        self.state = state
        self.waits = EventWaits(context)

    def now(self) -> datetime:
        return _now(self.context)

    # --- the three steps -------------------------------------------------------------------

    def start_step(self) -> Step:
        """One attempt to start the run (or to find the one an earlier attempt started)."""
        state, notes = self.state, list[Note]()
        if decide.start_deadline_passed(state, self.now()):
            # Out of time before the run is known. A caller's cancel accepted earlier may still
            # be held by the SDK: register every wait first, so that it, not the deadline, is
            # the reason. Then look for a run an earlier attempt created (and cancel it)
            # instead of leaving it running unobserved.
            if not self.waits.all_registered(state):
                yield from self.sleep(self.now())
                return
            self.absorb_events()
            decide.give_up_starting(state, self.now(), notes)
            self.log(notes)
            return
        payload = decide.start_input(state)
        outcome = yield from self.call(START_ACTIVITY, payload)
        decision = decide.after_start(state, outcome, self.now(), payload["findOnly"], notes)
        self.log(notes)
        if decision.kind == "retry" and decision.retry_at is not None:
            yield from self.sleep(decision.retry_at)

    def poll_step(self, policy: PollingPolicy, last_step: bool) -> Step:
        """Act on what is pending (cancel, tool outputs, notification), wait, then poll once.

        On the generation's last step a clean wait ends the step: the poll is then the next
        generation's first act (`poll_due`), so the history ends on a wait.
        """
        state, notes = self.state, list[Note]()
        if state.poll_due:
            state.poll_due = False
            yield from self.poll_once()
            return
        now = self.now()
        if limits.limit_due(state, now) and not self.waits.all_registered(state):
            # A cancel or tool outputs accepted before the limit may be held by the SDK until a
            # wait for it is yielded: register every wait first, so the caller's act wins.
            yield from self.sleep(now)
            return
        self.absorb_events()
        over = limits.check_limits(state, now, notes)
        self.log(notes)
        if over:
            return
        if giving_up.cancel_pending(state):
            if not (yield from self.give_up()):
                return  # the submission is over
        elif state.tool_outputs is not None:
            outcome = yield from self.call(
                SUBMIT_TOOL_OUTPUTS_ACTIVITY, decide.tool_outputs_input(state)
            )
            decide.after_tool_outputs(state, outcome, self.now())
        elif decide.needs_notification(state) and (yield from self.notify_required_action()):
            return  # the status that invites callers was just committed: publish next step
        fire_at = limits.next_poll_at(state, policy, self.now())
        if not (yield from self.sleep(fire_at)):
            return  # woken by an event: the next step acts on it at once
        if last_step:
            state.poll_due = True
            return
        yield from self.poll_once()

    def publish_step(self) -> Step:
        """One attempt to publish AgentRunCompleted; retried with backoff for the window."""
        state, notes = self.state, list[Note]()
        prepare_publish(state, self.now())
        assert state.event is not None
        outcome = yield from self.call(PUBLISH_ACTIVITY, state.event)
        retry_at = after_publish(state, outcome, self.now(), notes)
        self.log(notes)
        if retry_at is not None:
            yield from self.sleep(retry_at)

    # --- what the steps are made of ----------------------------------------------------------

    def give_up(self) -> Generator[Any, Any, bool]:
        """Stop the run: cancel it at the service, or (a Foundry response that asks for calls
        has ended) end now, after looking for a response the outputs may have started.
        False when the submission is over."""
        state, notes = self.state, list[Note]()
        route = giving_up.cancel_route(state)
        if route == "service":
            outcome = yield from self.call(CANCEL_ACTIVITY, decide.run_ref(state))
            decide.after_cancel(state, outcome, self.now())
        elif route == "find":
            find = giving_up.find_input(state)
            outcome = yield from self.call(SUBMIT_TOOL_OUTPUTS_ACTIVITY, find)
            giving_up.after_find(state, outcome, self.now(), notes)
        else:
            giving_up.end_given_up(state, self.now(), notes)
        self.log(notes)
        return state.phase == PHASE_POLL

    def poll_once(self) -> Step:
        outcome = yield from self.call(POLL_ACTIVITY, decide.run_ref(self.state))
        notes = list[Note]()
        decide.after_poll(self.state, outcome, self.now(), notes)
        self.log(notes)

    def notify_required_action(self) -> Generator[Any, Any, bool]:
        """Publish AgentRunRequiresAction, once the status that invites callers is visible.

        The Azure Storage provider sends an episode's activity messages before it checkpoints
        the instance (AzureStorageOrchestrationService.CompleteTaskOrchestrationWorkItemAsync:
        "First, add new messages into the queue", then trackingStore.UpdateStateAsync), so a
        custom status set in the episode that schedules the publish could still be unseen when
        the event arrives. The status is committed first, by a wait that ends at once. Returns
        True when that wait was all this step did.
        """
        action = self.state.required_action
        assert action is not None
        if not action["shown"]:
            action["shown"] = True
            yield from self.sleep(self.now())
            return True
        outcome = yield from self.call(PUBLISH_ACTIVITY, action["event"])
        decide.after_notification(self.state, action, outcome)
        return False

    def call(self, name: str, payload: Any) -> Generator[Any, Any, Outcome]:
        """Call an activity; an exception it raised becomes a transient outcome, retried later.

        Events that arrive meanwhile are kept by the SDK and applied at the next wait.
        """
        self.waits.ready_to_continue = False
        try:
            result = yield self.context.call_activity(name, payload)
        except Exception as exc:
            return transient("activity_failed", str(exc).split("\n")[0][:500])
        if not isinstance(result, dict) or "outcome" not in result:
            return {"outcome": "transient", "error": {"code": "bad_activity_result", "message": ""}}
        outcome: Outcome = result  # type: ignore[assignment]  # the activity's JSON outcome
        return outcome

    def sleep(self, fire_at: datetime) -> Generator[Any, Any, bool]:
        """Wait until `fire_at`; True if the timer fired, False if a caller event came first."""
        if self.absorb_events():
            # An event arrived during the last activity: act on it before waiting.
            return False
        timer = self.context.create_timer(fire_at)
        self.state.next_poll_at = to_iso(fire_at)
        self.publish_custom_status()
        open_waits = self.waits.open_waits(self.state)
        self.waits.mark_registered(open_waits)
        winner = yield self.context.task_any([timer, *open_waits])
        if winner is timer:
            # Every open wait was registered in this race: any earlier event has been applied.
            self.waits.ready_to_continue = True
            return True
        # An open timer keeps the instance busy until it fires: cancel the loser.
        timer.cancel()
        self.absorb_events()
        return False

    def absorb_events(self) -> bool:
        """Apply every caller event received and not yet applied; True if there was one."""
        received = self.waits.take_completed()
        for round_key, wait in received:
            notes = list[Note]()
            decide.apply_caller_event(self.state, round_key, wait.result, self.now(), notes)
            self.log(notes)
        return bool(received)

    def publish_custom_status(self) -> None:
        self.context.set_custom_status(bounded_custom_status(dict(custom_status(self.state))))

    def log(self, notes: list[Note]) -> None:
        """Log once per real step: a replay re-runs this code, and must not repeat the line."""
        if self.context.is_replaying or not notes:
            return
        state = self.state
        run = state.run_fields
        fields = {
            "submissionId": state.submission_id,
            "agentId": state.submission.get("agentId"),
            "runId": run.get("runId"),
            "threadId": run.get("threadId"),
        }
        for level, message, args in notes:
            logger.log(level, message, *args, extra={k: v for k, v in fields.items() if v})
