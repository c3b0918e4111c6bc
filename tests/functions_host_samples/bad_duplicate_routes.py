"""Broken on purpose: two functions serve GET on the same route template."""

# mypy: disallow-untyped-decorators=False

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp()


@app.route(route="items/{id}", methods=["GET"])
def get_item(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("item")


@app.route(route="items/{key}", methods=["GET", "DELETE"])
def get_item_again(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("again")
