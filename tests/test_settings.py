"""Settings are validated once, with errors naming the setting; http only for loopback."""

import os
import sys
from pathlib import Path

import pytest

from shared.settings import SettingsError, load_settings
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
    ],
)
def test_bad_settings_are_named(changes: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings({**BASE, **changes})


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

    from shared.clients import build_agents_client
    from shared.loopback import LoopbackCredential
    from tests.testbed.server_thread import ServerThread

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
