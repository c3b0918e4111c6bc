"""Exceptions raised by the emulated Functions host."""

from __future__ import annotations


class HostError(Exception):
    """Base class of every error the emulated host raises on its own account."""


class IndexingError(HostError):
    """The app would not index: the worker or the host would refuse it at startup."""


class UnsupportedFeatureError(HostError):
    """The app uses a binding or a Durable API this emulator does not reproduce.

    Raised loudly instead of guessing, so a green test never rests on an invented behaviour.
    """


class NonDeterminismError(HostError):
    """A replay produced actions that differ from the recorded history (DTFx fails the instance)."""

    def __init__(self, instance_id: str, message: str) -> None:
        super().__init__(f"instance {instance_id!r}: {message}")
        self.instance_id = instance_id
        self.detail = message


class InstanceNotFoundError(HostError):
    """No orchestration instance has this id (the extension answers 404)."""


class InstanceGoneError(HostError):
    """The instance already finished (the extension answers 410 Gone)."""


class InstanceAlreadyExistsError(HostError):
    """Starting an id whose instance is Pending or Running while host.json keeps the default
    overridableExistingInstanceStates, NonRunningStates (the extension answers 500 and the SDK's
    start_new raises)."""


class OrchestrationStuckError(HostError):
    """No work is ready, no timer is pending, and the instance has not finished."""


class VirtualTimeLimitError(HostError):
    """The next timer lies beyond the virtual-time budget given to run_until_complete."""


class StepLimitError(HostError):
    """More episodes/activity executions than allowed: probably an endless loop."""
