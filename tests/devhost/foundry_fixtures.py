"""The fixtures the Foundry service tests share (test_foundry_service.py and
test_foundry_service_conversations.py): a virtual clock, the loopback service on it with the
`helper` agent, and an openai client for that service.

A test module imports them as `from ... import clock as clock`: pytest finds fixtures among a
module's names, and the redundant alias tells ruff the import is meant to be there although
only pytest uses it. The module also defines `foundry_seed`, the seed of its service.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from devhost.clock import VirtualClock
from devhost.foundry_service import FoundryService, make_openai_client


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def service(clock: VirtualClock, foundry_seed: int) -> Iterator[FoundryService]:
    """The service with the `helper` agent; `foundry_seed` fixes its ids and fault draws."""
    with FoundryService(clock, seed=foundry_seed) as svc:
        svc.create_agent_version("helper")
        yield svc


@pytest.fixture
def client(service: FoundryService) -> Iterator[openai.OpenAI]:
    with make_openai_client(service) as c:
        yield c
