"""App settings: read from the environment once per worker process and validated up front.

The orchestrator never reads settings: the HTTP starter copies the effective polling policy,
deadline and generation size into the orchestration's input, so replays see fixed values.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TypeVar
from urllib.parse import urlsplit

from ..core.schedule import PollingBounds, PollingPolicy
from ..core.submission import SubmissionLimits

EVENT_SCHEMAS = ("eventgrid", "cloudevents")
T = TypeVar("T")


class SettingsError(ValueError):
    """Missing or invalid app settings; the message names every one, `names` lists them."""

    def __init__(self, message: str, names: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.names = names


# How long the start activity follows a new run's stream (see docs/benchmarks.md for why 10 s).
DEFAULT_FAST_PATH_SECONDS = 10.0
MAX_FAST_PATH_SECONDS = 120.0
# Orchestrator steps per history generation before continue-as-new (docs/benchmarks.md).
DEFAULT_POLLS_PER_GENERATION = 20
# How callers are identified (README, "Callers and authentication"): by the function key the
# Functions host authorised, or by the principal App Service authentication (Easy Auth) injects.
AUTH_MODES = ("function-key", "app-service")
# Set by the platform (and read by the Functions host itself) when App Service authentication
# is on; only then does the platform strip client-supplied x-ms-client-principal-* headers.
PLATFORM_AUTH_ENABLED = "WEBSITE_AUTH_ENABLED"
# An agent id (asst_...) or an agent name: what `agentId` accepts (shared/submission.py).
AGENT_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
# RFC 3986 characters (percent-encoded ones included): a URL clients can use as it is.
URI_CHARACTERS = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")


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
    # Whether the platform's managed identity endpoint is there: the app runs in Azure.
    managed_identity: bool = False
    # Whether an HTTP proxy or a netrc file is configured for the SDKs to use.
    http_environment: bool = False
    # Agents a submission may name (ids or names); None: every agent (unsafe when shared).
    allowed_agents: frozenset[str] | None = None
    # Whether a submission may name an existing thread (`threadId`).
    allow_caller_threads: bool = False
    # "function-key" or "app-service" (see AUTH_MODES).
    auth_mode: str = "function-key"
    # The public URL of the API root (with the route prefix), for statusUrl/Location.
    public_base_url: str | None = None
    # Whether X-Forwarded-Host/-Proto may set statusUrl's origin (only behind a trusted proxy).
    trust_forwarded_headers: bool = False
    # FOUNDRY_PROJECT_ENDPOINT, the Foundry Agent Service's project (Responses API); None: the
    # classic one's (in Azure one project endpoint serves both). Read it as `foundry_endpoint`.
    foundry_project_endpoint: str | None = None

    @property
    def submission_limits(self) -> SubmissionLimits:
        """What validating and authorizing a submission needs of the settings."""
        return SubmissionLimits(
            polling=self.polling,
            polling_bounds=self.polling_bounds,
            default_deadline_seconds=self.default_deadline_seconds,
            max_deadline_seconds=self.max_deadline_seconds,
            allowed_agents=self.allowed_agents,
            allow_caller_threads=self.allow_caller_threads,
        )

    @property
    def agents_is_loopback(self) -> bool:
        return is_loopback_url(self.agents_endpoint)

    @property
    def eventgrid_is_loopback(self) -> bool:
        return is_loopback_url(self.eventgrid_endpoint)

    @property
    def foundry_endpoint(self) -> str:
        """The project endpoint the Responses API is reached on (`<it>/openai/v1`)."""
        return self.foundry_project_endpoint or self.agents_endpoint

    @property
    def foundry_is_loopback(self) -> bool:
        return is_loopback_url(self.foundry_endpoint)


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


def _optional_endpoint(env: Mapping[str, str], name: str) -> str | None:
    return _endpoint(env, name) if env.get(name, "").strip() else None


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


# Set by App Service and Azure Functions for an app with a managed identity (MSI_ENDPOINT is
# the older alias): https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference
MANAGED_IDENTITY_VARIABLES = ("IDENTITY_ENDPOINT", "MSI_ENDPOINT")


def managed_identity_available(env: Mapping[str, str]) -> bool:
    """Whether the app runs where the platform gives it a managed identity endpoint (Azure)."""
    return any(env.get(name, "").strip() for name in MANAGED_IDENTITY_VARIABLES)


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "false", "0", "no"):
        return False
    if raw in ("true", "1", "yes"):
        return True
    raise SettingsError(f"{name} must be true or false, got {env.get(name)!r}")


def _platform_flag(env: Mapping[str, str], name: str) -> bool:
    """A platform variable read the way the Functions host reads it (bool, else an integer)."""
    raw = env.get(name, "").strip()
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    try:
        return int(raw) != 0
    except ValueError:
        return False


def _allowed_agents(env: Mapping[str, str]) -> frozenset[str] | None:
    raw = env.get("ALLOWED_AGENTS", "")
    if not raw.strip():
        return None
    tokens = [token.strip() for token in raw.split(",")]
    agents = frozenset(token for token in tokens if token)
    bad = [token for token in agents if not AGENT_TOKEN.fullmatch(token)]
    if not agents or bad:
        raise SettingsError(
            "ALLOWED_AGENTS must be a comma-separated list of agent ids or names (letters, digits,"
            f" _ . -; up to 128 characters each), got {raw!r}"
        )
    return agents


def _auth_mode(env: Mapping[str, str]) -> str:
    mode = env.get("AUTH_MODE", "").strip().lower() or "function-key"
    if mode not in AUTH_MODES:
        raise SettingsError(f"AUTH_MODE must be one of {', '.join(AUTH_MODES)}, got {mode!r}")
    if mode == "app-service" and not _platform_flag(env, PLATFORM_AUTH_ENABLED):
        # Without App Service authentication in front, nothing strips a client's own
        # x-ms-client-principal-id header: trusting it would let any caller pose as another.
        raise SettingsError(
            f"AUTH_MODE=app-service needs App Service authentication turned on for the app "
            f"(the platform then sets {PLATFORM_AUTH_ENABLED}=true); it is not",
            ("AUTH_MODE", PLATFORM_AUTH_ENABLED),
        )
    return mode


def _public_base_url(env: Mapping[str, str]) -> str | None:
    raw = env.get("PUBLIC_BASE_URL", "").strip()
    if not raw:
        return None
    parts = urlsplit(raw)
    if (
        not URI_CHARACTERS.fullmatch(raw)
        or parts.scheme not in ("https", "http")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
        or raw.endswith("?")
        or "#" in raw
    ):
        raise SettingsError(
            "PUBLIC_BASE_URL must be an absolute https:// URL without user, query or fragment "
            f"(the API root clients use, e.g. https://relay.example.com/api), got {raw!r}"
        )
    if parts.scheme == "http" and not is_loopback_url(raw):
        raise SettingsError(
            "PUBLIC_BASE_URL uses plain http for a non-loopback host; only localhost, "
            "127.0.0.0/8 and ::1 may use http"
        )
    return raw.rstrip("/")


class _Collected:
    """Runs each setting's check, keeping every SettingsError so that all are reported at once."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.names: list[str] = []

    def check(self, name: str, read: Callable[[], T], fallback: T) -> T:
        try:
            return read()
        except SettingsError as error:
            self.messages.append(str(error))
            for named in error.names or (name,):
                if named not in self.names:
                    self.names.append(named)
            return fallback

    def raise_if_any(self) -> None:
        if not self.messages:
            return
        if len(self.messages) == 1:
            raise SettingsError(self.messages[0], tuple(self.names))
        lines = "\n".join(f"- {message}" for message in self.messages)
        raise SettingsError(
            f"{len(self.messages)} app settings are missing or invalid "
            f"({', '.join(self.names)}):\n{lines}",
            tuple(self.names),
        )


