"""Estimated cost of waiting on a run, from assumed list prices (see docs/benchmarks.md).

Only the waiting is priced: creating the run and publishing the event cost the same for
every strategy. Prices are assumptions (USD, pay-as-you-go list prices as published on the
Azure pricing pages, before free grants; they vary by region and change): check them
before relying on the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from .schedules import Deployment


@dataclass(frozen=True)
class Prices:
    # Azure Queue Storage, general-purpose v2, LRS: queue operations (class 1 and 2 alike).
    queue_per_10k_ops: float = 0.004
    # Azure Table Storage, LRS: transactions.
    table_per_10k_tx: float = 0.00036
    # Azure Functions Flex Consumption, on demand.
    per_million_executions: float = 0.40
    per_gb_second: float = 0.000026
    # Azure AI Agents (Foundry Agent Service): no charge per API call (tokens and tools are
    # billed); calls count against the project's request rate limits.
    per_agents_call: float = 0.0


PRICE_SOURCES = {
    "Queue Storage": "https://azure.microsoft.com/pricing/details/storage/queues/",
    "Table Storage": "https://azure.microsoft.com/pricing/details/storage/tables/",
    "Functions (Flex Consumption)": "https://azure.microsoft.com/pricing/details/functions/",
    "Durable Functions billing": (
        "https://learn.microsoft.com/azure/azure-functions/durable/durable-functions-billing"
    ),
    "Flex Consumption billing model": (
        "https://learn.microsoft.com/azure/azure-functions/functions-consumption-costs"
    ),
    "Azure Storage provider internals": (
        "https://learn.microsoft.com/azure/azure-functions/durable/"
        "durable-functions-azure-storage-provider"
    ),
}


@dataclass(frozen=True)
class PollModel:
    """What one Durable poll (durable timer + poll activity) costs the app."""

    # Queue: timer message, activity work item, TaskCompleted message: each is sent,
    # received and deleted once.
    queue_ops: int = 9
    # Table: two episodes (TimerFired -> TaskScheduled, TaskCompleted -> TimerCreated), each
    # loading the history (1 query), appending to it (1 batch) and updating the instance row.
    table_tx: int = 6
    # Function executions: the poll activity and the two orchestrator episodes.
    executions: int = 3
    # Busy time per poll: the activity's GET to the Agents service (~0.1 s in Azure, assumed)
    # and two short orchestrator replays (~0.01 s each, see the replay measurement).
    busy_seconds: float = 0.12
    instance_memory_gb: float = 2.0  # infra/main.bicep instanceMemoryMB = 2048


@dataclass(frozen=True)
class Cost:
    """Waiting cost for one run."""

    agents_calls: int
    storage_transactions: int
    executions: int
    gb_seconds: float
    dollars: float


def waiting_cost(
    deployment: Deployment,
    polls: int,
    waited_seconds: float,
    prices: Prices = Prices(),
    model: PollModel = PollModel(),
) -> Cost:
    """Durable: per-poll storage, executions and busy time. In-process: one execution held
    (billed) for the whole wait, at concurrency 1 (an upper bound: runs that share a Flex
    instance share its billed memory-seconds), and no storage."""
    if deployment == "durable":
        queue, table = polls * model.queue_ops, polls * model.table_tx
        executions = polls * model.executions
        gb_seconds = polls * model.busy_seconds * model.instance_memory_gb
        storage_dollars = (
            queue * prices.queue_per_10k_ops / 10_000 + table * prices.table_per_10k_tx / 10_000
        )
        transactions = queue + table
    else:
        transactions, storage_dollars, executions = 0, 0.0, 1
        gb_seconds = waited_seconds * model.instance_memory_gb
    dollars = (
        storage_dollars
        + executions * prices.per_million_executions / 1_000_000
        + gb_seconds * prices.per_gb_second
        + polls * prices.per_agents_call
    )
    return Cost(polls, transactions, executions, gb_seconds, dollars)
