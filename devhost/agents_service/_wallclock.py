"""The wall clock, re-exported for the service's standalone mode."""

from ..clock import WallClock

__all__ = ["WallClock"]
