"""The client reuse measurement's services process: the https Agents service and the
loopback managed identity endpoint (bench/client_reuse.py runs it)."""

from __future__ import annotations

import time
from multiprocessing.connection import Connection
from pathlib import Path

from devhost.agents_service import AgentsService, RunScript
from devhost.clock import VirtualClock
from devhost.managed_identity import ManagedIdentityEndpoint
from devhost.tls import server_context_from_files

SCOPE = "https://ai.azure.com/.default"  # azure-ai-agents' default credential scope
RESOURCE = SCOPE.removesuffix("/.default")  # what the managed identity protocol asks for


# ------------------------------------------------------------------ the services process


def _serve(conn: Connection, cert: str, key: str) -> None:
    """Serve the https Agents service and the identity endpoint until told to stop."""
    identity = ManagedIdentityEndpoint().start()
    agents = AgentsService(
        VirtualClock(),
        ssl_context=server_context_from_files(Path(cert), Path(key)),
        accept_token=lambda token: identity.issued(token, RESOURCE),
    ).start()
    # Runs stay in progress: every poll is one GET of a live run, as while an agent works.
    agents.default_script = RunScript(queued_seconds=0, duration_seconds=10 * 24 * 3600)
    try:
        # By name, as Azure endpoints are: a new client resolves it (its connector's DNS
        # cache is new too), a reused one keeps its connection.
        endpoint = agents.endpoint.replace("://127.0.0.1:", "://localhost:", 1)
        conn.send({"agents_endpoint": endpoint, "identity": identity.environment()})
        while (message := conn.recv()) != "stop":
            if message != "stats":
                raise ValueError(f"unknown request {message!r}")
            stats = agents.connection_stats
            conn.send(
                {
                    "connections": stats.connections,
                    "tls_connections": stats.tls_connections,
                    "resumed_tls_sessions": stats.resumed_tls_sessions,
                    "tls_versions": dict(stats.tls_versions),
                    "token_requests": identity.token_requests,
                    "refused_token_requests": identity.refused,
                    "cpu_s": time.process_time(),
                }
            )
    finally:
        agents.stop()
        identity.stop()
