"""Serve the loopback Agents service on wall-clock time: python -m devhost.agents_service"""

from __future__ import annotations

import argparse

from devhost.loopback_api import serve_until_interrupted

from . import AgentsService, WallClock


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8091)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with AgentsService(WallClock(), seed=args.seed, port=args.port) as service:
        serve_until_interrupted(f"Agents endpoint: {service.endpoint}  (Ctrl-C to stop)")


if __name__ == "__main__":
    main()
