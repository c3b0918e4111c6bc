"""App settings: read from the environment once per worker process and validated up front.

The orchestrator never reads settings: the HTTP starter copies the effective polling policy,
deadline and generation size into the orchestration's input, so replays see fixed values.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from urllib.parse import urlsplit

from .schedule import PollingPolicy

EVENT_SCHEMAS = ("eventgrid", "cloudevents")


class SettingsError(ValueError):
    """A missing or invalid app setting; the message names the setting."""


# How long the start activity follows a new run's stream (see docs/benchmarks.md for why 10 s).
DEFAULT_FAST_PATH_SECONDS = 10.0
MAX_FAST_PATH_SECONDS = 120.0
# Orchestrator steps per history generation before continue-as-new (docs/benchmarks.md).
DEFAULT_POLLS_PER_GENERATION = 20


@dataclass(frozen=True)
class PollingBounds:
    """What a caller may ask for in `polling`; protects the service and the bill."""

    min_initial_seconds: float = 1.0
    max_initial_seconds: float = 300.0
    max_max_seconds: float = 3600.0
    min_multiplier: float = 1.0
    max_multiplier: float = 4.0


@dataclass(frozen=True)
class Settings:
    agents_endpoint: str
    eventgrid_endpoint: str
    eventgrid_key: str | None = field(repr=False)
    event_schema: str = "eventgrid"
    event_source: str = "/agent-runs"
    polling: PollingPolicy = field(
        default_factory=lambda: PollingPolicy(initial_seconds=2.0, max_seconds=30.0, multiplier=1.5)
    )
    polling_bounds: PollingBounds = field(default_factory=PollingBounds)
    default_deadline_seconds: int = 6 * 3600
    max_deadline_seconds: int = 7 * 24 * 3600
    polls_per_generation: int = DEFAULT_POLLS_PER_GENERATION
    publish_retry_window_seconds: int = 24 * 3600
    tool_outputs_timeout_seconds: int = 900
    # How long the start activity follows the new run's event stream (0: no streaming).
    fast_path_seconds: float = 10.0
    # How long one service call may take before it counts as a transient failure.
    read_timeout_seconds: float = 30.0
    azure_client_id: str | None = None
    # Whether an HTTP proxy or a netrc file is configured for the SDKs to use.
    http_environment: bool = False

    @property
    def agents_is_loopback(self) -> bool:
        return is_loopback_url(self.agents_endpoint)

    @property
    def eventgrid_is_loopback(self) -> bool:
        return is_loopback_url(self.eventgrid_endpoint)


def is_loopback_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _endpoint(env: Mapping[str, str], name: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        raise SettingsError(f"{name} is required (an https:// endpoint)")
    parts = urlsplit(raw)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise SettingsError(f"{name} must be an absolute https:// URL, got {raw!r}")
    if parts.scheme == "http" and not is_loopback_url(raw):
        raise SettingsError(
            f"{name} uses plain http for a non-loopback host; only localhost, 127.0.0.0/8 "
            "and ::1 may use http"
        )
    return raw.rstrip("/")


def _number(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low:g} and {high:g}, got {raw}")
    return value


def _integer(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = _number(env, name, default, low, high)
    if value != int(value):
        raise SettingsError(f"{name} must be a whole number, got {value:g}")
    return int(value)


_PROXY_VARIABLES = ("https_proxy", "http_proxy", "all_proxy", "ws_proxy", "wss_proxy")


def http_environment_configured(env: Mapping[str, str]) -> bool:
    """Whether the environment configures a proxy or a netrc file for HTTP clients.

    With it, the SDKs' aiohttp sessions honour it (`trust_env`), as by default. Without it
    (the usual case in Azure) they skip it: aiohttp looks both up again on every request, in
    two worker-thread hops, about a third of a reused poll's time.
    """
    if any(env.get(name) or env.get(name.upper()) for name in _PROXY_VARIABLES):
        return True
    netrc = env.get("NETRC")
    if netrc:
        return True
    home = env.get("HOME") or env.get("USERPROFILE")
    return bool(home) and any(
        os.path.exists(os.path.join(str(home), name)) for name in (".netrc", "_netrc")
    )


def load_settings(env: Mapping[str, str]) -> Settings:
    """Validate every setting the app reads; raise SettingsError naming the first bad one."""
    schema = env.get("EVENT_SCHEMA", "").strip().lower() or "eventgrid"
    if schema not in EVENT_SCHEMAS:
        raise SettingsError(
            f"EVENT_SCHEMA must be one of {', '.join(EVENT_SCHEMAS)}, got {schema!r}"
        )
    source = env.get("EVENT_SOURCE", "").strip() or "/agent-runs"
    bounds = PollingBounds()
    initial = _number(
        env, "POLL_INITIAL_SECONDS", 2.0, bounds.min_initial_seconds, bounds.max_initial_seconds
    )
    maximum = _number(env, "POLL_MAX_SECONDS", 30.0, initial, bounds.max_max_seconds)
    multiplier = _number(env, "POLL_MULTIPLIER", 1.5, bounds.min_multiplier, bounds.max_multiplier)
    jitter = _number(env, "POLL_JITTER", 0.1, 0.0, 0.5)
    max_deadline = _integer(env, "MAX_DEADLINE_SECONDS", 7 * 24 * 3600, 60, 30 * 24 * 3600)
    default_deadline = _integer(env, "DEFAULT_DEADLINE_SECONDS", 6 * 3600, 10, max_deadline)
    key = env.get("EVENTGRID_TOPIC_KEY", "").strip() or None
    return Settings(
        agents_endpoint=_endpoint(env, "AZURE_AI_PROJECT_ENDPOINT"),
        eventgrid_endpoint=_endpoint(env, "EVENTGRID_TOPIC_ENDPOINT"),
        eventgrid_key=key,
        event_schema=schema,
        event_source=source,
        polling=PollingPolicy(initial, maximum, multiplier, jitter),
        polling_bounds=bounds,
        default_deadline_seconds=default_deadline,
        max_deadline_seconds=max_deadline,
        polls_per_generation=_integer(
            env, "POLLS_PER_GENERATION", DEFAULT_POLLS_PER_GENERATION, 5, 1000
        ),
        publish_retry_window_seconds=_integer(
            env, "PUBLISH_RETRY_WINDOW_SECONDS", 24 * 3600, 60, 7 * 24 * 3600
        ),
        tool_outputs_timeout_seconds=_integer(
            env, "TOOL_OUTPUTS_TIMEOUT_SECONDS", 900, 10, 7 * 24 * 3600
        ),
        fast_path_seconds=_number(
            env, "FAST_PATH_SECONDS", DEFAULT_FAST_PATH_SECONDS, 0.0, MAX_FAST_PATH_SECONDS
        ),
        read_timeout_seconds=_number(env, "SERVICE_READ_TIMEOUT_SECONDS", 30.0, 0.05, 300.0),
        azure_client_id=env.get("AZURE_CLIENT_ID", "").strip() or None,
        http_environment=http_environment_configured(env),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once (a new worker process reads them again)."""
    return load_settings(os.environ)


def reset_settings() -> None:
    get_settings.cache_clear()
