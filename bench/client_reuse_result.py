"""What the client reuse measurement (bench/client_reuse.py) found: per variant, and the
parts of a per-call client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The parts of a per-call client and credential the breakdown times (wall ms, medians).
PART_BUILD_CREDENTIAL = "build ManagedIdentityCredential"
PART_IDENTITY_REQUEST = (
    "token request by a new credential (session + TCP connect + GET to the identity endpoint)"
)
PART_BUILD_CLIENT = "build AgentsClient"
PART_FIRST_GET = "first GET on the new client (session + TCP connect + TLS handshake + GET)"
PART_CLOSE = "close the client and the credential"
PART_REUSED_GET = "GET on the reused client"
PART_CACHE_HIT = "get_token from a credential's cache"
PART_HANDSHAKE = "TCP connect + TLS handshake alone (asyncio.open_connection)"


@dataclass(frozen=True)
class Variant:
    calls_per_s: float  # median round
    client_cpu_ms: float  # measuring process CPU per call (median round)
    service_cpu_ms: float  # services process CPU per call: Agents service + identity endpoint
    connections: int  # connections the Agents service saw opened during the timed calls
    token_requests: int  # tokens the identity endpoint issued during the timed calls


@dataclass(frozen=True)
class ClientReuseResult:
    reused: Variant
    per_call: Variant  # AgentsClient + ManagedIdentityCredential built per call, closed after
    per_call_client: Variant  # AgentsClient built per call, the process's credential kept
    # Reused, with aiohttp's per-request proxy and netrc lookups (the SDKs' default, which
    # the app turns off when neither is configured).
    reused_env_lookups: Variant
    breakdown_ms: dict[str, float]  # wall ms of each part of a per-call client, medians
    calls: int  # timed calls per variant, all rounds
    rounds: int
    tls_version: str
    resumed_tls_sessions: int

    @property
    def reused_per_s(self) -> float:
        return self.reused.calls_per_s

    @property
    def per_call_per_s(self) -> float:
        return self.per_call.calls_per_s

    @property
    def ratio(self) -> float:
        """Reused vs client and credential built per call: the issue's comparison."""
        return self.reused.calls_per_s / self.per_call.calls_per_s

    @property
    def ratio_client_only(self) -> float:
        """Reused vs a client built per call around the process's credential."""
        return self.reused.calls_per_s / self.per_call_client.calls_per_s

    @property
    def env_lookup_cost(self) -> float:
        """How much faster a reused poll is without aiohttp's per-request env lookups."""
        return self.reused.calls_per_s / self.reused_env_lookups.calls_per_s

    @property
    def handshake_ms(self) -> float:
        """A TCP connect + TLS handshake alone, median wall ms."""
        return self.breakdown_ms[PART_HANDSHAKE]

    def per_call_overhead_ms(self) -> dict[str, float]:
        """What a client and credential built per call add to a poll, part by part."""
        b = self.breakdown_ms
        connection = "the new TLS connection (first GET on a new client minus a reused GET)"
        return {
            "the token request to the identity endpoint": b[PART_IDENTITY_REQUEST],
            connection: b[PART_FIRST_GET] - b[PART_REUSED_GET],
            "building the credential and the client": b[PART_BUILD_CREDENTIAL]
            + b[PART_BUILD_CLIENT],
            "closing them": b[PART_CLOSE],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClientReuseResult:
        return cls(
            reused=Variant(**data["reused"]),
            per_call=Variant(**data["per_call"]),
            per_call_client=Variant(**data["per_call_client"]),
            reused_env_lookups=Variant(**data["reused_env_lookups"]),
            breakdown_ms={str(k): float(v) for k, v in data["breakdown_ms"].items()},
            calls=int(data["calls"]),
            rounds=int(data["rounds"]),
            tls_version=str(data["tls_version"]),
            resumed_tls_sessions=int(data["resumed_tls_sessions"]),
        )
