"""The cost model section of docs/benchmarks.md."""

# ruff: noqa: RUF001  (the report is typeset Markdown: its multiplication signs and dashes are meant)

from __future__ import annotations

from ..costs import PRICE_SOURCES, PollModel, Prices, waiting_cost
from ..results import Results, StrategyResult
from .format import Row, _price, _strategy_rows, dollars, table


def _cost_section(
    results: Results, lines: list[str], ours: tuple[StrategyResult, list[Row]]
) -> None:
    add = lines.append
    prices, model = Prices(), PollModel()
    add("## Cost model")
    add("")
    add(
        "**Assumptions, not quotes.** USD pay-as-you-go list prices as published on the Azure "
        "pricing pages (East US, before free grants); they vary by region and change, so check "
        "them before relying on the totals. Only the *waiting* is priced: creating the run and "
        "publishing the event cost the same for every strategy."
    )
    add("")
    lines += table(
        ["item", "assumed price", "source"],
        [
            [
                "Queue Storage operation (GPv2, LRS)",
                f"{_price(prices.queue_per_10k_ops)} per 10,000",
                PRICE_SOURCES["Queue Storage"],
            ],
            [
                "Table Storage transaction (LRS)",
                f"{_price(prices.table_per_10k_tx)} per 10,000",
                PRICE_SOURCES["Table Storage"],
            ],
            [
                "Functions execution (Flex Consumption, on demand)",
                f"{_price(prices.per_million_executions)} per million",
                PRICE_SOURCES["Functions (Flex Consumption)"],
            ],
            [
                "Functions execution time (Flex, on demand)",
                f"{_price(prices.per_gb_second)} per GB-s",
                PRICE_SOURCES["Functions (Flex Consumption)"],
            ],
            [
                "Azure AI Agents API call (`runs.get`)",
                "$0 (tokens and tools are billed, calls count against rate limits)",
                "assumption",
            ],
        ],
        "lll",
    )
    add("")
    add(
        f"**One Durable poll ≈ {model.queue_ops + model.table_tx} storage transactions**, "
        "estimated from how the Durable extension's Azure Storage provider works "
        f"([provider internals]({PRICE_SOURCES['Azure Storage provider internals']}), "
        f"[Durable billing]({PRICE_SOURCES['Durable Functions billing']})): "
        f"{model.queue_ops} queue operations — the timer's TimerFired message, the activity's "
        "work-item message and its TaskCompleted message are each sent, received and deleted "
        f"(receives are batched in Azure, so this is an upper bound) — and {model.table_tx} "
        "table transactions — two orchestrator episodes per poll (TimerFired → schedule the "
        "activity; TaskCompleted → create the next timer), each loading the history (one "
        "range query while a generation stays under 1000 rows), appending its new events "
        "(one batch) and updating the Instances row. Per poll also "
        f"{model.executions} function executions (the activity and two orchestrator "
        f"episodes) and about {model.busy_seconds:g} s of busy time on a "
        f"{model.instance_memory_gb:g} GB instance (one HTTPS GET, two short replays). "
        "Fixed costs that do not depend on the strategy are left out: the idle queue "
        "polling (5 queues every ≤ 5 s, about 86,000 transactions a day per app) and the "
        "partition lease renewals."
    )
    add("")
    add(
        "In-process strategies (`create_and_process`, a tenacity loop) make no storage "
        "transactions but hold one execution open for the whole wait; on Flex Consumption "
        "that is billed as memory × time, here at concurrency 1 (an upper bound: runs that "
        "share an instance share its billed time), and it is bounded by the app's "
        "`functionTimeout` (Flex Consumption: 30 min by default)."
    )
    add("")
    body = []
    tail = [i for i, r in enumerate(results.runs) if r.group == "heavy-tail"]
    for strategy, srows in _strategy_rows(results):
        chosen = [srows[i] for i in tail]
        costs = [
            waiting_cost(strategy.deployment, r.polls, r.waited, prices, model) for r in chosen
        ]
        n = len(costs)
        body.append(
            [
                strategy.label,
                strategy.deployment,
                f"{1000 * sum(c.agents_calls for c in costs) / n:,.0f}",
                f"{1000 * sum(c.storage_transactions for c in costs) / n:,.0f}",
                f"{1000 * sum(c.executions for c in costs) / n:,.0f}",
                f"{1000 * sum(c.gb_seconds for c in costs) / n:,.0f}",
                dollars(1000 * sum(c.dollars for c in costs) / n),
            ]
        )
    add(f"Per 1000 runs of the heavy-tailed workload ({len(tail)} runs):")
    add("")
    lines += table(
        [
            "strategy",
            "runs as",
            "Agents GETs",
            "storage transactions",
            "executions",
            "GB-s",
            "waiting cost",
        ],
        body,
        "llrrrrr",
    )
    add("")
    del ours
