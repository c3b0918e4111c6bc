"""De-duplication of deliveries on event id, in a Table of the app's own storage account.

Event Grid delivers at least once, and the relay may publish an event again with the same id.
The first delivery inserts a row keyed by the event id; a later one finds it and is skipped.
Locally (`AzureWebJobsStorage=UseDevelopmentStorage=true`) the table lives in Azurite; in
Azure the identity-based `AzureWebJobsStorage__accountName` / `__clientId` settings are used
("Storage Table Data Contributor" on the account).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from datetime import UTC, datetime

from azure.core.exceptions import ResourceExistsError
from azure.data.tables.aio import TableClient
from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

from ..adapters.runtime import on_reset

TABLE_NAME = "relayprocessedevents"
# Azurite's well-known development account (public, documented, not a secret).
DEVELOPMENT_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)

_tables: dict[int, tuple[asyncio.AbstractEventLoop, TableClient]] = {}


def table_client_from_settings(env: Mapping[str, str]) -> TableClient:
    connection = env.get("AzureWebJobsStorage", "").strip()
    if connection == "UseDevelopmentStorage=true":
        connection = DEVELOPMENT_STORAGE
    if connection:
        return TableClient.from_connection_string(connection, table_name=TABLE_NAME)
    account = env.get("AzureWebJobsStorage__accountName", "").strip()
    if not account:
        raise RuntimeError("set AzureWebJobsStorage or AzureWebJobsStorage__accountName")
    client_id = env.get("AzureWebJobsStorage__clientId") or None
    credential: ManagedIdentityCredential | DefaultAzureCredential
    if env.get("IDENTITY_ENDPOINT") or env.get("MSI_ENDPOINT"):
        # In Azure (App Service sets these for an app with a managed identity): the identity
        # only, not DefaultAzureCredential's chain of developer credentials.
        credential = ManagedIdentityCredential(client_id=client_id)
    else:
        credential = DefaultAzureCredential(managed_identity_client_id=client_id)
    endpoint = f"https://{account}.table.core.windows.net"
    return TableClient(endpoint, table_name=TABLE_NAME, credential=credential)


async def _table() -> TableClient:
    loop = asyncio.get_running_loop()
    cached = _tables.get(id(loop))
    if cached is not None and cached[0] is loop:
        return cached[1]
    table = table_client_from_settings(os.environ)
    with contextlib.suppress(ResourceExistsError):
        await table.create_table()
    _tables[id(loop)] = (loop, table)
    return table


async def first_delivery(event_type: str, event_id: str) -> bool:
    """Record the event id; False if it was recorded before (a duplicate delivery)."""
    table = await _table()
    entity = {
        "PartitionKey": event_type,
        "RowKey": event_id,
        "ReceivedAt": datetime.now(UTC).isoformat(),
    }
    try:
        await table.create_entity(entity)
    except ResourceExistsError:
        return False
    return True


def reset_tables() -> None:
    _tables.clear()


# Dropped with the rest of the worker's state (the app does not know this component).
on_reset(reset_tables)
