"""Serve the loopback Foundry project service on wall-clock time: python -m devhost.foundry_service"""

from __future__ import annotations

import argparse
from pathlib import Path

from devhost.clock import WallClock
from devhost.loopback_api import serve_until_interrupted

from . import FoundryService


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8093)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--project", default="local")
    parser.add_argument(
        "--agent",
        action="append",
        default=[],
        metavar="NAME",
        help="create a prompt agent version with this name at start (repeatable)",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        default=None,
        help="keep responses, conversations and agents in this JSON file across restarts",
    )
    args = parser.parse_args(argv)
    with FoundryService(
        WallClock(),
        seed=args.seed,
        port=args.port,
        project=args.project,
        state_file=args.state_file,
    ) as service:
        for name in args.agent:
            if not service.has_agent(name):
                service.create_agent_version(name)
        serve_until_interrupted(f"Foundry project endpoint: {service.endpoint}  (Ctrl-C to stop)")


if __name__ == "__main__":
    main()