def load_settings(env: Mapping[str, str]) -> Settings:
    """Validate every setting the app reads; one SettingsError names all the bad ones."""
    found = _Collected()

    def number(name: str, default: float, low: float, high: float) -> float:
        return found.check(name, lambda: _number(env, name, default, low, high), default)

    def integer(name: str, default: int, low: int, high: int) -> int:
        return found.check(name, lambda: _integer(env, name, default, low, high), default)

    def schema() -> str:
        value = env.get("EVENT_SCHEMA", "").strip().lower() or "eventgrid"
        if value not in EVENT_SCHEMAS:
            raise SettingsError(
                f"EVENT_SCHEMA must be one of {', '.join(EVENT_SCHEMAS)}, got {value!r}"
            )
        return value

    agents_endpoint = found.check(
        "AZURE_AI_PROJECT_ENDPOINT", lambda: _endpoint(env, "AZURE_AI_PROJECT_ENDPOINT"), ""
    )
    foundry_endpoint = found.check(
        "FOUNDRY_PROJECT_ENDPOINT",
        lambda: _optional_endpoint(env, "FOUNDRY_PROJECT_ENDPOINT"),
        None,
    )
    eventgrid_endpoint = found.check(
        "EVENTGRID_TOPIC_ENDPOINT", lambda: _endpoint(env, "EVENTGRID_TOPIC_ENDPOINT"), ""
    )
    event_schema = found.check("EVENT_SCHEMA", schema, "eventgrid")
    source = env.get("EVENT_SOURCE", "").strip() or "/agent-runs"
    bounds = PollingBounds()
    initial = number(
        "POLL_INITIAL_SECONDS", 2.0, bounds.min_initial_seconds, bounds.max_initial_seconds
    )
    maximum = number("POLL_MAX_SECONDS", max(30.0, initial), initial, bounds.max_max_seconds)
    multiplier = number("POLL_MULTIPLIER", 1.5, bounds.min_multiplier, bounds.max_multiplier)
    jitter = number("POLL_JITTER", 0.1, 0.0, 0.5)
    max_deadline = integer("MAX_DEADLINE_SECONDS", 7 * 24 * 3600, 60, 30 * 24 * 3600)
    default_deadline = integer(
        "DEFAULT_DEADLINE_SECONDS", min(6 * 3600, max_deadline), 10, max_deadline
    )
    polls_per_generation = integer("POLLS_PER_GENERATION", DEFAULT_POLLS_PER_GENERATION, 5, 1000)
    publish_window = integer("PUBLISH_RETRY_WINDOW_SECONDS", 24 * 3600, 60, 7 * 24 * 3600)
    tool_outputs_timeout = integer("TOOL_OUTPUTS_TIMEOUT_SECONDS", 900, 10, 7 * 24 * 3600)
    fast_path = number("FAST_PATH_SECONDS", DEFAULT_FAST_PATH_SECONDS, 0.0, MAX_FAST_PATH_SECONDS)
    read_timeout = number("SERVICE_READ_TIMEOUT_SECONDS", 30.0, 0.05, 300.0)
    allowed_agents = found.check("ALLOWED_AGENTS", lambda: _allowed_agents(env), None)
    allow_caller_threads = found.check(
        "ALLOW_CALLER_THREADS", lambda: _flag(env, "ALLOW_CALLER_THREADS"), False
    )
    auth_mode = found.check("AUTH_MODE", lambda: _auth_mode(env), "function-key")
    public_base_url = found.check("PUBLIC_BASE_URL", lambda: _public_base_url(env), None)
    trust_forwarded = found.check(
        "TRUST_FORWARDED_HEADERS", lambda: _flag(env, "TRUST_FORWARDED_HEADERS"), False
    )
    found.raise_if_any()
    return Settings(
        agents_endpoint=agents_endpoint,
        eventgrid_endpoint=eventgrid_endpoint,
        eventgrid_key=env.get("EVENTGRID_TOPIC_KEY", "").strip() or None,
        event_schema=event_schema,
        event_source=source,
        polling=PollingPolicy(initial, maximum, multiplier, jitter),
        polling_bounds=bounds,
        default_deadline_seconds=default_deadline,
        max_deadline_seconds=max_deadline,
        polls_per_generation=polls_per_generation,
        publish_retry_window_seconds=publish_window,
        tool_outputs_timeout_seconds=tool_outputs_timeout,
        fast_path_seconds=fast_path,
        read_timeout_seconds=read_timeout,
        azure_client_id=env.get("AZURE_CLIENT_ID", "").strip() or None,
        managed_identity=managed_identity_available(env),
        http_environment=http_environment_configured(env),
        allowed_agents=allowed_agents,
        allow_caller_threads=allow_caller_threads,
        auth_mode=auth_mode,
        public_base_url=public_base_url,
        trust_forwarded_headers=trust_forwarded,
        foundry_project_endpoint=foundry_endpoint,
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once (a new worker process reads them again)."""
    return load_settings(os.environ)


def reset_settings() -> None:
    get_settings.cache_clear()
