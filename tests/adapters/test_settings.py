"""Settings are validated once, every bad one named in one error; http only for loopback."""

import os
import sys
from pathlib import Path

import pytest

from shared.adapters.settings import SettingsError, load_settings
from tests.processes import run_captured

BASE = {
    "AZURE_AI_PROJECT_ENDPOINT": "https://x.services.ai.azure.com/api/projects/p",
    "EVENTGRID_TOPIC_ENDPOINT": "https://t.westus-1.eventgrid.azure.net/api/events",
}


def test_defaults_are_safe() -> None:
    settings = load_settings(BASE)
    assert settings.event_schema == "eventgrid"
    assert settings.event_source == "/agent-runs"
    assert settings.eventgrid_key is None
    assert not settings.agents_is_loopback


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"AZURE_AI_PROJECT_ENDPOINT": ""}, "AZURE_AI_PROJECT_ENDPOINT"),
        ({"EVENTGRID_TOPIC_ENDPOINT": "http://example.com/api/events"}, "EVENTGRID_TOPIC_ENDPOINT"),
        (
            {"AZURE_AI_PROJECT_ENDPOINT": "http://10.0.0.5/api/projects/p"},
            "AZURE_AI_PROJECT_ENDPOINT",
        ),
        ({"EVENT_SCHEMA": "xml"}, "EVENT_SCHEMA"),
        ({"POLL_INITIAL_SECONDS": "fast"}, "POLL_INITIAL_SECONDS"),
        ({"POLL_MAX_SECONDS": "1", "POLL_INITIAL_SECONDS": "5"}, "POLL_MAX_SECONDS"),
        ({"POLLS_PER_GENERATION": "2.5"}, "POLLS_PER_GENERATION"),
        ({"DEFAULT_DEADLINE_SECONDS": "99999999"}, "DEFAULT_DEADLINE_SECONDS"),
        ({"ALLOWED_AGENTS": ","}, "ALLOWED_AGENTS"),
        ({"ALLOWED_AGENTS": "asst_1, my agent"}, "ALLOWED_AGENTS"),
        ({"ALLOWED_AGENTS": "asst_1,_hidden"}, "ALLOWED_AGENTS"),
        ({"ALLOW_CALLER_THREADS": "sometimes"}, "ALLOW_CALLER_THREADS"),
        ({"AUTH_MODE": "apim"}, "AUTH_MODE"),
        ({"AUTH_MODE": "app-service"}, "WEBSITE_AUTH_ENABLED"),
        ({"AUTH_MODE": "app-service", "WEBSITE_AUTH_ENABLED": "False"}, "AUTH_MODE"),
        ({"PUBLIC_BASE_URL": "relay.example.com/api"}, "PUBLIC_BASE_URL"),
        ({"PUBLIC_BASE_URL": "http://relay.example.com/api"}, "PUBLIC_BASE_URL"),
        ({"PUBLIC_BASE_URL": "https://relay.example.com/api?x=1"}, "PUBLIC_BASE_URL"),
        ({"PUBLIC_BASE_URL": "https://relay.example.com/api#top"}, "PUBLIC_BASE_URL"),
        ({"PUBLIC_BASE_URL": "https://user@relay.example.com/api"}, "PUBLIC_BASE_URL"),
        ({"PUBLIC_BASE_URL": "https://relay.example.com/my api"}, "PUBLIC_BASE_URL"),
        ({"TRUST_FORWARDED_HEADERS": "yes please"}, "TRUST_FORWARDED_HEADERS"),
    ],
)
def test_bad_settings_are_named(changes: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named) as raised:
        load_settings({**BASE, **changes})
    assert named in raised.value.names


def test_every_bad_setting_is_reported_at_once() -> None:
    bad = {
        "AZURE_AI_PROJECT_ENDPOINT": "",
        "EVENTGRID_TOPIC_ENDPOINT": "http://example.com/api/events",
        "EVENT_SCHEMA": "xml",
        "POLL_MULTIPLIER": "fast",
        "POLLS_PER_GENERATION": "2.5",
        "ALLOWED_AGENTS": "a b",
        "PUBLIC_BASE_URL": "ftp://relay.example.com",
        "TRUST_FORWARDED_HEADERS": "maybe",
    }
    with pytest.raises(SettingsError) as raised:
        load_settings(bad)
    assert sorted(raised.value.names) == sorted(bad)
    message = str(raised.value)
    assert message.startswith(f"{len(bad)} app settings are missing or invalid")
    for name in bad:
        assert f"\n- {name}" in message, name


def test_dependent_bounds_still_checked_when_the_setting_they_depend_on_is_bad() -> None:
    # A bad initial wait falls back to the default (2) to check the longest one against.
    with pytest.raises(SettingsError) as raised:
        load_settings({**BASE, "POLL_INITIAL_SECONDS": "x", "POLL_MAX_SECONDS": "1"})
    assert raised.value.names == ("POLL_INITIAL_SECONDS", "POLL_MAX_SECONDS")


