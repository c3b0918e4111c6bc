"""The Foundry service's state as a JSON snapshot, for local development across restarts.

`FoundryService(state_file=...)` (what `devhost/offline.py` gives it, like the classic Agents
service's `agents-state.pickle`) loads the snapshot at start and writes it again after every
change: responses (with their scripts, so a response created before a restart keeps its
course; progress is computed from wall-clock timestamps), conversations with their items, and
agent versions. A file is written whole into a temporary file in the same folder and then
renamed (`os.replace`), so a reader or the next start sees the old file or the new one, never
half of one. A snapshot of another version is ignored (the service starts empty).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._models import JSON, ConversationRecord, ResponseRecord, ResponseScript

if TYPE_CHECKING:
    from ._store import Store

SNAPSHOT_VERSION = 1
_SCRIPT_FIELDS = frozenset(f.name for f in dataclasses.fields(ResponseScript))
_RESPONSE_FIELDS = frozenset(f.name for f in dataclasses.fields(ResponseRecord))


def _moment(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _response_json(record: ResponseRecord) -> JSON:
    data = dataclasses.asdict(record)  # the script becomes a plain dict too
    data["created"] = _moment(record.created)
    data["cancel_requested"] = _moment(record.cancel_requested)
    return data


def export_state(store: Store) -> JSON:
    """Everything the store keeps, as JSON values (version SNAPSHOT_VERSION)."""
    return {
        "version": SNAPSHOT_VERSION,
        "responses": [_response_json(r) for r in store.responses.values()],
        "conversations": [
            {
                "id": c.id,
                "created": _moment(c.created),
                "metadata": dict(c.metadata),
                "items": copy.deepcopy(c.items),
            }
            for c in store.conversations.values()
        ],
        "agents": copy.deepcopy(store.agents),
    }


def _response_record(raw: dict[str, Any]) -> ResponseRecord:
    fields = {k: v for k, v in raw.items() if k in _RESPONSE_FIELDS}
    script = {k: v for k, v in raw["script"].items() if k in _SCRIPT_FIELDS}
    fields["script"] = ResponseScript(**script)
    fields["created"] = datetime.fromisoformat(raw["created"])
    if raw.get("cancel_requested") is not None:
        fields["cancel_requested"] = datetime.fromisoformat(raw["cancel_requested"])
    return ResponseRecord(**fields)


def import_state(store: Store, state: JSON) -> bool:
    """Replace the store's state with a snapshot's; False (nothing changed) for another version."""
    if state.get("version") != SNAPSHOT_VERSION:
        return False
    responses = [_response_record(raw) for raw in state.get("responses", [])]
    conversations = [
        ConversationRecord(
            raw["id"], datetime.fromisoformat(raw["created"]), raw["metadata"], raw["items"]
        )
        for raw in state.get("conversations", [])
    ]
    store.responses = {r.id: r for r in responses}
    store.conversations = {c.id: c for c in conversations}
    store.agents = dict(state.get("agents", {}))
    return True


def load_snapshot(path: Path) -> JSON | None:
    """The snapshot in `path`, or None when there is none yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    state = json.loads(text)
    return state if isinstance(state, dict) else None


def save_snapshot(path: Path, state: JSON) -> None:
    """Write `state` to `path` atomically (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(state, handle)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


__all__ = ["SNAPSHOT_VERSION", "export_state", "import_state", "load_snapshot", "save_snapshot"]
