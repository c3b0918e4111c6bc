"""A sample Event Grid subscriber for AgentRunCompleted (its own blueprint: easy to delete).

To remove it: delete this package and the `register_functions(subscriber_blueprint)` line in
`function_app.py` (and the Event Grid subscription in `infra/`).
"""

from .blueprint import blueprint

__all__ = ["blueprint"]
