"""The HTTP functions' logic (submit, read, cancel, tool outputs); talks to the orchestration
only through `shared.contract`."""

from . import api
from .api import cancel_run, get_run, submit_run, submit_tool_outputs

__all__ = ["api", "cancel_run", "get_run", "submit_run", "submit_tool_outputs"]