def test_caller_isolation_and_public_url_defaults() -> None:
    settings = load_settings(BASE)
    assert settings.allowed_agents is None  # every agent: unsafe for a shared deployment
    assert not settings.allow_caller_threads
    assert settings.auth_mode == "function-key"
    assert settings.public_base_url is None
    assert not settings.trust_forwarded_headers


def test_caller_isolation_and_public_url_settings_are_read() -> None:
    settings = load_settings(
        {
            **BASE,
            "ALLOWED_AGENTS": " asst_abc123 ,, support-bot,asst_abc123 ",
            "ALLOW_CALLER_THREADS": "TRUE",
            "AUTH_MODE": "App-Service",
            "WEBSITE_AUTH_ENABLED": "True",
            "PUBLIC_BASE_URL": "https://relay.example.com/api/",
            "TRUST_FORWARDED_HEADERS": "1",
        }
    )
    assert settings.allowed_agents == frozenset({"asst_abc123", "support-bot"})
    assert settings.allow_caller_threads
    assert settings.auth_mode == "app-service"
    assert settings.public_base_url == "https://relay.example.com/api"
    assert settings.trust_forwarded_headers
    # The platform flag is read like the Functions host reads it (a bool, else an integer).
    platform_on = {**BASE, "AUTH_MODE": "app-service", "WEBSITE_AUTH_ENABLED": "1"}
    assert load_settings(platform_on).auth_mode == "app-service"
    loopback = load_settings({**BASE, "PUBLIC_BASE_URL": "http://127.0.0.1:7071/api"})
    assert loopback.public_base_url == "http://127.0.0.1:7071/api"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.8.9.10", "[::1]"])
def test_plain_http_is_accepted_for_loopback_hosts(host: str) -> None:
    settings = load_settings(
        {**BASE, "AZURE_AI_PROJECT_ENDPOINT": f"http://{host}:8091/api/projects/l"}
    )
    assert settings.agents_is_loopback


def test_the_key_never_shows_in_repr() -> None:
    settings = load_settings({**BASE, "EVENTGRID_TOPIC_KEY": "s3cr3t-topic-key"})
    assert "s3cr3t-topic-key" not in repr(settings)


def test_the_app_refuses_to_start_with_a_bad_setting() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_AI", "EVENTGRID"))}
    env.update(BASE, EVENTGRID_TOPIC_ENDPOINT="http://eventgrid.example.com/api/events")
    result = run_captured([sys.executable, "-c", "import function_app"], env=env, timeout=60)
    assert result.returncode != 0
    assert "EVENTGRID_TOPIC_ENDPOINT" in result.stderr


def test_the_app_names_every_bad_setting_when_it_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_AI", "EVENTGRID"))}
    env.update(BASE, EVENTGRID_TOPIC_ENDPOINT="", POLL_JITTER="2", AUTH_MODE="app-service")
    env.pop("WEBSITE_AUTH_ENABLED", None)
    result = run_captured([sys.executable, "-c", "import function_app"], env=env, timeout=60)
    assert result.returncode != 0
    for name in ("EVENTGRID_TOPIC_ENDPOINT", "POLL_JITTER", "AUTH_MODE", "WEBSITE_AUTH_ENABLED"):
        assert name in result.stderr, name


def test_proxy_and_netrc_lookups_only_when_configured(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path)}
    assert not load_settings({**BASE, **home}).http_environment
    assert load_settings({**BASE, **home, "HTTPS_PROXY": "http://proxy:3128"}).http_environment
    assert load_settings({**BASE, **home, "http_proxy": "http://proxy:3128"}).http_environment
    (tmp_path / ".netrc").write_text("machine example.com login a password b\n")
    assert load_settings({**BASE, **home}).http_environment


def test_a_configured_proxy_carries_the_agents_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from aiohttp import web

    from devhost.server_thread import ServerThread
    from shared.adapters.clients import build_agents_client
    from shared.adapters.loopback import LoopbackCredential

    seen: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        seen.append(str(request.url))  # a forward proxy gets the target's absolute URL
        return web.Response(status=502)

    def app() -> web.Application:
        application = web.Application()
        application.router.add_route("*", "/{tail:.*}", proxy)
        return application

    async def get_run(settings_env: dict[str, str]) -> None:
        client = build_agents_client(load_settings(settings_env), LoopbackCredential())
        async with client:
            with pytest.raises(Exception):  # noqa: B017, PT011 (the proxy answers 502)
                await client.runs.get("thread_1", "run_1")

    agents = "http://127.0.0.1:9/api/projects/p"  # nothing listens there
    env = {**BASE, "AZURE_AI_PROJECT_ENDPOINT": agents}
    with ServerThread(app) as server:
        monkeypatch.setenv("HTTP_PROXY", server.base_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        asyncio.run(get_run({**env, "HTTP_PROXY": server.base_url}))
        assert [url for url in seen if "/threads/thread_1/runs/run_1" in url]
