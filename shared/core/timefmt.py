"""One timestamp format everywhere we emit times: RFC 3339, UTC, millisecond precision."""

from __future__ import annotations

from datetime import UTC, datetime


def to_iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def from_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def unix_to_iso(seconds: float | int | None) -> str | None:
    moment = from_unix(seconds)
    return to_iso(moment) if moment else None


def from_unix(seconds: float | int | None) -> datetime | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC)
