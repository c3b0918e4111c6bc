"""agent-run relay: the Functions app's logic. `function_app.py` only wires it up."""
