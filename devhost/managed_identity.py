"""The App Service managed identity endpoint on loopback (what `IDENTITY_ENDPOINT` points at).

azure-identity's `ManagedIdentityCredential` (and so `DefaultAzureCredential`) uses the App
Service protocol when `IDENTITY_ENDPOINT` and `IDENTITY_HEADER` are set (and
`IDENTITY_SERVER_THUMBPRINT` is not): `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=R`
(plus `client_id`, `principal_id`/`object_id` or `mi_res_id` for a user-assigned identity) with
the header `X-IDENTITY-HEADER: {IDENTITY_HEADER}`, answered by

    {"access_token": "...", "expires_on": "<epoch seconds, as a string>", "resource": "R",
     "token_type": "Bearer", "client_id": "<the identity's client id>"}

Like App Service it listens on plain http on loopback. Each accepted request issues a new random
token (`token_requests` counts them; `issued(token, resource)` tells whether one came from here,
so a loopback service can accept only those). A missing `X-IDENTITY-HEADER` is a 400, a wrong
one a 401; a missing or other api-version, a missing resource or an unknown user-assigned
identity a 400. Tokens and the header value are never recorded or logged.

    with ManagedIdentityEndpoint() as identity:
        os.environ.update(identity.environment())  # before building the credential
        token = await ManagedIdentityCredential().get_token("https://ai.azure.com/.default")
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from devhost.lifecycle import StartStop
from devhost.server_thread import ServerThread

API_VERSION = "2019-08-01"
TOKEN_PATH = "/msi/token"
HEADER = "X-IDENTITY-HEADER"


@dataclass(frozen=True)
class IdentityRequest:
    """One token request as the endpoint saw it (never the header value or a token)."""

    resource: str | None
    client_id: str | None
    status: int


class ManagedIdentityEndpoint(StartStop):
    """Issues bearer tokens over the App Service managed identity protocol, on loopback."""

    def __init__(
        self,
        *,
        client_id: str | None = None,
        user_assigned_client_ids: Sequence[str] = (),
        token_lifetime_seconds: int = 24 * 3600,
        port: int = 0,
    ) -> None:
        self.client_id = client_id or str(uuid.uuid4())  # the system-assigned identity
        self.user_assigned_client_ids = frozenset(user_assigned_client_ids)
        self.token_lifetime_seconds = token_lifetime_seconds
        self._secret = secrets.token_urlsafe(24)
        self._issued: dict[str, str] = {}  # token -> resource
        self._lock = threading.Lock()
        self.requests: list[IdentityRequest] = []
        self._port = port
        self._server: ServerThread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> ManagedIdentityEndpoint:
        if self._server is None:
            self._server = ServerThread(self._app, port=self._port).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def server(self) -> ServerThread:
        if self._server is None:
            raise RuntimeError("the identity endpoint is not started")
        return self._server

    @property
    def endpoint(self) -> str:
        return self.server.base_url + TOKEN_PATH

    @property
    def header(self) -> str:
        """The `IDENTITY_HEADER` value requests must present (a secret: do not log it)."""
        return self._secret

    def environment(self) -> dict[str, str]:
        """What App Service sets for the app: `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`."""
        return {"IDENTITY_ENDPOINT": self.endpoint, "IDENTITY_HEADER": self._secret}

    # ------------------------------------------------------------------ observations

    @property
    def token_requests(self) -> int:
        """How many tokens were issued."""
        with self._lock:
            return len(self._issued)

    @property
    def refused(self) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.status != 200)

    def issued(self, token: str, resource: str | None = None) -> bool:
        """Whether `token` was issued here (for `resource`, when given)."""
        with self._lock:
            found = self._issued.get(token)
        return found is not None and (resource is None or found == resource)

    # ------------------------------------------------------------------ HTTP

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    def _problem(self, request: web.Request) -> tuple[int, str] | None:
        """Why the request is refused (status, message), or None when a token is due."""
        query = request.query
        if request.path.rstrip("/") != TOKEN_PATH:
            return 404, "Not found."
        if request.method != "GET":
            return 405, "Only GET is supported."
        presented = request.headers.get(HEADER)
        if presented is None:
            return 400, f"The {HEADER} header is required."
        if not secrets.compare_digest(presented.encode(), self._secret.encode()):
            return 401, f"Invalid {HEADER} header."
        if query.get("api-version") != API_VERSION:
            return 400, f"Missing or unsupported api-version; this endpoint speaks {API_VERSION}."
        if not query.get("resource"):
            return 400, "The resource parameter is required."
        if any(query.get(name) for name in ("principal_id", "object_id", "mi_res_id")):
            return 400, "Only client_id selects a user-assigned identity on this endpoint."
        client_id = query.get("client_id")
        if client_id and client_id not in self.user_assigned_client_ids | {self.client_id}:
            return 400, "Unable to load the requested managed identity."
        return None

    async def _handle(self, request: web.Request) -> web.Response:
        resource = request.query.get("resource")
        client_id = request.query.get("client_id")
        problem = self._problem(request)
        if problem is not None:
            status, message = problem
            with self._lock:
                self.requests.append(IdentityRequest(resource, client_id, status))
            return web.json_response({"statusCode": status, "message": message}, status=status)
        assert resource is not None
        token = secrets.token_urlsafe(32)
        expires_on = int(time.time()) + self.token_lifetime_seconds
        with self._lock:
            self._issued[token] = resource
            self.requests.append(IdentityRequest(resource, client_id, 200))
        return web.json_response(
            {
                "access_token": token,
                "expires_on": str(expires_on),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": client_id or self.client_id,
            }
        )
