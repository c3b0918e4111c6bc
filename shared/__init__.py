"""agent-run relay: the Functions app's logic. `function_app.py` only wires it up.

Layers, with imports pointing one way only (tests/project/test_architecture.py checks them):

- `contract`: names, phases, custom-status keys and typed payloads shared across the
  durable boundary; imports nothing of the app;
- `core/`: pure logic (validation, schedule, state, decisions, events); imports the contract;
- `adapters/`: I/O (settings, SDK clients, the Agents service, Event Grid, logging);
- `durable/`: the orchestrator and the activities; imports core and adapters;
- `http/`: the HTTP functions' logic; imports core, adapters and the contract, never durable;
- `subscriber/`: the sample Event Grid subscriber; nothing imports it but function_app.py.
"""
