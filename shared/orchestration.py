"""The relay orchestrator: start the agent run, wait on durable timers, publish one event.

Deterministic by construction: time comes only from `context.current_utc_datetime`, jitter
from a hash of the instance id, settings from the input. The work is a loop of small steps
(one start attempt, one wait-and-poll, one publish attempt); after `polls_per_generation`
steps the orchestration continues as new with its whole state, so history stays bounded.
Waits race the timer against the caller's events (cancel, tool outputs), so both act at once.

How caller events are waited for follows three rules of the runtime (see `EventWaits`):
each event name is waited on at most once per history generation, events are raced only
against timers, and the orchestration continues as new only right after a timer won a race
in which every wait was registered, so no event accepted by the HTTP API is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from datetime import datetime, timedelta
from typing import Any

from .custom_status import bounded_custom_status
from .events import RelayEvent, build_completed_event, build_requires_action_event
from .relay_state import PHASE_DONE, PHASE_POLL, PHASE_PUBLISH, PHASE_START, RelayState
from .run_status import REQUIRES_ACTION, RunPhase, classify_run_status
from .schedule import TRANSIENT_RETRY_POLICY, PollingPolicy, next_wait_seconds, poll_wait_seconds
from .timefmt import from_iso, to_iso
from .tool_outputs import tool_call_round, tool_outputs_event_name

ORCHESTRATOR_NAME = "agent_run_orchestrator"
START_ACTIVITY = "start_agent_run"
POLL_ACTIVITY = "poll_agent_run"
CANCEL_ACTIVITY = "cancel_agent_run"
SUBMIT_TOOL_OUTPUTS_ACTIVITY = "submit_tool_outputs"
PUBLISH_ACTIVITY = "publish_run_event"
CANCEL_EVENT = "cancel"

# A run the service keeps answering 404 for (after it was created) is gone.
MAX_NOT_FOUND_STREAK = 5
# Looking for a run that may exist before cancelling it: tries before giving up (~30 min).
MAX_FIND_ATTEMPTS = 30
# How long a cancelled run may stay unconfirmed (still not terminal) before the submission
# ends anyway; only a service that keeps refusing us gets there.
CANCEL_GRACE_SECONDS = 3600
# While the relay waits for tool outputs the outputs event wakes it: polls only watch for the
# run ending on its own (expired, cancelled at the service), so they can be rare.
REQUIRES_ACTION_POLL_SECONDS = 300.0
# 401/403 when starting right after a deployment is usually the identity's role assignment
# still propagating (Azure RBAC: changes can take up to 10 minutes to take effect); retry
# that long, with a margin, before failing the submission.
AUTH_PROPAGATION_SECONDS = 900

Step = Generator[Any, Any, None]

logger = logging.getLogger("agent_run_relay.orchestrator")


def _log(
    context: Any, state: RelayState, message: str, *args: Any, level: int = logging.INFO
) -> None:
    """Log once per real step: a replay re-runs this code, and must not repeat the line."""
    if context.is_replaying:
        return
    run = state.run or {}
    fields = {
        "submissionId": state.submission_id,
        "agentId": state.submission.get("agentId"),
        "runId": run.get("runId"),
        "threadId": run.get("threadId"),
    }
    logger.log(level, message, *args, extra={k: v for k, v in fields.items() if v})


def _now(context: Any) -> datetime:
    moment: datetime = context.current_utc_datetime
    return moment


def _internal_error(exc: BaseException) -> dict[str, str]:
    return {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"[:500]}


class EventWaits:
    """The generation's waits for caller events: each name waited on once, never renewed.

    Rules of azure-functions-durable 1.7 (azure/durable_functions/models) and the extension:
    - a wait is registered only when yielded (DurableOrchestrationContext._add_to_open_tasks);
      an EventRaised that finds no registered wait is kept in `deferred_tasks` for good and
      answers the next AND every later wait of that name in this history
      (TaskOrchestrationExecutor.set_task_value). A wait renewed after such an event would
      resolve at once forever, so a name is waited on once per generation: `cancel` once,
      tool outputs once per round of tool calls (the round is part of the event name);
    - a task already yielded is left out of a later WhenAny action (CompoundTask.__init__),
      and the extension's shim awaits each action in turn (OutOfProcOrchestrationShim.
      ProcessAsyncActionsV2): racing an already-scheduled activity against a new wait would
      leave the shim awaiting that wait alone, so waits are raced only against new timers;
    - DTFx drops the events of a finished generation except those it reads after the
      orchestrator continued as new (TaskOrchestrationContext.HandleEventRaisedEvent): the
      loop continues as new only right after a timer won a race in which every open wait was
      registered (`ready_to_continue`), so an earlier event has been applied to the state.
    """

    def __init__(self, context: Any) -> None:
        self._context = context
        self.cancel = context.wait_for_external_event(CANCEL_EVENT)
        self._rounds: dict[str, Any] = {}
        self._absorbed: set[int] = set()
        self._registered: set[int] = set()
        self.ready_to_continue = False

    def mark_registered(self, waits: list[Any]) -> None:
        self._registered.update(id(w) for w in waits)

    def all_registered(self, state: RelayState) -> bool:
        """Whether every open wait has been yielded, so no event can still be held back."""
        return all(id(w) in self._registered for w in self.open_waits(state))

    def for_round(self, round_key: str) -> Any:
        if round_key not in self._rounds:
            name = tool_outputs_event_name(round_key)
            self._rounds[round_key] = self._context.wait_for_external_event(name)
        return self._rounds[round_key]

    def open_waits(self, state: RelayState) -> list[Any]:
        """The waits to race against a timer: every one that can still receive an event."""
        waits = [self.cancel]
        if _awaiting_outputs(state) and state.required_action is not None:
            waits.append(self.for_round(state.required_action["round"]))
        return [w for w in waits if not w.is_completed]

    def take_completed(self) -> list[tuple[str | None, Any]]:
        """Waits that received their event and were not acted on yet: (round or None, task)."""
        found: list[tuple[str | None, Any]] = []
        candidates: list[tuple[str | None, Any]] = [(None, self.cancel)]
        candidates += list(self._rounds.items())
        for round_key, wait in candidates:
            if wait.is_completed and id(wait) not in self._absorbed:
                self._absorbed.add(id(wait))
                found.append((round_key, wait))
        return found


def _call(
    context: Any, waits: EventWaits, name: str, payload: dict[str, Any]
) -> Generator[Any, Any, dict[str, Any]]:
    """Call an activity; an exception it raised becomes a transient outcome, retried later.

    Events that arrive meanwhile are kept by the SDK and applied at the next wait.
    """
    waits.ready_to_continue = False
    try:
        result = yield context.call_activity(name, payload)
    except Exception as exc:
        return {
            "outcome": "transient",
            "error": {"code": "activity_failed", "message": str(exc).split("\n")[0][:500]},
            "retryAfter": None,
        }
    if not isinstance(result, dict) or "outcome" not in result:
        return {"outcome": "transient", "error": {"code": "bad_activity_result", "message": ""}}
    return result


def _finish(state: RelayState, status: str, at: datetime, error: dict[str, Any] | None) -> None:
    state.final_status = status
    state.final_error = error
    state.completed_at = state.completed_at or to_iso(at)
    state.phase = PHASE_PUBLISH
    state.next_poll_at = None
    state.poll_due = False
    state.required_action = None


def _awaiting_outputs(state: RelayState) -> bool:
    """The run waits for tool outputs that the relay has not received, and is not cancelled."""
    return (
        state.required_action is not None
        and state.tool_outputs is None
        and state.cancel_reason is None
        and state.phase == PHASE_POLL
    )


def _status_required_action(state: RelayState) -> dict[str, Any] | None:
    action = state.required_action
    if not action or state.status != REQUIRES_ACTION or not _awaiting_outputs(state):
        return None
    return {
        "type": "submit_tool_outputs",
        "toolCalls": action["toolCalls"],
        "expiresAt": action["expiresAt"],
        "giveUpAt": action["giveUpAt"],
        # Read back by the tool-outputs route to name the round's event (not shown to callers).
        "round": action["round"],
    }


def _publish_custom_status(context: Any, state: RelayState) -> None:
    status: dict[str, Any] = {
        "status": state.status,
        "phase": state.phase,
        "agentRun": state.agent_run_view(),
        "polls": state.polls,
        "nextPollAt": state.next_poll_at,
        "submittedAt": state.submitted_at,
        "deadlineAt": state.deadline_at,
        "cancellationReason": state.cancel_reason,
        "requiredAction": _status_required_action(state),
        # Who submitted it: the HTTP routes answer only that caller (not shown to callers).
        "caller": state.submission.get("caller"),
    }
    if state.last_error:
        status["lastError"] = state.last_error
    if state.event:
        status["event"] = {"id": state.event["id"], "publishedAt": state.published_at}
    context.set_custom_status(bounded_custom_status(status))


def _absorb_events(context: Any, state: RelayState, waits: EventWaits) -> bool:
    """Apply every caller event received and not yet applied; True if there was one.

    Late, repeated or mismatched events are counted and ignored.
    """
    received = waits.take_completed()
    for round_key, wait in received:
        payload = wait.result if isinstance(wait.result, dict) else {}
        if round_key is None:
            if state.phase in (PHASE_START, PHASE_POLL) and state.cancel_reason is None:
                _request_cancel(context, state, "requested")
            else:
                state.ignored_events += 1
            continue
        outputs = payload.get("toolOutputs")
        given = [str(o.get("toolCallId")) for o in outputs or [] if isinstance(o, dict)]
        action = state.required_action
        if (
            _awaiting_outputs(state)
            and action is not None
            and action["round"] == round_key
            and given
            and sorted(given) == sorted(action["ids"])
            and tool_call_round(given) == round_key
        ):
            state.tool_outputs = [
                {"toolCallId": str(o["toolCallId"]), "output": str(o.get("output", ""))}
                for o in outputs or []
                if isinstance(o, dict)
            ]
            _log(context, state, "tool outputs received for %d calls", len(given))
        else:
            state.ignored_events += 1
    return bool(received)


def _sleep(
    context: Any, state: RelayState, waits: EventWaits, fire_at: datetime
) -> Generator[Any, Any, bool]:
    """Wait until `fire_at`; True if the timer fired, False if a caller event came first."""
    if _absorb_events(context, state, waits):
        # An event arrived during the last activity: act on it before waiting.
        return False
    timer = context.create_timer(fire_at)
    state.next_poll_at = to_iso(fire_at)
    _publish_custom_status(context, state)
    open_waits = waits.open_waits(state)
    waits.mark_registered(open_waits)
    winner = yield context.task_any([timer, *open_waits])
    if winner is timer:
        # Every open wait was registered in this race: any earlier event has been applied.
        waits.ready_to_continue = True
        return True
    # An open timer keeps the instance busy until it fires: cancel the loser.
    timer.cancel()
    _absorb_events(context, state, waits)
    return False


def _start_step(context: Any, state: RelayState, waits: EventWaits) -> Step:
    deadline = from_iso(str(state.deadline_at))
    if state.cancel_reason is None and _now(context) >= deadline:
        # Out of time before the run is known. A caller's cancel accepted earlier may still be
        # held by the SDK: register every wait first, so that it, not the deadline, is the
        # reason. Then look for a run an earlier attempt created (and cancel it) instead of
        # leaving it running unobserved.
        if not waits.all_registered(state):
            yield from _sleep(context, state, waits, _now(context))
            return
        _absorb_events(context, state, waits)
        _request_cancel(context, state, "deadline_exceeded")
        state.attempts = 0
        return
    payload = {
        "submissionId": state.submission_id,
        "submission": state.submission,
        # Cancelled before the run exists: only look for a run an earlier attempt created.
        "findOnly": state.cancel_reason is not None,
        "fastPathSeconds": state.fast_path_seconds,
        "knownThreadId": state.created_thread_id,
        "submittedAt": state.submitted_at,
    }
    outcome = yield from _call(context, waits, START_ACTIVITY, payload)
    now = _now(context)
    if outcome["outcome"] == "ok":
        if outcome.get("run") is None:
            # Cancelled (or out of time) before any run existed: nothing to stop.
            _finish(state, "cancelled", now, state.last_error)
            return
        state.run = outcome["run"]
        state.phase, state.attempts, state.last_error = PHASE_POLL, 0, None
        # After a fast path the run is already that old: the schedule goes on from its age.
        followed = float(outcome.get("followedSeconds") or 0.0)
        _restart_schedule(context, state, min(max(followed, 0.0), state.fast_path_seconds))
        _log(context, state, "agent run %s started", state.run.get("runId"))
        # The fast path may already have seen the run end (or ask for tool outputs).
        _absorb_run(context, state, outcome, now)
        return
    state.last_error = outcome.get("error")
    state.created_thread_id = outcome.get("threadId") or state.created_thread_id
    if outcome["outcome"] == "permanent" and _auth_still_propagating(state, outcome, now):
        outcome = {**outcome, "outcome": "transient"}
    if outcome["outcome"] in ("permanent", "not_found"):
        _finish(state, "failed", now, outcome.get("error"))
        return
    state.attempts += 1
    finding_only = bool(payload["findOnly"])
    if not finding_only and now >= deadline:
        return  # the next step gives up (see above)
    if finding_only and state.attempts >= MAX_FIND_ATTEMPTS:
        error = outcome.get("error") or {}
        message = f"the agent run could not be started: {error.get('message', '')}"
        _finish(state, "failed", now, {"code": "start_timeout", "message": message})
        return
    wait = next_wait_seconds(
        TRANSIENT_RETRY_POLICY, state.attempts - 1, state.submission_id, outcome.get("retryAfter")
    )
    fire_at = now + timedelta(seconds=wait)
    if not finding_only:
        fire_at = min(fire_at, deadline)
    yield from _sleep(context, state, waits, fire_at)


def _auth_still_propagating(state: RelayState, outcome: dict[str, Any], now: datetime) -> bool:
    """401/403 at start within AUTH_PROPAGATION_SECONDS of the submission: retry it."""
    if outcome.get("httpStatus") not in (401, 403):
        return False
    submitted = from_iso(str(state.submitted_at))
    return (now - submitted).total_seconds() < AUTH_PROPAGATION_SECONDS


def _request_cancel(context: Any, state: RelayState, reason: str) -> None:
    if state.cancel_reason is None:
        state.cancel_reason = reason
        state.cancel_requested_at = to_iso(_now(context))
        _log(context, state, "cancelling: %s", reason)


def _restart_schedule(context: Any, state: RelayState, age_seconds: float = 0.0) -> None:
    state.schedule_anchor = to_iso(_now(context) - timedelta(seconds=age_seconds))
    state.schedule_step = 0


def _run_ids(state: RelayState) -> dict[str, Any]:
    run = state.run or {}
    return {
        "submissionId": state.submission_id,
        "agentId": state.submission["agentId"],
        "threadId": run.get("threadId"),
        "runId": run.get("runId"),
    }


def _send_cancel(context: Any, state: RelayState, waits: EventWaits) -> Step:
    outcome = yield from _call(context, waits, CANCEL_ACTIVITY, _run_ids(state))
    if outcome["outcome"] == "ok":
        state.run = outcome["run"]
    if outcome["outcome"] != "transient":
        # Sent, or refused because the run already ended: either way polling tells the end.
        state.cancel_sent = True
        _restart_schedule(context, state)
    else:
        state.retry_after = outcome.get("retryAfter")


def _send_tool_outputs(context: Any, state: RelayState, waits: EventWaits) -> Step:
    payload = {**_run_ids(state), "toolOutputs": state.tool_outputs}
    outcome = yield from _call(context, waits, SUBMIT_TOOL_OUTPUTS_ACTIVITY, payload)
    if outcome["outcome"] == "transient":
        state.retry_after = outcome.get("retryAfter")
        return
    if outcome["outcome"] == "ok":
        state.run = outcome["run"]
    # Submitted, or refused because the run no longer waits: polling tells what happened.
    state.required_action, state.tool_outputs = None, None
    _restart_schedule(context, state)


def _needs_notification(state: RelayState) -> bool:
    action = state.required_action
    return action is not None and not action["published"] and _awaiting_outputs(state)


def _notify_required_action(
    context: Any, state: RelayState, waits: EventWaits
) -> Generator[Any, Any, bool]:
    """Publish AgentRunRequiresAction, once the status that invites callers is visible.

    The Azure Storage provider sends an episode's activity messages before it checkpoints the
    instance (AzureStorageOrchestrationService.CompleteTaskOrchestrationWorkItemAsync: "First,
    add new messages into the queue", then trackingStore.UpdateStateAsync), so a custom
    status set in the episode that schedules the publish could still be unseen when the
    event arrives. The status is committed first, by a wait that ends at once. Returns True
    when that wait was all this step did.
    """
    action = state.required_action
    assert action is not None
    if not action["shown"]:
        action["shown"] = True
        yield from _sleep(context, state, waits, _now(context))
        return True
    outcome = yield from _call(context, waits, PUBLISH_ACTIVITY, action["event"])
    if outcome["outcome"] == "ok" and state.required_action is action:
        action["published"] = True
    return False


def _new_required_action(state: RelayState, now: datetime) -> None:
    run = state.run or {}
    calls = run.get("toolCalls") or []
    ids = sorted(str(call["id"]) for call in calls)
    round_key = tool_call_round(ids)
    if state.required_action and state.required_action["round"] == round_key:
        return
    give_up = now + timedelta(seconds=state.tool_outputs_timeout_seconds)
    if run.get("expiresAt"):
        give_up = min(give_up, from_iso(run["expiresAt"]))
    event = build_requires_action_event(
        submission_id=state.submission_id,
        agent_id=state.submission["agentId"],
        run_id=str(run.get("runId")),
        thread_id=run.get("threadId"),
        tool_calls=calls,
        expires_at=run.get("expiresAt"),
        event_time=to_iso(now),
        metadata=state.submission.get("metadata") or {},
    )
    state.required_action = {
        "round": round_key,
        "ids": ids,
        "toolCalls": [
            {"id": c["id"], "name": c["name"], "arguments": c["arguments"]}
            for c in event.data["toolCalls"]
        ],
        "expiresAt": run.get("expiresAt"),
        "giveUpAt": to_iso(give_up),
        "event": _event_payload(event),
        "shown": False,
        "published": False,
    }
    state.tool_outputs = None


def _absorb_run(context: Any, state: RelayState, outcome: dict[str, Any], now: datetime) -> None:
    """Act on the run's latest snapshot: finish, note a tool-output request, or keep waiting."""
    run = state.run or {}
    status = str(run.get("status"))
    if classify_run_status(status) is RunPhase.TERMINAL:
        state.output_text = outcome.get("outputText")
        state.completed_at = run.get("terminalAt") or to_iso(now)
        _finish(state, status, now, run.get("lastError"))
    elif status == REQUIRES_ACTION and run.get("toolCalls"):
        _new_required_action(state, now)
    elif status != REQUIRES_ACTION:
        state.required_action, state.tool_outputs = None, None


def _limit_due(state: RelayState, now: datetime) -> bool:
    """The deadline or the tool-output give-up time has come, and no cancel is asked yet."""
    if state.cancel_reason is not None:
        return False
    if now >= from_iso(str(state.deadline_at)):
        return True
    action = state.required_action
    return _awaiting_outputs(state) and action is not None and now >= from_iso(action["giveUpAt"])


def _check_limits(context: Any, state: RelayState, now: datetime) -> bool:
    """Deadline, tool-output timeout and cancel grace; True if the submission is over."""
    deadline = from_iso(str(state.deadline_at))
    action = state.required_action
    if state.cancel_reason is None and now >= deadline:
        _request_cancel(context, state, "deadline_exceeded")
    if _awaiting_outputs(state) and action is not None and now >= from_iso(action["giveUpAt"]):
        _request_cancel(context, state, "tool_outputs_timeout")
    if state.cancel_sent and state.cancel_requested_at:
        unconfirmed = (now - from_iso(state.cancel_requested_at)).total_seconds()
        if unconfirmed >= CANCEL_GRACE_SECONDS:
            message = f"the run did not confirm the cancel within {CANCEL_GRACE_SECONDS} s"
            _finish(state, "failed", now, {"code": "cancel_unconfirmed", "message": message})
            return True
    return False


def _next_poll_at(context: Any, state: RelayState, policy: PollingPolicy) -> datetime:
    now = _now(context)
    if _awaiting_outputs(state):
        # The outputs event wakes the wait; polls only watch for the run ending on its own.
        wait = max(REQUIRES_ACTION_POLL_SECONDS, state.retry_after or 0.0)
    else:
        anchor = from_iso(state.schedule_anchor or str(state.submitted_at))
        elapsed = (now - anchor).total_seconds()
        wait = poll_wait_seconds(
            policy, elapsed, state.schedule_step, state.submission_id, state.retry_after
        )
    fire_at = now + timedelta(seconds=wait)
    if state.cancel_reason is None:
        caps = [from_iso(str(state.deadline_at))]
        if _awaiting_outputs(state) and state.required_action is not None:
            caps.append(from_iso(state.required_action["giveUpAt"]))
        fire_at = max(min([fire_at, *caps]), now)
    return fire_at


def _poll_step(
    context: Any, state: RelayState, policy: PollingPolicy, waits: EventWaits, last_step: bool
) -> Step:
    """Act on what is pending (cancel, tool outputs, notification), wait, then poll once.

    On the generation's last step a clean wait ends the step: the poll is then the next
    generation's first act (`poll_due`), so the history ends on a wait.
    """
    if state.poll_due:
        state.poll_due = False
        yield from _poll_once(context, state, waits)
        return
    now = _now(context)
    if _limit_due(state, now) and not waits.all_registered(state):
        # A cancel or tool outputs accepted before the limit may be held by the SDK until a
        # wait for it is yielded: register every wait first, so the caller's act wins.
        yield from _sleep(context, state, waits, now)
        return
    _absorb_events(context, state, waits)
    if _check_limits(context, state, now):
        return
    if state.cancel_reason and not state.cancel_sent:
        yield from _send_cancel(context, state, waits)
    elif state.tool_outputs is not None:
        yield from _send_tool_outputs(context, state, waits)
    elif _needs_notification(state) and (yield from _notify_required_action(context, state, waits)):
        return  # the status that invites callers was just committed: publish next step
    fire_at = _next_poll_at(context, state, policy)
    if not (yield from _sleep(context, state, waits, fire_at)):
        return  # woken by an event: the next step acts on it at once
    if last_step:
        state.poll_due = True
        return
    yield from _poll_once(context, state, waits)


def _poll_once(context: Any, state: RelayState, waits: EventWaits) -> Step:
    outcome = yield from _call(context, waits, POLL_ACTIVITY, _run_ids(state))
    state.polls += 1
    state.schedule_step += 1
    state.retry_after = None
    state.next_poll_at = None
    now = _now(context)
    if outcome["outcome"] == "ok":
        previous = (state.run or {}).get("status")
        state.run, state.not_found_streak, state.last_error = outcome["run"], 0, None
        status = str(state.run["status"])
        if status != previous:
            _log(context, state, "agent run status %s -> %s", previous, status)
        _absorb_run(context, state, outcome, now)
        return
    state.last_error = outcome.get("error")
    if outcome["outcome"] == "not_found":
        state.not_found_streak += 1
        if state.not_found_streak >= MAX_NOT_FOUND_STREAK:
            gone = {"code": "run_not_found", "message": "the agent run is gone"}
            _finish(state, "failed", now, gone)
        return
    # Transient and even "permanent" poll failures keep polling: the run exists and giving up
    # would leave it unobserved. Retry-After stretches the next wait.
    state.retry_after = outcome.get("retryAfter")


def _event_payload(event: RelayEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "event_type": event.event_type,
        "subject": event.subject,
        "event_time": event.event_time,
        "data_version": event.data_version,
        "data": event.data,
    }


def cancellation_reason(state: RelayState) -> str | None:
    """Why the relay cancelled the run, if the run ended cancelled because of it.

    A run the service cancelled on its own before our cancel was asked for keeps no reason
    (its `cancelled_at` is earlier; the service's timestamps are whole seconds).
    """
    if state.status != "cancelled" or state.cancel_reason is None:
        return None
    ended = (state.run or {}).get("terminalAt")
    if ended and state.cancel_requested_at:
        asked = from_iso(state.cancel_requested_at).replace(microsecond=0)
        if from_iso(ended) < asked:
            return None
    return state.cancel_reason


def _completed_event(state: RelayState) -> dict[str, Any]:
    run = state.run or {}
    cancellation = cancellation_reason(state)
    event = build_completed_event(
        submission_id=state.submission_id,
        agent_id=state.submission["agentId"],
        run_id=run.get("runId"),
        thread_id=run.get("threadId") or state.submission.get("threadId"),
        status=str(state.final_status),
        last_error=state.final_error,
        incomplete_details=run.get("incompleteDetails"),
        usage=run.get("usage"),
        output_text=state.output_text,
        metadata=state.submission.get("metadata") or {},
        submitted_at=str(state.submitted_at),
        completed_at=str(state.completed_at),
        polls=state.polls,
        cancellation_reason=cancellation,
    )
    return _event_payload(event)


def _publish_step(context: Any, state: RelayState, waits: EventWaits) -> Step:
    if state.event is None:
        try:
            state.event = _completed_event(state)
        except Exception as exc:
            # Whatever broke the event, the submission still ends in one (minimal) event.
            state.run, state.output_text = None, None
            state.final_status, state.final_error = "failed", _internal_error(exc)
            state.event = _completed_event(state)
        state.publish_started_at = to_iso(_now(context))
        state.attempts = 0
        state.retry_after = None
    outcome = yield from _call(context, waits, PUBLISH_ACTIVITY, state.event)
    now = _now(context)
    if outcome["outcome"] == "ok":
        state.published_at = to_iso(now)
        state.phase, state.last_error = PHASE_DONE, None
        _log(context, state, "submission %s: event %s published", state.status, state.event["id"])
        return
    state.attempts += 1
    state.last_error = outcome.get("error")
    started = from_iso(str(state.publish_started_at))
    if (now - started).total_seconds() >= state.publish_retry_window_seconds:
        state.publish_error = {
            "code": "publish_failed",
            "message": f"gave up publishing after {state.attempts} attempts",
            "lastError": outcome.get("error"),
        }
        state.phase = PHASE_DONE
        _log(context, state, "gave up publishing %s", state.event["id"], level=logging.ERROR)
        return
    wait = next_wait_seconds(
        TRANSIENT_RETRY_POLICY, state.attempts - 1, state.submission_id, outcome.get("retryAfter")
    )
    yield from _sleep(context, state, waits, now + timedelta(seconds=wait))


def final_output(state: RelayState) -> dict[str, Any]:
    event = state.event or {}
    return {
        "kind": "agent-run-relay/v1",
        "status": state.status,
        "agentRun": state.agent_run_view(),
        "polls": state.polls,
        "submittedAt": state.submitted_at,
        "completedAt": state.completed_at,
        "cancellationReason": cancellation_reason(state),
        "result": event.get("data"),
        "event": {"id": event["id"], "publishedAt": state.published_at}
        if state.published_at
        else None,
        "publishError": state.publish_error,
    }


def relay_orchestrator(context: Any) -> Generator[Any, Any, dict[str, Any] | None]:
    policy: PollingPolicy | None = None
    try:
        state = RelayState.from_dict(context.get_input())
        policy = PollingPolicy.from_dict(state.submission["polling"])
    except Exception as exc:
        state = RelayState.unreadable(context.instance_id, _internal_error(exc))
    if state.submitted_at is None:
        now = _now(context)
        state.submitted_at = to_iso(now)
        deadline_seconds = int(state.submission.get("deadlineSeconds") or 0)
        state.deadline_at = to_iso(now + timedelta(seconds=deadline_seconds))
        if state.final_status:
            state.completed_at = to_iso(now)
    waits = EventWaits(context)
    steps = 0
    while state.phase != PHASE_DONE:
        last_step = steps >= state.polls_per_generation - 1
        if steps >= state.polls_per_generation and waits.ready_to_continue:
            # Right after a clean wait: every event of this generation has been applied.
            state.generation += 1
            _publish_custom_status(context, state)
            context.continue_as_new(state.to_dict())
            return None
        phase = state.phase
        try:
            if phase == PHASE_START:
                yield from _start_step(context, state, waits)
            elif phase == PHASE_POLL and policy is not None:
                yield from _poll_step(context, state, policy, waits, last_step)
            else:
                yield from _publish_step(context, state, waits)
        except Exception as exc:
            # A bug must still end in exactly one event (or, failing that, a visible error).
            _log(context, state, "internal error in %s: %r", phase, exc, level=logging.ERROR)
            if phase == PHASE_PUBLISH:
                state.publish_error, state.phase = _internal_error(exc), PHASE_DONE
            else:
                _finish(state, "failed", _now(context), _internal_error(exc))
        steps += 1
    _publish_custom_status(context, state)
    return final_output(state)
