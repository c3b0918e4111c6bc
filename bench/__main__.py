"""`python -m bench`: regenerate docs/benchmarks.md and its plots (see bench/main.py).

Exits 1 if the default schedule misses a target, 0 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from .config import DOCS, QUICK, BenchConfig
from .main import run
from .plot import plot_frontier, plot_main
from .report import PNG_FRONTIER, PNG_MAIN, render
from .results import Results
from .summary import summary


def write_plots(results: Results, out: Path) -> tuple[str | None, str | None]:
    """The PNGs, or (None, None) without matplotlib (requirements-bench.txt installs it)."""
    if importlib.util.find_spec("matplotlib") is None:
        print("matplotlib is not installed: no plots (make bench installs it)", file=sys.stderr)
        return None, None
    plot_main(results, out / PNG_MAIN)
    plot_frontier(results, out / PNG_FRONTIER)
    return PNG_MAIN, PNG_FRONTIER


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--out", type=Path, default=DOCS, help="where to write the doc and PNGs")
    parser.add_argument(
        "--quick", action="store_true", help="a tiny workload, in one process (for development)"
    )
    args = parser.parse_args(argv)
    results = run(QUICK if args.quick else BenchConfig())
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    png_main, png_frontier = write_plots(results, out)
    doc = out / "benchmarks.md"
    doc.write_text(render(results, png_main, png_frontier))
    print(summary(results))
    print(f"wrote {doc}" + "".join(f", {out / p}" for p in (png_main, png_frontier) if p))
    foundry_met = results.backends is None or results.backends.targets.met
    return 0 if results.targets_workload.met and results.targets_exact.met and foundry_met else 1


if __name__ == "__main__":
    raise SystemExit(main())
